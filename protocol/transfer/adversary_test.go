package transfer

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/linksim"
)

// advSize is a transfer of 299 chunks at 256-byte frames (23 hash blocks,
// 276 data chunks), the size issue 9's findings were measured with.
const advSize = 64 << 10

// injectReturn hands frame to the sender as if it came from the vehicle.
// TestForgedReportHeals is finding 5: one forged report claiming every
// chunk (watermark = total) must neither make the ground skip chunks nor
// leave the two sides exchanging requests and reports forever.
// TestForgedCompleteRefused is finding 5's other half: a forged Complete
// must not make the ground declare success while the vehicle lacks data.
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
	j, s := NewMemJournal(), NewMemStore()
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
	if !f.j.Has(keyOffer(8)) {
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
	return r.cfg.AnswerBurst + int(r.cfg.AnswerRate*d.Seconds()) + 1
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
