//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/bootorbit/bootorbit/flightd"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/spf13/cobra"
)

func init() {
	commands.Group("update", "install, arm, reconcile and commit updates: slot states and bootloader environment together",
		`The update commands are the update steps of flightd as commands, through the
same flightd.Updater: the only code that writes both the slot states and the
bootloader environment, in the orders that keep the environment from booting
a slot that is not pending or good (docs/boot.md, "Updates").

`+slotFlagsHelp+`
`+bootEnvHelp)
	add := func(use, short, long, example string, args cobra.PositionalArgs, install bool, run func(*cobra.Command, *updateFlags, []string) error) {
		commands.Add("update", func() *cobra.Command {
			f := &updateFlags{boot: &bootFlags{}}
			c := &cobra.Command{Use: use, Short: short, Long: long + "\n\n" + slotFlagsHelp + "\n" + bootEnvHelp, Example: example, Args: args,
				RunE: func(c *cobra.Command, args []string) error { return run(c, f, args) }}
			f.register(c, install)
			return c
		})
	}
	add("install SLOT FILE...", "write an image into the inactive SLOT, verify it, and arm it for a trial boot",
		`Install writes an image into SLOT, which must not be the booted slot: FILE is
the image's layer tars in order (a directory slot), or with --raw the
filesystem image itself (a raw slot). Every FILE is opened and checked before
anything is written. The slot is then read back and verified against the
digest (--digest, else the one computed while writing), recorded written, and
armed for a trial boot with --attempts attempts.`,
		`  flightd update install B rootfs.tar --config /etc/flightd.json --label os:2.1
  flightd update install B rootfs.ext4 --raw --digest sha256:4f2c... --config /etc/flightd.json`,
		func(_ *cobra.Command, args []string) error {
			if len(args) < 2 {
				return cli.Usagef("want SLOT and at least one FILE, got %d arguments", len(args))
			}
			return nil
		}, true, runUpdateInstall)
	add("arm SLOT", "arm an installed (written or good) SLOT for a trial boot: slot state pending, then the environment",
		`Arm records SLOT pending, then makes it the primary in the environment with
--attempts attempts, as a trial. SLOT must be installed (written or good)
and not booted.`,
		`  flightd update arm B --config /etc/flightd.json`,
		slotIDArgs, false, func(c *cobra.Command, f *updateFlags, args []string) error {
			return runUpdateSlot(c, f, args, func(u *flightd.Updater, slot slots.SlotID) (string, error) {
				return fmt.Sprintf("armed slot %s with %d attempts", slot, u.Boot.Attempts), u.Arm(slot)
			})
		})
	add("disarm SLOT", "abandon an armed update before its trial boot: drop SLOT from the environment, then record it bad",
		`Disarm abandons an armed update before its trial boot: SLOT leaves the boot
order first, then its state is recorded bad, so that a power cut between the
two never leaves the environment booting a slot recorded bad.`,
		`  flightd update disarm B --config /etc/flightd.json`,
		slotIDArgs, false, func(c *cobra.Command, f *updateFlags, args []string) error {
			return runUpdateSlot(c, f, args, func(u *flightd.Updater, slot slots.SlotID) (string, error) {
				return fmt.Sprintf("disarmed slot %s", slot), u.Disarm(slot, "by command")
			})
		})
	add("reconcile", "make the slot states and the bootloader environment agree (run at every start, before the health checks)",
		`Reconcile resolves what a power cut between two writes of an update step
left: it only removes slots from what the environment can boot, ends trials,
completes an arm whose slot is already pending, and puts the booted good slot
back as the fallback. It prints every change and every disagreement it
cannot resolve alone.`,
		`  flightd update reconcile --config /etc/flightd.json
  flightd update reconcile --config /etc/flightd.json --json`,
		cli.NoArgs, false, runUpdateReconcile)
	add("commit", "after the health checks passed: mark the booted slot good in the environment, then in the slot state",
		`Commit ends the trial of the booted slot once its health checks passed: its
attempts are reset and the trial ended in the environment, then the slot is
recorded good.`,
		`  flightd update commit --config /etc/flightd.json`,
		func(_ *cobra.Command, args []string) error {
			if len(args) != 0 {
				return cli.Usagef("unexpected argument %q (the booted slot is committed)", args[0])
			}
			return nil
		}, false, runUpdateCommit)
}

// updateFlags are the boot flags (environment, --config, --cmdline,
// --attempts, --json, -v) plus the slot flags of `flightd slot`.
type updateFlags struct {
	boot   *bootFlags
	slot   slotFlags
	raw    bool
	digest string
	label  string
}

func (f *updateFlags) register(c *cobra.Command, install bool) {
	f.boot.register(c, false)
	f.slot.registerDirect(c)
	if install {
		fs := c.Flags()
		fs.BoolVar(&f.raw, "raw", false, "FILE is the filesystem image itself (raw slot), not a layer tar")
		fs.StringVar(&f.digest, "digest", "", "expected content digest, `sha256:HEX` (raw: of the image bytes; dir: the tree digest); default: hashed while writing")
		fs.StringVar(&f.label, "label", "", "image label to record (e.g. the image reference)")
	}
}

