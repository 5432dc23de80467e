//go:build linux

package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/bootorbit/bootorbit/flightd"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/spf13/cobra"
)

// bootEnvHelp is the part of every boot and update command's description
// that says where the bootloader environment comes from.
const bootEnvHelp = `The bootloader environment is named by one of:
  --config FILE                      the boot section of the flightd configuration
  --uboot-env PATH[,PATH2] --env-size SIZE [--env-offset OFF[,OFF2]]
                                     U-Boot copies (two for a redundant environment)
  --fw-env-config FILE               the U-Boot copies of an fw_env.config
  --grubenv PATH                     a GRUB environment block
The booted slot is rauc.slot= on the kernel command line (--cmdline, default:
the configuration's slots.cmdline, else /proc/cmdline).`

func init() {
	commands.Group("boot", "read and change the boot-counting variables of the bootloader environment",
		`The boot commands read and change BOOT_ORDER and the BOOT_x_LEFT attempt
counters in the U-Boot or GRUB environment, as the boot script reads them.
They touch the environment only; the update commands also keep the slot
states in step.

`+bootEnvHelp)
	commands.Add("boot", func() *cobra.Command {
		f := &bootFlags{}
		c := &cobra.Command{
			Use:   "status",
			Short: "show the booted slot, boot order, attempts left and whether this is a trial boot",
			Long: `Status reads the environment and the kernel command line and prints the
booted slot, the boot order, the slot booted next, the attempts left and the
trial state. For a redundant U-Boot environment it names the copy in use and
warns when the other copy is corrupt or unreadable: the environment has then
lost its redundancy.

` + bootEnvHelp,
			Example: `  flightd boot status --config /etc/flightd.json
  flightd boot status --fw-env-config /etc/fw_env.config --json
  flightd boot status --uboot-env /dev/mmcblk0,/dev/mmcblk0 --env-size 0x20000 --env-offset 0x3e0000,0x3c0000`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runBootStatus(c, f) },
		}
		f.register(c, false)
		return c
	})
	commands.Add("boot", func() *cobra.Command {
		f := &bootFlags{}
		c := &cobra.Command{
			Use:   "arm SLOT",
			Short: "make SLOT the primary with N boot attempts, as a trial, in one environment write",
			Long: `Arm puts SLOT (A or B) first in BOOT_ORDER with --attempts boot attempts and
records it as the trial slot, in one environment write. It refuses the
booted slot. It does not look at the slot's content: flightd update arm
also checks and records the slot state.

` + bootEnvHelp,
			Example: `  flightd boot arm B --config /etc/flightd.json
  flightd boot arm B --grubenv /boot/grub/grubenv --attempts 2`,
			Args: slotArgs,
			RunE: func(c *cobra.Command, args []string) error { return runBootArm(c, f, args[0]) },
		}
		f.register(c, false)
		return c
	})
	commands.Add("boot", func() *cobra.Command {
		f := &bootFlags{}
		c := &cobra.Command{
			Use:   "mark-good",
			Short: "reset the booted slot's attempts and end its trial",
			Long: `Mark-good resets the attempts of the booted slot (or --slot) to N and ends
its trial.

` + bootEnvHelp,
			Example: `  flightd boot mark-good --config /etc/flightd.json
  flightd boot mark-good --slot B --fw-env-config /etc/fw_env.config`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runBootMarkGood(c, f) },
		}
		f.register(c, true)
		return c
	})
	commands.Add("boot", func() *cobra.Command {
		f := &bootFlags{}
		c := &cobra.Command{
			Use:   "mark-bad SLOT",
			Short: "drop SLOT from the boot order and set its attempts to 0",
			Long: `Mark-bad drops SLOT from BOOT_ORDER and sets its attempts to 0. It refuses
the last slot in the order, which would leave the bootloader nothing to boot.

` + bootEnvHelp,
			Example: `  flightd boot mark-bad A --config /etc/flightd.json`,
			Args:    slotArgs,
			RunE:    func(c *cobra.Command, args []string) error { return runBootMarkBad(c, f, args[0]) },
		}
		f.register(c, false)
		return c
	})
}

