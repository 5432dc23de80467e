package flightd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bootorbit/bootorbit/flightd/uplink"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/slots"
)

// cmdError is a command failure with the reason code the ground sees.
type cmdError struct {
	code protocol.Code
	err  error
}

func (e *cmdError) Error() string { return e.err.Error() }
func (e *cmdError) Unwrap() error { return e.err }

func fail(code protocol.Code, format string, args ...any) error {
	return &cmdError{code: code, err: fmt.Errorf(format, args...)}
}

// onCommand authenticates, de-duplicates and runs one command, with its
// verification reports. The order of checks is protocol.ReplayWindow's:
// the cheap replay check, the signature, then the window is moved and
// persisted, and only then is the command acted on, so that a power cut
// can never make one command run twice and no forged command can make a
// genuine one look replayed. It reports whether the command was
// authenticated (the ground was heard).
func (d *daemon) onCommand(ctx context.Context, now time.Time, c *protocol.Command) bool {
	reject := func(code protocol.Code, authenticated bool) {
		d.countRejected(code)
		d.log.Warn("command rejected", "seq", c.Seq, "opcode", c.Opcode, "code", dict.EnumReason.NameOf(uint64(code)))
		// Anyone can send or replay a command: rejections of what did not
		// authenticate are answered only from a small token bucket, so a
		// flood is not amplified onto the return link.
		switch {
		case authenticated:
			d.report(c, protocol.StageRejected, 0, code)
		case d.bucket.take(now):
			// Not the ground's: not kept for repeating (no one may
			// flush the ground's reports out of the few kept).
			d.sendReport(c, protocol.StageRejected, 0, code, false)
		}
	}
	if c.Vehicle != d.cfg.Vehicle.ID {
		// Another vehicle's command: not ours to answer.
		d.drop(protocol.CodeOf(protocol.ReasonWrongVehicle), "command", nil)
		return false
	}
	if c.Auth == nil {
		reject(protocol.CodeOf(protocol.ReasonUnauthenticated), false)
		return false
	}
	key := uint32(c.Auth.Key)
	w := d.windows[key]
	if w == nil {
		w = new(protocol.ReplayWindow)
	}
	if err := w.Check(c.Seq); err != nil {
		if f, ok := d.keptFinal(key, c); ok && protocol.VerifyCommand(d.keys.Ground, c) == nil {
			// A copy of a command that ran (the ground resends what it
			// heard no report of): not run again, but answered with its
			// final report, within the same bucket as any answer to a
			// frame anyone could have captured and replayed.
			d.countRejected(protocol.CodeOf(protocol.ReasonReplayed))
			d.log.Info("copy of a command that ran: its final report repeated", "seq", c.Seq, "opcode", c.Opcode)
			if d.bucket.take(now) {
				d.sendReport(c, f.Stage, 0, f.Code, false)
			}
			return false
		}
		reject(protocol.CodeOf(protocol.ReasonReplayed), false)
		return false
	}
	if err := protocol.VerifyCommand(d.keys.Ground, c); err != nil {
		reject(protocol.CodeOf(protocol.ReasonOf(err)), false)
		return false
	}
	next := *w
	if err := next.Accept(c.Seq); err != nil {
		reject(protocol.CodeOf(protocol.ReasonReplayed), false)
		return false
	}
	// Genuine and new: the ground's. Whatever answers it goes to its sender.
	d.authenticated(now)
	d.windows[key] = &next
	if err := d.saveState(); err != nil {
		// Not durably recorded: not acted on (a retry with the same seq
		// is accepted once the store works again).
		d.windows[key] = w
		d.log.Error("command window not saved", "err", err)
		reject(dict.CodeStorage, true)
		return true
	}
	if c.Target != 0 {
		reject(dict.CodeUnknownCommand, true)
		return true
	}
	def, ok := dict.CommandByOpcode(c.Opcode)
	if !ok {
		reject(dict.CodeUnknownCommand, true)
		return true
	}
	args, err := def.DecodeArgs(c)
	if err != nil {
		reject(dict.CodeBadArgument, true)
		return true
	}
	d.mu.Lock()
	d.st.Counters.CmdsAccepted++
	d.dirtyCounts = true
	d.mu.Unlock()
	d.report(c, protocol.StageAccepted, 0, 0)
	d.report(c, protocol.StageStarted, 0, 0)
	d.log.Info("command", "seq", c.Seq, "command", def.Name, "args", args)
	d.finish(now, c, def, d.execute(ctx, now, c, def, args))
	return true
}

