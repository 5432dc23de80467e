package main

import (
	"os"

	"github.com/bootorbit/bootorbit/hil/demo"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", func() *cobra.Command {
		var (
			keep  string
			seed  uint64
			short bool
		)
		c := &cobra.Command{
			Use:   "demo",
			Short: "the whole story on the virtual board: sign, queue, uplink over UHF in passes, install, activate, reboot, health check, mark good; then a bad image and its watchdog rollback",
			Long: `Demo runs bootorbit end to end on this machine, with nothing but Go and the
repository (run it from the repository: it builds flightd with the go
command). groundd runs in-process; flightd runs as a real process on the
virtual board (directory slots, a U-Boot environment file, the bootloader
model of the shipped boot script, a watchdog that resets the board); the
link emulator plays a UHF link in passes, ten times faster than real time.

A release v2 of a synthetic image is signed and queued, uplinked as a delta
across passes, installed into slot B, activated and booted; its health
check passes and it is marked good. Then a release v3 that hangs at boot is
uplinked into slot A and activated: the watchdog resets the board at each
attempt, the bootloader falls back to B, and flightd records A bad. A
summary follows. Exit status 1 if the story did not end as expected.`,
			Example: `  go run ./cmd/hil demo
  hil demo --keep /tmp/demo    # keep the boards, stores and logs`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				dir := keep
				if dir == "" {
					tmp, err := os.MkdirTemp("", "bootorbit-demo-")
					if err != nil {
						return err
					}
					defer os.RemoveAll(tmp)
					dir = tmp
				}
				_, err := demo.Run(c.Context(), demo.Options{Dir: dir, Out: c.OutOrStdout(), Seed: seed, Short: short})
				return err
			},
		}
		fs := c.Flags()
		fs.StringVar(&keep, "keep", "", "work in `DIR` and keep it (default a temporary directory, removed)")
		fs.Uint64Var(&seed, "seed", 1, "seed of the images, keys and link faults")
		fs.BoolVar(&short, "short", false, "the update alone, faster (no bad image)")
		return c
	})
}
