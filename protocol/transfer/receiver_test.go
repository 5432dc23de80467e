package transfer_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	. "github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/transfer/transfertest"
	"github.com/fxamacker/cbor/v2"
)

// rxFixture is a receiver with its journal and store, fed frames by hand.
type rxFixture struct {
	t     *testing.T
	codec *protocol.Codec
	r     *Receiver
	j     *transfertest.MemJournal
	s     *transfertest.MemStore
	priv  ed25519.PrivateKey
	out   []protocol.Message
	v     *protocol.ReturnVerifier // the ground's view of the return link
}

func newRxFixture(t *testing.T) *rxFixture {
	t.Helper()
	c := mustCodec(t, 256)
	pub, priv := testKey(1)
	r, err := NewReceiver(ReceiverConfig{Codec: c, Vehicle: testVehicle, Keys: map[uint32]ed25519.PublicKey{1: pub}, Auth: testAuth(t, 1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &rxFixture{t: t, codec: c, r: r, j: transfertest.NewMemJournal(), s: transfertest.NewMemStore(), priv: priv, v: testVerifier(t)}
}

// step feeds one frame and carries out the Ready.
func (f *rxFixture) step(frame []byte) error { return f.stepAt(epoch, frame) }

// stepAt is step at time now.
func (f *rxFixture) stepAt(now time.Time, frame []byte) error {
	err := f.r.Step(now, frame)
	f.r.Tick(now)
	rd := f.r.Ready()
	if perr := Persist(&rd, f.s, f.j); perr != nil {
		f.t.Fatal(perr)
	}
	f.out = f.out[:0]
	for _, o := range rd.Messages {
		f.out = append(f.out, o.Msg)
	}
	f.r.Advance()
	return err
}

func (f *rxFixture) encode(m protocol.Message) []byte {
	f.t.Helper()
	b, err := f.codec.Encode(m)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// rawFrame builds a frame around any body, bypassing Encode's validation.
func rawFrame(t *testing.T, typ protocol.MsgType, body any) []byte {
	t.Helper()
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := em.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	f := append([]byte{0x84, protocol.Version, byte(typ)}, b...)
	f = append(f, 0x44)
	return binary.BigEndian.AppendUint32(f, protocol.Checksum(f))
}

func testPlan(t *testing.T, c *protocol.Codec, id uint64, data []byte, priv ed25519.PrivateKey) *Plan {
	t.Helper()
	p, err := NewPlan(c, testVehicle, id, []byte("target"), bytes.NewReader(data), uint64(len(data)), 0, 1, priv)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sign(p *Plan, priv ed25519.PrivateKey) *protocol.Offer {
	o := p.Offer
	o.Sig = ed25519.Sign(priv, protocol.OfferSigningBytes(&o))
	return &o
}

// TestReceiverRejects feeds malformed, truncated, oversized, forged and
// replayed frames: each yields its specific error and counter, and none
// changes the journal or the store.
func TestReceiverRejects(t *testing.T) {
	f := newRxFixture(t)
	data := bytes.Repeat([]byte("bootorbit "), 300)
	plan := testPlan(t, f.codec, 5, data, f.priv)
	chunk := func(x int) *protocol.Chunk {
		b, err := plan.Chunk(x, make([]byte, plan.Geometry().ChunkLen))
		if err != nil {
			t.Fatal(err)
		}
		return &protocol.Chunk{ID: 5, Index: uint32(x), Data: append([]byte(nil), b...)}
	}
	_, otherPriv := testKey(2)
	good := f.encode(&plan.Offer)

	unsigned := plan.Offer
	unsigned.Sig = nil
	forged := plan.Offer
	forged.Sig = append([]byte(nil), plan.Offer.Sig...)
	forged.Sig[10] ^= 1
	altered := plan.Offer
	altered.Size--
	unknownKey := plan.Offer
	unknownKey.KeyID = 9
	badChunk := chunk(0)
	badChunk.Data[3] ^= 0x80

	type check struct {
		name  string
		frame func() []byte
		err   error
		stat  func() int64
	}
	st := &f.r.Stats
	before := []check{
		{"truncated", func() []byte { return good[:5] }, protocol.ErrTruncated, func() int64 { return st.DecodeErrors }},
		{"cut short", func() []byte { return good[:len(good)-20] }, protocol.ErrChecksum, func() int64 { return st.DecodeErrors }},
		{"oversized", func() []byte { return make([]byte, 300) }, protocol.ErrFrameTooLarge, func() int64 { return st.DecodeErrors }},
		{"corrupted", func() []byte { b := bytes.Clone(good); b[30] ^= 4; return b }, protocol.ErrChecksum, func() int64 { return st.DecodeErrors }},
		{"unsigned offer", func() []byte { return rawFrame(t, protocol.TypeOffer, &unsigned) }, protocol.ErrUnauthenticated, func() int64 { return st.DecodeErrors }},
		{"forged offer", func() []byte { return f.encode(&forged) }, protocol.ErrBadSignature, func() int64 { return st.Forged }},
		{"altered offer", func() []byte { return f.encode(&altered) }, protocol.ErrBadSignature, func() int64 { return st.Forged }},
		{"offer signed by another key", func() []byte { return f.encode(sign(plan, otherPriv)) }, protocol.ErrBadSignature, func() int64 { return st.Forged }},
		{"unknown key", func() []byte { return f.encode(&unknownKey) }, protocol.ErrUnknownKey, func() int64 { return st.UnknownKey }},
		{"chunk before offer", func() []byte { return f.encode(chunk(0)) }, ErrUnknownTransfer, func() int64 { return st.UnknownTransfer }},
		{"report from the ground", func() []byte { return f.encode(&protocol.Report{ID: 5}) }, ErrUnexpected, func() int64 { return st.UnexpectedFrames }},
	}
	run := func(cs []check) {
		for _, c := range cs {
			snap, store, n := f.j.Snapshot(), bytes.Clone(f.s.Bytes(5)), c.stat()
			err := f.step(c.frame())
			if !errors.Is(err, c.err) {
				t.Errorf("%s: error %v, want %v", c.name, err, c.err)
			}
			if c.stat() != n+1 {
				t.Errorf("%s: counter %d, want %d", c.name, c.stat(), n+1)
			}
			if !reflect.DeepEqual(f.j.Snapshot(), snap) || !bytes.Equal(f.s.Bytes(5), store) {
				t.Errorf("%s: persisted state changed", c.name)
			}
		}
	}
	run(before)
	if f.j.Len() != 0 {
		t.Fatalf("journal has %d keys before any valid offer", f.j.Len())
	}
	if got := f.r.Counters.Get(protocol.ReasonBadSignature); got != 3 {
		t.Errorf("bad-signature counter %d, want 3", got)
	}

	// Accept the offer; then bad chunks and conflicting offers.
	if err := f.step(good); err != nil {
		t.Fatalf("good offer: %v", err)
	}
	if !f.j.Has(KeyOffer(5)) {
		t.Fatal("offer not journaled")
	}
	conflict := plan.Offer
	conflict.Target = []byte("other")
	after := []check{
		{"chunk failing its hash", func() []byte { return f.encode(badChunk) }, ErrChunkHash, func() int64 { return st.HashFailures }},
		{"chunk of wrong length", func() []byte {
			c := chunk(0)
			c.Data = c.Data[:len(c.Data)-1]
			return f.encode(c)
		}, ErrChunkSize, func() int64 { return st.BadChunks }},
		{"chunk index past the end", func() []byte {
			c := chunk(0)
			c.Index = uint32(plan.Geometry().T)
			return f.encode(c)
		}, ErrChunkIndex, func() int64 { return st.BadChunks }},
		{"conflicting offer", func() []byte { return f.encode(sign(&Plan{Offer: conflict}, f.priv)) }, ErrConflict, func() int64 { return st.OffersRefused }},
		{"unsigned cancel", func() []byte {
			return f.encode(&protocol.Cancel{ID: 5, Reason: protocol.CancelByGround, Vehicle: testVehicle})
		}, protocol.ErrUnauthenticated, func() int64 { return st.Unauthenticated }},
		{"forged cancel", func() []byte {
			c := &protocol.Cancel{ID: 5, Reason: protocol.CancelByGround, Vehicle: testVehicle}
			c.Sig = ed25519.Sign(otherPriv, protocol.CancelSigningBytes(c))
			return f.encode(c)
		}, protocol.ErrBadSignature, func() int64 { return st.Forged }},
	}
	run(after)
	if len(f.out) != 0 {
		t.Errorf("a forged cancel was answered: %v", f.out)
	}

	// Deliver everything: the transfer completes, exactly.
	for x := 0; x < plan.Geometry().T; x++ {
		if err := f.step(f.encode(chunk(x))); err != nil {
			t.Fatalf("chunk %d: %v", x, err)
		}
	}
	if !f.r.Completed(5) || !bytes.Equal(f.s.Bytes(5), data) {
		t.Fatal("transfer did not complete exactly")
	}
	if f.j.Has(KeyOffer(5)) {
		t.Error("completed transfer's records were not removed")
	}

	// Replays after completion: refused, and the completed one answered.
	plan2 := testPlan(t, f.codec, 3, data, f.priv) // an older id of the same key
	replays := []check{
		{"replayed offer", func() []byte { return good }, protocol.ErrReplayed, func() int64 { return st.Replayed }},
		{"stale offer", func() []byte { return f.encode(&plan2.Offer) }, protocol.ErrReplayed, func() int64 { return st.Replayed }},
	}
	run(replays[:1])
	if len(f.out) != 1 || f.out[0].Type() != protocol.TypeComplete {
		t.Errorf("replayed offer of a completed transfer answered %v, want complete", f.out)
	}
	run(replays[1:])
	if c, ok := f.out[0].(*protocol.Cancel); len(f.out) != 1 || !ok || c.Reason != protocol.CancelReplayed {
		t.Errorf("stale offer answered %v, want a replay cancel", f.out)
	}
	// Late chunks of the finished transfer are dropped quietly.
	snap := f.j.Snapshot()
	if err := f.step(f.encode(chunk(1))); err != nil || st.LateChunks != 1 || !reflect.DeepEqual(snap, f.j.Snapshot()) {
		t.Errorf("late chunk: err %v, late %d", err, st.LateChunks)
	}

	// The receiver restarted from its journal refuses the replay as well.
	recs, _ := f.j.Load()
	r2, err := NewReceiver(*f.r.Config(), recs)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Step(epoch, good); !errors.Is(err, protocol.ErrReplayed) {
		t.Errorf("after restart: %v, want replayed", err)
	}
}

// TestReceiverCancel checks a signed cancel ends a transfer durably and a
// later offer for it is refused.
func TestReceiverCancel(t *testing.T) {
	f := newRxFixture(t)
	plan := testPlan(t, f.codec, 9, bytes.Repeat([]byte{7}, 5000), f.priv)
	if err := f.step(f.encode(&plan.Offer)); err != nil {
		t.Fatal(err)
	}
	c := &protocol.Cancel{ID: 9, Reason: protocol.CancelByGround, Vehicle: testVehicle}
	c.Sig = ed25519.Sign(f.priv, protocol.CancelSigningBytes(c))
	if err := f.step(f.encode(c)); err != nil {
		t.Fatal(err)
	}
	if a, ok := f.out[0].(*protocol.Cancel); !ok || a.Reason != protocol.CancelAck {
		t.Fatalf("cancel answered %v", f.out)
	}
	if f.j.Has(KeyOffer(9)) || !f.j.Has(KeyDone(9)) {
		t.Fatal("cancel not journaled")
	}
	if err := f.step(f.encode(&plan.Offer)); !errors.Is(err, protocol.ErrReplayed) {
		t.Fatalf("offer after cancel: %v", err)
	}
}

// TestReportFitsOneFrame fragments the reception as badly as possible
// (every other chunk) and checks every report fits one 256-byte frame and
// that a sender learns the whole picture across several reports.
func TestReportFitsOneFrame(t *testing.T) {
	f := newRxFixture(t)
	data := make([]byte, 200<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	plan := testPlan(t, f.codec, 11, data, f.priv)
	if err := f.step(f.encode(&plan.Offer)); err != nil {
		t.Fatal(err)
	}
	g := plan.Geometry()
	for x := 0; x < g.T; x++ {
		if x < g.H || x%2 == 0 {
			b, _ := plan.Chunk(x, make([]byte, g.ChunkLen))
			if err := f.step(f.encode(&protocol.Chunk{ID: 11, Index: uint32(x), Data: append([]byte(nil), b...)})); err != nil {
				t.Fatal(err)
			}
		}
	}
	s, err := NewSender(SenderConfig{Codec: f.codec, Rate: 9600, RTT: time.Second, Resume: true, Verifier: f.v}, plan)
	if err != nil {
		t.Fatal(err)
	}
	now := epoch
	s.Tick(now) // the offer goes out: the sender's sequence starts
	s.Advance()
	for i := 0; s.Unknown() > 0; i++ {
		if i > 1000 {
			t.Fatalf("sender still has %d unknown chunks after %d reports", s.Unknown(), i)
		}
		now = now.Add(time.Second)
		rq := &protocol.ReportRequest{ID: 11, Seq: s.TakeSeq()} // as if the sender had sent it
		if err := f.v.SignRequest(rq); err != nil {
			t.Fatal(err)
		}
		if err := f.r.Step(now, f.encode(rq)); err != nil {
			t.Fatal(err)
		}
		f.r.Tick(now)
		rrd := f.r.Ready()
		f.r.Advance()
		for _, o := range rrd.Messages {
			if len(o.Frame) > 256 {
				t.Fatalf("report of %d bytes", len(o.Frame))
			}
			if err := s.Step(now, o.Frame); err != nil {
				t.Fatal(err)
			}
		}
	}
	missing := 0
	for x := 0; x < g.T; x++ {
		want := StDone
		if x >= g.H && x%2 == 1 {
			want = StMissing
			missing++
		}
		if s.States()[x] != want {
			t.Fatalf("chunk %d: sender state %d, want %d", x, s.States()[x], want)
		}
	}
	t.Logf("%d chunks, %d missing in %d ranges, learned in %d reports", g.T, missing, missing, f.r.Stats.Reports)
}

// FuzzReceiverStep feeds arbitrary frames to a receiver holding an
// accepted offer: it never panics, and nothing that cannot carry the
// ground's signature or match the signed tree causes a write or a record.
func FuzzReceiverStep(f *testing.F) {
	c, err := protocol.NewCodec(256)
	if err != nil {
		f.Fatal(err)
	}
	pub, priv := testKey(1)
	data := bytes.Repeat([]byte("fuzz"), 500)
	plan, err := NewPlan(c, testVehicle, 5, nil, bytes.NewReader(data), uint64(len(data)), 0, 1, priv)
	if err != nil {
		f.Fatal(err)
	}
	offer, _ := c.Encode(&plan.Offer)
	for _, m := range []protocol.Message{&protocol.Chunk{ID: 5, Index: 1, Data: bytes.Repeat([]byte{1}, 238)},
		&protocol.ReportRequest{ID: 5, Seq: 1}, &protocol.Cancel{ID: 5, Reason: 1, Sig: make([]byte, 64)}, &protocol.Complete{ID: 5}} {
		b, _ := c.Encode(m)
		f.Add(b)
	}
	f.Add(offer)
	f.Fuzz(func(t *testing.T, frame []byte) {
		r, err := NewReceiver(ReceiverConfig{Codec: c, Vehicle: testVehicle, Keys: map[uint32]ed25519.PublicKey{1: pub}, Auth: testAuth(t, 1)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Step(epoch, offer); err != nil {
			t.Fatal(err)
		}
		r.Advance()
		_ = r.Step(epoch, frame)
		r.Tick(epoch.Add(time.Minute))
		rd := r.Ready()
		if len(rd.Writes) != 0 || len(rd.Records) != 0 {
			m, _ := c.Decode(frame)
			if ch, ok := m.(*protocol.Chunk); ok && ch.ID == 5 {
				// Only a genuine chunk of the plan may be stored.
				want, _ := plan.Chunk(int(ch.Index), make([]byte, plan.Geometry().ChunkLen))
				if bytes.Equal(want, ch.Data) {
					return
				}
			}
			t.Fatalf("frame caused %d writes and %d records", len(rd.Writes), len(rd.Records))
		}
	})
}

// TestForgedChunkBeforeItsBlock: forged chunks with the right transfer id
// and index arrive before the hash block that can check them, then the
// genuine chunk, then the block. Unverified data never takes the place of
// data that will verify: the transfer completes with the right bytes, and a
// report asks again for nothing but the forged index (nothing at all while
// the forgeries leave room for the genuine chunk among the MaxCandidates
// held per index). Each dropped chunk is counted by its reason. The forged
// index is a data chunk, then a hash block waiting for the top block.
func TestForgedChunkBeforeItsBlock(t *testing.T) {
	for _, dataChunk := range []bool{true, false} {
		for _, forgeries := range []int{1, 2, MaxCandidates - 1, MaxCandidates, 20} {
			testForgedChunkBeforeItsBlock(t, dataChunk, forgeries)
		}
	}
}

func testForgedChunkBeforeItsBlock(t *testing.T, dataChunk bool, forgeries int) {
	{
		f := newRxFixture(t)
		data := make([]byte, 20<<10)
		for i := range data {
			data[i] = byte(i * 13)
		}
		const id = 12
		plan := testPlan(t, f.codec, id, data, f.priv)
		g := plan.Geometry()
		chunk := func(x int) *protocol.Chunk {
			b, err := plan.Chunk(x, make([]byte, g.ChunkLen))
			if err != nil {
				t.Fatal(err)
			}
			return &protocol.Chunk{ID: id, Index: uint32(x), Data: append([]byte(nil), b...)}
		}
		if err := f.step(f.encode(&plan.Offer)); err != nil {
			t.Fatal(err)
		}
		x := g.H + 20
		if !dataChunk {
			x = 1
		}
		p, _, _ := g.Parent(x)
		for b := 0; b < g.H; b++ {
			if b != p && b != x {
				if err := f.step(f.encode(chunk(b))); err != nil {
					t.Fatalf("block %d: %v", b, err)
				}
			}
		}
		for i := range forgeries {
			forged := chunk(x)
			forged.Data[i%len(forged.Data)] ^= byte(1 + i)
			err := f.step(f.encode(forged))
			if (err == nil) != (i < MaxCandidates) || (err != nil && !errors.Is(err, ErrPendingFull)) {
				t.Errorf("forgery %d: %v", i, err)
			}
		}
		snap := f.j.Snapshot()
		if err := f.step(f.encode(chunk(x))); (err == nil) != (forgeries < MaxCandidates) {
			t.Errorf("%d forgeries: genuine chunk: %v", forgeries, err)
		}
		if !reflect.DeepEqual(snap, f.j.Snapshot()) {
			t.Fatalf("%d forgeries: an unverifiable chunk was journaled", forgeries)
		}
		if err := f.step(f.encode(chunk(p))); err != nil {
			t.Fatalf("block %d: %v", p, err)
		}
		for c := g.H; c < g.T; c++ {
			if c != x {
				if err := f.step(f.encode(chunk(c))); err != nil {
					t.Fatalf("chunk %d: %v", c, err)
				}
			}
		}
		asked := 0
		if !f.r.Completed(id) {
			// A second later, so that the report is not held back by MinReportGap.
			rq := &protocol.ReportRequest{ID: id, Seq: 1}
			if err := f.v.SignRequest(rq); err != nil { // the ground's own request
				t.Fatal(err)
			}
			if err := f.stepAt(epoch.Add(time.Second), f.encode(rq)); err != nil {
				t.Fatal(err)
			}
			if len(f.out) != 1 {
				t.Fatalf("request answered %v", f.out)
			}
			rep, ok := f.out[0].(*protocol.Report)
			if !ok {
				t.Fatalf("request answered %v", f.out[0])
			}
			if rep.Watermark < uint32(x) {
				t.Errorf("%d forgeries: watermark %d, below the forged index %d", forgeries, rep.Watermark, x)
			}
			rep.Ranges(func(s, e uint32) {
				for c := int(s); c < int(e); c++ {
					if q, _, _ := g.Parent(c); q == x && !dataChunk {
						// Held in memory for x: the sender waits for x
						// before it sends these again.
						continue
					}
					asked++
					if c != x {
						t.Errorf("%d forgeries: chunk %d asked for again", forgeries, c)
					}
				}
			})
			if err := f.step(f.encode(chunk(x))); err != nil {
				t.Fatalf("chunk %d sent again: %v", x, err)
			}
		}
		if !f.r.Completed(id) || !bytes.Equal(f.s.Bytes(id), data) {
			t.Fatalf("%d forgeries: transfer did not complete exactly", forgeries)
		}
		if forgeries < MaxCandidates && asked != 0 {
			t.Errorf("%d forgeries: chunk %d asked for again; the genuine chunk should have been kept", forgeries, x)
		}
		st := f.r.Stats
		if held := min(forgeries, MaxCandidates); st.HashFailures != int64(held) || (dataChunk && st.Pending != int64(min(forgeries+1, MaxCandidates))) {
			t.Errorf("%d forgeries: %d hash failures, %d held, want %d and %d", forgeries, st.HashFailures, st.Pending, held, min(forgeries+1, MaxCandidates))
		}
		if want := max(0, forgeries+1-MaxCandidates); st.CandidatesFull != int64(want) {
			t.Errorf("%d forgeries: %d candidates dropped, want %d", forgeries, st.CandidatesFull, want)
		}
		t.Logf("%d forgeries of chunk %d: %d chunks asked for again; stats %+v", forgeries, x, asked, f.r.Stats)
	}
}
