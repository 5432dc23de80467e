package vm

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/watchdog"
)

// scenarioParams returns the timeout (seconds) and the number of timeouts
// to pet for: short by default (the CI form), longer (10 s timeout, 5
// timeouts of petting) with -long or BOOTORBIT_LONG=1.
func scenarioParams() (timeout, periods int) {
	if testrand.Long() {
		return 10, 5
	}
	return 2, 3
}

// The i6300esb driver's watchdog_info (drivers/watchdog/i6300esb.c).
const esbOptions = watchdog.WDIOFSetTimeout | watchdog.WDIOFKeepalive | watchdog.WDIOFMagicClose

func TestRealDriverKeepalive(t *testing.T) {
	t.Parallel() // the guests mostly sleep: boards wait on their timers, not on the CPU
	b := needBoard(t)
	timeout, periods := scenarioParams()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(60+timeout*periods*3)*time.Second)
	defer cancel()
	r, err := b.RunKeepalive(ctx, timeout, periods)
	logRun(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Boots) != 1 {
		t.Fatalf("%d boots, want 1: the board reset while being petted", len(r.Boots))
	}
	bt := r.Boots[0]
	if !bt.Done {
		t.Fatal("the guest did not finish the scenario")
	}
	if bt.Info.Identity != "i6300ESB timer" || bt.Info.Options != esbOptions {
		t.Errorf("GETSUPPORT: %+v, want identity %q options %#x", bt.Info, "i6300ESB timer", esbOptions)
	}
	if bt.Asked != time.Duration(timeout)*time.Second || bt.Applied != bt.Asked {
		t.Errorf("SETTIMEOUT %v read back %v, want %v both (the i6300esb counts whole seconds)", bt.Asked, bt.Applied, time.Duration(timeout)*time.Second)
	}
	if !strings.Contains(bt.Refused, "WDIOC_SETTIMEOUT 2047 s: invalid argument") {
		t.Errorf("SetTimeout(2047 s), past the driver's 2046 s: error %q, want EINVAL reported", bt.Refused)
	}
	// The watchdog core's sysfs view agrees with the ioctls.
	if len(bt.Sysfs) == 0 {
		t.Fatal("no sysfs report")
	}
	if fs := bt.Sysfs[0]; fs["state"] != "active" || fs["timeout"] != strconv.Itoa(timeout) || fs["bootstatus"] != "0" || fs["identity"] != "i6300ESB_timer" {
		t.Errorf("sysfs after SETTIMEOUT: %v, want state active, timeout %d, bootstatus 0", fs, timeout)
	}
	if !strings.Contains(bt.Busy, "device or resource busy") {
		t.Errorf("second OpenDevice while open: error %q, want EBUSY", bt.Busy)
	}
	// A flightd restart: Close without the magic 'V' (the kernel warns),
	// OpenDevice again, and the timeout set before still holds.
	if !bt.Reopened || !bt.DidNotStop {
		t.Errorf("reopened %v, kernel said \"watchdog did not stop!\" %v; want both", bt.Reopened, bt.DidNotStop)
	}
	if n := len(bt.Sysfs); n < 2 || bt.Sysfs[n-1]["state"] != "active" || bt.Sysfs[n-1]["timeout"] != strconv.Itoa(timeout) {
		t.Errorf("sysfs after the reopen: %v, want state active, timeout %d", bt.Sysfs, timeout)
	}
	if bt.BootStatus != 0 || bt.Record.Cause != watchdog.CausePowerOn || bt.Record.Count != 1 || bt.Record.WatchdogResets != 0 {
		t.Errorf("power-on: bootstatus %#x, record %+v; want 0 and cause power-on, count 1", uint32(bt.BootStatus), bt.Record)
	}
	// Petting at a third of the timeout for periods timeouts, on the
	// guest's clock: every gap below the timeout, and the board alive
	// for all of it.
	if want := 3*periods - 1; bt.Keepalives < want {
		t.Errorf("%d keepalives, want at least %d", bt.Keepalives, want)
	}
	if bt.MaxGap >= bt.Applied {
		t.Errorf("longest gap between keepalives %v, not below the timeout %v", bt.MaxGap, bt.Applied)
	}
	if span := bt.LastPet - bt.FirstPet; span < time.Duration(periods-1)*bt.Applied {
		t.Errorf("petted for %v of guest time, want at least %v", span, time.Duration(periods-1)*bt.Applied)
	}
	if bt.BootID == "" || bt.Record.BootID != bt.BootID || bt.Rerecord != bt.Record {
		t.Errorf("boot id %q; record %+v; recorded again in the same boot %+v: want the same record, counted once", bt.BootID, bt.Record, bt.Rerecord)
	}
	t.Logf("boot to /init: %v guest, %v host after qemu start; GETSUPPORT %q options %#x; timeout %v read back %v; %d keepalives over %v guest, longest gap %v; bootstatus %#x; run %v",
		bt.InitUp.Round(time.Millisecond), bt.InitHost.Round(time.Millisecond), bt.Info.Identity, bt.Info.Options,
		bt.Asked, bt.Applied, bt.Keepalives, (bt.LastPet - bt.FirstPet).Round(time.Millisecond), bt.MaxGap.Round(time.Millisecond),
		uint32(bt.BootStatus), r.Total.Round(time.Millisecond))
}

