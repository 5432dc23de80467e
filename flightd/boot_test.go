package flightd

import (
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/bootorbit/bootorbit/watchdog/watchdogtest"
)

// TestDaemonWatchdogResetTrialRetried: the trial slot hangs before
// flightd runs there, and the bootloader boots it again (attempts left, no
// fallback): the last boot flightd recorded is the old slot's, but the
// reset happened in the trial slot, which the watchdog_reset event must
// name. Its counter tells: below N-1, the trial slot has booted before
// this boot; at N-1 this is its first boot, so the reset happened in the
// old slot (after it armed the trial, before the reboot); above, the
// bootloader did not count and where the reset happened is not known.
func TestDaemonWatchdogResetTrialRetried(t *testing.T) {
	const slotNone, slotA, slotB = uint64(0), uint64(1), uint64(2)
	for _, tc := range []struct {
		name  string
		leftB string // B's counter at the boot after the reset
		want  uint64
	}{
		{"trial slot hung before flightd, retried", "1", slotB},
		{"trial slot hung twice before flightd", "0", slotB},
		{"old slot hung after arming", "2", slotA},
		{"bootloader does not count", "3", slotNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A armed B (3 attempts) and recorded its boot.
			r := newDaemonRig(t, slots.A, slots.Good, slots.Pending, vars("B A", "3", "3", "B"))
			run := r.start(slots.A)
			run.stop()
			r.env.Vars[watchdog.LeftVar("B")] = tc.leftB
			r.wd = watchdogtest.NewDevice(r.clock, time.Minute, watchdog.WDIOFCardReset)
			run = r.start(slots.B)
			if ev := r.event(run, dict.EvWatchdogReset); ev["slot"] != tc.want {
				t.Errorf("watchdog_reset %v: want slot %d", ev, tc.want)
			}
		})
	}
}
