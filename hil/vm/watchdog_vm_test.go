package vm

import (
	"context"
	"flag"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/watchdog"
)

var long = flag.Bool("vm.long", false, "run the long watchdog variants (10 s timeout, 5 timeouts of petting)")

// scenarioParams returns the timeout (seconds) and the number of timeouts
// to pet for: short by default (the CI form), longer with -vm.long.
func scenarioParams() (timeout, periods int) {
	if *long {
		return 10, 5
	}
	return 2, 3
}

// The i6300esb driver's watchdog_info (drivers/watchdog/i6300esb.c).
const esbOptions = watchdog.WDIOFSetTimeout | watchdog.WDIOFKeepalive | watchdog.WDIOFMagicClose

func TestRealDriverKeepalive(t *testing.T) {
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
	t.Logf("boot to /init: %v guest, %v host after qemu start; GETSUPPORT %q options %#x; timeout %v read back %v; %d keepalives over %v guest, longest gap %v; bootstatus %#x; run %v",
		bt.InitUp.Round(time.Millisecond), bt.InitHost.Round(time.Millisecond), bt.Info.Identity, bt.Info.Options,
		bt.Asked, bt.Applied, bt.Keepalives, (bt.LastPet - bt.FirstPet).Round(time.Millisecond), bt.MaxGap.Round(time.Millisecond),
		uint32(bt.BootStatus), r.Total.Round(time.Millisecond))
}

func TestRealDriverResetsWhenNotPetted(t *testing.T) {
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
	// The reset came after the timeout, not before: the guest was alive
	// (on its own clock) for most of the timeout after the last
	// keepalive, and never past it.
	alive := first.LastAlive - first.LastPet
	if alive >= first.Applied || alive < first.Applied/2 {
		t.Errorf("alive %v after the last keepalive, want within [%v, %v)", alive, first.Applied/2, first.Applied)
	}
	// QEMU's i6300esb keeps its timeout flag across the reset it caused,
	// and the driver reports it as WDIOF_CARDRESET.
	if !second.BootStatus.WatchdogReset() {
		t.Errorf("second boot: bootstatus %#x, want WDIOF_CARDRESET", uint32(second.BootStatus))
	}
	if rec := second.Record; rec.Cause != watchdog.CauseWatchdog || rec.Count != 2 || rec.WatchdogResets != 1 {
		t.Errorf("second boot's reset record %+v, want cause watchdog, count 2, 1 watchdog reset", rec)
	}
	t.Logf("timeout %v read back %v; %d keepalives; last keepalive to last sign of life %v guest; last keepalive line to next boot's banner %v host; second boot: bootstatus %#x, record %s (%d boots, %d watchdog resets); run %v",
		first.Asked, first.Applied, first.Keepalives, alive.Round(time.Millisecond), (second.Banner - first.LastPetHost).Round(time.Millisecond),
		uint32(second.BootStatus), second.Record.Cause, second.Record.Count, second.Record.WatchdogResets, r.Total.Round(time.Millisecond))
}
