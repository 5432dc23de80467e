package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/bootorbit/bootorbit/hil/vm"
	"github.com/bootorbit/bootorbit/internal/cli"
)

func init() {
	commands.Add(cli.Command{
		Name:    "vm watchdog",
		Args:    "[--kernel-dir DIR] [--timeout N] [--periods N] [--console FILE]",
		Summary: "boot the QEMU arm64 board (i6300esb) and drive the real Linux watchdog driver: keepalive, then a watchdog reset; print the figures",
		Run:     runVMWatchdog,
	})
}

func runVMWatchdog(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("vm watchdog", stderr)
	kdir := fs.String("kernel-dir", "", "extracted arm64 kernel package (`DIR` from hil/vm/fetch-kernel.sh; default $"+vm.KernelDirEnv+" or hil/vm/_kernel-cache)")
	timeout := fs.Int("timeout", 2, "watchdog timeout in whole seconds (the i6300esb driver takes 1..2046)")
	periods := fs.Int("periods", 3, "how many timeouts to pet for before stopping")
	console := fs.String("console", "", "write the serial console of both runs to `FILE`")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if *timeout < 1 || *timeout > 2046 {
		return cli.Usagef("--timeout %d: want 1..2046 seconds", *timeout)
	}
	if *periods < 1 || *periods > 100 {
		return cli.Usagef("--periods %d: want 1..100", *periods)
	}
	dir := *kdir
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
	if *console != "" {
		f, err := os.Create(*console)
		if err != nil {
			return err
		}
		defer f.Close()
		b.Console = f
	}
	fmt.Fprintf(stdout, "board: kernel %s, /init %d bytes, initramfs %d bytes (newc, uncompressed), modules %d, built in %v\n",
		k.Version, b.InitSize, b.InitrdSize, len(b.Mods), time.Since(t0).Round(time.Millisecond))
	limit := time.Duration(120+*timeout**periods*3) * time.Second
	kctx, cancel := context.WithTimeout(ctx, limit)
	keep, err := b.RunKeepalive(kctx, *timeout, *periods)
	cancel()
	if err != nil {
		return fmt.Errorf("keepalive run: %w", err)
	}
	ectx, cancel := context.WithTimeout(ctx, limit)
	exp, err := b.RunExpire(ectx, *timeout, *periods)
	cancel()
	if err != nil {
		return fmt.Errorf("expire run: %w", err)
	}
	return vm.WriteWatchdogFigures(stdout, keep, exp)
}
