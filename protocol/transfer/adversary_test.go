package transfer_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/linksim"
	. "github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/transfer/transfertest"
)

// advSize is a transfer of 299 chunks at 256-byte frames (23 hash blocks,
// 276 data chunks), the size issue 9's findings were measured with.
const advSize = 64 << 10

// injectReturn hands frame to the sender as if it came from the vehicle.
func (h *harness) injectReturn(m protocol.Message) {
	h.t.Helper()
	f, err := h.scfg.ReturnCodec.Encode(m)
	if err != nil {
		h.t.Fatal(err)
	}
	_ = h.sender.Step(h.sim.Now(), f)
}

// forgedTags returns m three times: without a MAC, with a MAC of random
// bytes, and with a MAC under a key id the ground does not hold. Each must
// be counted under its reason and dropped.
func forgedTags(h *harness, mk func() protocol.ReturnMessage) []protocol.ReturnMessage {
	none := mk()
	bad := mk()
	bogus := &protocol.MACTag{Key: testMACKey.ID, Epoch: 1 << 20, Counter: 1, Sum: make([]byte, protocol.MACLen)}
	for i := range bogus.Sum {
		bogus.Sum[i] = byte(h.rng.Uint32())
	}
	setTag(bad, bogus)
	unknown := mk()
	setTag(unknown, &protocol.MACTag{Key: 99, Epoch: 1 << 20, Counter: 2, Sum: bogus.Sum})
	return []protocol.ReturnMessage{none, bad, unknown}
}

func setTag(m protocol.ReturnMessage, tag *protocol.MACTag) {
	switch m := m.(type) {
	case *protocol.Report:
		m.MAC = tag
	case *protocol.Complete:
		m.MAC = tag
	case *protocol.Cancel:
		m.MAC = tag
	case *protocol.Verification:
		m.MAC = tag
	case *protocol.Telemetry:
		m.MAC = tag
	case *protocol.Event:
		m.MAC = tag
	}
}

// checkForgeriesCounted requires each kind of forgery to have been counted.
func checkForgeriesCounted(t *testing.T, c *protocol.Counters) {
	t.Helper()
	for _, r := range []protocol.Reason{protocol.ReasonUnauthenticated, protocol.ReasonBadSignature, protocol.ReasonUnknownKey} {
		if c.Get(r) == 0 {
			t.Errorf("no %v drop counted: %v", r, c.Snapshot())
		}
	}
}

// TestForgedReportHeals is finding 5: one forged report claiming every
// chunk (watermark = total) must neither make the ground skip chunks nor
// leave the two sides exchanging requests and reports forever. (Before
// return-link authentication: 24 simulated hours of 571,157 requests and
// 524,822 reports, 40 of 299 chunks sent.)
func TestForgedReportHeals(t *testing.T) {
	seed := testSeed(t)
	h := newHarness(t, crashProfile(), seed, advSize)
	total := uint32(h.plan.Geometry().T)
	done := false
	h.adversary = func() {
		if !done && h.sender.Stats.ChunksSent >= 40 {
			done = true
			for _, m := range forgedTags(h, func() protocol.ReturnMessage {
				return &protocol.Report{ID: h.id, Watermark: total, Cursor: total, End: total, High: total}
			}) {
				h.injectReturn(m)
			}
		}
	}
	h.run(24 * time.Hour)
	h.check()
	checkForgeriesCounted(t, &h.sender.Counters)
	t.Logf("%d chunks; done after %v simulated; sender %+v", total, h.sim.Elapsed().Round(time.Second), h.sender.Stats)
}

// TestForgedCompleteRefused is finding 5's other half: a forged Complete
// must not make the ground declare success while the vehicle lacks data.
func TestForgedCompleteRefused(t *testing.T) {
	seed := testSeed(t)
	h := newHarness(t, crashProfile(), seed, advSize)
	done := false
	h.adversary = func() {
		if !done && h.sender.Stats.ChunksSent >= 45 {
			done = true
			for _, m := range forgedTags(h, func() protocol.ReturnMessage { return &protocol.Complete{ID: h.id} }) {
				h.injectReturn(m)
			}
		}
	}
	h.run(24 * time.Hour)
	h.check()
	checkForgeriesCounted(t, &h.sender.Counters)
}