// finish sends the final report of command c, whose execution returned
// err (errLater: nothing yet, its completion is reported later).
func (d *daemon) finish(now time.Time, c *protocol.Command, def *dict.Command, err error) {
	if err == errLater {
		return
	}
	if err != nil {
		code := dict.CodeBadState
		var ce *cmdError
		if errors.As(err, &ce) {
			code = ce.code
		}
		d.log.Warn("command failed", "seq", c.Seq, "command", def.Name, "err", err)
		d.setError(now, code, def.Name+": "+err.Error())
		d.report(c, protocol.StageFailed, 0, code)
		return
	}
	d.report(c, protocol.StageCompleted, 0, 0)
}

// countRejected counts a command rejected (or a copy not run) for code.
func (d *daemon) countRejected(code protocol.Code) {
	d.mu.Lock()
	d.st.Counters.CmdsRejected++
	d.st.Counters.drop(code)
	d.dirtyCounts = true
	d.mu.Unlock()
}

// keptFinal returns the final report kept (to be repeated) of the command
// c is a copy of: same key, sequence number and opcode.
func (d *daemon) keptFinal(key uint32, c *protocol.Command) (FinalReport, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.st.Finals {
		if f.Key == key && f.Seq == c.Seq && f.Opcode == c.Opcode {
			return f, true
		}
	}
	return FinalReport{}, false
}

// errLater is execute's answer for a command whose completion is
// reported later, from the main loop.
var errLater = errors.New("flightd: completion reported later")

type verifyResult struct {
	c    *protocol.Command
	slot string
	res  *slots.VerifyResult
	err  error
}

// onVerify reports a slot verification.
func (d *daemon) onVerify(now time.Time, r verifyResult) {
	d.verifyBusy = false
	code := protocol.Code(0)
	var err error
	switch {
	case r.err != nil:
		code, err = dict.CodeBadState, r.err
	case !r.res.OK:
		code, err = dict.CodeInstallFailed, fmt.Errorf("slot %s does not match its digest: %s", r.res.Slot, r.res.Detail)
	}
	d.event(now, dict.EvSlotVerified.Name, "", map[string]any{"slot": r.slot, "code": uint64(code)})
	if err != nil {
		d.setError(now, code, "verify_slot: "+err.Error())
		d.report(r.c, protocol.StageFailed, 0, code)
		return
	}
	d.report(r.c, protocol.StageCompleted, 0, 0)
}

// report sends a verification report on c.
func (d *daemon) report(c *protocol.Command, stage protocol.Stage, step uint32, code protocol.Code) {
	d.sendReport(c, stage, step, code, true)
}

// MaxRepeatedFinals bounds the final reports kept to be repeated.
const MaxRepeatedFinals = 8

// sendReport sends a verification report; a final one (completed,
// failed, rejected) of an authenticated command is kept (keep) to be sent
// once more when the ground is next heard after a gap (repeatFinals): the
// ground's gateway takes a late final report, and a report lost on the
// return link would otherwise leave the command unsettled at the ground.
func (d *daemon) sendReport(c *protocol.Command, stage protocol.Stage, step uint32, code protocol.Code, keep bool) {
	d.send(&protocol.Verification{Vehicle: d.cfg.Vehicle.ID, Seq: c.Seq, Stage: stage, Step: step, Code: code, Opcode: c.Opcode})
	if !keep || (stage != protocol.StageCompleted && stage != protocol.StageFailed && stage != protocol.StageRejected) {
		return
	}
	d.mu.Lock()
	if len(d.st.Finals) >= MaxRepeatedFinals {
		d.st.Finals = append(d.st.Finals[:0], d.st.Finals[len(d.st.Finals)-MaxRepeatedFinals+1:]...)
	}
	f := FinalReport{Seq: c.Seq, Opcode: c.Opcode, Stage: stage, Code: code}
	if c.Auth != nil {
		f.Key = uint32(c.Auth.Key)
	}
	d.st.Finals = append(d.st.Finals, f)
	d.dirtyCounts = true
	d.mu.Unlock()
}

