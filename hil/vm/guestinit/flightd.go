//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/hil/vm"
	"github.com/bootorbit/bootorbit/watchdog"
	"golang.org/x/sys/unix"
)

// subcommand runs /init as a command rather than as PID 1: flightd's
// reboot command ("/init reboot": sync and restart the board, so that
// U-Boot runs again) and its health check ("/init health": the system is
// up; in an image that hangs at boot, the hang, see hang). It reports
// whether args named one.
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
		img, err := readImage()
		if err == nil && img["behaviour"] == vm.BehaviourFlightdHang {
			err = hang(img)
		}
		if err != nil {
			// flightd logs a failed check's output; the console gets it too.
			emitConsole(vm.Event{Ev: "error", Err: "health: " + err.Error()})
			fmt.Fprintf(os.Stderr, "health: %v\n", err)
			os.Exit(1)
		}
		emit(vm.Event{Ev: "fd-health"})
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "usage: /init reboot|health\n")
	os.Exit(2)
	return true
}

// readImage reads /image, the slot image's description (key=value lines).
func readImage() (map[string]string, error) {
	b, err := os.ReadFile("/image")
	if err != nil {
		return nil, err
	}
	img := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			img[k] = v
		}
	}
	return img, nil
}

// emitConsole prints an event on the console from a process whose
// output is not the console (a health check's goes to flightd).
func emitConsole(e vm.Event) {
	e.Up = uptime()
	f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	fmt.Fprintln(f, e.Format())
	f.Close()
}

// hang is the system of an image that hangs at boot
// (behaviour=flightd-hang), entered from flightd's first health check,
// that is after flightd opened and set the watchdog, recorded the reset
// cause, reconciled, opened its link and entered its main loop, and before
// any health result could let it mark the trial slot good. It freezes
// flightd, the process that called it, with SIGSTOP: every thread of it
// stops, as in a system that hangs (a deadlock, a driver that never
// returns), the watchdog device stays open (no magic close, so the driver
// keeps the i6300esb running), nobody pets it, and the main loop never
// sees a health result. Then it blocks like the rest of the system. It
// first checks that its caller is flightd and holds /dev/watchdog0, and
// says so on the console.
func hang(img map[string]string) error {
	ppid := os.Getppid()
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ppid))
	if err != nil {
		return err
	}
	if c := strings.TrimSpace(string(comm)); c != "flightd" {
		return fmt.Errorf("hang: called by %q (pid %d), not flightd", c, ppid)
	}
	fd, err := holder(ppid, "/dev/watchdog0")
	if err != nil {
		return err
	}
	slot := ""
	if cl, err := os.ReadFile("/proc/cmdline"); err == nil {
		slot, _ = watchdog.ParseCmdline(string(cl))
	}
	emitConsole(vm.Event{Ev: "fd-hang", Slot: slot, Version: img["version"],
		Msg: fmt.Sprintf("flightd (pid %d) holds /dev/watchdog0 as fd %d; stopping it", ppid, fd)})
	if err := unix.Kill(ppid, unix.SIGSTOP); err != nil {
		return fmt.Errorf("hang: SIGSTOP flightd: %w", err)
	}
	for {
		unix.Pause()
	}
}

// holder returns the descriptor by which process pid holds dev open.
func holder(pid int, dev string) (int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return -1, err
	}
	for _, e := range ents {
		if t, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && t == dev {
			return strconv.Atoi(e.Name())
		}
	}
	return -1, fmt.Errorf("hang: flightd (pid %d) does not hold %s open", pid, dev)
}

// runFlightd is the system of a flightd slot image: the network up, the
// boot partition (flightd's state directory) mounted at /boot, and
// flightd run with /flightd.json, its output on the console. flightd owns
// the watchdog and the boot environment; it ends only by rebooting the
// board (its reboot command), so its exit is an error. Before flightd
// starts, the fd-start event reports the watchdog's boot status as the
// watchdog core's sysfs shows it (the driver read it at probe), an account
// of the reset cause independent of flightd's.
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
	ev := vm.Event{Ev: "fd-start", Slot: slot, Version: img["version"], Msg: img["behaviour"]}
	if st, err := sysfsBootStatus(); err != nil {
		ev.Err = err.Error()
	} else {
		s := uint32(st)
		ev.BootStatus, ev.Cause = &s, string(st.Cause())
	}
	emit(ev)
	cmd := exec.Command("/flightd", "run", "--config", "/flightd.json")
	cmd.Env = []string{"PATH=/", "HOME=/boot", "TMPDIR=/boot"}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	err := cmd.Run()
	return fmt.Errorf("flightd exited: %v", err)
}

// sysfsBootStatus reads the watchdog core's bootstatus attribute.
func sysfsBootStatus() (watchdog.BootStatus, error) {
	b, err := os.ReadFile("/sys/class/watchdog/watchdog0/bootstatus")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 0, 32)
	if err != nil {
		return 0, errors.New("sysfs bootstatus: " + err.Error())
	}
	return watchdog.BootStatus(n), nil
}