// TestContradictoryReportsHeal authenticates the lies (a vehicle whose
// software is wrong, or whose key leaked): a report claiming every chunk
// and a Complete while chunks were never sent. The sender believes only
// what is consistent, takes back claims a later report contradicts, raises
// EventContradiction, and completes exactly.
func TestContradictoryReportsHeal(t *testing.T) {
	seed := testSeed(t)
	h := newHarness(t, crashProfile(), seed, advSize)
	total := uint32(h.plan.Geometry().T)
	var events []Event
	h.onSenderReady = func(rd *Ready) { events = append(events, rd.Events...) }
	step := 0
	h.adversary = func() {
		switch {
		case step == 0 && h.sender.Stats.ChunksSent >= 40:
			step++
			lie := &protocol.Report{ID: h.id, Watermark: total, Cursor: total, End: total, High: total}
			if err := h.rcfg.Auth.Sign(lie); err != nil {
				t.Fatal(err)
			}
			h.injectReturn(lie)
		case step == 1 && h.sender.Stats.ChunksSent >= 120:
			step++
			lie := &protocol.Complete{ID: h.id}
			if err := h.rcfg.Auth.Sign(lie); err != nil {
				t.Fatal(err)
			}
			h.injectReturn(lie)
		}
	}
	h.run(24 * time.Hour)
	h.check()
	if h.sender.Stats.Contradictions < 2 || len(events) != int(h.sender.Stats.Contradictions) ||
		h.sender.Counters.Get(protocol.ReasonContradiction) != uint64(h.sender.Stats.Contradictions) {
		t.Fatalf("contradictions %d, events %d, counter %d", h.sender.Stats.Contradictions, len(events), h.sender.Counters.Get(protocol.ReasonContradiction))
	}
	for _, e := range events {
		if e.Kind != EventContradiction || e.Transfer != h.id {
			t.Errorf("event %+v", e)
		}
		t.Logf("event: %v, %d chunks: %s", e.Kind, e.Chunks, e.Detail)
	}
}

// TestContradictionBudget has a vehicle contradict itself forever: every
// other report takes back everything. The sender falls back each time,
// then, past its budget, ends the transfer rather than loop.
func TestContradictionBudget(t *testing.T) {
	c := mustCodec(t, 256)
	_, priv := testKey(1)
	plan := testPlan(t, c, 3, bytes.Repeat([]byte{1}, 5000), priv)
	v := testVerifier(t)
	auth := testAuth(t, 1)
	s, err := NewSender(SenderConfig{Codec: c, Rate: 9600, RTT: time.Second, Verifier: v}, plan)
	if err != nil {
		t.Fatal(err)
	}
	now := epoch
	for range 200 { // send everything once
		s.Tick(now)
		s.Advance()
		now = now.Add(250 * time.Millisecond)
	}
	total := uint32(plan.Geometry().T)
	for i := 0; !s.Done(); i++ {
		if i > 100 {
			t.Fatal("the sender goes on believing contradictory reports")
		}
		m := &protocol.Report{ID: 3, Watermark: total, Cursor: total, End: total, High: total, Ack: s.Seq()}
		if i%2 == 1 {
			m = &protocol.Report{ID: 3, End: total, High: total, Missing: protocol.Ranges{0, total}, Ack: s.Seq()}
		}
		if err := auth.Sign(m); err != nil {
			t.Fatal(err)
		}
		f, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Step(now, f)
		s.Tick(now)
		s.Advance()
		now = now.Add(time.Second)
	}
	if !errors.Is(s.Err(), ErrContradictions) || !errors.Is(s.Err(), protocol.ErrContradiction) {
		t.Fatalf("sender ended with %v", s.Err())
	}
	t.Logf("ended after %d contradictions: %v", s.Stats.Contradictions, s.Err())
}

