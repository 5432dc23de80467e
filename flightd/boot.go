package flightd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
)

// FailTrial ends the trial of the booted slot as failed: the slot is
// recorded bad first (so that Reconcile never arms it again), then dropped
// from the environment, so that the next boot returns to the other slot.
// The caller reboots. It refuses a booted slot that is not on trial. When
// the environment cannot drop the slot (the other slot is not bootable),
// the slot stays recorded bad and bootable: the bootloader's counter
// still ends the trial after its attempts.
func (u *Updater) FailTrial(why string) error {
	if err := u.check(); err != nil {
		return err
	}
	st, ws, err := u.snapshot()
	if err != nil {
		return err
	}
	if !u.onTrial(st, ws) {
		return fmt.Errorf("flightd: fail trial: booted slot %s is not on trial", u.Booted)
	}
	if err := u.Slots.MarkBad(u.Booted, "trial failed: "+why); err != nil {
		return fmt.Errorf("flightd: fail trial of slot %s: slot state: %w", u.Booted, err)
	}
	if err := u.Boot.MarkBad(string(u.Booted)); err != nil {
		return fmt.Errorf("flightd: fail trial of slot %s: environment: %w", u.Booted, err)
	}
	u.log().Warn("trial failed: slot recorded bad and dropped from the boot order", "slot", string(u.Booted), "why", why)
	return nil
}

// boot is the start of every run: the reset cause, Reconcile, and whether
// this boot is a trial to decide.
func (d *daemon) boot(ctx context.Context) error {
	now := d.clock.Now()
	bootID := d.opt.BootID
	if bootID == "" {
		if id, err := watchdog.ReadBootID(d.cfg.Boot.BootIDFile); err == nil {
			bootID = id
		}
	}
	// A fresh partition has no record directory yet: without it no boot
	// is recorded and hk.boot's count never moves. Failing to make it is
	// reported, not fatal: a daemon that reports beats one that does not
	// start.
	dir := d.cfg.RecordDir()
	dirErr := mkdirSynced(dir, 0o700)
	if dirErr != nil {
		d.log.Error("reset record directory", "dir", dir, "err", dirErr)
		d.setError(now, dict.CodeStorage, "boot.record_dir: "+osCause(dirErr))
	}
	var bs watchdog.BootStatus
	if d.wd != nil {
		var err error
		if bs, err = d.wd.BootStatus(); err != nil {
			d.log.Warn("watchdog boot status", "err", err)
		}
	}
	prev, _ := watchdog.ReadResetRecord(dir)
	rec, err := watchdog.RecordBootReset(dir, bootID, bs, string(d.up.Booted), now)
	if err != nil {
		d.log.Error("record reset cause", "dir", dir, "err", err)
		if dirErr == nil {
			d.setError(now, dict.CodeStorage, "reset record: "+osCause(err))
		}
	}
	newBoot := bootID == "" || prev.BootID != bootID
	d.mu.Lock()
	d.reset = rec
	if newBoot {
		d.cause = causeLabel(rec.Cause, d.st.Rebooting)
		d.st.Rebooting = false
		d.st.RebootCause = ""
	} else {
		d.cause = causeLabel(rec.Cause, false)
	}
	d.mu.Unlock()
	if newBoot && rec.Cause == watchdog.CauseWatchdog {
		d.event(now, dict.EvWatchdogReset.Name, "the last boot ended in a watchdog reset", map[string]any{"slot": slotLabel(d.resetSlot(prev)), "boot_count": uint64(uint32(rec.Count))})
	}

	res, err := d.up.Reconcile()
	if err != nil {
		// Keep running: a daemon that reports beats one that does not
		// start. Nothing is committed on a state flightd cannot read.
		d.log.Error("reconcile", "err", err)
		d.setError(now, dict.CodeBadState, "reconcile: "+err.Error())
		return d.saveState()
	}
	booted := string(d.up.Booted)
	failedTrial := false
	for _, a := range res.Actions {
		if strings.Contains(a, "trial boot failed") {
			failedTrial = true
		}
	}
	d.mu.Lock()
	from := d.st.TrialFrom
	if newBoot {
		d.st.RebootAtMs = 0 // a scheduled reboot happened, or the board restarted: either way it is moot
	} else if d.st.RebootAtMs != 0 {
		d.rebootAt, d.rebootCause = time.UnixMilli(d.st.RebootAtMs), "activate"
	}
	d.mu.Unlock()
	switch {
	case res.Trial:
		d.mu.Lock()
		d.trial = true
		d.mu.Unlock()
		d.trialOpen = true
		ws, _ := d.up.Boot.Status(booted)
		d.mu.Lock()
		d.st.Outcome = "trial"
		d.mu.Unlock()
		d.event(now, dict.EvTrialBoot.Name, "", map[string]any{"slot": slotLabel(booted), "attempts_left": uint64(ws.Left[booted])})
	case failedTrial || (from != "" && from == booted && d.slotState(d.up.Booted.Other()) == slots.Bad):
		// The trial slot fell back here: through the bootloader's counter
		// (failedTrial) or through flightd's own FailTrial and reboot.
		d.mu.Lock()
		d.st.Outcome, d.st.TrialFrom = "rolled_back", ""
		d.mu.Unlock()
		other := string(d.up.Booted.Other())
		d.event(now, dict.EvRolledBack.Name, "the new slot failed; the previous slot boots", map[string]any{"from": slotLabel(other), "to": slotLabel(booted), "code": uint64(dict.CodeHealthCheckFailed)})
		d.setError(now, dict.CodeHealthCheckFailed, "slot "+other+" failed its trial boot")
	}
	return d.saveState()
}