// finalsGap is the silence after which the ground, heard again, gets the
// kept final reports once more: twice the telemetry period (within a
// pass the ground is heard far more often than that).
func (d *daemon) finalsGap() time.Duration {
	return 2 * d.cfg.Telemetry.Period.Or(DefaultTelemetryPeriod)
}

// repeatFinals sends each kept final report once more (a fresh return-link
// MAC and sequence number: the same report, not a replayed frame) and
// forgets them. It runs when an authenticated frame arrives after
// finalsGap of silence, or first after a start.
func (d *daemon) repeatFinals(now time.Time) {
	if !d.heard.IsZero() && now.Sub(d.heard) < d.finalsGap() {
		return
	}
	d.mu.Lock()
	finals := d.st.Finals
	d.st.Finals = nil
	if len(finals) > 0 {
		d.dirtyCounts = true
	}
	d.mu.Unlock()
	for _, f := range finals {
		d.log.Info("repeating a final report", "seq", f.Seq, "stage", f.Stage.String(), "code", dict.EnumReason.NameOf(uint64(f.Code)))
		d.send(&protocol.Verification{Vehicle: d.cfg.Vehicle.ID, Seq: f.Seq, Stage: f.Stage, Code: f.Code, Opcode: f.Opcode})
	}
}

func idArg(args dict.Values) (uint64, bool) {
	id, _ := args["id"].(uint64)
	kind, _ := args["kind"].(uint64)
	return id, kind == 1
}

// execute runs an accepted command; a non-nil error fails it (a *cmdError
// carries the reason code).
func (d *daemon) execute(ctx context.Context, now time.Time, c *protocol.Command, def *dict.Command, args dict.Values) error {
	if d.installBusy || d.verifyBusy || d.resetBusy {
		switch def {
		case dict.CmdActivate, dict.CmdRollback, dict.CmdMarkGood, dict.CmdVerify, dict.CmdFactoryReset, dict.CmdReboot:
			return fail(dict.CodeBusy, "an install, a slot verification or a factory reset is running")
		}
	}
	switch def {
	case dict.CmdNoop:
		return nil
	case dict.CmdStatus:
		d.sendHousekeeping(now)
		return nil
	case dict.CmdAbort, dict.CmdPause, dict.CmdResume, dict.CmdDeleteStaged:
		return d.uplinkCommand(ctx, now, def, args)
	case dict.CmdActivate:
		return d.activate(ctx, now, c, args)
	case dict.CmdReboot:
		d.requestReboot("command", d.nextSlot())
		return nil
	case dict.CmdRollback:
		return d.rollback(ctx, now, c)
	case dict.CmdMarkGood:
		if err := d.up.Commit(); err != nil {
			return fail(dict.CodeBadState, "%v", err)
		}
		if d.trialOpen {
			d.trialOpen = false
			d.mu.Lock()
			d.st.Outcome, d.st.TrialFrom = "good", ""
			d.trial = false
			d.mu.Unlock()
			booted := string(d.up.Booted)
			d.event(now, dict.EvMarkedGood.Name, "marked good by command", map[string]any{"slot": slotLabel(booted), "version": d.version(booted)})
		}
		return d.saveStateErr()
	case dict.CmdVerify:
		label, _ := dict.EnumSlot.Lookup(args["slot"].(uint64))
		id, _ := slotID(label.Name)
		if id == d.up.Booted {
			return fail(dict.CodeBadState, "slot %s is the booted slot; verify_slot re-reads an idle slot", id)
		}
		// Reading a slot back takes long: off the main loop, which keeps
		// taking frames and petting the watchdog; the reports follow.
		d.verifyBusy = true
		verify := d.up.Slots.Verify
		if d.opt.verifySlot != nil {
			verify = d.opt.verifySlot
		}
		go func() {
			res, err := verify(ctx, id)
			d.verifyRes <- verifyResult{c: c, slot: label.Name, res: res, err: err}
		}()
		return errLater
	case dict.CmdFactoryReset:
		d.mu.Lock()
		d.st.FactoryReset = true
		d.mu.Unlock()
		if err := d.saveStateErr(); err != nil {
			return err
		}
		d.event(now, dict.EvFactoryReset.Name, "applied before the next reboot into the other slot", nil)
		return nil
	case dict.CmdResetCounters:
		d.mu.Lock()
		d.st.Counters = Counters{}
		d.mu.Unlock()
		if err := d.saveStateErr(); err != nil {
			return err
		}
		d.event(now, dict.EvCountersReset.Name, "", nil)
		return nil
	}
	return fail(dict.CodeUnknownCommand, "%s is not handled", def.Name)
}