// TestOtherVehicleFrames is finding 6: every forward frame of vehicle X's
// transfer, replayed to vehicle Y (same ground keys), must not complete a
// transfer on Y; Y counts and drops them.
func TestOtherVehicleFrames(t *testing.T) {
	seed := testSeed(t)
	h := newHarness(t, crashProfile(), seed, 16<<10)
	var captured [][]byte
	h.drop = func(d linksim.Dir, m protocol.Message) bool {
		if d == linksim.Forward {
			f, err := h.scfg.Codec.Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			captured = append(captured, f)
		}
		return false
	}
	h.run(24 * time.Hour)
	h.check()

	cfg := otherVehicle(h.rcfg)
	y, err := NewReceiver(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	j, s := transfertest.NewMemJournal(), transfertest.NewMemStore()
	for _, f := range captured {
		_ = y.Step(epoch, f)
		y.Tick(epoch)
		rd := y.Ready()
		if err := Persist(&rd, s, j); err != nil {
			t.Fatal(err)
		}
		if len(rd.Completed) != 0 {
			t.Fatalf("vehicle Y completed vehicle X's transfer from %d captured frames", len(captured))
		}
		y.Advance()
	}
	// And X's genuine cancel, replayed to Y.
	c := &protocol.Cancel{ID: h.id, Reason: protocol.CancelByGround, Vehicle: testVehicle}
	_, priv := testKey(1)
	c.Sig = ed25519.Sign(priv, protocol.CancelSigningBytes(c))
	cf, err := h.scfg.Codec.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := y.Step(epoch, cf); !errors.Is(err, protocol.ErrWrongVehicle) {
		t.Fatalf("X's cancel on Y: %v, want wrong vehicle", err)
	}
	captured = append(captured, cf)
	if j.Len() != 0 {
		t.Fatalf("vehicle Y journaled %d records of vehicle X's transfer", j.Len())
	}
	checkWrongVehicle(t, y, len(captured))
	t.Logf("%d captured frames of X: Y journaled nothing; counters %v", len(captured), y.Counters.Snapshot())
}

// TestOldCancelDoS is finding 7: replaying a captured cancel of a transfer
// this vehicle never saw (id 1000) must not make a genuine later offer
// (id 8) look replayed.
func TestOldCancelDoS(t *testing.T) {
	f := newRxFixture(t)
	old := signedCancel(f, 1000)
	if err := f.step(f.encode(old)); err != nil {
		t.Logf("old cancel: %v", err)
	}
	plan := testPlan(t, f.codec, 8, bytes.Repeat([]byte{3}, 3000), f.priv)
	if err := f.step(f.encode(&plan.Offer)); err != nil {
		t.Fatalf("genuine offer 8 after a replayed cancel of 1000: %v", err)
	}
	if !f.j.Has(KeyOffer(8)) {
		t.Fatal("offer 8 not journaled")
	}
	// The cancel still ends only the transfer it names: 1000, should its
	// offer arrive late, is refused.
	late := testPlan(t, f.codec, 1000, bytes.Repeat([]byte{4}, 3000), f.priv)
	if err := f.step(f.encode(&late.Offer)); !errors.Is(err, protocol.ErrReplayed) {
		t.Fatalf("offer 1000 after its cancel: %v, want replayed", err)
	}
}

// TestRequestFloodBounded is finding 8: a flood of unauthenticated report
// requests is answered at a bounded rate, the rest counted and dropped.
func TestRequestFloodBounded(t *testing.T) {
	f := newRxFixture(t)
	plan := testPlan(t, f.codec, 5, bytes.Repeat([]byte{5}, 3000), f.priv)
	if err := f.step(f.encode(&plan.Offer)); err != nil {
		t.Fatal(err)
	}
	now := epoch
	frames := 0
	const n = 1000
	for i := range n {
		// Unknown transfers, and the active one, every 10 ms: 10 s in all.
		id := uint64(100 + i)
		if i%2 == 0 {
			id = 5
		}
		now = now.Add(10 * time.Millisecond)
		_ = f.r.Step(now, f.encode(&protocol.ReportRequest{ID: id, Seq: uint64(1 + i)}))
		f.r.Tick(now)
		rd := f.r.Ready()
		frames += len(rd.Messages)
		f.r.Advance()
	}
	limit := floodLimit(f.r, 10*time.Second)
	t.Logf("%d forged requests over 10 s: %d return frames (limit %d)", n, frames, limit)
	if frames > limit {
		t.Fatalf("%d forged requests produced %d return frames, want at most %d", n, frames, limit)
	}
	checkRateLimited(t, f.r, n-frames)
	if f.r.Stats.RequestsUnauthenticated != n || f.r.Counters.Get(protocol.ReasonUnauthenticated) != n {
		t.Errorf("unauthenticated requests: stats %d, counter %d, want %d", f.r.Stats.RequestsUnauthenticated, f.r.Counters.Get(protocol.ReasonUnauthenticated), n)
	}
	// The budget is spent, yet the ground's own request is answered: its
	// MAC verifies and its Seq is fresh. Its replay is not.
	rq := &protocol.ReportRequest{ID: 5, Seq: 1 << 40}
	if err := f.v.SignRequest(rq); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{1, 0} {
		now = now.Add(time.Second / 4)
		f.r.SpendAnswerBudget(now)
		if err := f.r.Step(now, f.encode(rq)); (err == nil) != (i == 0) {
			t.Errorf("request %d: %v", i, err)
		}
		f.r.Tick(now)
		rd := f.r.Ready()
		f.r.Advance()
		if len(rd.Messages) != want {
			t.Errorf("authenticated request sent %d times: %d reports, want %d", i+1, len(rd.Messages), want)
		}
	}
	// Only the fresh genuine request counts as the ground's (flightd
	// answers the peer it came from).
	if f.r.Stats.RequestsAuthenticated != 1 {
		t.Errorf("authenticated requests %d, want 1", f.r.Stats.RequestsAuthenticated)
	}
}

// signedCancel is a genuine ground cancel of transfer id for the fixture's
// vehicle.
func signedCancel(f *rxFixture, id uint64) *protocol.Cancel {
	c := &protocol.Cancel{ID: id, Reason: protocol.CancelByGround, Vehicle: testVehicle}
	c.Sig = ed25519.Sign(f.priv, protocol.CancelSigningBytes(c))
	return c
}

// otherVehicle is cfg for another vehicle with the same ground keys.
func otherVehicle(cfg ReceiverConfig) ReceiverConfig {
	cfg.Vehicle = testVehicle + 1
	return cfg
}

// checkWrongVehicle requires r to have counted every offer and cancel of
// the n captured frames as for another vehicle, and to have stored nothing.
func checkWrongVehicle(t *testing.T, r *Receiver, n int) {
	t.Helper()
	if r.Stats.WrongVehicle == 0 || r.Counters.Get(protocol.ReasonWrongVehicle) != uint64(r.Stats.WrongVehicle) {
		t.Fatalf("wrong-vehicle: stats %d, counter %d", r.Stats.WrongVehicle, r.Counters.Get(protocol.ReasonWrongVehicle))
	}
	if r.Stats.OffersAccepted != 0 || r.Stats.ChunksJournaled != 0 {
		t.Fatalf("accepted %d offers, journaled %d chunks of another vehicle", r.Stats.OffersAccepted, r.Stats.ChunksJournaled)
	}
	t.Logf("%d frames: %d offers for another vehicle, %d chunks of no transfer", n, r.Stats.WrongVehicle, r.Stats.UnknownTransfer)
}

// floodLimit is the most return frames a receiver may send in d to
// answer requests.
func floodLimit(r *Receiver, d time.Duration) int {
	return r.Config().AnswerBurst + int(r.Config().AnswerRate*d.Seconds()) + 1
}

// checkRateLimited requires r to have counted the dropped answers: at
// least dropped of them (requests for a transfer whose report is already
// due coalesce, free), and the counter to agree with the stats.
func checkRateLimited(t *testing.T, r *Receiver, dropped int) {
	t.Helper()
	got := r.Counters.Get(protocol.ReasonRateLimited)
	if got != uint64(r.Stats.RateLimited) || got < uint64(dropped)/2 {
		t.Fatalf("rate-limited: counter %d, stats %d, %d requests unanswered", got, r.Stats.RateLimited, dropped)
	}
}

// TestAdversary runs a transfer while an adversary works both links. On the
// return link: forged reports, completions, verification reports,
// telemetry and events (no MAC, a wrong MAC, an unknown key), and replays
// of the vehicle's own earlier frames. On the forward link: every frame of
// another vehicle's transfer (same ground key, same transfer id), old
// genuine cancels (of a transfer never offered, and of the other
// vehicle's), and a flood of forged report requests. The transfer
// completes with the bytes identical, the frames sent per payload byte
// stay within 1.2x of the clean run of the same seed, and every drop is
// counted under its reason. -long runs more seeds and the uhf profile.
func TestAdversary(t *testing.T) {
	seed := testSeed(t)
	type run struct {
		prof linksim.Profile
		size int
	}
	runs := []run{{crashProfile(), advSize}}
	seeds := 1
	if testrand.Long() {
		uhf, err := linksim.Named("uhf")
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, run{uhf, 256 << 10})
		seeds = 8
	}
	for _, r := range runs {
		for sd := seed; sd < seed+uint64(seeds); sd++ {
			adversaryRun(t, r.prof, sd, r.size)
		}
	}
}