func TestRealDriverResetsWhenNotPetted(t *testing.T) {
	t.Parallel() // the guests mostly sleep: boards wait on their timers, not on the CPU
	b := needBoard(t)
	timeout, periods := scenarioParams()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(90+timeout*(periods+4))*time.Second)
	defer cancel()
	r, err := b.RunExpire(ctx, timeout, periods)
	logRun(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Boots) != 2 {
		t.Fatalf("%d boots, want 2 (the watchdog's reset starts the second)", len(r.Boots))
	}
	first, second := r.Boots[0], r.Boots[1]
	if first.N != 1 || second.N != 2 {
		t.Fatalf("boot numbers on the disk %d, %d; want 1, 2", first.N, second.N)
	}
	if !second.Done {
		t.Fatal("the second boot did not finish the scenario")
	}
	if first.BootStatus.WatchdogReset() || first.Record.Cause != watchdog.CausePowerOn {
		t.Errorf("first boot: bootstatus %#x, cause %s; want a power-on", uint32(first.BootStatus), first.Record.Cause)
	}
	// Closed without the magic 'V', the watchdog stays armed: the
	// kernel says so, and so does its sysfs view.
	if !first.Stopped || !first.DidNotStop {
		t.Errorf("stopped %v; kernel said \"watchdog did not stop!\" %v; want both", first.Stopped, first.DidNotStop)
	}
	if n := len(first.Sysfs); n < 2 || first.Sysfs[n-1]["state"] != "active" {
		t.Errorf("sysfs after Close: %v, want state active", first.Sysfs)
	}
	// The reset came at the timeout, not before: the guest was alive (on
	// its own clock) for most of the timeout after the last keepalive,
	// and not past the moment QEMU's i6300esb fires (ESBFiresAfter, a
	// little after the timeout; measured: alive 10.012 s and 10.045 s
	// after the last keepalive with a 10 s timeout). The 250 ms of slack
	// cover a QEMU main loop starved on a loaded host, where the timer
	// fires late while the guest runs on (measured up to 2.009 s for a
	// 2.034 s firing under two parallel test loops on 2 cores).
	alive := first.LastAlive - first.LastPet
	if hi := ESBFiresAfter(first.Applied) + 250*time.Millisecond; alive >= hi || alive < first.Applied/2 {
		t.Errorf("alive %v after the last keepalive, want within [%v, %v)", alive, first.Applied/2, hi)
	}
	// QEMU's i6300esb keeps its timeout flag across the reset it caused,
	// and the driver reports it as WDIOF_CARDRESET.
	if !second.BootStatus.WatchdogReset() {
		t.Errorf("second boot: bootstatus %#x, want WDIOF_CARDRESET", uint32(second.BootStatus))
	}
	if n := len(second.Sysfs); n == 0 || second.Sysfs[n-1]["bootstatus"] != "32" {
		t.Errorf("second boot's sysfs %v, want bootstatus 32 (WDIOF_CARDRESET)", second.Sysfs)
	}
	if first.BootID == "" || first.BootID == second.BootID {
		t.Errorf("boot ids %q and %q, want two different ones", first.BootID, second.BootID)
	}
	if rec := second.Record; rec.Cause != watchdog.CauseWatchdog || rec.Count != 2 || rec.WatchdogResets != 1 {
		t.Errorf("second boot's reset record %+v, want cause watchdog, count 2, 1 watchdog reset", rec)
	}
	t.Logf("timeout %v read back %v; %d keepalives; last keepalive to last sign of life %v guest; last keepalive line to next boot's banner %v host; second boot: bootstatus %#x, record %s (%d boots, %d watchdog resets), ext4 journal replayed %v; run %v",
		first.Asked, first.Applied, first.Keepalives, alive.Round(time.Millisecond), (second.Banner - first.LastPetHost).Round(time.Millisecond),
		uint32(second.BootStatus), second.Record.Cause, second.Record.Count, second.Record.WatchdogResets, second.FSRecovered, r.Total.Round(time.Millisecond))
}

