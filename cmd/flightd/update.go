//go:build linux

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/bootorbit/bootorbit/flightd"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
)

const updateArgs = "[--config FILE | --state-dir DIR --slot-a KIND:PATH[:SIZE] --slot-b KIND:PATH[:SIZE] ENV] [--cmdline FILE] [--attempts N] [--json]"

func init() {
	commands.Add(cli.Command{
		Name:    "update install",
		Args:    "SLOT FILE... [--raw] [--digest sha256:HEX] [--label TEXT] " + updateArgs,
		Summary: "write an image into the inactive SLOT, verify it, and arm it for a trial boot (FILE: layer tars in order; with --raw the filesystem image itself)",
		Run:     runUpdateInstall,
	})
	commands.Add(cli.Command{
		Name:    "update arm",
		Args:    "SLOT " + updateArgs,
		Summary: "arm an installed (written or good) SLOT for a trial boot: slot state pending, then the environment",
		Run:     runUpdateArm,
	})
	commands.Add(cli.Command{
		Name:    "update disarm",
		Args:    "SLOT " + updateArgs,
		Summary: "abandon an armed update before its trial boot: drop SLOT from the environment, then record it bad",
		Run:     runUpdateDisarm,
	})
	commands.Add(cli.Command{
		Name:    "update reconcile",
		Args:    updateArgs,
		Summary: "make the slot states and the bootloader environment agree (run at every start, before the health checks)",
		Run:     runUpdateReconcile,
	})
	commands.Add(cli.Command{
		Name:    "update commit",
		Args:    updateArgs,
		Summary: "after the health checks passed: mark the booted slot good in the environment, then in the slot state",
		Run:     runUpdateCommit,
	})
}

// updateFlags are the boot flags (environment, --config, --cmdline,
// --attempts, --json) plus the slot flags of `flightd slot`.
type updateFlags struct {
	boot   *bootFlags
	slot   slotFlags
	raw    bool
	digest string
	label  string
}

func newUpdateFlags(name string, stderr io.Writer, install bool) (*flag.FlagSet, *updateFlags) {
	fs, bf := newBootFlags(name, stderr, false)
	f := &updateFlags{boot: bf}
	fs.StringVar(&f.slot.stateDir, "state-dir", "", "slot state `DIR` (instead of --config)")
	fs.StringVar(&f.slot.slotA, "slot-a", "", "slot A as `KIND:PATH[:SIZE]`, KIND dir or raw (instead of --config)")
	fs.StringVar(&f.slot.slotB, "slot-b", "", "slot B as `KIND:PATH[:SIZE]` (instead of --config)")
	fs.StringVar(&f.slot.varDir, "var-dir", "", "persistent /var `DIR` (instead of --config)")
	if install {
		fs.BoolVar(&f.raw, "raw", false, "FILE is the filesystem image itself (raw slot), not a layer tar")
		fs.StringVar(&f.digest, "digest", "", "expected content digest, sha256:HEX (raw: of the image bytes; dir: the tree digest); default: hashed while writing")
		fs.StringVar(&f.label, "label", "", "image label to record (e.g. the image reference)")
	}
	return fs, f
}

// parse parses the command line; an --attempts given out of 1..9 is bad
// usage (0 is refused rather than read as "the default").
func (f *updateFlags) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return nil, err
	}
	if cli.Given(fs, "attempts") {
		if err := watchdog.CheckAttempts(f.boot.attempts); err != nil {
			return nil, cli.Usagef("--attempts: %v", err)
		}
	}
	return pos, nil
}

// open builds the Updater: slots from --config or the slot flags, the
// environment from --config or the environment flags, the booted slot
// from the kernel command line.
func (f *updateFlags) open(stderr io.Writer) (*flightd.Updater, *bootSetup, error) {
	f.slot.config, f.slot.cmdline = f.boot.config, f.boot.cmdline
	m, err := f.slot.open()
	if err != nil {
		return nil, nil, err
	}
	bs, err := f.boot.setup()
	if err != nil {
		return nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return &flightd.Updater{Slots: m, Boot: bs.bc, Booted: m.Status().Booted, Log: log}, bs, nil
}

// updateOut is the --json document of every update command.
type updateOut struct {
	Action    string                   `json:"action"`
	Reconcile *flightd.ReconcileResult `json:"reconcile,omitempty"`
	Install   *slots.InstallResult     `json:"install,omitempty"`
	Slots     slots.Status             `json:"slots"`
	Boot      *watchdog.Status         `json:"boot,omitempty"`
	Env       string                   `json:"env"`
}

func (f *updateFlags) report(stdout io.Writer, u *flightd.Updater, bs *bootSetup, out updateOut) error {
	out.Slots, out.Env = u.Slots.Status(), bs.where
	st, err := bs.bc.Status(string(u.Booted))
	if err == nil {
		out.Boot = &st
	}
	if f.boot.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if eerr := enc.Encode(out); eerr != nil {
			return eerr
		}
		return err
	}
	fmt.Fprintln(stdout, out.Action)
	if r := out.Reconcile; r != nil {
		for _, a := range r.Actions {
			fmt.Fprintf(stdout, "  did: %s\n", a)
		}
		for _, w := range r.Warnings {
			fmt.Fprintf(stdout, "  WARNING: %s\n", w)
		}
		if r.Trial {
			fmt.Fprintf(stdout, "  slot %s is on trial: run the health checks, then `flightd update commit`\n", r.Booted)
		}
	}
	for _, s := range out.Slots.Slots {
		booted := ""
		if s.Booted {
			booted = " (booted)"
		}
		line := fmt.Sprintf("slot %s%-9s  %-8s %s", s.ID, booted, s.State, s.Image)
		if s.Reason != "" {
			line += " (" + s.Reason + ")"
		}
		fmt.Fprintln(stdout, strings.TrimRight(line, " "))
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "environment    %s\n%s", bs.where, st.Text())
	return nil
}