// osCause is the system's reason in err (a path error's errno text):
// hk.error's text holds 48 bytes, where the path would crowd the reason
// out (the path is in the configuration, and in the log).
func osCause(err error) string {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		return pe.Err.Error()
	case errors.As(err, &le):
		return le.Err.Error()
	}
	return err.Error()
}

// resetSlot is the slot the reset that started this boot happened in
// (the slot that hung, for a watchdog reset), not the slot booted now:
//   - when the bootloader fell back from a trial slot whose attempts ran
//     out, that slot, whose last attempt ended in the reset;
//   - when the slot booted now is on trial and the previous boot flightd
//     recorded (prev) is another slot's, its counter tells (the
//     bootloader decrements it at every boot, Arm sets it to N): below
//     N-1, the trial slot booted before this boot and hung before flightd
//     recorded it, so it is the slot; at N-1, this is its first boot, so
//     the reset happened in prev's slot (after it armed the trial); else
//     (no counting, an environment flightd cannot read) it is not known;
//   - else prev's slot.
//
// A boot that hangs before flightd runs records nothing, so the record
// may predate the hang; without a record the slot is unknown (""), unless
// the trial slot's counter names it.
func (d *daemon) resetSlot(prev watchdog.ResetRecord) string {
	booted := string(d.up.Booted)
	ws, err := d.up.Boot.Status(booted)
	if err == nil && ws.FailedTrial != "" {
		return ws.FailedTrial
	}
	if prev.Slot == booted || !(ws.TrialSlot == booted || d.slotState(d.up.Booted) == slots.Pending) {
		return prev.Slot
	}
	if err != nil || ws.Attempts <= 0 {
		return ""
	}
	switch left, ok := ws.Left[booted]; {
	case !ok:
		return ""
	case left < ws.Attempts-1:
		return booted
	case left == ws.Attempts-1:
		return prev.Slot
	}
	return ""
}

func causeLabel(c watchdog.ResetCause, ownReboot bool) string {
	switch c {
	case watchdog.CauseWatchdog:
		return "watchdog"
	case watchdog.CausePower:
		return "power"
	case watchdog.CauseOverheat:
		return "overheat"
	case watchdog.CausePowerOn:
		if ownReboot {
			return "reboot"
		}
		return "power_on"
	}
	return "unknown"
}

// slotLabel is a slot as dict.EnumSlot names it.
func slotLabel(s string) string {
	switch s {
	case "A", "a":
		return "a"
	case "B", "b":
		return "b"
	}
	return "none"
}

// runHealth starts one run of the health checks off the main loop; its
// result comes back on healthRes.
func (d *daemon) runHealth(ctx context.Context) {
	d.healthBusy, d.healthStarted = true, d.clock.Now()
	checks := d.cfg.Health.Checks
	run := d.opt.RunCheck
	if run == nil {
		run = runCheck
	}
	go func() {
		var err error
		for _, h := range checks {
			cctx, cancel := context.WithTimeout(ctx, h.Timeout.Or(DefaultHealthTimeout))
			e := run(cctx, h)
			cancel()
			if e != nil {
				err = fmt.Errorf("health check %s: %w", h.Name, e)
				break
			}
		}
		d.healthRes <- err
	}()
}

// healthBudget is how long a health run may take: its checks' timeouts
// and a petting period of grace.
func (d *daemon) healthBudget() time.Duration {
	b := d.petEvery
	for _, h := range d.cfg.Health.Checks {
		b += h.Timeout.Or(DefaultHealthTimeout)
	}
	return b
}

func runCheck(ctx context.Context, h HealthCheck) error {
	cmd := exec.CommandContext(ctx, h.Command[0], h.Command[1:]...)
	// A killed check's children may hold its output open: stop waiting
	// for them soon after.
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return fmt.Errorf("timed out after %v", h.Timeout.Or(DefaultHealthTimeout))
	}
	if err != nil {
		s := strings.TrimSpace(string(out))
		if len(s) > 200 {
			s = s[:200]
		}
		return fmt.Errorf("%w: %s", err, s)
	}
	return nil
}

