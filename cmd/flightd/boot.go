package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/bootorbit/bootorbit/flightd"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/watchdog"
)

const bootEnvArgs = "[--config FILE | --uboot-env PATH[,PATH2] --env-size N [--env-offset N[,N2]] | --fw-env-config FILE | --grubenv PATH]"

func init() {
	commands.Add(cli.Command{
		Name:    "boot status",
		Args:    bootEnvArgs + " [--cmdline FILE] [--attempts N] [--json]",
		Summary: "show the booted slot, boot order, attempts left and whether this is a trial boot",
		Run:     runBootStatus,
	})
	commands.Add(cli.Command{
		Name:    "boot arm",
		Args:    "SLOT [--attempts N] " + bootEnvArgs + " [--cmdline FILE] [--json]",
		Summary: "make SLOT the primary with N boot attempts, as a trial, in one environment write",
		Run:     runBootArm,
	})
	commands.Add(cli.Command{
		Name:    "boot mark-good",
		Args:    "[--slot SLOT] " + bootEnvArgs + " [--cmdline FILE] [--json]",
		Summary: "reset the booted slot's attempts and end its trial",
		Run:     runBootMarkGood,
	})
	commands.Add(cli.Command{
		Name:    "boot mark-bad",
		Args:    "SLOT " + bootEnvArgs + " [--cmdline FILE] [--json]",
		Summary: "drop SLOT from the boot order and set its attempts to 0",
		Run:     runBootMarkBad,
	})
}

// maxCmdline bounds the kernel command line file read.
const maxCmdline = 64 << 10

type bootFlags struct {
	config      string
	ubootEnv    string
	envSize     string
	envOffset   string
	fwEnvConfig string
	grubenv     string
	cmdline     string
	attempts    int
	slot        string
	json        bool
}

func newBootFlags(name string, stderr io.Writer, withSlot bool) (*flag.FlagSet, *bootFlags) {
	fs := cli.FlagSet(name, stderr)
	f := &bootFlags{}
	fs.StringVar(&f.config, "config", "", "flightd configuration file (its boot section names the environment)")
	fs.StringVar(&f.ubootEnv, "uboot-env", "", "U-Boot environment device or file; two, comma-separated, for redundant copies")
	fs.StringVar(&f.envSize, "env-size", "", "U-Boot environment size in bytes (decimal or 0x hex), as in fw_env.config")
	fs.StringVar(&f.envOffset, "env-offset", "0", "offset of the U-Boot environment copy in its device; two, comma-separated, for two copies")
	fs.StringVar(&f.fwEnvConfig, "fw-env-config", "", "take the U-Boot copies from this fw_env.config")
	fs.StringVar(&f.grubenv, "grubenv", "", "GRUB environment block file")
	fs.StringVar(&f.cmdline, "cmdline", "", "kernel command line file to find the booted slot in (default: the config's slots.cmdline, else /proc/cmdline)")
	fs.IntVar(&f.attempts, "attempts", 0, "boot attempts N, 1..9 (default: the config's boot.attempts, else 3)")
	fs.BoolVar(&f.json, "json", false, "print JSON for scripts")
	if withSlot {
		fs.StringVar(&f.slot, "slot", "", "the slot to mark good (default: the booted slot)")
	}
	return fs, f
}