func runUpdateInstall(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newUpdateFlags("update install", stderr, true)
	pos, err := f.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return cli.Usagef("want SLOT and at least one FILE, got %d arguments", len(pos))
	}
	slot, err := slots.ParseSlotID(pos[0])
	if err != nil {
		return cli.Usagef("%v", err)
	}
	if f.raw && len(pos) != 2 {
		return cli.Usagef("--raw takes exactly one FILE (the filesystem image), got %d", len(pos)-1)
	}
	if err := flightd.CheckImageDigest(f.digest); err != nil {
		return cli.Usagef("--digest: %v", err)
	}
	// Every FILE is opened and checked before anything is written: a bad
	// argument found halfway would leave the slot dropped and "writing".
	img := slots.Image{Label: f.label, RawStream: f.raw, Digest: f.digest}
	for _, p := range pos[1:] {
		fh, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("image FILE: %w", err)
		}
		defer fh.Close()
		if fi, err := fh.Stat(); err != nil {
			return fmt.Errorf("image FILE: %w", err)
		} else if fi.IsDir() {
			return cli.Usagef("FILE %s is a directory: want a layer tar (with --raw: the filesystem image)", p)
		}
		img.Layers = append(img.Layers, fh)
	}
	u, bs, err := f.open(stderr)
	if err != nil {
		return err
	}
	res, err := u.Install(ctx, slot, img)
	if err != nil {
		return err
	}
	return f.report(stdout, u, bs, updateOut{Action: fmt.Sprintf("installed %s into slot %s (%d bytes, %s) and armed it with %d attempts", f.label, slot, res.Bytes, res.Digest, bs.bc.Attempts), Install: res})
}

func runUpdateArm(_ context.Context, args []string, stdout, stderr io.Writer) error {
	return runUpdateSlot("update arm", args, stdout, stderr, func(u *flightd.Updater, bs *bootSetup, slot slots.SlotID) (string, error) {
		return fmt.Sprintf("armed slot %s with %d attempts", slot, bs.bc.Attempts), u.Arm(slot)
	})
}

func runUpdateDisarm(_ context.Context, args []string, stdout, stderr io.Writer) error {
	return runUpdateSlot("update disarm", args, stdout, stderr, func(u *flightd.Updater, _ *bootSetup, slot slots.SlotID) (string, error) {
		return fmt.Sprintf("disarmed slot %s", slot), u.Disarm(slot, "by command")
	})
}

// runUpdateSlot runs an update command that takes one SLOT: it parses the
// flags and the slot, opens the updater, and reports the action act
// describes when act succeeded.
func runUpdateSlot(name string, args []string, stdout, stderr io.Writer, act func(*flightd.Updater, *bootSetup, slots.SlotID) (string, error)) error {
	fs, f := newUpdateFlags(name, stderr, false)
	pos, err := f.parse(fs, args)
	if err != nil {
		return err
	}
	slot, err := slotIDArg(pos)
	if err != nil {
		return err
	}
	u, bs, err := f.open(stderr)
	if err != nil {
		return err
	}
	action, err := act(u, bs, slot)
	if err != nil {
		return err
	}
	return f.report(stdout, u, bs, updateOut{Action: action})
}

func runUpdateReconcile(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newUpdateFlags("update reconcile", stderr, false)
	pos, err := f.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usagef("unexpected argument %q", pos[0])
	}
	u, bs, err := f.open(stderr)
	if err != nil {
		return err
	}
	res, err := u.Reconcile()
	if err != nil {
		return err
	}
	action := "reconciled: slot states and environment already agreed"
	if len(res.Actions) > 0 {
		action = fmt.Sprintf("reconciled: %d changes", len(res.Actions))
	}
	return f.report(stdout, u, bs, updateOut{Action: action, Reconcile: res})
}

func runUpdateCommit(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newUpdateFlags("update commit", stderr, false)
	pos, err := f.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usagef("unexpected argument %q (the booted slot is committed)", pos[0])
	}
	u, bs, err := f.open(stderr)
	if err != nil {
		return err
	}
	if err := u.Commit(); err != nil {
		return err
	}
	return f.report(stdout, u, bs, updateOut{Action: fmt.Sprintf("committed slot %s", u.Booted)})
}

// slotIDArg is the one SLOT argument of a command, as a slot id.
func slotIDArg(pos []string) (slots.SlotID, error) {
	if len(pos) != 1 {
		return "", cli.Usagef("want exactly one SLOT (A or B), got %d arguments", len(pos))
	}
	id, err := slots.ParseSlotID(pos[0])
	if err != nil {
		return "", cli.Usagef("%v", err)
	}
	return id, nil
}
