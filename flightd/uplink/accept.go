package uplink

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/update"
)

func newCodec(cfg Config) (*protocol.Codec, error) {
	if cfg.Opener != nil {
		return protocol.NewInnerCodec(cfg.MaxFrame)
	}
	return protocol.NewCodec(cfg.MaxFrame)
}

// process carries out the receiver's work in the required order: staged
// data written and synced, then the receiver's and the engine's records in
// one bbolt transaction, then the frames released to the Outbox. Acting on
// a completion (verifying a plan) adds records, which commit before the
// completion's frame is released: when the ground hears that its plan
// arrived, the vehicle's decision on it is durable.
func (e *Engine) process(now time.Time) error {
	if e.rx == nil {
		return e.flushUp()
	}
	var out [][]byte
	for {
		rd := e.rx.Ready()
		if rd.Empty() && len(e.pendUp) == 0 {
			break
		}
		if err := transfer.Persist(&rd, e.st, noJournal{}); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
		if err := e.j.Apply(rd.Records, e.pendUp); err != nil {
			return err
		}
		e.pendUp = nil
		e.rx.Advance()
		for _, m := range rd.Messages {
			out = append(out, m.Frame)
		}
		for _, ev := range rd.Events {
			e.log.Warn("uplink: transfer event", "transfer", ev.Transfer, "kind", ev.Kind.String(), "detail", ev.Detail)
		}
		for _, c := range rd.Completed {
			if x, ok := e.xfers[c.ID]; ok {
				e.completed(c.ID, x)
			}
		}
		e.removeStaged()
	}
	e.removeStaged()
	e.outbox = append(e.outbox, out...)
	return nil
}

// noJournal lets transfer.Persist do the data half; the records go in the
// engine's own transaction with its records.
type noJournal struct{}

func (noJournal) Commit([]transfer.Record) error   { return nil }
func (noJournal) Load() ([]transfer.Record, error) { return nil, nil }

func (e *Engine) flushUp() error {
	if len(e.pendUp) == 0 {
		return nil
	}
	if err := e.j.Apply(nil, e.pendUp); err != nil {
		return err
	}
	e.pendUp = nil
	e.removeStaged()
	return nil
}

// removeStaged deletes the staging files whose records are gone. It runs
// after the commit that dropped them: a cut in between leaves a file no
// record names, which the next Open removes.
func (e *Engine) removeStaged() {
	for _, id := range e.rmAfter {
		if err := e.st.Remove(id); err != nil {
			e.log.Warn("uplink: remove staged data", "transfer", id, "err", err)
		}
	}
	e.rmAfter = nil
}

// dropXfer forgets transfer id: its record, and its staged data after the
// commit.
func (e *Engine) dropXfer(id uint64) {
	delete(e.xfers, id)
	e.pendUp = append(e.pendUp, delKey(keyXfer(id)))
	e.rmAfter = append(e.rmAfter, id)
}