// parseArgs parses flags that may come before and after positional
// arguments and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := cli.Parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// parseSize reads a byte count in decimal or 0x hex, as the flags' help
// says. strconv's base 0 would also read 010 as octal 8 (and 0b, 0o, 1_000),
// so a leading zero is refused rather than guessed.
func parseSize(name, s string) (int64, error) {
	t := strings.TrimSpace(s)
	base := 10
	if h, ok := strings.CutPrefix(strings.ToLower(t), "0x"); ok {
		base, t = 16, h
	} else if len(t) > 1 && t[0] == '0' {
		return 0, cli.Usagef("%s %q: a leading 0 is ambiguous (octal in fw_env.config); write decimal or 0x hex", name, s)
	}
	n, err := strconv.ParseInt(t, base, 64)
	if err != nil || n < 0 || strings.HasPrefix(t, "+") {
		return 0, cli.Usagef("%s %q: want a byte count (decimal or 0x hex)", name, s)
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

func (f *bootFlags) setup() (*bootSetup, error) {
	var cfg *flightd.Config
	if f.config != "" {
		c, err := flightd.LoadConfig(f.config)
		if err != nil {
			return nil, err
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
		return nil, cli.Usagef("give one of --uboot-env, --fw-env-config and --grubenv")
	case f.ubootEnv != "":
		if f.envSize == "" {
			return nil, cli.Usagef("--uboot-env needs --env-size")
		}
		size, err := parseSize("--env-size", f.envSize)
		if err != nil {
			return nil, err
		}
		paths := strings.Split(f.ubootEnv, ",")
		offs := strings.Split(f.envOffset, ",")
		if len(paths) > 2 || len(offs) > len(paths) {
			return nil, cli.Usagef("--uboot-env takes one or two paths and --env-offset at most one offset per path")
		}
		var locs []watchdog.UBootLocation
		for i, p := range paths {
			off, err := parseSize("--env-offset", offs[min(i, len(offs)-1)])
			if err != nil {
				return nil, err
			}
			if size > watchdog.MaxUBootEnvSize {
				return nil, cli.Usagef("--env-size %d is larger than %d", size, watchdog.MaxUBootEnvSize)
			}
			locs = append(locs, watchdog.UBootLocation{Path: p, Offset: off, Size: int(size)})
		}
		bc.UBootEnv, bc.FWEnvConfig, bc.GRUBEnv, bc.GRUBEnvSize = locs, "", "", 0
	case f.fwEnvConfig != "":
		bc.UBootEnv, bc.FWEnvConfig, bc.GRUBEnv, bc.GRUBEnvSize = nil, f.fwEnvConfig, "", 0
	case f.grubenv != "":
		bc.UBootEnv, bc.FWEnvConfig, bc.GRUBEnv, bc.GRUBEnvSize = nil, "", f.grubenv, 0
	case !bc.Configured():
		return nil, cli.Usagef("no bootloader environment: give --uboot-env PATH --env-size N, --fw-env-config FILE, --grubenv PATH, or --config FILE with a boot section")
	}
	if f.attempts != 0 {
		bc.Attempts = f.attempts
	}
	if err := bc.Validate(); err != nil {
		return nil, err
	}
	env, where, err := bc.OpenEnv()
	if err != nil {
		return nil, err
	}
	s := &bootSetup{bc: &watchdog.BootControl{Env: env, Attempts: bc.AttemptsOrDefault()}, where: where}

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
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
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

func runBootStatus(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newBootFlags("boot status", stderr, false)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usagef("unexpected argument %q", pos[0])
	}
	s, err := f.setup()
	if err != nil {
		return err
	}
	return s.report(stdout, f, "")
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

func runBootArm(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newBootFlags("boot arm", stderr, false)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	slot, err := slotArg(pos)
	if err != nil {
		return err
	}
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
	return s.report(stdout, f, fmt.Sprintf("armed %s with %d attempts", slot, s.bc.Attempts))
}

func runBootMarkGood(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newBootFlags("boot mark-good", stderr, true)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usagef("unexpected argument %q (the slot is the booted one; --slot overrides)", pos[0])
	}
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
	return s.report(stdout, f, fmt.Sprintf("marked %s good", slot))
}

func runBootMarkBad(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newBootFlags("boot mark-bad", stderr, false)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	slot, err := slotArg(pos)
	if err != nil {
		return err
	}
	s, err := f.setup()
	if err != nil {
		return err
	}
	if err := s.bc.MarkBad(slot); err != nil {
		return err
	}
	return s.report(stdout, f, fmt.Sprintf("marked %s bad", slot))
}
