package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/bootorbit/bootorbit/hil/vm"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Group("vm", "the QEMU arm64 board (i6300esb watchdog, real Linux driver)",
		`The vm commands boot hil/vm's QEMU arm64 board, whose i6300esb watchdog is
driven by the real Linux driver. They need qemu-system-aarch64 and an arm64
kernel package (hil/vm/fetch-kernel.sh).`)
	commands.Add("vm", func() *cobra.Command {
		var f vmWatchdogFlags
		c := &cobra.Command{
			Use:   "watchdog",
			Short: "boot the QEMU arm64 board (i6300esb) and drive the real Linux watchdog driver: keepalive, then a watchdog reset; print the figures",
			Long: `Watchdog boots the board twice: once petting the watchdog for --periods
timeouts (it must not reset), once stopping the keepalives (it must reset
within the timeout). It prints the figures of both runs: boot time, the
driver's identity and options, the timeout asked and read back, keepalive
gaps, the boot status after the reset.`,
			Example: `  hil vm watchdog --kernel-dir hil/vm/_kernel-cache
  hil vm watchdog --timeout 5s --periods 2 --console console.log --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runVMWatchdog(c, &f) },
		}
		fs := c.Flags()
		fs.StringVar(&f.kdir, "kernel-dir", "", "extracted arm64 kernel package (`DIR` from hil/vm/fetch-kernel.sh; default $"+vm.KernelDirEnv+" or hil/vm/_kernel-cache)")
		cli.DurationVar(fs, &f.timeout, "timeout", 2*time.Second, "watchdog timeout, whole seconds from 1s to 2046s (what the i6300esb driver takes)")
		fs.IntVar(&f.periods, "periods", 3, "how many timeouts to pet for before stopping")
		fs.StringVar(&f.console, "console", "", "write the serial console of both runs to `FILE`")
		cli.JSONFlag(c, &f.json)
		cli.VerboseFlag(c, &f.verbose)
		return c
	})
}

type vmWatchdogFlags struct {
	kdir, console string
	timeout       time.Duration
	periods       int
	json, verbose bool
}

func runVMWatchdog(c *cobra.Command, f *vmWatchdogFlags) error {
	ctx, stdout := c.Context(), c.OutOrStdout()
	if f.timeout < time.Second || f.timeout > 2046*time.Second || f.timeout%time.Second != 0 {
		return cli.Usagef("--timeout %v: want whole seconds from 1s to 2046s", f.timeout)
	}
	timeout := int(f.timeout / time.Second)
	if f.periods < 1 || f.periods > 100 {
		return cli.Usagef("--periods %d: want 1..100", f.periods)
	}
	dir := f.kdir
	if dir == "" {
		dir = os.Getenv(vm.KernelDirEnv)
	}
	if dir == "" {
		dir = "hil/vm/_kernel-cache"
	}
	k, err := vm.FindKernel(dir)
	if err != nil {
		return err
	}
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		return fmt.Errorf("qemu-system-aarch64 (Debian qemu-system-arm): %w", err)
	}
	work, err := os.MkdirTemp("", "bootorbit-vm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	t0 := time.Now()
	b, err := vm.NewBoard(ctx, qemu, k, work)
	if err != nil {
		return err
	}
	if f.console != "" {
		f, err := os.Create(f.console)
		if err != nil {
			return err
		}
		defer f.Close()
		b.Console = f
	}
	if f.verbose {
		fmt.Fprintf(c.ErrOrStderr(), "board: kernel %s, /init %d bytes, initramfs %d bytes, modules %d\n", k.Version, b.InitSize, b.InitrdSize, len(b.Mods))
	}
	if !f.json {
		fmt.Fprintf(stdout, "board: kernel %s, /init %d bytes, initramfs %d bytes (newc, uncompressed), modules %d, built in %v\n",
			k.Version, b.InitSize, b.InitrdSize, len(b.Mods), time.Since(t0).Round(time.Millisecond))
	}
	limit := time.Duration(120+timeout*f.periods*3) * time.Second
	kctx, cancel := context.WithTimeout(ctx, limit)
	keep, err := b.RunKeepalive(kctx, timeout, f.periods)
	cancel()
	if err != nil {
		return fmt.Errorf("keepalive run: %w", err)
	}
	ectx, cancel := context.WithTimeout(ctx, limit)
	exp, err := b.RunExpire(ectx, timeout, f.periods)
	cancel()
	if err != nil {
		return fmt.Errorf("expire run: %w", err)
	}
	if f.json {
		return cli.WriteJSON(stdout, struct {
			Kernel    string  `json:"kernel"`
			Keepalive *vm.Run `json:"keepalive"`
			Expire    *vm.Run `json:"expire"`
		}{k.Version, keep, exp})
	}
	return vm.WriteWatchdogFigures(stdout, keep, exp)
}
