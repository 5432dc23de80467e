//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/bootorbit/bootorbit/hil/vm"
	"golang.org/x/sys/unix"
)

// subcommand runs /init as a command rather than as PID 1: flightd's
// reboot command ("/init reboot": sync and restart the board, so that
// U-Boot runs again) and its health check ("/init health": the system is
// up). It reports whether args named one.
func subcommand(args []string) bool {
	if os.Getpid() == 1 || len(args) < 2 {
		return false
	}
	switch args[1] {
	case "reboot":
		emit(vm.Event{Ev: "fd-reboot"})
		unix.Sync()
		err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		fmt.Fprintf(os.Stderr, "reboot: %v\n", err)
		os.Exit(1)
	case "health":
		emit(vm.Event{Ev: "fd-health"})
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "usage: /init reboot|health\n")
	os.Exit(2)
	return true
}

// runFlightd is the system of a flightd slot image: the network up, the
// boot partition (flightd's state directory) mounted at /boot, and
// flightd run with /flightd.json, its output on the console. flightd owns
// the watchdog and the boot environment; it ends only by rebooting the
// board (its reboot command), so its exit is an error.
func runFlightd(img map[string]string, slot string) error {
	if err := netUp("eth0", img["ip"]); err != nil {
		return err
	}
	if err := waitFor("/dev/vda1", 20*time.Second); err != nil {
		return err
	}
	for _, d := range []string{"/boot", "/run"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("/dev/vda1", "/boot", "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount /dev/vda1 on /boot: %w", err)
	}
	if err := waitFor("/dev/watchdog0", 20*time.Second); err != nil {
		return err
	}
	emit(vm.Event{Ev: "fd-start", Slot: slot, Version: img["version"]})
	cmd := exec.Command("/flightd", "run", "--config", "/flightd.json")
	cmd.Env = []string{"PATH=/", "HOME=/boot", "TMPDIR=/boot"}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	err := cmd.Run()
	return fmt.Errorf("flightd exited: %v", err)
}