func adversaryRun(t *testing.T, prof linksim.Profile, seed uint64, size int) {
	clean := newHarness(t, prof, seed, size)
	clean.run(60 * 24 * time.Hour)
	clean.check()

	h := newHarness(t, prof, seed, size)
	fwd := h.scfg.Codec
	enc := func(c *protocol.Codec, m protocol.Message) []byte {
		f, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	// Another vehicle's transfer: same ground key, same transfer id.
	_, priv := testKey(1)
	other, err := NewPlan(fwd, testVehicle+1, h.id, []byte("sha256:other"), bytes.NewReader(h.data[:size/2+1]), uint64(size/2+1), 0, 1, priv)
	if err != nil {
		t.Fatal(err)
	}
	var otherFrames [][]byte
	otherFrames = append(otherFrames, enc(fwd, &other.Offer))
	for x := 0; x < other.Geometry().T; x++ {
		b, err := other.Chunk(x, make([]byte, other.Geometry().ChunkLen))
		if err != nil {
			t.Fatal(err)
		}
		otherFrames = append(otherFrames, enc(fwd, &protocol.Chunk{ID: h.id, Index: uint32(x), Data: append([]byte(nil), b...)}))
	}
	cancel := func(vehicle uint32, id uint64) []byte {
		c := &protocol.Cancel{ID: id, Reason: protocol.CancelByGround, Vehicle: vehicle}
		c.Sig = ed25519.Sign(priv, protocol.CancelSigningBytes(c))
		return enc(fwd, c)
	}
	oldCancels := [][]byte{cancel(testVehicle+1, h.id), cancel(testVehicle, 1000)}

	// The vehicle's own return frames and the ground's report requests,
	// recorded for replay.
	var sent, requests [][]byte
	h.drop = func(d linksim.Dir, m protocol.Message) bool {
		if d == linksim.Return && len(sent) < 64 {
			sent = append(sent, enc(h.scfg.ReturnCodec, m))
		}
		if _, ok := m.(*protocol.ReportRequest); ok && d == linksim.Forward && len(requests) < 16 {
			requests = append(requests, enc(fwd, m))
		}
		return false
	}
	total := uint32(h.plan.Geometry().T)
	forgeries := func() []protocol.ReturnMessage {
		var all []protocol.ReturnMessage
		for _, mk := range []func() protocol.ReturnMessage{
			func() protocol.ReturnMessage {
				return &protocol.Report{ID: h.id, Watermark: total, Cursor: total, End: total, High: total}
			},
			func() protocol.ReturnMessage {
				return &protocol.Report{ID: h.id, End: total, High: total, Missing: protocol.Ranges{0, total}}
			},
			func() protocol.ReturnMessage { return &protocol.Complete{ID: h.id} },
			func() protocol.ReturnMessage { return &protocol.Cancel{ID: h.id, Reason: protocol.CancelResources} },
			func() protocol.ReturnMessage {
				return &protocol.Verification{Vehicle: testVehicle, Seq: 9, Stage: protocol.StageFailed, Code: 300}
			},
			func() protocol.ReturnMessage { return &protocol.Telemetry{Vehicle: testVehicle, Packet: 1} },
			func() protocol.ReturnMessage { return &protocol.Event{Vehicle: testVehicle, ID: 1, Text: "forged"} },
		} {
			all = append(all, forgedTags(h, mk)...)
		}
		return all
	}()

	var next time.Time
	round, fi, oi, replays := 0, 0, 0, 0
	h.adversary = func() {
		now := h.sim.Now()
		if now.Before(next) {
			return
		}
		next = now.Add(100 * time.Millisecond)
		round++
		// Forward: a forged request every round (the active transfer with
		// a wild Seq, or a made-up one), another vehicle's frames, and now
		// and then an old cancel.
		if h.recv != nil {
			id := h.id
			if round%2 == 0 {
				id = 1 << 40
			}
			_ = h.recv.Step(now, enc(fwd, &protocol.ReportRequest{ID: id + uint64(round%3), Seq: h.rng.Uint64() | 1}))
			_ = h.recv.Step(now, otherFrames[oi%len(otherFrames)])
			oi++
			if round%50 == 0 {
				_ = h.recv.Step(now, oldCancels[(round/50)%len(oldCancels)])
			}
			if round%7 == 0 && len(requests) > 0 {
				_ = h.recv.Step(now, requests[(round/7)%len(requests)])
			}
		}
		// Return: a forgery every round, a replay of a genuine frame every
		// fifth.
		m := forgeries[fi%len(forgeries)]
		fi++
		_ = h.sender.Step(now, enc(h.scfg.ReturnCodec, m))
		if round%5 == 0 && len(sent) > 0 {
			_ = h.sender.Step(now, sent[replays%len(sent)])
			replays++
		}
	}
	h.run(60 * 24 * time.Hour)
	h.check()

	perByte := func(h *harness) float64 { return float64(h.sender.Stats.Frames) / float64(len(h.data)) }
	ratio := perByte(h) / perByte(clean)
	t.Logf("%s seed %d: %d rounds of attacks; frames %d (clean %d), ratio %.3f; %v simulated (clean %v)",
		prof.Name, seed, round, h.sender.Stats.Frames, clean.sender.Stats.Frames, ratio,
		h.sim.Elapsed().Round(time.Second), clean.sim.Elapsed().Round(time.Second))
	t.Logf("ground drops: %s", reasonCounts(&h.sender.Counters))
	t.Logf("vehicle drops: %s; stats %+v", reasonCounts(&h.recv.Counters), h.recv.Stats)
	if ratio > 1.2 {
		t.Errorf("%d frames sent, %.2fx the clean run's %d", h.sender.Stats.Frames, ratio, clean.sender.Stats.Frames)
	}
	for _, r := range []protocol.Reason{protocol.ReasonUnauthenticated, protocol.ReasonBadSignature, protocol.ReasonUnknownKey, protocol.ReasonReplayed} {
		if h.sender.Counters.Get(r) == 0 {
			t.Errorf("ground counted no %v drop", r)
		}
	}
	// (Replays of the ground's requests count as replayed only while their
	// transfer is active; after it they are answered from the budget.)
	for _, r := range []protocol.Reason{protocol.ReasonWrongVehicle, protocol.ReasonRateLimited, protocol.ReasonInvalidField, protocol.ReasonUnauthenticated} {
		if h.recv.Counters.Get(r) == 0 {
			t.Errorf("vehicle counted no %v drop", r)
		}
	}
	if h.sender.Stats.Contradictions != 0 {
		t.Errorf("%d contradictions: a forgery got through", h.sender.Stats.Contradictions)
	}
}

// reasonCounts formats the non-zero counters as "name=n ...".
func reasonCounts(c *protocol.Counters) string {
	var b strings.Builder
	for r, n := range c.Snapshot() {
		if n != 0 {
			fmt.Fprintf(&b, "%v=%d ", protocol.Reason(r), n)
		}
	}
	return strings.TrimSpace(b.String())
}

// FuzzSenderStep feeds arbitrary frames from "the vehicle" to a sender in
// the middle of a transfer: it never panics, and nothing that does not
// carry the vehicle's MAC changes what it believes or what it sends.
func FuzzSenderStep(f *testing.F) {
	c, err := protocol.NewCodec(256)
	if err != nil {
		f.Fatal(err)
	}
	_, priv := testKey(1)
	data := bytes.Repeat([]byte("fuzz"), 2000)
	plan, err := NewPlan(c, testVehicle, 5, nil, bytes.NewReader(data), uint64(len(data)), 0, 1, priv)
	if err != nil {
		f.Fatal(err)
	}
	total := uint32(plan.Geometry().T)
	auth := testAuth(f, 1)
	for _, m := range []protocol.ReturnMessage{
		&protocol.Report{ID: 5, Watermark: total, Cursor: total, End: total, High: total},
		&protocol.Report{ID: 5, End: total, High: total, Missing: protocol.Ranges{0, total}},
		&protocol.Complete{ID: 5},
		&protocol.Cancel{ID: 5, Reason: protocol.CancelResources},
	} {
		b, _ := c.Encode(m)
		f.Add(b)
		_ = auth.Sign(m)
		b, _ = c.Encode(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		s, err := NewSender(SenderConfig{Codec: c, Rate: 9600, RTT: time.Second, Verifier: testVerifier(t)}, plan)
		if err != nil {
			t.Fatal(err)
		}
		now := epoch
		for range 20 {
			s.Tick(now)
			s.Advance()
			now = now.Add(250 * time.Millisecond)
		}
		before, st := s.Stats, append([]uint8(nil), s.States()...)
		err = s.Step(now, frame)
		if m, derr := c.Decode(frame); derr == nil && protocol.TagOf(m) != nil && err == nil {
			return // genuinely tagged: believed, as it should be
		}
		if s.Done() || !bytes.Equal(st, s.States()) || s.Stats.Reports != before.Reports {
			t.Fatalf("an unauthenticated frame changed the sender: done %v err %v", s.Done(), err)
		}
	})
}

// TestReplayedOldCancelBounded: a genuine cancel captured long ago, of a
// transfer finished and since forgotten one by one (older than the
// MaxFinished remembered, below the key's floor), is a replay: replayed
// many times it writes nothing to the journal and is answered only from
// the answer budget, as every other replayable input is.
func TestReplayedOldCancelBounded(t *testing.T) {
	f := newRxFixture(t)
	f.r.Config().MaxFinished = 1
	var captured []byte
	for _, id := range []uint64{5, 6} {
		plan := testPlan(t, f.codec, id, bytes.Repeat([]byte{byte(id)}, 3000), f.priv)
		if err := f.step(f.encode(&plan.Offer)); err != nil {
			t.Fatal(err)
		}
		c := f.encode(signedCancel(f, id))
		if err := f.step(c); err != nil {
			t.Fatal(err)
		}
		if captured == nil {
			captured = c
		}
	}
	if f.r.Finished(5) {
		t.Fatal("transfer 5 still remembered one by one; the test needs it forgotten")
	}
	const n = 200
	records, answers := 0, 0
	for range n {
		_ = f.r.Step(epoch, captured)
		rd := f.r.Ready()
		records += len(rd.Records)
		answers += len(rd.Messages)
		if err := Persist(&rd, f.s, f.j); err != nil {
			t.Fatal(err)
		}
		f.r.Advance()
	}
	t.Logf("%d replays of a captured cancel: %d journal records, %d answers", n, records, answers)
	if records != 0 {
		t.Errorf("%d replays of an old cancel wrote %d journal records, want 0", n, records)
	}
	if answers > f.r.Config().AnswerBurst {
		t.Errorf("%d replays of an old cancel got %d answers at one instant, want at most the burst %d", n, answers, f.r.Config().AnswerBurst)
	}
	if f.r.Stats.Replayed == 0 || f.r.Counters.Get(protocol.ReasonReplayed) == 0 {
		t.Errorf("replayed cancels not counted: stats %d, counter %d", f.r.Stats.Replayed, f.r.Counters.Get(protocol.ReasonReplayed))
	}
}

// TestJunkChunkDoesNotAnchorReports: a report's Last is the sender's
// anchor (the sequence number of its last send of chunk Last-1): in-flight
// chunks sent before it and not listed as held become missing and are sent
// again. A chunk frame is unauthenticated until its hash verifies, so a
// forged one - at a fresh index, at the index of a chunk already held, or
// one waiting for its hash block - must not move Last: else anyone on the
// forward link makes the sender judge (and resend) every chunk still in
// flight, on every report.
func TestJunkChunkDoesNotAnchorReports(t *testing.T) {
	f := newRxFixture(t)
	data := bytes.Repeat([]byte("bootorbit anchors "), 400)
	plan := testPlan(t, f.codec, 5, data, f.priv)
	h, n := plan.Chunks()
	if h < 1 || n < 4 {
		t.Fatalf("plan of %d hash blocks and %d data chunks; the test needs more", h, n)
	}
	genuine := func(x int) *protocol.Chunk {
		b, err := plan.Chunk(x, make([]byte, plan.Geometry().ChunkLen))
		if err != nil {
			t.Fatal(err)
		}
		return &protocol.Chunk{ID: 5, Index: uint32(x), Data: append([]byte(nil), b...)}
	}
	junk := func(x int) *protocol.Chunk {
		c := genuine(x)
		for i := range c.Data {
			c.Data[i] ^= 0x5a
		}
		return c
	}
	now := epoch
	var seq uint64
	// lastOf asks for a report (an authenticated request) and returns its Last.
	lastOf := func() uint32 {
		t.Helper()
		seq++
		rq := &protocol.ReportRequest{ID: 5, Seq: seq}
		if err := f.v.SignRequest(rq); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
		if err := f.r.Step(now, f.encode(rq)); err != nil {
			t.Fatal(err)
		}
		f.r.Tick(now)
		rd := f.r.Ready()
		f.r.Advance()
		for _, o := range rd.Messages {
			if rep, ok := o.Msg.(*protocol.Report); ok {
				return rep.Last
			}
		}
		t.Fatal("no report")
		return 0
	}
	feed := func(c *protocol.Chunk) {
		now = now.Add(time.Second)
		_ = f.r.Step(now, f.encode(c))
	}
	if err := f.step(f.encode(&plan.Offer)); err != nil {
		t.Fatal(err)
	}
	// Only data chunk h+1 arrives at first, before its hash block: it
	// waits in memory, unverified.
	feed(genuine(h + 1))
	if got := lastOf(); got != 0 {
		t.Errorf("a chunk waiting for its hash block, unverified, set Last %d", got)
	}
	for x := 0; x < h; x++ {
		feed(genuine(x))
	}
	feed(genuine(h))
	want := lastOf()
	if want == 0 {
		t.Fatal("genuine chunks left Last at 0")
	}
	for _, c := range []struct {
		name string
		c    *protocol.Chunk
	}{
		{"junk at a fresh index", junk(h + 3)},
		{"junk at the index of a held chunk", junk(0)},
		{"junk at the last index", junk(plan.Geometry().T - 1)},
	} {
		feed(c.c)
		if got := lastOf(); got != want {
			t.Errorf("%s (index %d): report Last %d, want %d (the last verified chunk's)", c.name, c.c.Index, got, want)
		}
	}
}

// TestForgedAnchorBounded runs a transfer while an adversary on the
// forward link, after every chunk the sender sends, injects a forged copy
// of it (same index and length, junk bytes) that reaches the vehicle
// before the genuine one. Were a forged chunk to set a report's Last, each
// report would be anchored at the sender's latest send, and every chunk
// still in flight would be judged missing and sent again (lunar, 1 MiB,
// seed 1: 1348 frames against 1085 clean, 24% more link time, before a
// forged chunk stopped moving Last). The frames per payload byte stay
// within 1.2x of the clean run of the same seed.
func TestForgedAnchorBounded(t *testing.T) {
	prof, err := linksim.Named("lunar")
	if err != nil {
		t.Fatal(err)
	}
	seed := testSeed(t)
	const size = 1 << 20
	clean := newHarness(t, prof, seed, size)
	clean.run(60 * 24 * time.Hour)
	clean.check()

	h := newHarness(t, prof, seed, size)
	fwd := h.scfg.Codec
	var forged [][]byte
	h.drop = func(d linksim.Dir, m protocol.Message) bool {
		if c, ok := m.(*protocol.Chunk); ok && d == linksim.Forward {
			j := &protocol.Chunk{ID: c.ID, Index: c.Index, Data: bytes.Repeat([]byte{0x5a}, len(c.Data))}
			f, err := fwd.Encode(j)
			if err != nil {
				t.Fatal(err)
			}
			forged = append(forged, f)
		}
		return false
	}
	h.adversary = func() {
		for _, f := range forged {
			if h.recv != nil {
				_ = h.recv.Step(h.sim.Now(), f)
			}
		}
		forged = forged[:0]
	}
	h.run(60 * 24 * time.Hour)
	h.check()
	perByte := func(h *harness) float64 { return float64(h.sender.Stats.Frames) / float64(len(h.data)) }
	ratio := perByte(h) / perByte(clean)
	t.Logf("%s seed %d: frames %d (clean %d), ratio %.3f; %v simulated (clean %v); vehicle hash failures %d",
		prof.Name, seed, h.sender.Stats.Frames, clean.sender.Stats.Frames, ratio,
		h.sim.Elapsed().Round(time.Second), clean.sim.Elapsed().Round(time.Second), h.recv.Stats.HashFailures)
	if ratio > 1.2 {
		t.Errorf("%d frames sent, %.2fx the clean run's %d", h.sender.Stats.Frames, ratio, clean.sender.Stats.Frames)
	}
}

// TestCancelAfterKeyRemoved: the ground key of an active transfer is
// removed from the vehicle's configuration (rotation) while the transfer
// is still in the journal. A cancel of it, forged by anyone (any 64 bytes
// of signature), must be refused as bad-signature, not crash the vehicle.
func TestCancelAfterKeyRemoved(t *testing.T) {
	f := newRxFixture(t)
	plan := testPlan(t, f.codec, 5, bytes.Repeat([]byte{5}, 3000), f.priv)
	if err := f.step(f.encode(&plan.Offer)); err != nil {
		t.Fatal(err)
	}
	recs, err := f.j.Load()
	if err != nil {
		t.Fatal(err)
	}
	pub2, _ := testKey(2)
	cfg := *f.r.Config()
	cfg.Keys = map[uint32]ed25519.PublicKey{2: pub2} // key 1 rotated out
	cfg.Auth = testAuth(t, 2)
	r, err := NewReceiver(cfg, recs)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Active()) != 1 {
		t.Fatalf("active after the restart: %v", r.Active())
	}
	forged := &protocol.Cancel{ID: 5, Reason: protocol.CancelByGround, Vehicle: testVehicle, Sig: bytes.Repeat([]byte{1}, protocol.SignatureLen)}
	var stepErr error
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("a forged cancel of a transfer whose key was removed panics the receiver: %v", p)
			}
		}()
		stepErr = r.Step(epoch, f.encode(forged))
	}()
	if !errors.Is(stepErr, protocol.ErrUnknownKey) && !errors.Is(stepErr, protocol.ErrBadSignature) {
		t.Fatalf("forged cancel: %v, want unknown key or bad signature", stepErr)
	}
	if len(r.Active()) != 1 {
		t.Fatal("a forged cancel ended the transfer")
	}
}