// accept is the receiver's acceptance hook: a plan transfer needs room in
// the staging; a bundle transfer needs its plan accepted and the size the
// plan says. Nothing is written for a refusal.
func (e *Engine) accept(o *protocol.Offer) (uint8, bool) {
	kind, pid, err := update.ParseTarget(o.Target)
	if err != nil {
		return e.refuseOffer(o, 0, dict.CodeBadPlan, protocol.CancelRefused, fmt.Sprintf("offer %d: %v", o.ID, err))
	}
	switch kind {
	case update.KindPlan:
		if o.Size > update.MaxPlanSize {
			return e.refuseOffer(o, pid, dict.CodeBadPlan, protocol.CancelRefused, fmt.Sprintf("plan %d: %d bytes, max %d", pid, o.Size, update.MaxPlanSize))
		}
		if e.plans[pid] != nil {
			return e.refuseOffer(o, pid, protocol.CodeOf(protocol.ReasonReplayed), protocol.CancelReplayed, fmt.Sprintf("plan %d: already received", pid))
		}
		if err := e.st.Reserve(o.ID, int64(o.Size)); err != nil {
			return e.refuseOffer(o, pid, dict.CodeOverQuota, protocol.CancelResources, fmt.Sprintf("plan %d: %v", pid, err))
		}
	case update.KindBundle:
		p := e.plans[pid]
		if p == nil {
			return e.refuseOffer(o, pid, dict.CodeUnknownPlan, protocol.CancelRefused, fmt.Sprintf("bundle of plan %d, which was not accepted", pid))
		}
		if p.State != stBundle || (p.Bundle != 0 && p.Bundle != o.ID) {
			return e.refuseOffer(o, pid, dict.CodeBadState, protocol.CancelRefused, fmt.Sprintf("bundle of plan %d, which is %s", pid, stateName(p.State)))
		}
		pl, err := p.decoded()
		if err != nil {
			return e.refuseOffer(o, pid, dict.CodeBadPlan, protocol.CancelRefused, fmt.Sprintf("plan %d: %v", pid, err))
		}
		if o.Size != pl.BundleSize {
			return e.refuseOffer(o, pid, dict.CodeBundleMismatch, protocol.CancelRefused, fmt.Sprintf("bundle of plan %d: %d bytes, the plan says %d", pid, o.Size, pl.BundleSize))
		}
		if err := e.st.Reserve(o.ID, int64(o.Size)); err != nil {
			return e.refuseOffer(o, pid, dict.CodeOverQuota, protocol.CancelResources, fmt.Sprintf("bundle of plan %d: %v", pid, err))
		}
		p.Bundle = o.ID
		e.pendUp = append(e.pendUp, putPlan(pid, p))
	}
	x := xferRec{Kind: byte(kind), Plan: pid, Size: o.Size}
	e.xfers[o.ID] = x
	e.pendUp = append(e.pendUp, putXfer(o.ID, x))
	return 0, true
}

// maxRefusedRemembered bounds the offers whose refusal was reported: the
// same offer repeated is counted but not reported again.
const maxRefusedRemembered = 256

func (e *Engine) refuseOffer(o *protocol.Offer, plan uint64, code protocol.Code, reason uint8, text string) (uint8, bool) {
	e.fail(code, text)
	if !e.refused[o.ID] {
		if len(e.refused) >= maxRefusedRemembered {
			clear(e.refused)
		}
		e.refused[o.ID] = true
		e.event(dict.EvPlanRefused, text, dict.Values{"plan": plan, "code": uint64(code)})
	}
	return reason, false
}

// completed acts on a transfer whose data is whole and durable.
func (e *Engine) completed(id uint64, x xferRec) {
	switch update.TargetKind(x.Kind) {
	case update.KindPlan:
		b, err := e.readStaged(id, x.Size)
		e.dropXfer(id)
		if err != nil {
			e.fail(dict.CodeStorage, fmt.Sprintf("plan %d: %v", x.Plan, err))
			e.event(dict.EvPlanRefused, err.Error(), dict.Values{"plan": x.Plan, "code": uint64(dict.CodeStorage)})
			return
		}
		e.takePlan(b, x.Plan, false)
	case update.KindBundle:
		p := e.plans[x.Plan]
		if p == nil || p.Bundle != id || p.State != stBundle {
			return // aborted or superseded meanwhile, or acted on before a restart
		}
		p.State = stInstalling
		e.pendUp = append(e.pendUp, putPlan(x.Plan, p))
		e.event(dict.EvTransferComplete, fmt.Sprintf("bundle of plan %d complete", x.Plan),
			dict.Values{"plan": x.Plan, "transfer": id, "bytes": x.Size})
	}
}