// maxCmdline bounds the kernel command line file read.
const maxCmdline = 64 << 10

type bootFlags struct {
	config      string
	ubootEnv    string
	envSize     int64
	envOffset   string
	fwEnvConfig string
	grubenv     string
	cmdline     string
	attempts    int
	slot        string
	json        bool
	verbose     bool
	cmd         *cobra.Command // the command the flags belong to
}

func (f *bootFlags) given(name string) bool { return cli.Given(f.cmd, name) }

// log is the command's log on its stderr (-v: info and up).
func (f *bootFlags) log() *slog.Logger { return cli.Logger(f.cmd.ErrOrStderr(), f.verbose) }

func (f *bootFlags) register(c *cobra.Command, withSlot bool) {
	fs := c.Flags()
	fs.StringVar(&f.config, "config", "", "flightd configuration `FILE` (its boot section names the environment)")
	fs.StringVar(&f.ubootEnv, "uboot-env", "", "U-Boot environment device or file `PATH`; two, comma-separated, for redundant copies")
	cli.SizeVar(fs, &f.envSize, "env-size", 0, "U-Boot environment size, as in fw_env.config (decimal, 0x hex or with a unit: 0x20000, 128KiB)")
	fs.StringVar(&f.envOffset, "env-offset", "0", "`OFFSET` of the U-Boot environment copy in its device; two, comma-separated, for two copies (decimal, 0x hex or with a unit)")
	fs.StringVar(&f.fwEnvConfig, "fw-env-config", "", "take the U-Boot copies from this fw_env.config `FILE`")
	fs.StringVar(&f.grubenv, "grubenv", "", "GRUB environment block `FILE`")
	fs.StringVar(&f.cmdline, "cmdline", "", "kernel command line `FILE` to find the booted slot in (default: the config's slots.cmdline, else /proc/cmdline)")
	fs.IntVar(&f.attempts, "attempts", 0, "boot attempts `N`, 1..9 (default: the config's boot.attempts, else 3)")
	cli.JSONFlag(c, &f.json)
	cli.VerboseFlag(c, &f.verbose)
	if withSlot {
		fs.StringVar(&f.slot, "slot", "", "the `SLOT` to mark good (default: the booted slot)")
	}
	f.cmd = c
}

// slotArgs takes exactly one SLOT argument, A or B.
func slotArgs(_ *cobra.Command, args []string) error {
	_, err := slotArg(args)
	return err
}

// parseSize reads a byte count of the flag name (cli.ParseSize) as a usage
// error.
func parseSize(name, s string) (int64, error) {
	n, err := cli.ParseSize(s)
	if err != nil {
		return 0, cli.Usagef("%s: %v", name, err)
	}
	return n, nil
}

// bootSetup is what every boot command needs.
type bootSetup struct {
	bc        *watchdog.BootControl
	where     string
	booted    string
	recordDir string
}

