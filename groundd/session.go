package groundd

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/bootorbit/bootorbit/groundd/gateway"
	"github.com/bootorbit/bootorbit/groundd/metrics"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/transfer"
)

// session is the daemon's side of one vehicle: its return-link verifier,
// the optional sealer, the link state and the sender of the transfer in
// flight. Poll drives it, one call at a time per vehicle; the fields the
// API reads (linkUp, pending) are guarded by Daemon.mu.
type session struct {
	cfg      VehicleConfig
	keys     VehicleKeys
	verifier *protocol.ReturnVerifier
	sealer   *protocol.Sealer
	// codec encodes uplink frames: the link's, or the smaller inner one
	// whose frames still fit the link once sealed.
	codec *protocol.Codec

	// The fields below are Poll's; linkUp is also read under Daemon.mu.
	linkUp    bool
	linkKnown bool
	passRate  float64
	verState  []byte
	cur       *active
	lastSave  time.Time
	contact   time.Time
	// contactSaved is when the last contact was last stored.
	contactSaved time.Time
	// lastStatus is when groundd last asked for housekeeping itself, and
	// statusAsks how many times since the vehicle last sent hk.slots or
	// the link came up (the backoff of askStatus).
	lastStatus time.Time
	statusAsks int
	// counters are the traffic counters (VehicleCounters), guarded by
	// Daemon.mu.
	counters metrics.Counters
	// stationContactSaved is when this station's contact was last stored
	// (several stations: station.go).
	stationContactSaved time.Time
}

// active is the transfer being sent.
type active struct {
	rec    transferRec
	sender *transfer.Sender
	file   *os.File
	rate   float64
	dirty  bool
	urgent bool
	// base are the chunk counters of the transfer's earlier senders (a
	// restart, another station), which this sender's add to.
	base struct{ sent, resent, presumed int64 }
}

// statusInterval: while an uplink waits for the vehicle's housekeeping,
// groundd asks for it (the status command) again after two round trips,
// then twice as long after each unanswered ask, up to this.
const statusInterval = 30 * time.Second

// rtt is the vehicle's expected round trip (VehicleConfig.RTT, default 1s).
func (s *session) rtt() time.Duration {
	return cmp.Or(time.Duration(s.cfg.RTT), time.Second)
}

// resendBase is how long a command waits for its acknowledgement before
// the gateway sends a copy (gateway.Resend), and the first wait between
// two asks for housekeeping: two round trips.
func (s *session) resendBase() time.Duration { return 2 * s.rtt() }

// statusWait is how long after the last ask for housekeeping the next one
// may go out.
func (s *session) statusWait() time.Duration {
	return min(statusInterval, s.resendBase()<<min(max(s.statusAsks-1, 0), 16))
}

// defaultRate is a vehicle's uplink rate when neither the config nor the
// pass names one: a UHF link's.
const defaultRate = 9600

func (s *session) rate() float64 {
	if s.passRate > 0 {
		return s.passRate
	}
	return cmp.Or(s.cfg.Rate, defaultRate)
}

