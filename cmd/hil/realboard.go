package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/bootorbit/bootorbit/hil/realboard"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Group("realboard", "a real ARM64 board on the bench: SSH, a power switch command, the serial console",
		`The realboard commands drive a real board as the bench configures it (a JSON
file, hil/realboard.Config): SSH with a known host key, power through a local
command (relay, PDU), the serial console from a device. hil run --board runs
the scenarios on such a board. docs/hil.md, "Real boards", says how to set up
such a bench.`)
	// sub adds a realboard command; with viaSSH it logs in to the board
	// first (power and console work on this host only).
	sub := func(viaSSH bool, use, short, long, example string, args cobra.PositionalArgs, run func(c *cobra.Command, b *realboard.SSHBoard, cfg realboard.Config, args []string) error) {
		commands.Add("realboard", func() *cobra.Command {
			var config string
			c := &cobra.Command{
				Use: use, Short: short, Long: long, Example: example, Args: args,
				RunE: func(c *cobra.Command, args []string) error {
					cfg, err := loadBoardConfig(config)
					if err != nil {
						return err
					}
					if !viaSSH {
						return run(c, nil, cfg, args)
					}
					b, err := realboard.Dial(c.Context(), cfg)
					if err != nil {
						return err
					}
					defer b.Close()
					return run(c, b, cfg, args)
				},
			}
			c.Flags().StringVar(&config, "config", "", "bench board configuration `FILE` (JSON)")
			c.MarkFlagRequired("config")
			return c
		})
	}
	sub(true, "describe", "log in over SSH and print the board and its architecture",
		"Describe logs in with the configured key, checks the host key, and prints the\nSSH target and uname -m.",
		"  hil realboard describe --config bench.json", cli.NoArgs,
		func(c *cobra.Command, b *realboard.SSHBoard, _ realboard.Config, _ []string) error {
			d, err := b.Describe(c.Context())
			if err == nil {
				fmt.Fprintln(c.OutOrStdout(), d)
			}
			return err
		})
	sub(true, "deploy FLIGHTD CONFIG", "install a flightd binary (linux/arm64) and its configuration on the board, then restart flightd",
		"Deploy copies both files over SSH (each written beside its target, synced,\nrenamed over it) and runs the configured restart command.",
		"  GOARCH=arm64 go build -o flightd ./cmd/flightd && hil realboard deploy --config bench.json flightd flightd.json", cobra.ExactArgs(2),
		func(c *cobra.Command, b *realboard.SSHBoard, _ realboard.Config, args []string) error {
			bin, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			conf, err := os.ReadFile(args[1])
			if err != nil {
				return err
			}
			return b.Deploy(c.Context(), bin, conf)
		})
	sub(true, "status", "print flightd status --json from the board",
		"Status runs flightd status --json on the board and prints what it prints.",
		"  hil realboard status --config bench.json", cli.NoArgs,
		func(c *cobra.Command, b *realboard.SSHBoard, _ realboard.Config, _ []string) error {
			st, err := b.Status(c.Context())
			if err == nil {
				c.OutOrStdout().Write(st)
			}
			return err
		})
	sub(false, "power on|off", "switch the board's power with the configured command",
		"Power runs power_on or power_off from the configuration on this host.",
		"  hil realboard power off --config bench.json", cobra.ExactArgs(1),
		func(c *cobra.Command, _ *realboard.SSHBoard, cfg realboard.Config, args []string) error {
			switch args[0] {
			case "on", "off":
			default:
				return cli.Usagef("power %q: want on or off", args[0])
			}
			b := realboard.Offline(cfg)
			return b.Power(c.Context(), args[0] == "on")
		})
	sub(false, "console", "print the board's serial console until interrupted",
		"Console opens the configured device raw at console_baud and prints its lines.",
		"  hil realboard console --config bench.json", cli.NoArgs,
		func(c *cobra.Command, _ *realboard.SSHBoard, cfg realboard.Config, _ []string) error {
			lines, err := realboard.Offline(cfg).Console(c.Context())
			if err != nil {
				return err
			}
			for l := range lines {
				fmt.Fprintln(c.OutOrStdout(), l)
			}
			return nil
		})
}

func loadBoardConfig(path string) (realboard.Config, error) {
	var cfg realboard.Config
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, err
	}
	// Strict: a misspelt key would silently leave a default in place.
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("realboard: config %s: %w", path, err)
	}
	return cfg, nil
}
