package flightd

import (
	"cmp"
	"encoding/hex"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/opencontainers/go-digest"
)

// Status is what the daemon knows of itself: what housekeeping telemetry
// carries, and what `flightd status` prints.
type Status struct {
	Vehicle        uint32       `json:"vehicle"`
	Booted         string       `json:"booted"`
	Next           string       `json:"next,omitempty"`
	Trial          bool         `json:"trial"`
	Slots          []SlotReport `json:"slots"`
	ResetCause     string       `json:"reset_cause"`
	BootCount      uint64       `json:"boot_count"`
	WatchdogResets uint64       `json:"watchdog_resets"`
	LastOutcome    string       `json:"last_outcome"`
	Epoch          uint32       `json:"epoch"`
	Counters       Counters     `json:"counters"`
	LastError      ErrorRecord  `json:"last_error"`
	Uplink         UplinkStatus `json:"uplink"`
	FreeBytes      uint64       `json:"free_bytes"`
	// Warnings are disagreements found while reading the state (offline
	// status only).
	Warnings []string `json:"warnings,omitempty"`
}

// SlotReport is one slot in Status.
type SlotReport struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Image    string `json:"image,omitempty"`
	Version  uint64 `json:"version,omitempty"`
	Attempts int    `json:"attempts_left"`
	Reason   string `json:"reason,omitempty"`
}

// releaseFunc is the release recorded for a slot, or being installed
// into it (uplink.Engine.Release).
type releaseFunc func(slots.SlotID) (version uint64, manifest digest.Digest, ok bool)

// buildStatus assembles a Status from its sources. A slot's version comes
// from release, asked after the slot was read and kept only when its
// manifest is the slot's label: a slot never shows a state (written)
// without the version of the image it holds, nor another image's version.
func buildStatus(vehicle uint32, up *Updater, st DaemonState, rec watchdog.ResetRecord, cause string, us UplinkStatus, release releaseFunc, trial bool) Status {
	s := Status{Vehicle: vehicle, Booted: string(up.Booted), Trial: trial, ResetCause: cause,
		BootCount: rec.Count, WatchdogResets: rec.WatchdogResets, LastOutcome: cmp.Or(st.Outcome, "none"),
		Epoch: st.Epoch, Counters: st.Counters, LastError: st.LastError, Uplink: us}
	ws, err := up.Boot.Status(string(up.Booted))
	if err == nil {
		s.Next = ws.Next
	} else {
		s.Warnings = append(s.Warnings, "boot environment: "+err.Error())
	}
	s.Uplink.Versions = nil
	for _, sl := range up.Slots.Status().Slots {
		r := SlotReport{ID: string(sl.ID), State: string(sl.State), Image: sl.Image, Reason: sl.Reason}
		if release != nil {
			if v, m, ok := release(sl.ID); ok && sl.Image != "" && string(m) == sl.Image {
				r.Version = v
				if s.Uplink.Versions == nil {
					s.Uplink.Versions = map[string]uint64{}
				}
				s.Uplink.Versions[string(sl.ID)] = v
			}
		}
		if err == nil {
			r.Attempts = ws.Left[string(sl.ID)]
		}
		s.Slots = append(s.Slots, r)
	}
	return s
}

// status is the running daemon's Status; safe to call from any goroutine
// (the control socket, Options.Ready's caller).
func (d *daemon) status() Status {
	us, es := d.uplinkStatus()
	d.mu.Lock()
	st := d.st
	st.Counters.Drops = maps2(st.Counters.Drops)
	rec, cause, trial := d.reset, d.cause, d.trial
	d.mu.Unlock()
	// The engine's refusals and the receiver's drops, by reason, join
	// the daemon's own (since this start: they are not persisted).
	for code, n := range es.Refusals {
		st.Counters.addDrops(code, n)
	}
	for r, n := range es.RxCounters {
		if n > 0 {
			st.Counters.addDrops(protocol.CodeOf(protocol.Reason(r)), n)
			st.Counters.FramesDropped += n
		}
	}
	if es.LastError != 0 && es.LastErrorAt.UnixMilli() >= st.LastError.AtMs {
		st.LastError = ErrorRecord{Code: es.LastError, AtMs: es.LastErrorAt.UnixMilli(), Text: es.LastErrorText}
	}
	s := buildStatus(d.cfg.Vehicle.ID, d.up, st, rec, cause, us, d.release(), trial)
	s.FreeBytes = freeBytes(d.cfg.StorageDir(), d.cfg.Slots.StateDir)
	return s
}

func maps2[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return nil
	}
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// freeBytes is the free space of the first of dirs that exists.
func freeBytes(dirs ...string) uint64 {
	for _, dir := range dirs {
		var fs syscall.Statfs_t
		if syscall.Statfs(dir, &fs) == nil {
			return fs.Bavail * uint64(fs.Bsize)
		}
	}
	return 0
}