// bootConfig is the configuration file (nil without --config) and its
// boot section with the environment flags applied over it, validated.
func (f *bootFlags) bootConfig() (*flightd.Config, flightd.BootConfig, error) {
	var cfg *flightd.Config
	if f.config != "" {
		c, err := flightd.LoadConfig(f.config)
		if err != nil {
			return nil, flightd.BootConfig{}, err
		}
		cfg = c
	}
	var bc flightd.BootConfig
	if cfg != nil {
		bc = cfg.Boot
	}
	direct := 0
	for _, s := range []string{f.ubootEnv, f.fwEnvConfig, f.grubenv} {
		if s != "" {
			direct++
		}
	}
	switch {
	case direct > 1:
		return nil, bc, cli.Usagef("give one of --uboot-env, --fw-env-config and --grubenv")
	case f.ubootEnv != "":
		if !f.given("env-size") {
			return nil, bc, cli.Usagef("--uboot-env needs --env-size")
		}
		size := f.envSize
		paths := strings.Split(f.ubootEnv, ",")
		offs := strings.Split(f.envOffset, ",")
		if len(paths) > 2 || len(offs) > len(paths) {
			return nil, bc, cli.Usagef("--uboot-env takes one or two paths and --env-offset at most one offset per path")
		}
		var locs []watchdog.UBootLocation
		for i, p := range paths {
			off, err := parseSize("--env-offset", offs[min(i, len(offs)-1)])
			if err != nil {
				return nil, bc, err
			}
			if size > watchdog.MaxUBootEnvSize {
				return nil, bc, cli.Usagef("--env-size %d is larger than %d", size, watchdog.MaxUBootEnvSize)
			}
			locs = append(locs, watchdog.UBootLocation{Path: p, Offset: off, Size: int(size)})
		}
		bc.UBootEnv, bc.FWEnvConfig, bc.GRUBEnv, bc.GRUBEnvSize = locs, "", "", 0
	case f.fwEnvConfig != "":
		bc.UBootEnv, bc.FWEnvConfig, bc.GRUBEnv, bc.GRUBEnvSize = nil, f.fwEnvConfig, "", 0
	case f.grubenv != "":
		bc.UBootEnv, bc.FWEnvConfig, bc.GRUBEnv, bc.GRUBEnvSize = nil, "", f.grubenv, 0
	case !bc.Configured():
		return nil, bc, cli.Usagef("no bootloader environment: give --uboot-env PATH --env-size N, --fw-env-config FILE, --grubenv PATH, or --config FILE with a boot section")
	}
	if f.attempts != 0 {
		bc.Attempts = f.attempts
	}
	if err := bc.Validate(); err != nil {
		return nil, bc, err
	}
	return cfg, bc, nil
}

func (f *bootFlags) setup() (*bootSetup, error) {
	cfg, bc, err := f.bootConfig()
	if err != nil {
		return nil, err
	}
	env, where, err := bc.OpenEnv()
	if err != nil {
		return nil, err
	}
	s := &bootSetup{bc: &watchdog.BootControl{Env: env, Attempts: bc.AttemptsOrDefault()}, where: where}
	f.log().Info("bootloader environment", "env", where, "attempts", s.bc.Attempts)

	cmdline := f.cmdline
	explicit := cmdline != ""
	if cmdline == "" && cfg != nil && cfg.Slots.Cmdline != "" {
		cmdline, explicit = cfg.Slots.Cmdline, true
	}
	if cmdline == "" {
		cmdline = "/proc/cmdline"
	}
	text, err := readBounded(cmdline, maxCmdline)
	switch {
	case err != nil && explicit:
		return nil, fmt.Errorf("kernel command line: %w", err)
	case err == nil:
		if s.booted, err = watchdog.ParseCmdline(text); err != nil {
			return nil, fmt.Errorf("%s: %w", cmdline, err)
		}
		f.log().Info("booted slot", "cmdline", cmdline, "slot", s.booted)
	}
	if cfg != nil {
		s.recordDir = bc.RecordDir
		if s.recordDir == "" {
			s.recordDir = cfg.Slots.StateDir
		}
	}
	return s, nil
}

func readBounded(path string, limit int64) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err != nil {
		return "", err
	}
	if int64(len(b)) > limit {
		return "", fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return string(b), nil
}

// statusOut is the --json document of every boot command.
type statusOut struct {
	watchdog.Status
	Env       string                `json:"env"`
	Action    string                `json:"action,omitempty"`
	LastReset *watchdog.ResetRecord `json:"last_reset,omitempty"`
	// EnvCopies is, for redundant U-Boot copies, the copy in use and the
	// health of the other.
	EnvCopies *watchdog.UBootRedundancy `json:"env_copies,omitempty"`
	Warnings  []string                  `json:"warnings,omitempty"`
}

