//go:build linux

// Command guestinit is the /init of the virtual board's initramfs (built
// for linux/arm64 by hil/vm and run by the guest kernel as PID 1). It
// mounts /proc, /sys and /dev, loads the kernel modules listed in
// /modules/order, mounts the persistent disk, drives the real watchdog
// through watchdog.LinuxDevice as the kernel command line asks
// (bootorbit.scenario=...), prints the results as vm.Event lines on the
// console, and powers the board off. It never writes the magic 'V'.
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
	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/bootorbit/bootorbit/watchdog"
	"golang.org/x/sys/unix"
)

const stateDir = "/state"

var boot int

func uptime() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return -1
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

func emit(e vm.Event) {
	e.Boot = boot
	e.Up = uptime()
	fmt.Fprintln(os.Stdout, e.Format())
}

func main() {
	if subcommand(os.Args) {
		return
	}
	emit(vm.Event{Ev: "init"})
	err := run()
	if err != nil {
		emit(vm.Event{Ev: "error", Err: err.Error()})
	}
	poweroff()
}

func poweroff() {
	unix.Sync()
	// PSCI SYSTEM_OFF: qemu exits. If it returns, there is nothing left
	// to do; hang rather than let PID 1 exit into a kernel panic.
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	emit(vm.Event{Ev: "error", Err: fmt.Sprintf("poweroff: %v", err)})
	select {}
}

func cmdline() (map[string]string, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, f := range strings.Fields(string(b)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "bootorbit.") {
			m[strings.TrimPrefix(k, "bootorbit.")] = v
		}
	}
	return m, nil
}

func mounts() error {
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fs, m.dst, err)
		}
	}
	return nil
}

func loadModules() error {
	order, err := os.ReadFile("/modules/order")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(string(order)) {
		f, err := os.Open(filepath.Join("/modules", name+".ko"))
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("finit_module %s: %w", name, err)
		}
	}
	emit(vm.Event{Ev: "modules", Msg: strings.Join(strings.Fields(string(order)), ",")})
	return nil
}

