package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/hil/link"
	"github.com/bootorbit/bootorbit/hil/vm"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/protocol/linksim"
	"github.com/bootorbit/bootorbit/watchdog/bootscripts"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("vm", func() *cobra.Command {
		var f vmABFlags
		c := &cobra.Command{
			Use:   "ab",
			Short: "run the A/B board under Debian's U-Boot: the update with a power cut, and the watchdog rollback; print what ran and the outcome",
			Long: `Ab builds the full QEMU arm64 board (Debian's U-Boot as firmware, the board's
variant of the shipped boot script, rootfs A and B, a raw U-Boot environment
partition, the i6300esb resetting the machine) and runs its scenarios:

  update    B holds a new image, armed from A; the power is cut during B's
            first boot, then B boots again, passes and commits.
  rollback  B holds an image that hangs; U-Boot tries it N times, each ended
            by the watchdog, then boots A, which marks B bad.
  flightd-boot    flightd (linux/arm64) in the guest: the factory image good in
            slot A boots; a ground on the host reads its housekeeping across
            hil/link's emulator (leo-fast, always up) with signed commands.
  flightd-update  the nominal update with flightd: the ground sends version 2
            (plan and delta bundle) across the link, flightd installs it into
            raw slot B, the ground activates B and reboots the vehicle by
            command, U-Boot boots B on trial, the health check passes and
            flightd marks B good (1.5 to 3 minutes).
  flightd-rollback  the watchdog rollback with flightd: the ground sends
            version 3, an image that hangs at boot, across the link; flightd
            installs it into B, the ground activates B and reboots; in B
            flightd takes the watchdog and the image freezes it (SIGSTOP);
            the i6300esb resets the board, U-Boot tries B N times, then boots
            A, where flightd records B bad and reports the rollback (a few
            minutes).

It prints, per scenario, the architecture, board, U-Boot and kernel that ran,
what U-Boot booted at each power-on, the boot variables as fw_printenv reads
them, and PASS or FAIL. It needs qemu-system-aarch64, u-boot-qemu, mkimage,
fw_printenv, mkfs.ext4, the Go toolchain and the kernel (hil/vm/fetch-kernel.sh).
The flightd scenarios build flightd for linux/arm64; --seed seeds the link.`,
			Example: `  hil vm ab
  hil vm ab --scenario rollback --console console.log --json
  hil vm ab --scenario flightd-boot,flightd-update --seed 7
  hil vm ab --scenario flightd-rollback`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runVMAB(c, &f) },
		}
		fs := c.Flags()
		fs.StringVar(&f.kdir, "kernel-dir", "", "extracted arm64 kernel package (`DIR` from hil/vm/fetch-kernel.sh; default $"+vm.KernelDirEnv+" or hil/vm/_kernel-cache)")
		fs.StringVar(&f.uboot, "uboot", "", "U-Boot for QEMU's arm64 virt machine (`FILE`; default $"+vm.UBootEnvVar+" or "+vm.DefaultUBoot+")")
		fs.StringVar(&f.scenarios, "scenario", "update,rollback", "scenarios to run, comma-separated: update, rollback, flightd-boot, flightd-update, flightd-rollback")
		fs.Uint64Var(&f.seed, "seed", 1, "seed of the emulated link's random decisions (flightd scenarios)")
		fs.StringVar(&f.console, "console", "", "write the serial console of every run to `FILE`")
		cli.JSONFlag(c, &f.json)
		return c
	})
}

type vmABFlags struct {
	kdir, uboot, scenarios, console string
	json                            bool
	seed                            uint64
}

func runVMAB(c *cobra.Command, f *vmABFlags) error {
	ctx, stdout := c.Context(), c.OutOrStdout()
	var run []string
	for _, s := range strings.Split(f.scenarios, ",") {
		switch s = strings.TrimSpace(s); s {
		case "update", "rollback", "flightd-boot", "flightd-update", "flightd-rollback":
			run = append(run, s)
		case "":
		default:
			return cli.Usagef("--scenario %q: want update, rollback, flightd-boot, flightd-update or flightd-rollback", s)
		}
	}
	if len(run) == 0 {
		return cli.Usagef("--scenario: name at least one")
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
	uboot := f.uboot
	if uboot == "" {
		uboot = os.Getenv(vm.UBootEnvVar)
	}
	if uboot == "" {
		uboot = vm.DefaultUBoot
	}
	if _, err := os.Stat(uboot); err != nil {
		return fmt.Errorf("U-Boot for qemu arm64 (Debian u-boot-qemu): %w", err)
	}
	work, err := os.MkdirTemp("", "bootorbit-ab-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	ab, err := vm.NewABBoard(bctx, qemu, uboot, k, work, bootscripts.UBootScript)
	cancel()
	if err != nil {
		return err
	}
	if f.console != "" {
		cf, err := os.Create(f.console)
		if err != nil {
			return err
		}
		defer cf.Close()
		ab.Console = cf
	}
	var reports []*vm.ABReport
	failed := false
	for _, s := range run {
		b, err := ab.Copy(s + ".img")
		if err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
		var r *vm.ABReport
		switch s {
		case "update":
			r, err = b.RunABUpdate(sctx)
		case "rollback":
			r, err = b.RunABRollback(sctx)
		default:
			r, err = runVMFlightd(sctx, b, s, f.seed)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		failed = failed || !r.OK()
		reports = append(reports, r)
		if !f.json {
			if err := r.WriteText(stdout); err != nil {
				return err
			}
		}
	}
	if f.json {
		if err := cli.WriteJSON(stdout, reports); err != nil {
			return err
		}
	}
	if failed {
		return fmt.Errorf("vm ab: a scenario failed")
	}
	return nil
}

// runVMFlightd runs a flightd scenario on board b over leo-fast, always
// up.
func runVMFlightd(ctx context.Context, b *vm.ABBoard, scenario string, seed uint64) (*vm.ABReport, error) {
	fb, err := vm.NewFlightdBoard(ctx, b)
	if err != nil {
		return nil, err
	}
	spec, err := link.Profile("leo-fast")
	if err != nil {
		return nil, err
	}
	spec.Schedule = linksim.Schedule{}
	switch scenario {
	case "flightd-boot":
		return fb.RunFlightdBoot(ctx, spec, seed)
	case "flightd-rollback":
		return fb.RunFlightdRollback(ctx, spec, seed)
	}
	return fb.RunFlightdUpdate(ctx, spec, seed)
}