// housekeeping returns the values of every hk packet from s.
func housekeeping(s Status) map[*dict.Packet]dict.Values {
	out := map[*dict.Packet]dict.Values{}
	hs := dict.Values{}
	for _, sl := range s.Slots {
		p := "slot_" + strings.ToLower(sl.ID) + "_"
		state := sl.State
		if _, ok := dict.EnumSlotState.Value(state); !ok {
			state = "empty"
		}
		hs[p+"state"] = state
		hs[p+"version"] = sl.Version
		hs[p+"digest"] = shortDigest(sl.Image)
		hs[p+"attempts"] = uint64(min(max(sl.Attempts, 0), 255))
	}
	out[dict.HKSlots] = hs
	out[dict.HKBoot] = dict.Values{
		"booted_slot":  slotLabel(s.Booted),
		"next_slot":    slotLabel(s.Next),
		"trial":        s.Trial,
		"reset_cause":  cmp.Or(s.ResetCause, "unknown"),
		"boot_count":   uint64(uint32(min(s.BootCount, 1<<32-1))),
		"last_outcome": cmp.Or(s.LastOutcome, "none"),
	}
	state := s.Uplink.State
	if _, ok := dict.EnumTransferState.Value(state); !ok {
		state = "idle"
	}
	out[dict.HKTransfer] = dict.Values{
		"plan_id": s.Uplink.Plan, "transfer_id": s.Uplink.Transfer,
		"chunks_held": uint64(s.Uplink.ChunksHeld), "chunks_total": uint64(s.Uplink.ChunksTotal),
		"bytes_staged": s.Uplink.BytesStaged, "state": state,
	}
	out[dict.HKStorage] = dict.Values{
		"staging_used": s.Uplink.StagingUsed, "staging_quota": s.Uplink.StagingQuota, "free": s.FreeBytes,
	}
	c := s.Counters
	hc := dict.Values{
		"frames_in": c32(c.FramesIn), "frames_out": c32(c.FramesOut), "frames_dropped": c32(c.FramesDropped),
		"cmds_accepted": c32(c.CmdsAccepted), "cmds_rejected": c32(c.CmdsRejected),
	}
	type rc struct {
		code protocol.Code
		n    uint64
	}
	var top []rc
	for code, n := range c.Drops {
		if _, ok := dict.EnumReason.Lookup(uint64(code)); ok && n > 0 {
			top = append(top, rc{code, n})
		}
	}
	slices.SortFunc(top, func(a, b rc) int { return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.code, b.code)) })
	for i := range dict.TopDrops {
		n := string(rune('1' + i))
		if i < len(top) {
			hc["drop"+n+"_reason"], hc["drop"+n+"_count"] = uint64(top[i].code), c32(top[i].n)
		} else {
			hc["drop"+n+"_reason"], hc["drop"+n+"_count"] = uint64(0), uint64(0)
		}
	}
	out[dict.HKCounters] = hc
	code := uint64(s.LastError.Code)
	if _, ok := dict.EnumReason.Lookup(code); !ok {
		code = uint64(protocol.CodeOf(protocol.ReasonOther))
	}
	out[dict.HKError] = dict.Values{"code": code, "at": s.LastError.AtMs, "text": truncate(s.LastError.Text, dict.MaxErrorText)}
	return out
}

func c32(n uint64) uint64 { return min(n, 1<<32-1) }

// shortDigest is the first dict.ShortDigestLen bytes of a sha256 digest
// string ("sha256:hex"), or empty.
func shortDigest(d string) []byte {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) < 2*dict.ShortDigestLen {
		return []byte{}
	}
	b, err := hex.DecodeString(h[:2*dict.ShortDigestLen])
	if err != nil {
		return []byte{}
	}
	return b
}

// sendHousekeeping sends every hk packet.
func (d *daemon) sendHousekeeping(now time.Time) {
	vals := housekeeping(d.status())
	for _, p := range dict.Packets() {
		v, ok := vals[p]
		if !ok {
			continue
		}
		d.tlmSeq[p.ID]++
		t, err := p.NewTelemetry(d.cfg.Vehicle.ID, now.UnixMilli(), d.tlmSeq[p.ID], v)
		if err != nil {
			d.log.Error("telemetry", "packet", p.Name, "err", err)
			continue
		}
		d.send(t)
	}
}

// event reports a dictionary event.
func (d *daemon) event(now time.Time, name, text string, args map[string]any) {
	e, ok := dict.EventByName(name)
	if !ok {
		d.log.Error("event not in the dictionary", "event", name)
		return
	}
	text = truncate(text, dict.MaxEventText)
	d.evSeq++
	ev, err := e.NewEvent(d.cfg.Vehicle.ID, now.UnixMilli(), d.evSeq, text, dict.Values(args))
	if err != nil {
		d.log.Error("event", "event", name, "err", err)
		return
	}
	d.log.Info("event", "event", name, "text", text, "args", args)
	if d.ret == nil || d.links == nil {
		// Before the links are open (at start): kept for the log only;
		// telemetry carries the state.
		d.pending = append(d.pending, ev)
		return
	}
	d.send(ev)
}

// flushPending sends the events raised before the links were open.
func (d *daemon) flushPending() {
	for _, ev := range d.pending {
		d.send(ev)
	}
	d.pending = nil
}

func validUTF8(s string) bool { return utf8.ValidString(s) }

// slotID parses a dict slot label.
func slotID(label string) (slots.SlotID, bool) {
	switch label {
	case "a":
		return slots.A, true
	case "b":
		return slots.B, true
	}
	return "", false
}