// waitFor polls for a device node that a driver creates asynchronously.
func waitFor(path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v", path, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countBoot mounts the persistent disk and increments the boot counter
// kept on it, durably, before anything else happens in this boot.
func countBoot(disk, fstype string) error {
	if err := waitFor(disk, 20*time.Second); err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(disk, stateDir, fstype, 0, ""); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", disk, fstype, stateDir, err)
	}
	p := filepath.Join(stateDir, "boots")
	n := 0
	if b, err := os.ReadFile(p); err == nil {
		n, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	boot = n + 1
	if err := vfs.WriteFileAtomic(vfs.Default, p, []byte(strconv.Itoa(boot)+"\n"), 0o644); err != nil {
		return err
	}
	id, err := watchdog.KernelBootID()
	if err != nil {
		return err
	}
	emit(vm.Event{Ev: "boot", BootID: id})
	return nil
}

func secs(d time.Duration) float64 { return d.Seconds() }

func run() error {
	if err := mounts(); err != nil {
		return err
	}
	args, err := cmdline()
	if err != nil {
		return err
	}
	if err := loadModules(); err != nil {
		return err
	}
	if disk := args["disk"]; disk != "" {
		if err := countBoot(disk, args["fstype"]); err != nil {
			return err
		}
	}
	if ip := args["ip"]; ip != "" {
		if err := netUp("eth0", ip); err != nil {
			return err
		}
	}
	if args["scenario"] == "udpecho" {
		return udpEcho(args["port"], 60*time.Second)
	}
	dev := args["dev"]
	if dev == "" {
		dev = "/dev/watchdog0"
	}
	if err := waitFor(dev, 20*time.Second); err != nil {
		return err
	}
	timeout := 2 * time.Second
	if v := args["timeout"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("bootorbit.timeout=%q: want whole seconds > 0", v)
		}
		timeout = time.Duration(n) * time.Second
	}
	periods := 3
	if v := args["periods"]; v != "" {
		if periods, err = strconv.Atoi(v); err != nil || periods < 0 {
			return fmt.Errorf("bootorbit.periods=%q: want a count >= 0", v)
		}
	}
	// Scenarios that must not open the device through watchdog.OpenDevice.
	switch args["scenario"] {
	case "gotest":
		return goTest()
	case "idle":
		return idle(timeout)
	case "magicclose":
		return magicClose(dev, timeout)
	case "abboard":
		return abBoard(args, dev)
	}

	d, err := watchdog.OpenDevice(dev)
	if err != nil {
		return err
	}
	info := d.Info()
	emit(vm.Event{Ev: "open", Identity: info.Identity, Options: info.Options, Firmware: info.Firmware})
	st, err := d.BootStatus()
	if err != nil {
		return err
	}
	s := uint32(st)
	emit(vm.Event{Ev: "bootstatus", BootStatus: &s, Cause: string(st.Cause())})
	if args["disk"] != "" {
		id, err := watchdog.KernelBootID()
		if err != nil {
			return err
		}
		rec, err := watchdog.RecordBootReset(stateDir, id, st, "A", time.Now())
		if err != nil {
			return err
		}
		emit(vm.Event{Ev: "record", Cause: string(rec.Cause), Count: rec.Count, WatchdogResets: rec.WatchdogResets, BootStatus: &rec.BootStatus, BootID: rec.BootID})
		// A flightd restarted within this boot records nothing new.
		again, err := watchdog.RecordBootReset(stateDir, id, st, "A", time.Now())
		if err != nil {
			return err
		}
		emit(vm.Event{Ev: "rerecord", Cause: string(again.Cause), Count: again.Count, WatchdogResets: again.WatchdogResets, BootStatus: &again.BootStatus, BootID: again.BootID})
	}

	switch sc := args["scenario"]; sc {
	case "keepalive":
		// The driver takes 1..2046 s: a timeout past that is refused, and
		// the error reaches the caller.
		if _, err := d.SetTimeout(2047 * time.Second); err != nil {
			emit(vm.Event{Ev: "settimeout-refused", Asked: 2047, Err: err.Error()})
		} else {
			emit(vm.Event{Ev: "settimeout-accepted", Asked: 2047})
		}
		// The kernel lets one process at a time hold the device.
		if d2, err := watchdog.OpenDevice(dev); err != nil {
			emit(vm.Event{Ev: "second-open-refused", Err: err.Error()})
		} else {
			d2.Close()
			emit(vm.Event{Ev: "second-open-accepted"})
		}
		return keepalive(d, dev, timeout, periods, false)
	case "expire":
		if boot > 1 {
			// The board came back: the previous boot's watchdog reset it.
			emitSysfs()
			emit(vm.Event{Ev: "done"})
			return d.Close()
		}
		return keepalive(d, dev, timeout, periods, true)
	default:
		return fmt.Errorf("bootorbit.scenario=%q: want keepalive or expire", sc)
	}
}

// keepalive sets the timeout and pets at a third of it for periods
// timeouts, on the guest's clock. Then it either powers off (the watchdog
// never fired) or, with stop, closes the device without the magic 'V' and
// prints a heartbeat every 100 ms until the watchdog resets the board.
//
// Without stop it also restarts like flightd would, half way: Close (no
// magic 'V') and OpenDevice again, then goes on petting through the new
// descriptor without setting the timeout again.
func keepalive(d *watchdog.LinuxDevice, dev string, timeout time.Duration, periods int, stop bool) error {
	applied, err := d.SetTimeout(timeout)
	if err != nil {
		return err
	}
	emit(vm.Event{Ev: "settimeout", Asked: secs(timeout), Applied: secs(applied)})
	emitSysfs()
	tick := applied / 3
	start := time.Now()
	n := 0
	for time.Since(start) < time.Duration(periods)*applied {
		time.Sleep(tick)
		if err := d.Keepalive(); err != nil {
			return err
		}
		n++
		emit(vm.Event{Ev: "keepalive", N: n})
		if !stop && n == 3*periods/2 {
			if err := d.Close(); err != nil {
				return err
			}
			emit(vm.Event{Ev: "closed", N: n})
			if d, err = watchdog.OpenDevice(dev); err != nil {
				return err
			}
			emit(vm.Event{Ev: "reopened", N: n})
			emitSysfs()
		}
	}
	if !stop {
		emit(vm.Event{Ev: "done", N: n})
		return nil
	}
	if err := d.Close(); err != nil {
		return err
	}
	emit(vm.Event{Ev: "stopped", N: n, Applied: secs(applied)})
	emitSysfs()
	// Three timeouts plus a margin: if the board is still alive by then,
	// the watchdog did not fire, and the scenario says so.
	limit := 3*applied + 5*time.Second
	alive(limit)
	return fmt.Errorf("watchdog did not reset the board within %v after the last keepalive", limit)
}