func (d *daemon) saveStateErr() error {
	if err := d.saveState(); err != nil {
		return fail(dict.CodeStorage, "%v", err)
	}
	return nil
}

func (d *daemon) uplinkCommand(ctx context.Context, now time.Time, def *dict.Command, args dict.Values) error {
	if d.eng == nil {
		return fail(dict.CodeBadState, "no uplink engine")
	}
	defer d.drainUplink(ctx, now)
	if def == dict.CmdDeleteStaged {
		p, _ := args["plan"].(uint64)
		n, err := d.eng.DeleteStaged(p)
		if err != nil {
			return uplinkFail(err)
		}
		d.event(now, dict.EvStagedDeleted.Name, "", map[string]any{"plan": p, "bytes": uint64(max(n, 0))})
		return nil
	}
	id, isPlan := idArg(args)
	if !isPlan {
		p, ok := d.eng.PlanOf(id)
		if !ok {
			return fail(dict.CodeUnknownPlan, "no transfer %d", id)
		}
		id = p
	}
	switch def {
	case dict.CmdAbort:
		return uplinkFail(d.eng.Abort(id))
	case dict.CmdPause:
		return uplinkFail(d.eng.Pause(id))
	default:
		return uplinkFail(d.eng.Resume(id))
	}
}

// uplinkFail gives an engine error its reason code.
func uplinkFail(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, uplink.ErrUnknownPlan):
		return fail(dict.CodeUnknownPlan, "%v", err)
	case errors.Is(err, uplink.ErrBusy):
		return fail(dict.CodeBusy, "%v", err)
	case errors.Is(err, uplink.ErrBadState):
		return fail(dict.CodeBadState, "%v", err)
	}
	return fail(dict.CodeStorage, "%v", err)
}

// activate arms the inactive slot for a trial boot with the command's
// attempts, and schedules the reboot at not_before if given. A pending
// factory reset of the slot runs first, off the main loop; activate then
// runs again from its checks (errLater meanwhile).
func (d *daemon) activate(ctx context.Context, now time.Time, c *protocol.Command, args dict.Values) error {
	label, _ := dict.EnumSlot.Lookup(args["slot"].(uint64))
	id, _ := slotID(label.Name)
	if id == d.up.Booted {
		return fail(dict.CodeBadState, "slot %s is the booted slot", id)
	}
	if st := d.slotState(id); st != slots.Written && st != slots.Pending && st != slots.Good {
		return fail(dict.CodeBadState, "slot %s is %s: only a verified install can be armed", id, st)
	}
	attempts := int(args["attempts"].(uint64))
	d.mu.Lock()
	d.st.TrialFrom = string(d.up.Booted)
	d.mu.Unlock()
	if err := d.saveStateErr(); err != nil {
		return err
	}
	if d.startFactoryReset(ctx, c, dict.CmdActivate, args, id) {
		return errLater
	}
	// Armed with the command's attempts through a copy: the Updater's own
	// setting is read by the status (the control socket's goroutine).
	up, boot := *d.up, *d.up.Boot
	boot.Attempts = attempts
	up.Boot = &boot
	if err := up.Arm(id); err != nil {
		return fail(dict.CodeBadState, "%v", err)
	}
	if d.eng != nil {
		if plan, slot := d.eng.Installed(); plan != 0 && slot == id {
			if err := d.eng.MarkArmed(plan); err != nil {
				d.log.Warn("uplink: mark armed", "plan", plan, "err", err)
			}
		}
	}
	d.event(now, dict.EvArmed.Name, "", map[string]any{"slot": label.Name, "attempts": uint64(attempts)})
	if nb, ok := args["not_before"].(int64); ok {
		at := time.UnixMilli(nb)
		if at.Before(now) {
			at = now
		}
		d.rebootAt = at
		d.rebootCause = "activate"
		d.mu.Lock()
		d.st.RebootAtMs = at.UnixMilli()
		d.mu.Unlock()
		if err := d.saveStateErr(); err != nil {
			return err
		}
	}
	return nil
}