func (d *Daemon) newSession(ctx context.Context, vc VehicleConfig, o Options) (*session, error) {
	s := &session{cfg: vc, keys: VehicleKeys{GroundKeyID: d.cfg.GroundKeyID, MACKeyID: vc.MACKey.ID}, codec: d.codec}
	mk, ok := o.MACKeys[vc.ID]
	if !ok {
		k, err := readHexKey(vc.MACKey.File, protocol.MACKeyLen)
		if err != nil {
			return nil, err
		}
		mk = protocol.MACKey{ID: protocol.KeyID(vc.MACKey.ID), Key: k}
	}
	s.keys.MACKeyID = uint32(mk.ID)
	var err error
	if s.verifier, err = protocol.NewReturnVerifier(vc.ID, mk); err != nil {
		return nil, fmt.Errorf("groundd: vehicle %d: %w", vc.ID, err)
	}
	// The replay window survives restarts: a frame believed once is never
	// believed again.
	if kv, err := d.st.Get(ctx, keyVerifier(vc.ID)); err == nil {
		if err := s.verifier.UnmarshalBinary(kv.Value); err != nil {
			return nil, fmt.Errorf("groundd: vehicle %d: replay window: %w", vc.ID, err)
		}
		s.verState = kv.Value
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	sk, ok := o.SealKeys[vc.ID]
	if !ok && vc.SealKey != nil {
		k, err := readHexKey(vc.SealKey.File, protocol.SealKeyLen)
		if err != nil {
			return nil, err
		}
		sk, ok = protocol.SealKey{ID: protocol.KeyID(vc.SealKey.ID), Key: k}, true
	}
	if ok {
		s.keys.SealKeyID = uint32(sk.ID)
		key := keySealMark(vc.ID, uint32(sk.ID))
		// A mark that cannot be read stops the vehicle's session: starting
		// again from 0 would reuse nonces under the same key.
		var mark uint32
		if kv, err := d.st.Get(ctx, key); err == nil {
			if mark, err = sealMark(kv.Value); err != nil {
				return nil, fmt.Errorf("%w (vehicle %d, key %d)", err, vc.ID, sk.ID)
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		// The mark is shared through the store: a transaction, as two
		// stations sealing for one vehicle must never reuse a nonce.
		ctr, err := protocol.NewSealCounter(mark, 4096, func(m uint32) error {
			return store.Update(context.Background(), d.st, key, func(old []byte, found bool) ([]byte, error) {
				if found {
					prev, err := sealMark(old)
					if err != nil {
						return nil, err
					}
					if prev >= m {
						return nil, fmt.Errorf("groundd: seal mark went back from %d to %d", prev, m)
					}
				}
				return []byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}, nil
			})
		})
		if err != nil {
			return nil, err
		}
		if s.codec, err = protocol.NewInnerCodec(d.codec.MaxFrame()); err != nil {
			return nil, fmt.Errorf("groundd: vehicle %d: %w", vc.ID, err)
		}
		if s.sealer, err = protocol.NewSealer(protocol.SealerConfig{Vehicle: vc.ID, Key: sk, MaxFrame: d.codec.MaxFrame(), Seqs: ctr}); err != nil {
			return nil, fmt.Errorf("groundd: vehicle %d: %w", vc.ID, err)
		}
	}
	return s, nil
}

// sealMark decodes a seal mark record: 4 bytes, big-endian.
func sealMark(b []byte) (uint32, error) {
	if len(b) != 4 {
		return 0, fmt.Errorf("groundd: seal mark record of %d bytes, want 4", len(b))
	}
	return binary.BigEndian.Uint32(b), nil
}

// linkState says whether vehicle's link is up at now, and the pass's rate:
// a station's signal wins over the schedule; with neither, the link is up.
func (d *Daemon) linkState(vehicle uint32, now time.Time) (bool, float64) {
	d.mu.Lock()
	sig, ok := d.signals[vehicle]
	d.mu.Unlock()
	var rate float64
	w, in := d.schedule.At(vehicle, now)
	if in {
		rate = w.Rate
	}
	if ok {
		return sig, rate
	}
	if d.schedule == nil {
		return true, 0
	}
	return in, rate
}

// Poll runs one step of vehicle's session at now: it takes the frames
// received from the vehicle (in), advances the queue, the planner and the
// transfer in flight, and returns the frames to send now and when to call
// Poll again at the latest (zero: only when a frame arrives). Everything
// durable is stored before Poll returns frames that depend on it.
//
// Poll is the daemon as a state machine: Run drives it with the wall clock
// and the links; tests and hil drive it with a fake clock and a simulated
// link. Calls for one vehicle must not overlap.
func (d *Daemon) Poll(ctx context.Context, vehicle uint32, now time.Time, in [][]byte) ([][]byte, time.Time, error) {
	out, next, err := d.poll(ctx, vehicle, now, in)
	if s, ok := d.sessionOf(vehicle); ok {
		d.countFrames(s, out, in)
	}
	return out, next, err
}

func (d *Daemon) poll(ctx context.Context, vehicle uint32, now time.Time, in [][]byte) (out [][]byte, next time.Time, err error) {
	s, ok := d.sessionOf(vehicle)
	if !ok {
		return nil, time.Time{}, fmt.Errorf("%w: vehicle %d", ErrNotFound, vehicle)
	}
	up, rate := d.linkState(vehicle, now)
	if d.station != nil {
		// Several stations: only the one holding the vehicle sends.
		held, fresh := d.station.hold(vehicle, up)
		if !held {
			return d.standby(ctx, s, now, in, up)
		}
		if fresh {
			if err := d.takeOver(ctx, s); err != nil {
				return nil, time.Time{}, err
			}
		}
		// A step that waited on etcd past the lease sends nothing.
		defer func() {
			if !d.station.holds(vehicle) {
				out = nil
			}
		}()
	}
	if !s.linkKnown || up != s.linkUp || rate != s.passRate {
		d.mu.Lock()
		if up && (!s.linkKnown || !s.linkUp) {
			s.counters.Passes++
		}
		s.linkUp, s.linkKnown = up, true
		d.mu.Unlock()
		if up {
			s.statusAsks = 0 // a new pass: ask at its start, then soon again
		}
		s.passRate = rate
		d.log.Info("groundd: link", "vehicle", vehicle, "up", up, "rate", s.rate())
		if s.cur != nil {
			if up && s.cur.rate != s.rate() {
				// A pass at another rate: a new sender paced at it,
				// resuming from the vehicle's next report.
				d.dropSender(s)
			} else {
				s.cur.sender.SetLink(now, transfer.LinkState{Forward: up, Return: up})
			}
		}
	}
	var contact bool
	for _, f := range in {
		if d.receive(ctx, s, now, f) {
			contact = true
		}
	}
	if contact {
		s.contact = now
		if d.station != nil {
			if err := d.stationContact(ctx, s, now); err != nil {
				return nil, time.Time{}, err
			}
		}
	}
	if err := d.saveVehicleState(ctx, s, now, contact); err != nil {
		return nil, time.Time{}, err
	}
	if err := d.advanceQueue(ctx, s, now); err != nil {
		return nil, time.Time{}, err
	}
	if s.cur != nil {
		a := s.cur
		a.sender.Tick(now)
		rd := a.sender.Ready()
		if len(rd.Messages) > 0 && !a.rec.Started {
			// Persist before send: once a frame may be out, a restart
			// must resume rather than start over.
			a.rec.Started = true
			if err := d.saveTransfer(ctx, &a.rec); err != nil {
				return nil, time.Time{}, err
			}
		}
		for _, m := range rd.Messages {
			if !up {
				continue // the radio is off: the frame is lost, as on a link
			}
			fr, err := d.seal(s, m.Frame)
			if err != nil {
				return nil, time.Time{}, err
			}
			out = append(out, fr)
		}
		for _, e := range rd.Events {
			d.log.Warn("groundd: transfer event", "vehicle", vehicle, "transfer", e.Transfer, "kind", e.Kind.String(), "chunks", e.Chunks, "detail", e.Detail)
		}
		a.sender.Advance()
		next = rd.Deadline
		d.noteProgress(a)
		if a.sender.Done() {
			if err := d.finishTransfer(ctx, s, now); err != nil {
				return nil, time.Time{}, err
			}
			next = now // the next transfer starts at once
		} else if a.dirty && (a.urgent || now.Sub(s.lastSave) >= time.Second) {
			if err := d.saveTransfer(ctx, &a.rec); err != nil {
				return nil, time.Time{}, err
			}
			a.dirty, a.urgent, s.lastSave = false, false, now
		}
	}
	if up {
		cmds, err := d.sendCommands(s, now)
		out = append(out, cmds...)
		if err != nil {
			return out, next, err
		}
	}
	if _, err := d.gw.Tick(now); err != nil {
		return out, next, err
	}
	if t, ok := d.gw.NextDeadline(); ok && (next.IsZero() || t.Before(next)) {
		next = t
	}
	next = sooner(next, d.schedule.Change(vehicle, now))
	next = sooner(next, d.queueWake(ctx, vehicle, now))
	if up {
		if t, ok := d.gw.NextResend(vehicle, s.resendBase()); ok && (next.IsZero() || t.Before(next)) {
			next = t
		}
		// Planning waits for housekeeping: the next ask (only once: if
		// planning no longer waits then, it asks nothing and the time is
		// past).
		if s.statusAsks > 0 {
			if t := s.lastStatus.Add(s.statusWait()); t.After(now) {
				next = sooner(next, t)
			}
		}
	}
	return out, next, nil
}

func (d *Daemon) seal(s *session, frame []byte) ([]byte, error) {
	if s.sealer == nil {
		return frame, nil
	}
	fr, err := s.sealer.Seal(frame)
	if err != nil {
		return nil, fmt.Errorf("groundd: vehicle %d: seal: %w", s.cfg.ID, err)
	}
	return fr, nil
}

// receive takes one frame from the vehicle and says whether it was
// authenticated (a contact). Nothing is believed before its MAC verifies.
func (d *Daemon) receive(ctx context.Context, s *session, now time.Time, frame []byte) bool {
	msg, err := d.codec.Decode(frame)
	if err != nil {
		d.log.Debug("groundd: frame dropped", "vehicle", s.cfg.ID, "err", err)
		d.countDrop(s, dropDecode)
		return false
	}
	switch m := msg.(type) {
	case *protocol.Telemetry, *protocol.Event, *protocol.Verification:
		if err := s.verifier.Verify(m); err != nil {
			d.log.Warn("groundd: unauthenticated frame dropped", "vehicle", s.cfg.ID, "type", fmt.Sprintf("%T", m), "err", err)
			if errors.Is(err, protocol.ErrReplayed) {
				d.countDrop(s, dropReplay)
			} else {
				d.countDrop(s, dropMAC)
			}
			return false
		}
		d.handleReturn(ctx, s, now, m)
		return true
	}
	if s.cur == nil {
		d.countDrop(s, dropNoTransfer)
		return false
	}
	rej := s.cur.sender.Stats.Rejected
	if err := s.cur.sender.Step(now, frame); err != nil {
		d.log.Debug("groundd: transfer frame dropped", "vehicle", s.cfg.ID, "transfer", s.cur.rec.ID, "err", err)
		d.countDrop(s, dropTransfer)
		return false
	}
	if s.cur.sender.Stats.Rejected != rej {
		d.countDrop(s, dropMAC)
		return false
	}
	return true
}

// saveVehicleState persists the replay window when it moved (a restart
// must not reopen it) and the last contact.
func (d *Daemon) saveVehicleState(ctx context.Context, s *session, now time.Time, contact bool) error {
	st, err := s.verifier.MarshalBinary()
	if err != nil {
		return err
	}
	if !bytes.Equal(st, s.verState) {
		if err := store.Put(ctx, d.st, keyVerifier(s.cfg.ID), st); err != nil {
			return err
		}
		s.verState = st
	}
	// The last contact, to the second: one write a second at most while
	// frames stream in.
	if contact && (s.contactSaved.IsZero() || now.Sub(s.contactSaved) >= time.Second) {
		s.contactSaved = now
		return updateJSON(ctx, d.st, keyVehicle(s.cfg.ID), func(v *vehicleRec, _ bool) error {
			v.LastContact = now.UTC()
			return nil
		})
	}
	return nil
}

func (d *Daemon) saveTransfer(ctx context.Context, r *transferRec) error {
	b, _ := json.Marshal(r)
	return store.Put(ctx, d.st, keyTransfer(r.ID), b)
}

func (d *Daemon) noteProgress(a *active) {
	held, total := a.sender.Progress()
	st := a.sender.Stats
	if held != a.rec.Held || total != a.rec.Total {
		a.urgent = true // what the vehicle holds: operators see it at once
	}
	if sent := a.base.sent + st.ChunksSent; held != a.rec.Held || total != a.rec.Total || sent != a.rec.Sent {
		a.rec.Held, a.rec.Total = held, total
		a.rec.Sent, a.rec.Resent, a.rec.Presumed = sent, a.base.resent+st.ChunksResent, a.base.presumed+st.Presumed
		a.dirty = true
	}
}

func (d *Daemon) dropSender(s *session) {
	if s.cur != nil {
		s.cur.file.Close()
		s.cur = nil
	}
}

// startSender builds the sender of r: the same plan (id, data, chunk size:
// the same hash tree and root) as before any restart, resuming if a frame
// of it may have gone out.
func (d *Daemon) startSender(ctx context.Context, s *session, r transferRec, now time.Time) error {
	f, err := d.openBlob(r.Blob, r.Size)
	if err != nil {
		return err
	}
	p, err := transfer.NewPlan(s.codec, r.Vehicle, r.ID, r.target(), f, r.Size, r.Chunk, d.cfg.GroundKeyID, d.groundKey)
	if err != nil {
		f.Close()
		return err
	}
	// Every incarnation of a sender takes sequence numbers above all the
	// earlier ones': a counter block of 2^32, never handed out twice.
	inc, err := d.st.Next(ctx, fmt.Sprintf("senderseq/%d", r.Vehicle))
	if err != nil {
		f.Close()
		return err
	}
	rtt := s.rtt()
	snd, err := transfer.NewSender(transfer.SenderConfig{Codec: s.codec, ReturnCodec: d.codec, Verifier: s.verifier, Rate: s.rate(), RTT: rtt,
		SeqBase: inc << 32, Resume: r.Started}, p)
	if err != nil {
		f.Close()
		return err
	}
	snd.SetLink(now, transfer.LinkState{Forward: s.linkUp, Return: s.linkUp})
	s.cur = &active{rec: r, sender: snd, file: f, rate: s.rate()}
	s.cur.base.sent, s.cur.base.resent, s.cur.base.presumed = r.Sent, r.Resent, r.Presumed
	d.log.Info("groundd: sending", "vehicle", r.Vehicle, "uplink", r.Uplink, "plan", r.Plan, "transfer", r.ID, "kind", r.Kind, "size", r.Size, "resume", r.Started)
	return nil
}

// finishTransfer records the end of the transfer in flight and moves its
// uplink on.
func (d *Daemon) finishTransfer(ctx context.Context, s *session, now time.Time) error {
	a := s.cur
	d.dropSender(s)
	err := a.sender.Err()
	if err == nil {
		a.rec.Done = true
		a.rec.Held = a.rec.Total
	} else {
		a.rec.Abandoned, a.rec.Error = true, err.Error()
	}
	if err := d.saveTransfer(ctx, &a.rec); err != nil {
		return err
	}
	d.log.Info("groundd: transfer ended", "vehicle", s.cfg.ID, "transfer", a.rec.ID, "kind", a.rec.Kind, "err", err,
		"chunks_sent", a.rec.Sent, "chunks_resent", a.rec.Resent)
	return d.updateUplink(ctx, a.rec.Uplink, func(u *Uplink, found bool) error {
		if !found || u.State.Final() {
			return store.ErrSkip
		}
		u.Updated = now.UTC()
		switch {
		case err != nil && errors.Is(err, transfer.ErrRefused):
			u.State, u.Error = UplinkFailed, fmt.Sprintf("the vehicle refused %s transfer %d", a.rec.Kind, a.rec.ID)
		case err != nil:
			u.State, u.Error = UplinkFailed, err.Error()
		case a.rec.Kind == "bundle":
			u.State = UplinkSent
		}
		return nil
	})
}

// advanceQueue expires, cancels and starts uplinks of s's vehicle: one
// active uplink per vehicle.
func (d *Daemon) advanceQueue(ctx context.Context, s *session, now time.Time) error {
	us, err := d.openUplinks(ctx, s.cfg.ID)
	if err != nil {
		return err
	}
	d.forgetFetches(s.cfg.ID, us)
	d.pushes.forget(s.cfg.ID, us)
	d.plans.forget(s.cfg.ID, us)
	var busy *Uplink
	for i := range us {
		u := &us[i]
		if !u.State.Final() && !u.Deadline.IsZero() && !now.Before(u.Deadline) {
			if err := d.endUplink(ctx, u.ID, UplinkExpired, fmt.Sprintf("deadline %s passed in state %s", u.Deadline.UTC().Format(time.RFC3339), u.State), now); err != nil {
				return err
			}
			d.log.Warn("groundd: uplink expired", "uplink", u.ID, "vehicle", u.Vehicle, "state", u.State)
			u.State = UplinkExpired
		}
		if u.State == UplinkActive || u.State == UplinkSent {
			busy = u
		}
		if (u.State == UplinkCancelled || u.State == UplinkExpired) && len(u.Plans) > 0 && u.Abort == 0 {
			if err := d.abortOnVehicle(ctx, s, u, now); err != nil {
				return err
			}
		}
	}
	// The transfer in flight belongs to an uplink that ended (cancelled,
	// expired): cancel it on the vehicle, which frees its staging.
	if s.cur != nil {
		u, _, err := getJSON[Uplink](ctx, d.st, keyUplink(s.cur.rec.Uplink))
		if err != nil {
			return err
		}
		switch {
		case u.State == UplinkDone:
			// The vehicle installed it: it holds everything, whatever
			// the last report said.
			a := s.cur
			d.dropSender(s)
			a.rec.Done = true
			return d.saveTransfer(ctx, &a.rec)
		case u.State.Final():
			if !s.cur.sender.Done() {
				s.cur.sender.Cancel()
			}
			return nil
		}
	}
	if busy != nil {
		if done, err := d.supplementDue(ctx, s, busy, now); done || err != nil {
			return err
		}
		if s.cur == nil && busy.State == UplinkActive {
			return d.resumeUplink(ctx, s, busy, now)
		}
		return nil
	}
	for i := range us {
		u := &us[i]
		if u.State != UplinkQueued || (!u.NotBefore.IsZero() && now.Before(u.NotBefore)) {
			continue
		}
		return d.startUplink(ctx, s, u, now)
	}
	return nil
}

// askStatus sends the status command (all housekeeping now) while the link
// is up: at once, then again after statusWait (two round trips, doubling
// with every ask the vehicle does not answer with hk.slots, at most
// statusInterval). A lost ask costs a few round trips, not statusInterval;
// each ask is also resent by the gateway while unacknowledged.
func (d *Daemon) askStatus(ctx context.Context, s *session, now time.Time) error {
	if !s.linkUp || (!s.lastStatus.IsZero() && now.Sub(s.lastStatus) < s.statusWait()) {
		return nil
	}
	s.lastStatus = now
	s.statusAsks++
	_, err := d.sendCommand(ctx, s, now, "status", nil, false)
	return err
}

// planAccepted records that the vehicle accepted plan.
func (d *Daemon) planAccepted(ctx context.Context, s *session, plan uint64) {
	u, ok := d.uplinkOfPlan(ctx, s.cfg.ID, plan)
	if !ok || slices.Contains(u.Accepted, plan) {
		return
	}
	err := d.updateUplink(ctx, u.ID, func(u *Uplink, _ bool) error {
		if slices.Contains(u.Accepted, plan) {
			return store.ErrSkip
		}
		u.Accepted = append(u.Accepted, plan)
		return nil
	})
	if err != nil {
		d.log.Error("groundd: uplink", "uplink", u.ID, "err", err)
		return
	}
	d.log.Info("groundd: plan accepted", "vehicle", s.cfg.ID, "uplink", u.ID, "plan", plan)
}

// abortOnVehicle tells the vehicle to abandon the last plan of an uplink
// that ended unfinished (transfer_abort of the plan: both its transfers and
// its staging), once.
func (d *Daemon) abortOnVehicle(ctx context.Context, s *session, u *Uplink, now time.Time) error {
	plan := u.Plans[len(u.Plans)-1]
	c, err := d.sendCommand(ctx, s, now, "transfer_abort", map[string]any{"id": plan, "kind": uint64(1)}, false)
	if err != nil {
		return err
	}
	d.log.Info("groundd: plan abandoned on the vehicle", "vehicle", s.cfg.ID, "uplink", u.ID, "plan", plan, "command", c.ID)
	return d.updateUplink(ctx, u.ID, func(x *Uplink, _ bool) error {
		x.Abort = c.ID
		return nil
	})
}

// vehicleUplinks returns the vehicle's uplinks in queue order.
func (d *Daemon) vehicleUplinks(ctx context.Context, vehicle uint32) ([]Uplink, error) {
	all, err := listJSON[Uplink](ctx, d.st, "uplink/", d.log)
	if err != nil {
		return nil, err
	}
	us := slices.DeleteFunc(all, func(u Uplink) bool { return u.Vehicle != vehicle })
	slices.SortStableFunc(us, queueOrder)
	return us, nil
}

// openUplinks returns the vehicle's uplinks that have not ended, in queue
// order, through the index: what every step of its session reads.
func (d *Daemon) openUplinks(ctx context.Context, vehicle uint32) ([]Uplink, error) {
	kvs, err := d.st.List(ctx, fmt.Sprintf("open/%010d/", vehicle))
	if err != nil {
		return nil, err
	}
	us := make([]Uplink, 0, len(kvs))
	for _, kv := range kvs {
		var id uint64
		if _, err := fmt.Sscanf(kv.Key[len(kv.Key)-16:], "%016x", &id); err != nil {
			return nil, fmt.Errorf("groundd: index key %s", kv.Key)
		}
		u, _, err := getJSON[Uplink](ctx, d.st, keyUplink(id))
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return nil, err
		}
		us = append(us, u)
	}
	slices.SortStableFunc(us, queueOrder)
	return us, nil
}

// queueWake returns when the vehicle's queue next needs a look: a
// not-before or a deadline.
func (d *Daemon) queueWake(ctx context.Context, vehicle uint32, now time.Time) time.Time {
	us, err := d.openUplinks(ctx, vehicle)
	if err != nil {
		return time.Time{}
	}
	var t time.Time
	for _, u := range us {
		if u.State.Final() {
			continue
		}
		var settle time.Time
		if !u.MismatchAt.IsZero() {
			settle = u.MismatchAt.Add(supplementSettle)
		}
		for _, c := range []time.Time{u.NotBefore, u.Deadline, settle} {
			if c.After(now) {
				t = sooner(t, c)
			}
		}
	}
	// A bundle fetch that failed is tried again then, and a push.
	if c := d.fetchWake(vehicle); c.After(now) {
		t = sooner(t, c)
	}
	if c := d.pushes.wake(vehicle); c.After(now) {
		t = sooner(t, c)
	}
	return t
}

func (d *Daemon) endUplink(ctx context.Context, id uint64, st UplinkState, why string, now time.Time) error {
	return d.updateUplink(ctx, id, func(u *Uplink, found bool) error {
		if !found || u.State.Final() {
			return store.ErrSkip
		}
		u.State, u.Error, u.Updated = st, why, now.UTC()
		return nil
	})
}

// startUplink plans u and makes it the vehicle's active uplink: the plan's
// transfers and the uplink's new state are written in one transaction,
// guarded by the uplink's revision (an operator's cancel in between wins).
// The planning runs in the background (startPlanning): u stays queued
// meanwhile, and a later Poll, poked by the planning's end, commits it.
func (d *Daemon) startUplink(ctx context.Context, s *session, u *Uplink, now time.Time) error {
	if pl, ok := d.pushes.pending(u.ID, true); ok {
		// Planned already; its push to the bundle registry failed.
		return d.pushAndCommit(ctx, s, u, pl, now)
	}
	uc := *u
	plan := func(ctx context.Context) (*planned, error) { return d.planUplink(ctx, &uc, nil) }
	ended := func(pl *planned, err error) error {
		switch {
		case errors.Is(err, errNoKnowledge):
			return d.askStatus(ctx, s, now)
		case err != nil:
			d.log.Error("groundd: planning failed", "uplink", u.ID, "vehicle", u.Vehicle, "err", err)
			return d.endUplink(ctx, u.ID, UplinkFailed, "planning: "+err.Error(), now)
		}
		return d.pushAndCommit(ctx, s, u, pl, now)
	}
	switch st, pl, err := d.plans.result(u.Vehicle, u.ID, true); st {
	case planRunning:
		return nil
	case planEnded:
		return ended(pl, err)
	}
	if _, err := d.slotsKnown(ctx, u.Vehicle); errors.Is(err, errNoKnowledge) {
		// Stays queued; the vehicle's housekeeping unblocks it, and is
		// asked for while the link is up.
		return d.askStatus(ctx, s, now)
	} else if err != nil {
		return err
	}
	if d.planInline {
		return ended(plan(ctx))
	}
	// Planned in the background (plannings): the session goes on.
	return d.startPlanning(ctx, u, true, "computing the delta for "+u.Image, now, plan)
}

func (d *Daemon) commitPlan(ctx context.Context, s *session, id uint64, pl *planned, now time.Time, first bool) error {
	kv, err := d.st.Get(ctx, keyUplink(id))
	if err != nil {
		return err
	}
	var u Uplink
	if err := json.Unmarshal(kv.Value, &u); err != nil {
		return err
	}
	if u.State.Final() {
		return nil
	}
	u.State, u.Updated, u.Waiting = UplinkActive, now.UTC(), ""
	u.Plans = append(u.Plans, pl.plan.ID)
	if pl.clearMismatch {
		u.MismatchAt = time.Time{}
	}
	if first {
		u.Manifest, u.Base, u.Layers = pl.plan.Release.Release.Manifest.String(), pl.plan.Base.String(), pl.layers
	}
	for _, t := range pl.transfers {
		u.Transfers = append(u.Transfers, t.ID)
	}
	if pl.artifact != "" {
		u.Bundles = append(u.Bundles, pl.artifact)
	}
	ops := uplinkOps(&u)
	for _, t := range pl.transfers {
		b, _ := json.Marshal(t)
		ops = append(ops, store.Op{Key: keyTransfer(t.ID), Value: b})
	}
	ok, err := d.st.Txn(ctx, []store.Cmp{{Key: keyUplink(id), Rev: kv.Rev}}, ops)
	if err != nil || !ok {
		return err // lost a race with an operator: the next Poll looks again
	}
	return d.resumeUplink(ctx, s, &u, now)
}

// resumeUplink starts the sender of the active uplink's first transfer not
// done: after a restart, the one that was in flight.
func (d *Daemon) resumeUplink(ctx context.Context, s *session, u *Uplink, now time.Time) error {
	for _, id := range u.Transfers {
		r, _, err := getJSON[transferRec](ctx, d.st, keyTransfer(id))
		if err != nil {
			return err
		}
		if r.Done || r.Abandoned {
			continue
		}
		if r.Kind == "bundle" && !slices.Contains(u.Accepted, r.Plan) {
			// The bundle waits until the vehicle says it accepted the
			// plan; its housekeeping is asked for meanwhile, in case
			// the event was lost.
			return d.askStatus(ctx, s, now)
		}
		if ready, failed := d.bundleReady(&r, now); !ready {
			// This station lacks the blob: it is being fetched from
			// the bundle registry, and the next Poll looks again.
			if failed != nil {
				return d.fetchFailed(ctx, s, u, &r, failed, now)
			}
			return nil
		}
		if err := d.startSender(ctx, s, r, now); err != nil {
			if d.refetch(&r, err) {
				return nil
			}
			d.log.Error("groundd: cannot send", "uplink", u.ID, "transfer", r.ID, "err", err)
			return d.endUplink(ctx, u.ID, UplinkFailed, err.Error(), now)
		}
		if u.Waiting != "" {
			// It moves again (a fetch went through).
			return d.updateUplink(ctx, u.ID, func(x *Uplink, found bool) error {
				if !found || x.Waiting == "" {
					return store.ErrSkip
				}
				x.Waiting = ""
				return nil
			})
		}
		return nil
	}
	return nil
}

// ---- telemetry, events and verification reports ----

func (d *Daemon) handleReturn(ctx context.Context, s *session, now time.Time, m protocol.Message) {
	// The gateway archives telemetry and events and moves commands on
	// their reports; groundd folds what it needs into its knowledge of
	// the vehicle.
	if err := d.gw.Receive(now, s.cfg.ID, m); errors.Is(err, gateway.ErrSettled) {
		// A duplicate or late report on a command that has ended
		// (the vehicle answered a resend too): routine.
		d.log.Info("groundd: duplicate report on an ended command", "vehicle", s.cfg.ID, "err", err)
	} else if err != nil {
		d.log.Warn("groundd: gateway", "vehicle", s.cfg.ID, "type", fmt.Sprintf("%T", m), "err", err)
	}
	var rec TelemetryRecord
	switch m := m.(type) {
	case *protocol.Telemetry:
		p, ok := dict.PacketByID(m.Packet)
		if !ok {
			return
		}
		vals, err := p.Decode(m.Params)
		if err != nil {
			return
		}
		rec = TelemetryRecord{Vehicle: s.cfg.ID, Received: now.UTC(), Time: msTime(m.Time), Kind: "tm", Name: p.Name, Seq: m.Seq, Values: vals}
		var seq uint64
		if m.MAC != nil {
			seq = m.MAC.Seq()
		}
		d.applyHK(ctx, s, now, p, vals, seq)
	case *protocol.Event:
		e, ok := dict.EventByID(m.ID)
		if !ok {
			return
		}
		vals, err := e.Decode(m.Args)
		if err != nil {
			return
		}
		rec = TelemetryRecord{Vehicle: s.cfg.ID, Received: now.UTC(), Time: msTime(m.Time), Kind: "event", Name: e.Name, Seq: m.Seq,
			Values: vals, Text: m.Text, Severity: m.Severity.String()}
		d.applyEvent(ctx, s, now, e, vals, rec)
	default:
		return
	}
	d.publish(rec)
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// errStaleHK ends a fold of housekeeping older than the record's.
var errStaleHK = errors.New("groundd: housekeeping older than the vehicle's record")

// newerHK says whether housekeeping packet p with return-link sequence
// number seq is newer than what v folded of it, and notes it as folded.
// Frames reach groundd out of order: a station that was cut off from the
// store folds what it heard meanwhile once it is back, and the slower of
// two stations that heard a frame folds it last. seq (the MAC's epoch and
// counter, authenticated, never going back on a vehicle) orders them; 0
// (no MAC) is folded as it comes.
func newerHK(v *vehicleRec, p *dict.Packet, seq uint64) bool {
	if seq == 0 {
		return true
	}
	if seq <= v.HKSeq[p.Name] {
		return false
	}
	if v.HKSeq == nil {
		v.HKSeq = map[string]uint64{}
	}
	v.HKSeq[p.Name] = seq
	return true
}

// applyHK folds housekeeping into the vehicle's record, unless newer
// housekeeping of the same packet was folded already (seq: newerHK).
func (d *Daemon) applyHK(ctx context.Context, s *session, now time.Time, p *dict.Packet, vals dict.Values, seq uint64) {
	switch p {
	case dict.HKSlots:
		s.statusAsks = 0 // answered: the next wait starts short again
		err := updateJSON(ctx, d.st, keyVehicle(s.cfg.ID), func(v *vehicleRec, _ bool) error {
			if !newerHK(v, p, seq) {
				return errStaleHK
			}
			old := v.Slots
			v.Slots = nil
			for _, n := range []string{"a", "b"} {
				sl := Slot{Name: n}
				st, _ := vals["slot_"+n+"_state"].(uint64)
				sl.State = dict.EnumSlotState.NameOf(st)
				sl.Version, _ = vals["slot_"+n+"_version"].(uint64)
				dg, _ := vals["slot_"+n+"_digest"].([]byte)
				sl.Digest = shortHex(dg)
				sl.Attempts, _ = vals["slot_"+n+"_attempts"].(uint64)
				sl.Booted = v.BootedSlot == n
				for _, o := range old {
					// Keep the full digest groundd learnt from its own
					// plans while the slot still shows that image.
					// An empty digest (no image) matches nothing.
					if o.Name == n && sl.Digest != "" && o.Manifest != "" && len(o.Manifest) > 7+len(sl.Digest) && o.Manifest[7:7+len(sl.Digest)] == sl.Digest {
						sl.Manifest = o.Manifest
					}
				}
				v.Slots = append(v.Slots, sl)
			}
			return nil
		})
		if errors.Is(err, errStaleHK) {
			d.log.Debug("groundd: housekeeping heard late, not folded", "vehicle", s.cfg.ID, "packet", p.Name, "seq", seq)
			return
		}
		if err != nil {
			d.log.Error("groundd: vehicle record", "vehicle", s.cfg.ID, "err", err)
		}
		d.installedFromHK(ctx, s, now, vals)
	case dict.HKTransfer:
		// A plan the vehicle is receiving the bundle of, or got further
		// with, is accepted.
		plan, _ := vals["plan_id"].(uint64)
		st, _ := vals["state"].(uint64)
		switch dict.EnumTransferState.NameOf(st) {
		case "bundle", "paused", "installing", "installed", "base_mismatch", "armed":
			if plan != 0 {
				d.planAccepted(ctx, s, plan)
			}
		}
	case dict.HKBoot:
		b, _ := vals["booted_slot"].(uint64)
		name := dict.EnumSlot.NameOf(b)
		err := updateJSON(ctx, d.st, keyVehicle(s.cfg.ID), func(v *vehicleRec, _ bool) error {
			if !newerHK(v, p, seq) {
				return errStaleHK
			}
			v.BootedSlot = name
			for i := range v.Slots {
				v.Slots[i].Booted = v.Slots[i].Name == name
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStaleHK) {
			d.log.Error("groundd: vehicle record", "vehicle", s.cfg.ID, "err", err)
		}
	}
}

// installedFromHK ends a sent uplink as done when housekeeping shows a slot
// holding its image, written or beyond: events can be lost, housekeeping
// comes again.
func (d *Daemon) installedFromHK(ctx context.Context, s *session, now time.Time, vals dict.Values) {
	us, err := d.openUplinks(ctx, s.cfg.ID)
	if err != nil {
		return
	}
	for _, u := range us {
		if u.State != UplinkSent || len(u.Manifest) < 7+2*dict.ShortDigestLen {
			continue
		}
		for _, n := range []string{"a", "b"} {
			dg, _ := vals["slot_"+n+"_digest"].([]byte)
			st, _ := vals["slot_"+n+"_state"].(uint64)
			name := dict.EnumSlotState.NameOf(st)
			if shortHex(dg) == u.Manifest[7:7+2*dict.ShortDigestLen] && (name == "written" || name == "pending" || name == "good") {
				_ = updateJSON(ctx, d.st, keyVehicle(s.cfg.ID), func(v *vehicleRec, _ bool) error {
					for i := range v.Slots {
						if v.Slots[i].Name == n {
							v.Slots[i].Manifest = u.Manifest
						}
					}
					return nil
				})
				d.endUplinkAs(ctx, u.ID, UplinkDone, "", now)
			}
		}
	}
}

// maxEventsKept bounds the events kept in a vehicle's record (the archive
// keeps them all).
const maxEventsKept = 16

// applyEvent acts on the events that move an uplink: install done or
// failed, plan refused, base mismatch (a supplement plan).
func (d *Daemon) applyEvent(ctx context.Context, s *session, now time.Time, e *dict.Event, vals dict.Values, rec TelemetryRecord) {
	err := updateJSON(ctx, d.st, keyVehicle(s.cfg.ID), func(v *vehicleRec, _ bool) error {
		v.Events = append(v.Events, rec)
		if len(v.Events) > maxEventsKept {
			v.Events = slices.Clone(v.Events[len(v.Events)-maxEventsKept:])
		}
		return nil
	})
	if err != nil {
		d.log.Error("groundd: vehicle record", "vehicle", s.cfg.ID, "err", err)
	}
	d.bootFromEvent(ctx, s, e, vals)
	planID, _ := vals["plan"].(uint64)
	u, ok := d.uplinkOfPlan(ctx, s.cfg.ID, planID)
	if !ok {
		return
	}
	switch e {
	case dict.EvPlanAccepted:
		d.planAccepted(ctx, s, planID)
	case dict.EvInstallDone:
		slot, _ := vals["slot"].(uint64)
		name := dict.EnumSlot.NameOf(slot)
		_ = updateJSON(ctx, d.st, keyVehicle(s.cfg.ID), func(v *vehicleRec, _ bool) error {
			for i := range v.Slots {
				if v.Slots[i].Name == name {
					v.Slots[i].Manifest = u.Manifest
				}
			}
			return nil
		})
		d.endUplinkAs(ctx, u.ID, UplinkDone, "", now)
	case dict.EvInstallFailed, dict.EvPlanRefused:
		c, _ := vals["code"].(uint64)
		if protocol.Code(c) == dict.CodeBaseMismatch {
			return // the base_mismatch events say which layers; a supplement follows
		}
		d.endUplinkAs(ctx, u.ID, UplinkFailed, fmt.Sprintf("%s: plan %d: %s", e.Name, planID, reasonLabel(protocol.Code(c))), now)
	case dict.EvBaseMismatch:
		layer, _ := vals["layer"].(uint64)
		d.baseMismatch(ctx, s, now, u, planID, int(layer))
	}
}

// bootFromEvent keeps the booted slot groundd plans against in step with
// the vehicle's boots: a vehicle about to reboot boots another slot, so the
// booted slot is unknown (planning waits for its next hk.boot instead of
// planning a delta against the slot it left); a trial boot or a slot marked
// good names the booted slot.
func (d *Daemon) bootFromEvent(ctx context.Context, s *session, e *dict.Event, vals dict.Values) {
	var booted string
	switch e {
	case dict.EvRebooting:
	case dict.EvTrialBoot, dict.EvMarkedGood:
		n, _ := vals["slot"].(uint64)
		if booted = dict.EnumSlot.NameOf(n); booted != "a" && booted != "b" {
			return
		}
	default:
		return
	}
	err := updateJSON(ctx, d.st, keyVehicle(s.cfg.ID), func(v *vehicleRec, _ bool) error {
		v.BootedSlot = booted
		for i := range v.Slots {
			v.Slots[i].Booted = v.Slots[i].Name == booted
		}
		return nil
	})
	if err != nil {
		d.log.Error("groundd: vehicle record", "vehicle", s.cfg.ID, "err", err)
	}
}

func (d *Daemon) endUplinkAs(ctx context.Context, id uint64, st UplinkState, why string, now time.Time) {
	if err := d.endUplink(ctx, id, st, why, now); err != nil {
		d.log.Error("groundd: uplink", "uplink", id, "err", err)
		return
	}
	d.log.Info("groundd: uplink ended", "uplink", id, "state", st, "why", why)
}

func (d *Daemon) uplinkOfPlan(ctx context.Context, vehicle uint32, plan uint64) (Uplink, bool) {
	if plan == 0 {
		return Uplink{}, false
	}
	us, err := d.openUplinks(ctx, vehicle)
	if err != nil {
		return Uplink{}, false
	}
	for _, u := range us {
		if slices.Contains(u.Plans, plan) {
			return u, true
		}
	}
	return Uplink{}, false
}

// supplementSettle is how long groundd waits after a base-mismatch event
// for the others of the same install (one per layer, some maybe lost and
// reported again later) before it plans the supplement.
const supplementSettle = 3 * time.Second

// baseMismatch records a layer the vehicle reported a base mismatch in,
// for any plan of the uplink; the supplement is planned once the reports
// settle (supplementDue), with every layer reported so far, supplementing
// the uplink's first plan: a supplement that still leaves mismatches
// (reports lost) fails on the vehicle, which waits for another, and the
// next one carries the union.
func (d *Daemon) baseMismatch(ctx context.Context, s *session, now time.Time, u Uplink, plan uint64, layer int) {
	if u.State.Final() {
		return
	}
	err := d.updateUplink(ctx, u.ID, func(x *Uplink, _ bool) error {
		if !slices.Contains(x.Mismatch, layer) {
			x.Mismatch = append(x.Mismatch, layer)
			slices.Sort(x.Mismatch)
		}
		x.MismatchAt = now.UTC()
		return nil
	})
	if err != nil {
		d.log.Error("groundd: base mismatch", "uplink", u.ID, "err", err)
		return
	}
	// The vehicle holds the plan's bundle (it found the mismatch applying
	// it) and keeps it for the supplement: its transfers are done, not
	// cancelled, which would free its staging.
	if s.cur != nil && s.cur.rec.Plan == plan {
		d.dropSender(s)
	}
	recs, err := listJSON[transferRec](ctx, d.st, "transfer/", d.log)
	if err != nil {
		d.log.Error("groundd: base mismatch", "uplink", u.ID, "err", err)
		return
	}
	for _, r := range recs {
		if r.Plan == plan && r.Vehicle == s.cfg.ID && !r.Done {
			r.Done = true
			if err := d.saveTransfer(ctx, &r); err != nil {
				d.log.Error("groundd: base mismatch", "uplink", u.ID, "err", err)
				return
			}
		}
	}
	d.log.Warn("groundd: base mismatch", "vehicle", s.cfg.ID, "uplink", u.ID, "plan", plan, "layer", layer)
}

// maxSupplements bounds the supplements of one uplink: a vehicle that
// keeps reporting mismatches (full data cannot mismatch) is broken or
// hostile, and does not get to make groundd plan forever.
const maxSupplements = 4

// supplementDue plans the supplement of u once its base-mismatch reports
// have settled.
func (d *Daemon) supplementDue(ctx context.Context, s *session, u *Uplink, now time.Time) (bool, error) {
	if u.MismatchAt.IsZero() || now.Sub(u.MismatchAt) < supplementSettle {
		return false, nil
	}
	if len(u.Plans) > maxSupplements {
		return true, d.endUplink(ctx, u.ID, UplinkFailed, fmt.Sprintf("the vehicle still reports base mismatches after %d supplements", maxSupplements), now)
	}
	if pl, ok := d.pushes.pending(u.ID, false); ok {
		// Planned already; its push to the bundle registry failed.
		return true, d.pushAndCommit(ctx, s, u, pl, now)
	}
	ended := func(pl *planned, err error) error {
		if err != nil {
			d.log.Error("groundd: supplement planning failed", "uplink", u.ID, "vehicle", u.Vehicle, "err", err)
			return d.endUplink(ctx, u.ID, UplinkFailed, "supplement: "+err.Error(), now)
		}
		pl.clearMismatch = true
		return d.pushAndCommit(ctx, s, u, pl, now)
	}
	switch st, pl, err := d.plans.result(u.Vehicle, u.ID, false); st {
	case planRunning:
		return true, nil
	case planEnded:
		return true, ended(pl, err)
	}
	layers := map[int]bool{}
	for _, l := range u.Mismatch {
		layers[l] = true
	}
	d.log.Warn("groundd: planning a supplement", "vehicle", s.cfg.ID, "uplink", u.ID, "plan", u.Plans[0], "layers", u.Mismatch)
	if s.cur != nil && s.cur.rec.Uplink == u.ID {
		if !s.cur.sender.Done() {
			s.cur.sender.Cancel() // the vehicle frees what it staged of it
		}
		d.dropSender(s)
	}
	// Transfers of an earlier supplement still under way are superseded:
	// never resumed.
	recs, err := listJSON[transferRec](ctx, d.st, "transfer/", d.log)
	if err != nil {
		return true, err
	}
	for _, r := range recs {
		if r.Uplink == u.ID && !r.Done && !r.Abandoned {
			r.Abandoned, r.Error = true, "superseded by a new supplement"
			if err := d.saveTransfer(ctx, &r); err != nil {
				return true, err
			}
		}
	}
	uc, orig := *u, u.Plans[0]
	plan := func(ctx context.Context) (*planned, error) { return d.planSupplement(ctx, &uc, orig, layers) }
	if d.planInline {
		return true, ended(plan(ctx))
	}
	// Planned in the background (plannings): the session goes on.
	note := fmt.Sprintf("computing the supplement of plan %d (layers %v)", orig, u.Mismatch)
	return true, d.startPlanning(ctx, u, false, note, now, plan)
}

// ---- followers of the telemetry ----

type subscriber struct {
	vehicle uint32
	ch      chan TelemetryRecord
	dropped int
}

// TelemetryFollow returns a channel of vehicle's telemetry and events as
// they arrive (vehicle 0: every vehicle's), until ctx ends. A follower that
// does not keep up loses records rather than slowing the daemon.
func (d *Daemon) TelemetryFollow(ctx context.Context, vehicle uint32) (<-chan TelemetryRecord, error) {
	if vehicle != 0 {
		if _, ok := d.sessionOf(vehicle); !ok {
			return nil, fmt.Errorf("%w: vehicle %d", ErrNotFound, vehicle)
		}
	}
	sub := &subscriber{vehicle: vehicle, ch: make(chan TelemetryRecord, 256)}
	d.mu.Lock()
	id := d.nextSub
	d.nextSub++
	d.subs[id] = sub
	d.mu.Unlock()
	go func() {
		<-ctx.Done()
		d.mu.Lock()
		delete(d.subs, id)
		close(sub.ch)
		d.mu.Unlock()
	}()
	return sub.ch, nil
}

func (d *Daemon) publish(r TelemetryRecord) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.subs {
		if s.vehicle != 0 && s.vehicle != r.Vehicle {
			continue
		}
		select {
		case s.ch <- r:
		default:
			s.dropped++
		}
	}
}

// sooner is the earlier of two wake-up times, a zero time meaning none.
func sooner(t, c time.Time) time.Time {
	if c.IsZero() || (!t.IsZero() && !c.Before(t)) {
		return t
	}
	return c
}
