//go:build linux

package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/bootorbit/bootorbit/flightd"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/spf13/cobra"
)

// slotFlagsHelp says where the slots come from, for every slot and update
// command's description.
const slotFlagsHelp = `The slots are named by --config FILE (its slots section), or by
--state-dir DIR --slot-a KIND:PATH[:SIZE] --slot-b KIND:PATH[:SIZE], KIND dir
(a mounted filesystem) or raw (a device or file; SIZE in bytes or with a unit).`

func init() {
	commands.Group("slot", "inspect the A/B slots", `The slot commands read the A/B slot states and read an installed slot back
from its medium. They never write a slot; flightd update does.

`+slotFlagsHelp)
	commands.Add("slot", func() *cobra.Command {
		var f slotFlags
		c := &cobra.Command{
			Use:   "status",
			Short: "show the state of the A/B slots (content state, image, digest, booted slot)",
			Long: `Status prints each slot's state (empty, writing, written, pending, good, bad),
its backend, the image and digest recorded at install, and which slot is
booted.

` + slotFlagsHelp,
			Example: `  flightd slot status --config /etc/flightd.json
  flightd slot status --state-dir /var/lib/flightd --slot-a raw:/dev/mmcblk0p2 --slot-b raw:/dev/mmcblk0p3 --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runSlotStatus(c, &f) },
		}
		f.register(c)
		return c
	})
	commands.Add("slot", func() *cobra.Command {
		var f slotFlags
		c := &cobra.Command{
			Use:   "verify SLOT",
			Short: "read an installed slot back from the medium and compare it with the digest recorded at install",
			Long: `Verify reads SLOT (A or B) back from its medium, past the page cache, and
compares it with the digest recorded when it was installed. It exits 1 on a
mismatch.

` + slotFlagsHelp,
			Example: `  flightd slot verify B --config /etc/flightd.json
  flightd slot verify B --config /etc/flightd.json --json`,
			Args: func(_ *cobra.Command, args []string) error { _, err := slotIDArg(args); return err },
			RunE: func(c *cobra.Command, args []string) error { return runSlotVerify(c, &f, args) },
		}
		f.register(c)
		return c
	})
}

// slotFlags are the flags both slot commands take.
type slotFlags struct {
	config, stateDir, slotA, slotB, cmdline, varDir string
	jsonOut, verbose                                bool
}

func (f *slotFlags) register(c *cobra.Command) {
	fs := c.Flags()
	fs.StringVar(&f.config, "config", "", "flightd configuration `FILE` (JSON)")
	f.registerDirect(c)
	fs.StringVar(&f.cmdline, "cmdline", "", "kernel command line `FILE` naming the booted slot (default /proc/cmdline)")
	cli.JSONFlag(c, &f.jsonOut)
	cli.VerboseFlag(c, &f.verbose)
}

// registerDirect adds the flags that name the slots without a
// configuration file.
func (f *slotFlags) registerDirect(c *cobra.Command) {
	fs := c.Flags()
	fs.StringVar(&f.stateDir, "state-dir", "", "slot state `DIR` (instead of --config)")
	fs.StringVar(&f.slotA, "slot-a", "", "slot A as `KIND:PATH[:SIZE]`, KIND dir or raw (instead of --config)")
	fs.StringVar(&f.slotB, "slot-b", "", "slot B as `KIND:PATH[:SIZE]` (instead of --config)")
	fs.StringVar(&f.varDir, "var-dir", "", "persistent /var `DIR` (instead of --config)")
}

func parseSlotFlag(name, v string) (flightd.SlotConfig, error) {
	kind, rest, ok := strings.Cut(v, ":")
	if !ok || rest == "" {
		return flightd.SlotConfig{}, cli.Usagef("--%s %q: want KIND:PATH[:SIZE]", name, v)
	}
	c := flightd.SlotConfig{Backend: kind, Path: rest}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && kind == "raw" {
		if n, err := cli.ParseSize(rest[i+1:]); err == nil {
			c.Path, c.Size = rest[:i], n
		}
	}
	return c, nil
}

// slotsConfig is the slots section from --config or from the direct
// flags, with --cmdline applied.
func (f *slotFlags) slotsConfig() (flightd.SlotsConfig, error) {
	var sc flightd.SlotsConfig
	switch {
	case f.config != "" && (f.stateDir != "" || f.slotA != "" || f.slotB != ""):
		return sc, cli.Usagef("--config and --state-dir/--slot-a/--slot-b are exclusive")
	case f.config != "":
		c, err := flightd.LoadConfig(f.config)
		if err != nil {
			return sc, err
		}
		sc = c.Slots
	case f.stateDir != "" && f.slotA != "" && f.slotB != "":
		a, err := parseSlotFlag("slot-a", f.slotA)
		if err != nil {
			return sc, err
		}
		b, err := parseSlotFlag("slot-b", f.slotB)
		if err != nil {
			return sc, err
		}
		sc = flightd.SlotsConfig{StateDir: f.stateDir, A: a, B: b, VarDir: f.varDir}
		if err := sc.Validate(); err != nil {
			return sc, err
		}
	default:
		return sc, cli.Usagef("give --config FILE, or --state-dir, --slot-a and --slot-b")
	}
	if f.cmdline != "" {
		sc.Cmdline = f.cmdline
	}
	return sc, nil
}

// open builds the slot manager from --config or from the direct flags; a
// bench host whose command line names no slot is allowed.
func (f *slotFlags) open(log *slog.Logger) (*slots.Manager, error) {
	sc, err := f.slotsConfig()
	if err != nil {
		return nil, err
	}
	o, err := sc.SlotOptions(true)
	if err != nil {
		return nil, err
	}
	o.Log = log
	return slots.Open(o)
}

func runSlotStatus(c *cobra.Command, f *slotFlags) error {
	stdout := c.OutOrStdout()
	m, err := f.open(cli.Logger(c.ErrOrStderr(), f.verbose))
	if err != nil {
		return err
	}
	st := m.Status()
	if f.jsonOut {
		return cli.WriteJSON(stdout, st)
	}
	booted := string(st.Booted)
	if booted == "" {
		booted = "unknown (no rauc.slot= on the kernel command line)"
	}
	fmt.Fprintf(stdout, "booted slot: %s\n", booted)
	for _, s := range st.Slots {
		mark := ""
		if s.Booted {
			mark = "  (booted)"
		}
		fmt.Fprintf(stdout, "slot %s: %s%s\n", s.ID, s.State, mark)
		fmt.Fprintf(stdout, "  backend: %s %s\n", s.Backend, s.Path)
		if s.Format != "" {
			fmt.Fprintf(stdout, "  device:  %s (new %s at every install)\n", s.Device, s.Format)
		}
		if s.Formatted {
			fmt.Fprintf(stdout, "  formatted: fresh %s mounted by Prepare, not yet installed\n", s.Format)
		}
		if s.Image != "" {
			fmt.Fprintf(stdout, "  image:   %s\n", s.Image)
		}
		if s.Digest != "" {
			fmt.Fprintf(stdout, "  digest:  %s\n", s.Digest)
		}
		if s.Size != 0 {
			fmt.Fprintf(stdout, "  size:    %d bytes\n", s.Size)
		}
		if s.Reason != "" {
			fmt.Fprintf(stdout, "  reason:  %s\n", s.Reason)
		}
		if !s.Changed.IsZero() {
			fmt.Fprintf(stdout, "  changed: %s\n", s.Changed.Format("2006-01-02T15:04:05Z"))
		}
	}
	return nil
}

func runSlotVerify(c *cobra.Command, f *slotFlags, args []string) error {
	stdout := c.OutOrStdout()
	slot, err := slotIDArg(args)
	if err != nil {
		return err
	}
	m, err := f.open(cli.Logger(c.ErrOrStderr(), f.verbose))
	if err != nil {
		return err
	}
	r, err := m.Verify(c.Context(), slot)
	if err != nil {
		return err
	}
	if f.jsonOut {
		if err := cli.WriteJSON(stdout, r); err != nil {
			return err
		}
	} else if r.OK {
		fmt.Fprintf(stdout, "slot %s (%s): ok, %s\n", r.Slot, r.State, r.Actual)
	} else {
		fmt.Fprintf(stdout, "slot %s (%s): MISMATCH\n  recorded: %s\n  on disk:  %s\n", r.Slot, r.State, r.Expected, r.Actual)
	}
	if !r.OK {
		return fmt.Errorf("%w: slot %s", slots.ErrVerify, r.Slot)
	}
	return nil
}