// checkAttempts refuses an --attempts given out of 1..9 as bad usage (0 is
// refused rather than read as "the default").
func (f *updateFlags) checkAttempts() error {
	if f.boot.given("attempts") {
		if err := watchdog.CheckAttempts(f.boot.attempts); err != nil {
			return cli.Usagef("--attempts: %v", err)
		}
	}
	return nil
}

// open builds the Updater through flightd.Config.OpenUpdater, as flightd
// itself does: the slots from --config or the slot flags, the environment
// from --config or the environment flags, the booted slot from the kernel
// command line. It also returns where the environment lives, for the
// report.
func (f *updateFlags) open() (*flightd.Updater, string, error) {
	if err := f.checkAttempts(); err != nil {
		return nil, "", err
	}
	f.slot.config, f.slot.cmdline = f.boot.config, f.boot.cmdline
	sc, err := f.slot.slotsConfig()
	if err != nil {
		return nil, "", err
	}
	_, bc, err := f.boot.bootConfig()
	if err != nil {
		return nil, "", err
	}
	_, where, err := bc.OpenEnv()
	if err != nil {
		return nil, "", err
	}
	cfg := flightd.Config{Slots: sc, Boot: bc}
	u, err := cfg.OpenUpdater(f.boot.log())
	if errors.Is(err, slots.ErrCmdline) {
		// An update needs to know which slot runs; say so first.
		err = fmt.Errorf("%w: %w", flightd.ErrNoBootedSlot, err)
	}
	if err != nil {
		return nil, "", err
	}
	return u, where, nil
}

// updateOut is the --json document of every update command.
type updateOut struct {
	Action    string                   `json:"action"`
	Reconcile *flightd.ReconcileResult `json:"reconcile,omitempty"`
	Install   *slots.InstallResult     `json:"install,omitempty"`
	Slots     slots.Status             `json:"slots"`
	Boot      *watchdog.Status         `json:"boot,omitempty"`
	// EnvCopies and Warnings are as in the boot commands' document: the
	// redundant U-Boot copy in use, and the lost redundancy.
	EnvCopies *watchdog.UBootRedundancy `json:"env_copies,omitempty"`
	Warnings  []string                  `json:"warnings,omitempty"`
	Env       string                    `json:"env"`
}

func (f *updateFlags) report(stdout io.Writer, u *flightd.Updater, where string, out updateOut) error {
	out.Slots, out.Env = u.Slots.Status(), where
	st, err := u.Boot.Status(string(u.Booted))
	if err == nil {
		out.Boot = &st
		if out.EnvCopies, err = envCopies(u.Boot.Env); err == nil {
			if w := out.EnvCopies.Warning(); w != "" {
				out.Warnings = append(out.Warnings, w)
			}
		}
	}
	if f.boot.json {
		if eerr := cli.WriteJSON(stdout, out); eerr != nil {
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
	fmt.Fprintf(stdout, "environment    %s\n%s", where, st.Text())
	for _, w := range out.Warnings {
		fmt.Fprintf(stdout, "WARNING: %s\n", w)
	}
	return nil
}

func runUpdateInstall(c *cobra.Command, f *updateFlags, pos []string) error {
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
	if err := f.checkAttempts(); err != nil {
		return err
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
	u, where, err := f.open()
	if err != nil {
		return err
	}
	res, err := u.Install(c.Context(), slot, img)
	if err != nil {
		return err
	}
	return f.report(c.OutOrStdout(), u, where, updateOut{Action: fmt.Sprintf("installed %s into slot %s (%d bytes, %s) and armed it with %d attempts", f.label, slot, res.Bytes, res.Digest, u.Boot.Attempts), Install: res})
}

// runUpdateSlot runs an update command that takes one SLOT: it opens the
// updater and reports the action act describes when act succeeded.
func runUpdateSlot(c *cobra.Command, f *updateFlags, args []string, act func(*flightd.Updater, slots.SlotID) (string, error)) error {
	slot, err := slotIDArg(args)
	if err != nil {
		return err
	}
	u, where, err := f.open()
	if err != nil {
		return err
	}
	action, err := act(u, slot)
	if err != nil {
		return err
	}
	return f.report(c.OutOrStdout(), u, where, updateOut{Action: action})
}

func runUpdateReconcile(c *cobra.Command, f *updateFlags, _ []string) error {
	u, where, err := f.open()
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
	return f.report(c.OutOrStdout(), u, where, updateOut{Action: action, Reconcile: res})
}

func runUpdateCommit(c *cobra.Command, f *updateFlags, _ []string) error {
	u, where, err := f.open()
	if err != nil {
		return err
	}
	if err := u.Commit(); err != nil {
		return err
	}
	return f.report(c.OutOrStdout(), u, where, updateOut{Action: fmt.Sprintf("committed slot %s", u.Booted)})
}

// slotIDArgs takes exactly one SLOT argument, A or B.
func slotIDArgs(_ *cobra.Command, args []string) error {
	_, err := slotIDArg(args)
	return err
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
