package vm

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/hil/link"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/watchdog"
)

// RunFlightdRollback is the watchdog rollback with flightd owning the
// watchdog, on the real U-Boot: the factory image (version 1) good in
// slot A; the ground sends version 3, an image that hangs at boot
// (BehaviourFlightdHang), across the emulated link spec (seeded), as in
// RunFlightdUpdate; flightd installs it into raw slot B, the ground
// activates B and reboots the vehicle by command. In B, flightd starts
// as usual and takes the watchdog; the image then freezes it (SIGSTOP, at
// its first health check) before it can mark B good. The i6300esb resets
// the board; U-Boot tries B N times (BOOT_B_LEFT counts down), then boots
// A, where flightd finds the failed trial, records B bad, drops it from
// the boot order, commits A, and tells the ground (hk.boot: slot A,
// reset cause watchdog, last outcome rolled_back; hk.slots: B bad, A
// good, A's version the factory's; the rolled_back event, and
// watchdog_reset naming B, the slot that hung).
//
// Checked besides what the ground saw: U-Boot booted A, then B N times,
// then A ("ABBBA"); B froze N times, each time with flightd holding the
// watchdog; the boots after a freeze, and only those, came up from a
// watchdog reset (the watchdog core's bootstatus, read by the guest init
// before flightd starts); and after power-off fw_printenv reads
// BOOT_ORDER="A" BOOT_A_LEFT="3" BOOT_B_LEFT="0" BOOTORBIT_TRIAL="".
func (fb *FlightdBoard) RunFlightdRollback(ctx context.Context, spec link.Spec, seed uint64) (*ABReport, error) {
	r := fb.report("flightd-rollback")
	r.Board += ", virtio-net (QEMU user network, UDP forward) behind hil/link " + spec.Name
	start := time.Now()
	defer func() { r.Time = time.Since(start) }()
	if err := fb.Factory(ctx, 1); err != nil {
		return r, err
	}
	v3, err := fb.BuildImageAs(ctx, 3, BehaviourFlightdHang)
	if err != nil {
		return r, err
	}
	bundle, _, err := fb.Bundle(ctx, 1, 3)
	if err != nil {
		return r, err
	}
	r.EnvBefore = fb.env(ctx, r)
	r.step("factory: slot A version 1 (raw ext4 image, %d bytes) recorded good; version 3 hangs at boot, its delta bundle %d bytes; built in %v (fw_printenv: %s)",
		slotFSSize, len(bundle), time.Since(start).Round(time.Millisecond), fmtVars(r.EnvBefore))

	n := watchdog.DefaultAttempts
	wantBooted := "A" + strings.Repeat("B", n) + "A"
	var rebooted time.Time
	err = fb.session(ctx, spec, seed, r, wantBooted, envRolledBack, func(g *benchGround, t0 time.Time) error {
		if err := fb.uplink(ctx, g, r, t0, v3, bundle); err != nil {
			return err
		}
		rebooted = time.Now()
		boot, err := g.waitHK(ctx, dict.HKBoot, func(v dict.Values) bool {
			return v["booted_slot"] == uint64(1) && v["last_outcome"] == uint64(3) && v["trial"] == false
		})
		if err != nil {
			return fmt.Errorf("rollback to A: %w", err)
		}
		r.step("hk.boot %v after the reboot: booted slot A, last outcome rolled_back, reset cause %s, boot count %v",
			time.Since(rebooted).Round(time.Millisecond), dict.EnumResetCause.NameOf(toUint(boot["reset_cause"])), boot["boot_count"])
		if c := boot["reset_cause"]; c != uint64(2) {
			r.problem("hk.boot: reset cause %s, want watchdog", dict.EnumResetCause.NameOf(toUint(c)))
		}
		if c := boot["boot_count"]; c != uint64(len(wantBooted)) {
			r.problem("hk.boot: boot count %v, want %d", c, len(wantBooted))
		}
		// A's commit resets its counter (U-Boot took one for this boot):
		// the environment is final once hk.slots shows it.
		slotsHK, err := g.waitHK(ctx, dict.HKSlots, func(v dict.Values) bool {
			return v["slot_b_state"] == uint64(5) && v["slot_a_state"] == uint64(4) && v["slot_a_attempts"] == uint64(3)
		})
		if err != nil {
			return fmt.Errorf("slot B bad, A good: %w", err)
		}
		// Slot A's version: flightd reports 0 for the factory's slot (it
		// knows a version from a release it installed); the bench names it
		// from the slot's digest, as hil/scenario does (slotVersion).
		aVersion := fb.slotVersion(toUint(slotsHK["slot_a_version"]), slotsHK["slot_a_digest"])
		r.step("hk.slots: slot A %s version %d (%v attempts; flightd says version %v, the digest %x is the factory image's), slot B %s version %v (%v attempts)",
			dict.EnumSlotState.NameOf(toUint(slotsHK["slot_a_state"])), aVersion, slotsHK["slot_a_attempts"], slotsHK["slot_a_version"], slotsHK["slot_a_digest"],
			dict.EnumSlotState.NameOf(toUint(slotsHK["slot_b_state"])), slotsHK["slot_b_version"], slotsHK["slot_b_attempts"])
		if aVersion != 1 {
			r.problem("hk.slots: slot A holds version %d (digest %x), want the factory's 1", aVersion, slotsHK["slot_a_digest"])
		}
		if slotsHK["slot_b_version"] != uint64(3) || slotsHK["slot_b_attempts"] != uint64(0) {
			r.problem("hk.slots: slot B version %v with %v attempts, want 3 with 0", slotsHK["slot_b_version"], slotsHK["slot_b_attempts"])
		}
		rb, err := g.waitEvent(ctx, dict.EvRolledBack.Name)
		if err != nil {
			return err
		}
		if rb.Args["from"] != uint64(2) || rb.Args["to"] != uint64(1) {
			r.problem("rolled_back event %v, want from b to a", rb)
		}
		wd, err := g.waitEvent(ctx, dict.EvWatchdogReset.Name)
		if err != nil {
			return err
		}
		r.step("events: %s; %s", rb, wd)
		// The slot that hung (the event's slot), not the slot booted now.
		if wd.Args["slot"] != uint64(2) {
			r.problem("watchdog_reset event %v, want slot b (the slot that hung)", wd)
		}
		for _, e := range g.events {
			if e.Name == dict.EvMarkedGood.Name && e.Args["slot"] == uint64(2) {
				r.problem("the ground saw B marked good: %v", e)
			}
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	fb.checkHangs(r, n)
	// flightd's own account, on the boot partition: every boot counted
	// once, the freezes as watchdog resets.
	if rec, err := fb.ResetRecord(ctx); err != nil {
		r.problem("reset record: %v", err)
	} else {
		r.step("flightd's reset record (offline, debugfs): last boot %s in slot %s, %d boots, %d watchdog resets", rec.Cause, rec.Slot, rec.Count, rec.WatchdogResets)
		if rec.Cause != watchdog.CauseWatchdog || rec.Slot != "A" || rec.Count != uint64(len(wantBooted)) || rec.WatchdogResets != uint64(n) {
			r.problem("reset record: %+v, want the last boot from a watchdog reset in slot A, %d boots, %d watchdog resets", rec, len(wantBooted), n)
		}
	}
	return r, nil
}

// checkHangs checks the console of a flightd rollback: n freezes of
// flightd in slot B, each with flightd holding the watchdog, each ended
// by a watchdog reset (the next boot's cause), and no other boot coming
// from a watchdog reset. It reports how long each freeze lasted until
// U-Boot ran again.
func (fb *FlightdBoard) checkHangs(r *ABReport, n int) {
	var hangs []*Event
	var lasted []string
	var hangAt time.Duration
	for _, l := range r.Console {
		switch {
		case l.Event != nil && l.Event.Ev == "fd-hang":
			hangs = append(hangs, l.Event)
			hangAt = l.T
			if l.Event.Slot != "B" || l.Event.Version != "3" {
				r.problem("a hang in slot %q version %q, want B version 3", l.Event.Slot, l.Event.Version)
			}
			if !strings.Contains(l.Event.Msg, "holds /dev/watchdog0") {
				r.problem("hang: %s", l.Event.Msg)
			}
		case hangAt > 0 && strings.HasPrefix(l.Text, "U-Boot "):
			lasted = append(lasted, (l.T - hangAt).Round(100*time.Millisecond).String())
			hangAt = 0
		}
	}
	if len(hangs) != n {
		r.problem("%d freezes of flightd, want %d", len(hangs), n)
	}
	// The boots: A (power-on), B (flightd's reboot), then one per freeze.
	want := []string{string(watchdog.CausePowerOn), string(watchdog.CausePowerOn)}
	for range n {
		want = append(want, string(watchdog.CauseWatchdog))
	}
	if strings.Join(r.ResetCauses, ",") != strings.Join(want, ",") {
		r.problem("reset causes %v, want %v", r.ResetCauses, want)
	}
	r.step("flightd in B froze %d times holding the watchdog; U-Boot ran again %s after each freeze; reset cause at each boot: %s",
		len(hangs), strings.Join(lasted, ", "), strings.Join(r.ResetCauses, ", "))
}

func toUint(v any) uint64 {
	u, _ := v.(uint64)
	return u
}