// The control experiment: the magic close, which the watchdog package
// never does, stops the i6300esb, and the board stays up past the
// timeout. Without it, a reset in TestRealDriverResetsWhenNotPetted
// could come from something other than the armed watchdog.
func TestRealDriverMagicCloseStopsIt(t *testing.T) {
	t.Parallel() // the guests mostly sleep: boards wait on their timers, not on the CPU
	b := needBoard(t)
	const timeout = 1
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r, err := b.RunMagicClose(ctx, timeout)
	logRun(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Boots) != 1 || !r.Boots[0].Done || !r.Boots[0].Stopped {
		t.Fatalf("%d boots; want 1 that stopped the watchdog and finished", len(r.Boots))
	}
	bt := r.Boots[0]
	if len(bt.Sysfs) == 0 || bt.Sysfs[0]["state"] != "inactive" {
		t.Errorf("sysfs after the magic close: %v, want state inactive", bt.Sysfs)
	}
	if bt.DidNotStop {
		t.Error(`kernel said "watchdog did not stop!" after a magic close`)
	}
	if up := bt.LastAlive - bt.InitUp; up < 2*timeout*time.Second {
		t.Errorf("alive %v after /init started, want past twice the timeout", up)
	}
}

// watchdog.open_timeout on the kernel command line (docs/boot.md) applies
// to a watchdog already running when its driver registers. QEMU's i6300esb
// is not running until opened, at power-on and after its own reset, so on
// this board nothing resets a boot that never opens it: the kernel
// parameter alone does not catch a hang before flightd. This test asserts
// that, as measured; a board whose boot loader starts the watchdog behaves
// differently.
func TestOpenTimeoutDoesNotArmAStoppedI6300ESB(t *testing.T) {
	t.Parallel() // the guests mostly sleep: boards wait on their timers, not on the CPU
	b := needBoard(t)
	const openTimeout = 1
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r, err := b.RunOpenTimeout(ctx, openTimeout)
	logRun(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Console(), "watchdog.open_timeout=1") {
		t.Fatal("kernel command line without watchdog.open_timeout")
	}
	if len(r.Boots) != 1 || !r.Boots[0].Done {
		t.Fatalf("%d boots, want 1 that finished", len(r.Boots))
	}
	bt := r.Boots[0]
	for _, fs := range bt.Sysfs {
		if fs["open_timeout"] != "1" || fs["handle_boot_enabled"] != "Y" {
			t.Errorf("watchdog core parameters open_timeout=%q handle_boot_enabled=%q, want 1 and Y", fs["open_timeout"], fs["handle_boot_enabled"])
		}
		if fs["state"] != "inactive" {
			t.Errorf("sysfs %v, want state inactive (the i6300esb does not run before it is opened)", fs)
		}
	}
	if up := bt.LastAlive - bt.InitUp; up < 2*openTimeout*time.Second {
		t.Errorf("alive %v after /init started, want past twice the open timeout", up)
	}
	t.Logf("open_timeout=%d s, device never opened: alive %v after /init, no reset; watchdog core state %v",
		openTimeout, (bt.LastAlive - bt.InitUp).Round(time.Millisecond), bt.Sysfs[len(bt.Sysfs)-1]["state"])
}

// The watchdog package's own TestLinuxDevice, which skips on the host,
// cross-compiled and run in the guest against /dev/watchdog0.
func TestWatchdogPackageTestInGuest(t *testing.T) {
	t.Parallel() // the guests mostly sleep: boards wait on their timers, not on the CPU
	b := needBoard(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	g, err := b.RunGoTest(ctx, "github.com/bootorbit/bootorbit/watchdog",
		[]string{"-test.run", "^TestLinuxDevice$", "-test.v"}, []string{"BOOTORBIT_TEST_WATCHDOG=/dev/watchdog0"})
	if g != nil {
		logRun(t, g.Run)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("in the guest:\n%s", g.Output)
	if g.Exit != 0 || !strings.Contains(g.Output, "--- PASS: TestLinuxDevice") || !strings.Contains(g.Output, "i6300ESB timer") {
		t.Errorf("watchdog's TestLinuxDevice in the guest: exit %d, want 0 and a PASS that names the i6300ESB", g.Exit)
	}
}