func (e *Engine) readStaged(id, size uint64) ([]byte, error) {
	ra, n, err := e.st.Reader(id)
	if err != nil {
		return nil, err
	}
	if uint64(n) != size || size > update.MaxPlanSize {
		return nil, fmt.Errorf("uplink: staged plan of %d bytes, want %d", n, size)
	}
	b := make([]byte, size) // bounded by MaxPlanSize (checked at the offer)
	if _, err := ra.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}

// takePlan verifies an encoded plan received in the transfer for plan id
// want (0: from a file) and accepts it (records, event) or refuses it
// (counter, event). It returns the plan and 0, or the refusal's code.
func (e *Engine) takePlan(b []byte, want uint64, file bool) (*update.Plan, protocol.Code) {
	p, code, text := e.checkPlan(b, want)
	if code != 0 {
		e.fail(code, text)
		e.event(dict.EvPlanRefused, text, dict.Values{"plan": want, "code": uint64(code)})
		return nil, code
	}
	// A new plan supersedes the plans not yet installed (or installed and
	// not armed): the slot they were for will hold the new image.
	for id, old := range e.plans {
		if p.Supplement != 0 || (old.State != stBundle && old.State != stBaseMismatch && old.State != stInstalled) {
			continue
		}
		e.abandonPlan(id, old, dict.CodeBadState, fmt.Sprintf("superseded by plan %d", p.ID))
	}
	rec := &planRec{State: stBundle, Plan: b, File: file, dec: p}
	if file {
		rec.State = stInstalling
	}
	e.plans[p.ID] = rec
	e.floors[p.KeyID] = p.ID
	e.pendUp = append(e.pendUp, putPlan(p.ID, rec),
		transfer.Record{Op: transfer.OpPut, Key: keyFloor(p.KeyID), Value: binary.BigEndian.AppendUint64(nil, p.ID)})
	e.event(dict.EvPlanAccepted, fmt.Sprintf("plan %d accepted: release %d, %d bundle bytes", p.ID, p.Release.Release.Version, p.BundleSize),
		dict.Values{"plan": p.ID, "version": p.Release.Release.Version, "bundle_size": p.BundleSize})
	return p, 0
}

// checkPlan runs every acceptance check on an encoded plan.
func (e *Engine) checkPlan(b []byte, want uint64) (*update.Plan, protocol.Code, string) {
	p, err := update.DecodePlan(b)
	if err != nil {
		return nil, dict.CodeOf(err), err.Error()
	}
	if want != 0 && p.ID != want {
		return nil, dict.CodeBadPlan, fmt.Sprintf("plan transfer for plan %d carries plan %d", want, p.ID)
	}
	if err := update.VerifyPlan(e.groundKeys, e.cfg.Vehicle, p); err != nil {
		return nil, dict.CodeOf(err), err.Error()
	}
	if err := update.VerifyRelease(e.releaseKeys, &p.Release); err != nil {
		return nil, dict.CodeOf(err), err.Error()
	}
	rel := p.Release.Release
	if rel.HardwareID != e.cfg.HardwareID {
		return nil, dict.CodeWrongHardware, fmt.Sprintf("plan %d: release for hardware %q, this is %q", p.ID, rel.HardwareID, e.cfg.HardwareID)
	}
	if p.ID <= e.floors[p.KeyID] || e.plans[p.ID] != nil {
		return nil, protocol.CodeOf(protocol.ReasonReplayed), fmt.Sprintf("plan %d: ground key %d already had plan %d accepted", p.ID, p.KeyID, e.floors[p.KeyID])
	}
	if v := e.installedVersion(); rel.Version <= v && !p.AllowDowngrade {
		return nil, dict.CodeDowngrade, fmt.Sprintf("plan %d: release %d is not above the installed %d", p.ID, rel.Version, v)
	}
	if p.Base != "" && e.inst != nil {
		if l := bootedLabel(e.inst.Status()); l != string(p.Base) {
			return nil, dict.CodeBaseMismatch, fmt.Sprintf("plan %d: assumes the booted slot holds %s, it holds %q", p.ID, p.Base, l)
		}
	}
	for id, q := range e.plans {
		if q.State == stInstalling {
			return nil, dict.CodeBusy, fmt.Sprintf("plan %d: plan %d is installing", p.ID, id)
		}
	}
	if p.Supplement != 0 {
		orig := e.plans[p.Supplement]
		if orig == nil {
			return nil, dict.CodeUnknownPlan, fmt.Sprintf("plan %d supplements plan %d, which is unknown", p.ID, p.Supplement)
		}
		if orig.State != stBaseMismatch {
			return nil, dict.CodeBadState, fmt.Sprintf("plan %d supplements plan %d, which is %s", p.ID, p.Supplement, stateName(orig.State))
		}
		op, err := orig.decoded()
		if err != nil || op.Release.Release != rel || string(op.Config) != string(p.Config) {
			return nil, dict.CodeBadPlan, fmt.Sprintf("plan %d is not for the image of plan %d", p.ID, p.Supplement)
		}
	}
	// Room: the quota less what other plans keep (a supplement's original
	// keeps its bundle; a plan that the new one supersedes frees its own).
	var kept int64
	res := e.st.Reserved()
	for xid, x := range e.xfers {
		q := e.plans[x.Plan]
		if x.Plan == p.ID || (q != nil && p.Supplement == 0 && (q.State == stBundle || q.State == stBaseMismatch || q.State == stInstalled)) {
			continue
		}
		kept += res[xid]
	}
	if p.Staging > uint64(e.st.Quota()-kept) {
		return nil, dict.CodeOverQuota, fmt.Sprintf("plan %d needs %d staging bytes, %d of %d are free", p.ID, p.Staging, e.st.Quota()-kept, e.st.Quota())
	}
	return p, 0, ""
}