// emitSysfs reports the watchdog core's own view in
// /sys/class/watchdog/watchdog0 (CONFIG_WATCHDOG_SYSFS), an account
// independent of the ioctls that the host compares with them.
func emitSysfs() {
	var parts []string
	for _, k := range []string{"identity", "state", "timeout", "bootstatus", "nowayout"} {
		b, err := os.ReadFile("/sys/class/watchdog/watchdog0/" + k)
		if err != nil {
			continue
		}
		parts = append(parts, k+"="+strings.ReplaceAll(strings.TrimSpace(string(b)), " ", "_"))
	}
	// The watchdog core's parameters, as the kernel took them from its
	// command line.
	for _, k := range []string{"open_timeout", "handle_boot_enabled"} {
		if b, err := os.ReadFile("/sys/module/watchdog/parameters/" + k); err == nil {
			parts = append(parts, k+"="+strings.TrimSpace(string(b)))
		}
	}
	emit(vm.Event{Ev: "sysfs", Msg: strings.Join(parts, " ")})
}

// alive prints a heartbeat every 100 ms of guest time for d.
func alive(d time.Duration) {
	for t0 := time.Now(); time.Since(t0) < d; {
		time.Sleep(100 * time.Millisecond)
		emit(vm.Event{Ev: "alive"})
	}
}

// idle never opens the watchdog: with watchdog.open_timeout on the kernel
// command line, a watchdog already running at boot would reset the board
// when nobody opens it in time. It reports the core's view and stays up
// for twice the timeout plus two seconds.
func idle(timeout time.Duration) error {
	emitSysfs()
	alive(2*timeout + 2*time.Second)
	emitSysfs()
	emit(vm.Event{Ev: "done"})
	return nil
}

// magicClose is the control experiment for "no magic close": it opens the
// device directly (the watchdog package has no way to do this), sets the
// timeout, writes the magic 'V' and closes, which stops the watchdog; the
// board must then stay up past the timeout.
func magicClose(dev string, timeout time.Duration) error {
	fd, err := unix.Open(dev, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, int(timeout/time.Second)); err != nil {
		unix.Close(fd)
		return err
	}
	emit(vm.Event{Ev: "settimeout", Asked: secs(timeout), Applied: secs(timeout)})
	if _, err := unix.Write(fd, []byte("V")); err != nil {
		unix.Close(fd)
		return err
	}
	if err := unix.Close(fd); err != nil {
		return err
	}
	emit(vm.Event{Ev: "stopped"})
	emitSysfs()
	alive(2*timeout + time.Second)
	emit(vm.Event{Ev: "done"})
	return nil
}

// goTest runs /pkg.test, a package's test binary, with the arguments in
// /gotest.args and the environment in /gotest.env (one per line), its
// output on the console between the gotest-start and gotest-exit events
// (N is the exit status). It runs in /state, a writable directory.
func goTest() error {
	lines := func(p string) ([]string, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" {
				out = append(out, l)
			}
		}
		return out, nil
	}
	args, err := lines("/gotest.args")
	if err != nil {
		return err
	}
	env, err := lines("/gotest.env")
	if err != nil {
		return err
	}
	if err := os.MkdirAll("/state/tmp", 0o1777); err != nil {
		return err
	}
	cmd := exec.Command("/pkg.test", args...)
	cmd.Env = append([]string{"PATH=/", "HOME=/state", "TMPDIR=/state/tmp"}, env...)
	cmd.Dir = "/state"
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	emit(vm.Event{Ev: "gotest-start", Msg: strings.Join(args, " ")})
	err = cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return err
		}
		code = ee.ExitCode()
	}
	emit(vm.Event{Ev: "gotest-exit", N: code})
	emit(vm.Event{Ev: "done"})
	return nil
}