// rollback makes the other slot, which must be good, boot next, and
// reboots: a trial in progress is failed; a committed boot arms the other
// slot for a trial of its own (it was good before, it must prove itself
// again, and the booted slot stays its fallback). A pending factory reset
// of the other slot runs first, off the main loop, as for activate.
func (d *daemon) rollback(ctx context.Context, now time.Time, c *protocol.Command) error {
	other := d.up.Booted.Other()
	if st := d.slotState(other); st != slots.Good {
		return fail(dict.CodeBadState, "slot %s is %s, not good: nothing to roll back to", other, st)
	}
	st, ws, err := d.up.snapshot()
	if err != nil {
		return fail(dict.CodeBadState, "%v", err)
	}
	if d.startFactoryReset(ctx, c, dict.CmdRollback, nil, other) {
		return errLater
	}
	if d.up.onTrial(st, ws) {
		if err := d.up.FailTrial("rollback command"); err != nil {
			return fail(dict.CodeBadState, "%v", err)
		}
		d.trialOpen = false
	} else if err := d.up.Arm(other); err != nil {
		return fail(dict.CodeBadState, "%v", err)
	}
	d.mu.Lock()
	d.st.TrialFrom = string(d.up.Booted)
	if d.trial {
		d.st.TrialFrom = string(other)
	}
	d.st.Outcome = "rolled_back"
	d.mu.Unlock()
	if err := d.saveStateErr(); err != nil {
		return err
	}
	d.event(now, dict.EvRolledBack.Name, "rollback command", map[string]any{"from": slotLabel(string(d.up.Booted)), "to": slotLabel(string(other)), "code": uint64(0)})
	d.requestReboot("rollback", string(other))
	return nil
}

// resetResult is the end of a factory reset run off the main loop, and
// the command that waits for it.
type resetResult struct {
	c    *protocol.Command
	def  *dict.Command // activate or rollback
	args dict.Values
	slot slots.SlotID
	err  error
}

// startFactoryReset starts applying a pending factory_reset to slot id,
// the slot about to boot (its /etc back to the image's, the persistent
// /var emptied), off the main loop: emptying /var takes as long as /var
// holds files, and the main loop pets the watchdog. It reports whether one
// was pending (the command def then completes in onFactoryReset, which
// runs it again). Meanwhile installs wait and the commands that change the
// slots answer busy.
func (d *daemon) startFactoryReset(ctx context.Context, c *protocol.Command, def *dict.Command, args dict.Values, id slots.SlotID) bool {
	d.mu.Lock()
	pending := d.st.FactoryReset
	d.mu.Unlock()
	if !pending {
		return false
	}
	d.resetBusy = true
	reset := d.up.Slots.FactoryReset
	if d.opt.factoryReset != nil {
		reset = d.opt.factoryReset
	}
	go func() {
		err := reset(ctx, id, true)
		d.resetRes <- resetResult{c: c, def: def, args: args, slot: id, err: err}
	}()
	return true
}

// onFactoryReset takes the end of a factory reset: on success the reset is
// no longer pending and the command that started it runs again from its
// checks (the state may have moved meanwhile), now without a reset.
func (d *daemon) onFactoryReset(ctx context.Context, now time.Time, r resetResult) {
	d.resetBusy = false
	err := r.err
	if err != nil {
		err = fail(dict.CodeBadState, "factory reset of slot %s: %v", r.slot, err)
	} else {
		d.mu.Lock()
		d.st.FactoryReset = false
		d.mu.Unlock()
		err = d.saveStateErr()
	}
	if err == nil {
		switch r.def {
		case dict.CmdActivate:
			err = d.activate(ctx, now, r.c, r.args)
		case dict.CmdRollback:
			err = d.rollback(ctx, now, r.c)
		}
	}
	d.finish(now, r.c, r.def, err)
	d.drainUplink(ctx, now) // an install held by the reset
}