// onHealth takes the result of a health run.
func (d *daemon) onHealth(ctx context.Context, now time.Time, err error) {
	d.healthBusy, d.healthDone = false, true
	if err != nil && d.healthErr == nil {
		d.log.Error("unhealthy: the watchdog is no longer petted", "err", err)
		d.setError(now, dict.CodeHealthCheckFailed, err.Error())
	}
	d.healthErr = err
	if d.trialOpen {
		d.decideTrial(ctx, now)
		return
	}
	if err == nil {
		d.commitHealthy()
	}
}

// commitHealthy commits a healthy boot that is no trial, once: the booted
// slot's counter goes back to N (RAUC's mark-good at every boot), so that
// power cycles never count it down to a fallback; it writes nothing when
// the counter is already N. Not while an install writes the environment
// off the loop (the Updater is not safe for concurrent use): then after it.
func (d *daemon) commitHealthy() {
	if d.committed || d.trialOpen || d.healthErr != nil || !d.healthDone {
		return
	}
	if d.installBusy {
		d.commitAfterInstall = true
		return
	}
	d.committed = true
	if err := d.up.Commit(); err != nil {
		d.log.Warn("commit of a healthy boot", "err", err)
	}
}

// errGroundSilent is the health failure of a trial boot that did not hear
// the ground in time.
var errGroundSilent = errors.New("ground not heard")

// decideTrial commits the trial once the checks passed (and the ground
// was heard, if required), or fails it and reboots into the other slot.
func (d *daemon) decideTrial(ctx context.Context, now time.Time) {
	within := time.Duration(d.cfg.Health.GroundWithin)
	var fail error
	switch {
	case d.healthDone && d.healthErr != nil:
		fail = d.healthErr
	case within > 0 && d.heard.IsZero() && !now.Before(d.started.Add(within)):
		fail = fmt.Errorf("%w within %v of the start", errGroundSilent, within)
	case !d.healthDone, within > 0 && d.heard.IsZero():
		return
	}
	d.trialOpen = false
	booted := string(d.up.Booted)
	if fail == nil {
		if err := d.up.Commit(); err != nil {
			d.log.Error("commit", "err", err)
			d.setError(now, dict.CodeBadState, "commit: "+err.Error())
			return
		}
		d.committed = true
		d.mu.Lock()
		d.st.Outcome, d.st.TrialFrom = "good", ""
		d.trial = false
		d.mu.Unlock()
		d.event(now, dict.EvMarkedGood.Name, "", map[string]any{"slot": slotLabel(booted), "version": d.version(booted)})
		if err := d.saveState(); err != nil {
			d.log.Error("save state", "err", err)
		}
		return
	}
	d.log.Error("trial failed", "slot", booted, "err", fail)
	d.healthErr = fail
	d.setError(now, dict.CodeHealthCheckFailed, fail.Error())
	if err := d.up.FailTrial(fail.Error()); err != nil {
		d.log.Error("fail trial", "err", err)
	}
	other := string(d.up.Booted.Other())
	d.mu.Lock()
	d.st.Outcome, d.st.TrialFrom = "rolled_back", other
	d.mu.Unlock()
	d.event(now, dict.EvRolledBack.Name, "health check failed: "+truncate(fail.Error(), 40), map[string]any{"from": slotLabel(booted), "to": slotLabel(other), "code": uint64(dict.CodeHealthCheckFailed)})
	d.requestReboot("rollback", other)
}

// requestReboot reports the reboot and makes the main loop run the
// reboot action once the reports are sent.
func (d *daemon) requestReboot(cause, next string) {
	now := d.clock.Now()
	d.mu.Lock()
	d.st.RebootCause = cause
	d.mu.Unlock()
	d.rebootCause = cause
	d.event(now, dict.EvRebooting.Name, "", map[string]any{"cause": cause, "slot": slotLabel(next)})
	d.rebootNow = true
}

// version is the release version installed in slot (0: unknown).
func (d *daemon) version(slot string) uint64 {
	if d.eng == nil {
		return 0
	}
	v, _, _ := d.eng.Release(slots.SlotID(slot))
	return v
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !validUTF8(s) {
		s = s[:len(s)-1]
	}
	return s
}

// nextSlot is the slot the environment boots next.
func (d *daemon) nextSlot() string {
	ws, err := d.up.Boot.Status(string(d.up.Booted))
	if err != nil {
		return ""
	}
	return ws.Next
}

func (d *daemon) slotState(id slots.SlotID) slots.State {
	for _, s := range d.up.Slots.Status().Slots {
		if s.ID == id {
			return s.State
		}
	}
	return slots.Empty
}