// abBoard is the system in a slot of the A/B board (vm.ABBoard): /image
// says its version and behaviour, the kernel command line the slot U-Boot
// booted and where the environment is. Like flightd it reads the boot
// state from the U-Boot environment, takes the watchdog, and then either
// hangs (behaviour=hang: stops petting, the watchdog resets the board and
// U-Boot counts the attempt) or passes its health check and marks its
// slot good, after marking a trial slot that U-Boot abandoned bad
// (behaviour=good), as flightd's reconcile and commit do.
func abBoard(args map[string]string, dev string) error {
	b, err := os.ReadFile("/image")
	if err != nil {
		return err
	}
	img := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			img[k] = v
		}
	}
	cl, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	slot, err := watchdog.ParseCmdline(string(cl))
	if err != nil {
		return err
	}
	if b := img["behaviour"]; b == vm.BehaviourFlightd || b == vm.BehaviourFlightdHang {
		return runFlightd(img, slot)
	}
	envDev := args["env"]
	if err := waitFor(envDev, 20*time.Second); err != nil {
		return err
	}
	env, err := watchdog.NewUBootEnv(watchdog.UBootLocation{Path: envDev, Offset: 0, Size: vm.EnvSize})
	if err != nil {
		return err
	}
	bc := &watchdog.BootControl{Env: env, Attempts: watchdog.DefaultAttempts}
	vars := func() map[string]string {
		v, err := env.Load()
		if err != nil {
			return map[string]string{"error": err.Error()}
		}
		out := map[string]string{}
		for _, k := range []string{watchdog.VarBootOrder, watchdog.LeftVar("A"), watchdog.LeftVar("B"), watchdog.VarTrial} {
			out[k] = v[k]
		}
		return out
	}
	st, err := bc.Status(slot)
	if err != nil {
		return err
	}
	emit(vm.Event{Ev: "ab-boot", Slot: slot, Version: img["version"], Msg: img["behaviour"], Env: vars()})

	if err := waitFor(dev, 20*time.Second); err != nil {
		return err
	}
	timeout, err := strconv.Atoi(img["timeout"])
	if err != nil || timeout <= 0 {
		return fmt.Errorf("/image timeout=%q: want whole seconds > 0", img["timeout"])
	}
	d, err := watchdog.OpenDevice(dev)
	if err != nil {
		return err
	}
	applied, err := d.SetTimeout(time.Duration(timeout) * time.Second)
	if err != nil {
		return err
	}
	bs, err := d.BootStatus()
	if err != nil {
		return err
	}
	s := uint32(bs)
	emit(vm.Event{Ev: "ab-watchdog", Slot: slot, Applied: secs(applied), BootStatus: &s, Cause: string(bs.Cause())})

	switch img["behaviour"] {
	case "hang":
		emit(vm.Event{Ev: "ab-hang", Slot: slot, Version: img["version"]})
		limit := 3*applied + 5*time.Second
		time.Sleep(limit)
		return fmt.Errorf("watchdog did not reset the board within %v of the hang", limit)
	case "good":
		if err := d.Keepalive(); err != nil {
			return err
		}
		// The health check: the system runs and pets every 0.5 s for
		// 1.5 s.
		for i := 0; i < 3; i++ {
			if err := d.Keepalive(); err != nil {
				return err
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err := d.Keepalive(); err != nil {
			return err
		}
		// As flightd: a failed trial is dropped from the boot order
		// (reconcile), and a boot that passed its health checks is
		// committed, which resets the booted slot's counter (U-Boot
		// counts every boot, a good slot's too) and ends its trial.
		if st.FailedTrial != "" {
			if err := bc.MarkBad(st.FailedTrial); err != nil {
				return err
			}
			emit(vm.Event{Ev: "ab-marked-bad", Slot: st.FailedTrial, Env: vars()})
		}
		if err := bc.MarkGood(slot); err != nil {
			return err
		}
		emit(vm.Event{Ev: "ab-marked-good", Slot: slot, Version: img["version"], Msg: fmt.Sprintf("trial=%v", st.Trial), Env: vars()})
		emit(vm.Event{Ev: "done", Slot: slot, Version: img["version"], Env: vars()})
		return nil
	default:
		return fmt.Errorf("/image behaviour=%q: want good or hang", img["behaviour"])
	}
}