func (p *planRec) decoded() (*update.Plan, error) {
	if p.dec == nil {
		d, err := update.DecodePlan(p.Plan)
		if err != nil {
			return nil, err
		}
		p.dec = d
	}
	return p.dec, nil
}

// installedVersion is the release version of the booted slot's image: the
// one this engine recorded when it installed the image the slot still
// holds, else Config.MinVersion.
func (e *Engine) installedVersion() uint64 {
	if e.inst == nil {
		return e.cfg.MinVersion
	}
	st := e.inst.Status()
	if r, ok := e.slotRecs[st.Booted]; ok && r.Manifest == bootedLabel(st) {
		return max(r.Version, e.cfg.MinVersion)
	}
	return e.cfg.MinVersion
}

// abandonPlan ends plan id: its transfers cancelled (the ground told), its
// staged data freed, its state failed with code.
func (e *Engine) abandonPlan(id uint64, p *planRec, code protocol.Code, why string) {
	for xid, x := range e.xfers {
		if x.Plan != id {
			continue
		}
		if e.rx != nil {
			e.rx.Abandon(xid, protocol.CancelRefused)
		}
		e.dropXfer(xid)
	}
	p.State, p.Code, p.Paused = stFailed, uint16(code), false
	e.pendUp = append(e.pendUp, putPlan(id, p))
	e.event(dict.EvTransferAborted, fmt.Sprintf("plan %d: %s", id, why), dict.Values{"plan": id, "transfer": uint64(0), "code": uint64(code)})
}

// pausedChunk says whether frame is a chunk of a paused plan's transfer:
// it is dropped before the receiver sees it.
func (e *Engine) pausedChunk(frame []byte) bool {
	paused := false
	for _, p := range e.plans {
		paused = paused || p.Paused
	}
	if !paused {
		return false
	}
	m, err := e.codec().Decode(frame)
	if err != nil {
		return false
	}
	c, ok := m.(*protocol.Chunk)
	if !ok {
		return false
	}
	x, ok := e.xfers[c.ID]
	return ok && e.plans[x.Plan] != nil && e.plans[x.Plan].Paused
}