// envCopies reads which copy of a redundant U-Boot environment is in use;
// nil for any other environment.
func envCopies(env watchdog.Env) (*watchdog.UBootRedundancy, error) {
	u, ok := env.(*watchdog.UBootEnv)
	if !ok {
		return nil, nil
	}
	st, err := u.State()
	if err != nil {
		return nil, err
	}
	return st.Redundancy, nil
}

func (s *bootSetup) report(stdout io.Writer, f *bootFlags, action string) error {
	st, err := s.bc.Status(s.booted)
	if err != nil {
		return err
	}
	out := statusOut{Status: st, Env: s.where, Action: action}
	if out.EnvCopies, err = envCopies(s.bc.Env); err != nil {
		return err
	}
	if w := out.EnvCopies.Warning(); w != "" {
		out.Warnings = append(out.Warnings, w)
	}
	if s.recordDir != "" {
		if r, err := watchdog.ReadResetRecord(s.recordDir); err == nil && r.Count > 0 {
			out.LastReset = &r
		}
	}
	if f.json {
		return cli.WriteJSON(stdout, out)
	}
	if action != "" {
		fmt.Fprintln(stdout, action)
	}
	fmt.Fprintf(stdout, "environment    %s\n", s.where)
	if r := out.EnvCopies; r != nil {
		if r.Active > 0 {
			fmt.Fprintf(stdout, "env copy       %d of 2 (%s, flags %d); other copy %s\n", r.Active, r.ActiveCopy, r.ActiveFlag, r.Other)
		}
	}
	fmt.Fprint(stdout, st.Text())
	if out.LastReset != nil {
		fmt.Fprintf(stdout, "last reset     %s (slot %s, %s; %d watchdog resets in %d boots)\n",
			out.LastReset.Cause, out.LastReset.Slot, out.LastReset.Time.Format("2006-01-02 15:04:05Z"),
			out.LastReset.WatchdogResets, out.LastReset.Count)
	}
	for _, w := range out.Warnings {
		fmt.Fprintf(stdout, "WARNING: %s\n", w)
	}
	return nil
}

func runBootStatus(c *cobra.Command, f *bootFlags) error {
	s, err := f.setup()
	if err != nil {
		return err
	}
	return s.report(c.OutOrStdout(), f, "")
}

func slotArg(pos []string) (string, error) {
	if len(pos) != 1 {
		return "", cli.Usagef("want exactly one SLOT (A or B), got %d arguments", len(pos))
	}
	if err := watchdog.CheckSlot(pos[0]); err != nil {
		return "", cli.Usagef("%v", err)
	}
	return pos[0], nil
}

func runBootArm(c *cobra.Command, f *bootFlags, slot string) error {
	s, err := f.setup()
	if err != nil {
		return err
	}
	if slot == s.booted {
		return fmt.Errorf("slot %s is the booted slot: arm the other slot after writing it", slot)
	}
	if err := s.bc.Arm(slot); err != nil {
		return err
	}
	return s.report(c.OutOrStdout(), f, fmt.Sprintf("armed %s with %d attempts", slot, s.bc.Attempts))
}

func runBootMarkGood(c *cobra.Command, f *bootFlags) error {
	if f.slot != "" {
		if err := watchdog.CheckSlot(f.slot); err != nil {
			return cli.Usagef("--slot: %v", err)
		}
	}
	s, err := f.setup()
	if err != nil {
		return err
	}
	slot := f.slot
	if slot == "" {
		slot = s.booted
	}
	if slot == "" {
		return fmt.Errorf("%w: no rauc.slot= on the kernel command line; give --slot", watchdog.ErrNotBooted)
	}
	if err := s.bc.MarkGood(slot); err != nil {
		return err
	}
	return s.report(c.OutOrStdout(), f, fmt.Sprintf("marked %s good", slot))
}

func runBootMarkBad(c *cobra.Command, f *bootFlags, slot string) error {
	s, err := f.setup()
	if err != nil {
		return err
	}
	if err := s.bc.MarkBad(slot); err != nil {
		return err
	}
	return s.report(c.OutOrStdout(), f, fmt.Sprintf("marked %s bad", slot))
}
