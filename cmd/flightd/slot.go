//go:build linux

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/bootorbit/bootorbit/flightd"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/slots"
)

func init() {
	commands.Add(cli.Command{
		Name:    "slot status",
		Args:    "[--config FILE | --state-dir DIR --slot-a KIND:PATH[:SIZE] --slot-b KIND:PATH[:SIZE]] [--cmdline FILE] [--json]",
		Summary: "show the state of the A/B slots (content state, image, digest, booted slot)",
		Run:     runSlotStatus,
	})
	commands.Add(cli.Command{
		Name:    "slot verify",
		Args:    "SLOT [--config FILE | --state-dir DIR --slot-a ... --slot-b ...] [--json]",
		Summary: "read an installed slot back from the medium and compare it with the digest recorded at install",
		Run:     runSlotVerify,
	})
}

// slotFlags are the flags both slot commands take.
type slotFlags struct {
	config, stateDir, slotA, slotB, cmdline, varDir string
	jsonOut                                         bool
}

func (f *slotFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "flightd configuration `FILE` (JSON)")
	fs.StringVar(&f.stateDir, "state-dir", "", "slot state `DIR` (instead of --config)")
	fs.StringVar(&f.slotA, "slot-a", "", "slot A as `KIND:PATH[:SIZE]`, KIND dir or raw (instead of --config)")
	fs.StringVar(&f.slotB, "slot-b", "", "slot B as `KIND:PATH[:SIZE]` (instead of --config)")
	fs.StringVar(&f.varDir, "var-dir", "", "persistent /var `DIR` (instead of --config)")
	fs.StringVar(&f.cmdline, "cmdline", "", "kernel command line `FILE` naming the booted slot (default /proc/cmdline)")
	fs.BoolVar(&f.jsonOut, "json", false, "print JSON for scripts")
}

func parseSlotFlag(name, v string) (flightd.SlotConfig, error) {
	kind, rest, ok := strings.Cut(v, ":")
	if !ok || rest == "" {
		return flightd.SlotConfig{}, cli.Usagef("--%s %q: want KIND:PATH[:SIZE]", name, v)
	}
	c := flightd.SlotConfig{Backend: kind, Path: rest}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && kind == "raw" {
		if n, err := strconv.ParseInt(rest[i+1:], 10, 64); err == nil {
			c.Path, c.Size = rest[:i], n
		}
	}
	return c, nil
}

// open builds the slot manager from --config or from the direct flags.
func (f *slotFlags) open() (*slots.Manager, error) {
	var sc flightd.SlotsConfig
	switch {
	case f.config != "" && (f.stateDir != "" || f.slotA != "" || f.slotB != ""):
		return nil, cli.Usagef("--config and --state-dir/--slot-a/--slot-b are exclusive")
	case f.config != "":
		c, err := flightd.LoadConfig(f.config)
		if err != nil {
			return nil, err
		}
		sc = c.Slots
	case f.stateDir != "" && f.slotA != "" && f.slotB != "":
		a, err := parseSlotFlag("slot-a", f.slotA)
		if err != nil {
			return nil, err
		}
		b, err := parseSlotFlag("slot-b", f.slotB)
		if err != nil {
			return nil, err
		}
		sc = flightd.SlotsConfig{StateDir: f.stateDir, A: a, B: b, VarDir: f.varDir}
		if err := sc.Validate(); err != nil {
			return nil, err
		}
	default:
		return nil, cli.Usagef("give --config FILE, or --state-dir, --slot-a and --slot-b")
	}
	if f.cmdline != "" {
		sc.Cmdline = f.cmdline
	}
	o, err := sc.SlotOptions(true)
	if err != nil {
		return nil, err
	}
	return slots.Open(o)
}

func runSlotStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f slotFlags
	fs := cli.FlagSet("slot status", stderr)
	f.register(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return cli.Usagef("unexpected arguments %q", fs.Args())
	}
	m, err := f.open()
	if err != nil {
		return err
	}
	st := m.Status()
	if f.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
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

func runSlotVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f slotFlags
	fs := cli.FlagSet("slot verify", stderr)
	f.register(fs)
	// The slot may come before, between or after the flags.
	var pos []string
	for {
		if err := cli.Parse(fs, args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	slot, err := slotIDArg(pos)
	if err != nil {
		return err
	}
	m, err := f.open()
	if err != nil {
		return err
	}
	r, err := m.Verify(ctx, slot)
	if err != nil {
		return err
	}
	if f.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
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