// TestTwinTransferReplay: the ground sends the same bundle to vehicles X
// and Y under the same transfer id (as TestOtherVehicleFrames allows: same
// ground key, same id), so the two transfers have the same hash root and
// the same chunks. An adversary replays to Y half of the chunk frames it
// captured on X's uplink, just after Y accepted its offer. Y verifies and
// journals them - they are genuine - and its reports say it holds chunks
// Y's sender has not sent yet; the sender counts every such report as a
// contradiction and ends the transfer with ErrContradictions after
// MaxContradictions of them. Genuine, hash-verified data from a replay
// must not kill a transfer.
//
// The sender believes a claim of chunks it never sent (they verified
// against the root it signed); only a report that takes back a claim is a
// contradiction. Before that fix the run ended with "too many
// contradictory reports: 9, last: report claims 79 chunks never sent"
// (lunar, 200 KiB, the default seed).
func TestTwinTransferReplay(t *testing.T) {
	prof, err := linksim.Named("lunar")
	if err != nil {
		t.Fatal(err)
	}
	const size = 200 << 10
	h := newHarness(t, prof, testSeed(t), size)
	fwd := h.scfg.Codec
	_, priv := testKey(1)
	twin, err := NewPlan(fwd, testVehicle+1, h.id, []byte("sha256:test"), bytes.NewReader(h.data), uint64(size), 0, 1, priv)
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for x := 0; x < twin.Geometry().T/2; x++ {
		b, err := twin.Chunk(x, make([]byte, twin.Geometry().ChunkLen))
		if err != nil {
			t.Fatal(err)
		}
		f, err := fwd.Encode(&protocol.Chunk{ID: h.id, Index: uint32(x), Data: append([]byte(nil), b...)})
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
	}
	h.adversary = func() {
		if frames == nil || h.recv == nil || len(h.recv.Active()) == 0 {
			return
		}
		for _, f := range frames {
			_ = h.recv.Step(h.sim.Now(), f)
		}
		frames = nil
	}
	h.run(60 * 24 * time.Hour)
	h.check()
	t.Logf("contradictions %d, frames %d", h.sender.Stats.Contradictions, h.sender.Stats.Frames)
	if h.sender.Stats.Contradictions != 0 {
		t.Fatalf("%d contradictions from genuine replayed chunks", h.sender.Stats.Contradictions)
	}
}
