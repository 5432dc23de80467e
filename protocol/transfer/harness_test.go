package transfer_test

import (
	"bytes"
	"crypto/ed25519"
	"flag"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/linksim"
	. "github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/transfer/transfertest"
)

// The run seed and -long come from internal/testrand (-seed,
// BOOTORBIT_SEED, -long, BOOTORBIT_LONG).
var verboseFlag = flag.Bool("transfer.simlog", false, "log every journaled chunk sent again and every restart")

// testSeed returns the test's seed and logs it.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	return testrand.Seed(t)
}

var epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// testVehicle is the vehicle id of the tests' receivers.
const testVehicle = 42

// testMACKey is the tests' per-vehicle return-link key.
var testMACKey = protocol.MACKey{ID: 3, Key: bytes.Repeat([]byte{0x5a}, protocol.MACKeyLen)}

// testAuth is the vehicle's return-link authenticator for a start in epoch.
func testAuth(t testing.TB, epoch uint32) *protocol.ReturnAuth {
	t.Helper()
	a, err := protocol.NewReturnAuth(testVehicle, testMACKey, epoch)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// testVerifier is the ground's verifier of the test vehicle's return link.
func testVerifier(t testing.TB) *protocol.ReturnVerifier {
	t.Helper()
	v, err := protocol.NewReturnVerifier(testVehicle, testMACKey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// testKey is a fixed ground key, derived from a constant seed.
func testKey(n byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), priv
}

func mustCodec(t testing.TB, n int) *protocol.Codec {
	t.Helper()
	c, err := protocol.NewCodec(n)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// crashPoint injects a receiver power cut while the ground-th receiver
// Ready is carried out: phase 0 before anything, 1 after the data writes
// (not synced), 2 after the sync, 3 after the journal commit (messages not
// sent).
type crashPoint struct {
	step, phase int
}

// harness runs a sender and a receiver over a simulated link.
type harness struct {
	t       testing.TB
	rng     *rand.Rand
	prof    linksim.Profile
	sim     *linksim.Sim
	plan    *Plan
	data    []byte
	id      uint64
	scfg    SenderConfig
	rcfg    ReceiverConfig
	sender  *Sender
	recv    *Receiver
	journal *transfertest.MemJournal
	store   *transfertest.MemStore
	// bootEpoch is the receiver's durable boot counter: each power-on
	// starts a new return-link epoch.
	bootEpoch uint32

	crash       *crashPoint
	rxSteps     int
	crashed     bool
	senderCuts  []time.Duration // restart the sender at these elapsed times
	recvCuts    []time.Duration // cut the receiver's power at these elapsed times
	senderRests int
	recvRests   int

	// drop, if set, decides to lose a frame before the link sees it.
	drop func(d linksim.Dir, m protocol.Message) bool
	// adversary, if set, runs before every step of the simulation: it may
	// inject frames at either side.
	adversary func()
	// onSenderReady, if set, sees every sender Ready (its events).
	onSenderReady func(rd *Ready)
	// ingest, if set, is the vehicle's input path: forward frames wait in
	// its bounded queue and reach the receiver at its bounded rate.
	ingest *ingestQueue

	resentJournaled int
	reportsChecked  int
	completions     int
	rxDoneUp        time.Duration // forward link-up time when the receiver completed
	events          int
}

func newHarness(t testing.TB, prof linksim.Profile, seed uint64, size int) *harness {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	h := &harness{t: t, rng: rng, prof: prof, id: 7}
	h.sim = linksim.New(prof, rand.New(rand.NewPCG(seed+1, seed)), epoch)
	h.data = make([]byte, size)
	for i := range h.data {
		h.data[i] = byte(rng.Uint32())
	}
	fwd := mustCodec(t, prof.Forward.MaxFrame)
	ret := mustCodec(t, prof.Return.MaxFrame)
	pub, priv := testKey(1)
	plan, err := NewPlan(fwd, testVehicle, h.id, []byte("sha256:test"), bytes.NewReader(h.data), uint64(size), 0, 1, priv)
	if err != nil {
		t.Fatal(err)
	}
	h.plan = plan
	h.scfg = SenderConfig{Codec: fwd, ReturnCodec: ret, Rate: prof.Forward.Rate, RTT: prof.RTT(),
		ReorderTime: prof.Forward.ReorderDelay, Verifier: testVerifier(t)}
	h.bootEpoch = 1
	h.rcfg = ReceiverConfig{Codec: fwd, ReturnCodec: ret, Vehicle: testVehicle, Keys: map[uint32]ed25519.PublicKey{1: pub},
		Auth: testAuth(t, h.bootEpoch)}
	h.journal, h.store = transfertest.NewMemJournal(), transfertest.NewMemStore()
	if h.sender, err = NewSender(h.scfg, plan); err != nil {
		t.Fatal(err)
	}
	if h.recv, err = NewReceiver(h.rcfg, nil); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) link() LinkState {
	st := h.sim.State()
	return LinkState{Forward: st.Forward, Return: st.Return}
}

func (h *harness) restartSender() {
	h.senderRests++
	if *verboseFlag {
		h.t.Logf("%v: sender restart", h.sim.Elapsed())
	}
	cfg := h.scfg
	cfg.Resume = true
	cfg.SeqBase = uint64(h.senderRests) << 40
	s, err := NewSender(cfg, h.plan)
	if err != nil {
		h.t.Fatal(err)
	}
	h.sender = s
	h.sender.SetLink(h.sim.Now(), h.link())
}

func (h *harness) powerLoss() {
	h.store.PowerLoss()
	h.recv = nil
	if h.ingest != nil {
		h.ingest.clear()
	}
}

// ingestQueue is a receiver that takes frames at a bounded rate through a
// bounded input queue, as a daemon behind a socket buffer: a frame that
// arrives while the queue holds more than Cap bytes is dropped; the
// receiver takes the queue's head Rate bytes per second (a frame of n
// bytes keeps it busy n/Rate, after which Step sees it).
type ingestQueue struct {
	Rate float64 // bytes per second
	Cap  int     // queue bytes

	q       [][]byte
	bytes   int
	serving []byte
	doneAt  time.Time

	Dropped, Taken int64
	MaxQueued      int
}

func (q *ingestQueue) clear() {
	q.q, q.bytes, q.serving = nil, 0, nil
}

// push queues a frame arriving at now.
func (q *ingestQueue) push(now time.Time, f []byte) {
	if q.bytes+len(f) > q.Cap {
		q.Dropped++
		return
	}
	q.q = append(q.q, f)
	q.bytes += len(f)
	q.MaxQueued = max(q.MaxQueued, q.bytes)
	q.start(now)
}

// start serves the queue's head if the receiver is idle.
func (q *ingestQueue) start(now time.Time) {
	if q.serving != nil || len(q.q) == 0 {
		return
	}
	f := q.q[0]
	q.q = q.q[1:]
	q.bytes -= len(f)
	q.serving = f
	at := now
	if q.doneAt.After(at) {
		at = q.doneAt
	}
	q.doneAt = at.Add(time.Duration(float64(len(f)) / q.Rate * float64(time.Second)))
}

// take hands the receiver every frame it has finished by now.
func (q *ingestQueue) take(now time.Time, step func([]byte)) {
	for q.serving != nil && !q.doneAt.After(now) {
		f := q.serving
		q.serving = nil
		q.Taken++
		step(f)
		q.start(q.doneAt)
	}
}

// deadline is when the receiver finishes its current frame.
func (q *ingestQueue) deadline() time.Time {
	if q.serving == nil {
		return time.Time{}
	}
	return q.doneAt
}

func (h *harness) powerOn() {
	h.recvRests++
	if *verboseFlag {
		h.t.Logf("%v: receiver power on", h.sim.Elapsed())
	}
	recs, err := h.journal.Load()
	if err != nil {
		h.t.Fatal(err)
	}
	h.bootEpoch++
	h.rcfg.Auth = testAuth(h.t, h.bootEpoch)
	r, err := NewReceiver(h.rcfg, recs)
	if err != nil {
		h.t.Fatalf("receiver restart: %v", err)
	}
	h.recv = r
	h.recv.SetLink(h.sim.Now(), h.link())
}

// journaled says whether the receiver's journal holds chunk x durably.
func (h *harness) journaled(x int) bool {
	if h.journal.Has(KeyDone(h.id)) {
		return true
	}
	return h.journal.Has(KeyChunk(h.id, x, x < h.plan.Geometry().H))
}

func (h *harness) doSender() time.Time {
	now := h.sim.Now()
	h.sender.Tick(now)
	rd := h.sender.Ready()
	if h.onSenderReady != nil {
		h.onSenderReady(&rd)
	}
	for _, o := range rd.Messages {
		if c, ok := o.Msg.(*protocol.Chunk); ok && h.journaled(int(c.Index)) {
			h.resentJournaled++
			if *verboseFlag {
				h.t.Logf("%v: chunk %d sent again though journaled; sender %+v", h.sim.Elapsed(), c.Index, h.sender.Stats)
			}
		}
		if h.drop == nil || !h.drop(linksim.Forward, o.Msg) {
			h.sim.Send(linksim.Forward, o.Frame)
		}
	}
	h.sender.Advance()
	return rd.Deadline
}

func (h *harness) doReceiver() time.Time {
	if h.recv == nil {
		return time.Time{}
	}
	if h.ingest != nil {
		h.ingest.take(h.sim.Now(), func(f []byte) { _ = h.recv.Step(h.sim.Now(), f) })
		if h.recv == nil {
			return time.Time{}
		}
	}
	h.recv.Tick(h.sim.Now())
	rd := h.recv.Ready()
	if !rd.Empty() {
		h.rxSteps++
		if h.crash != nil && h.crash.step == h.rxSteps {
			h.crashed = true
			if h.crash.phase >= 1 {
				for _, w := range rd.Writes {
					if err := h.store.WriteAt(w.ID, w.Offset, w.Data); err != nil {
						h.t.Fatal(err)
					}
				}
			}
			if h.crash.phase >= 2 {
				if err := h.store.Sync(); err != nil {
					h.t.Fatal(err)
				}
			}
			if h.crash.phase >= 3 {
				if err := h.journal.Commit(rd.Records); err != nil {
					h.t.Fatal(err)
				}
			}
			h.powerLoss()
			h.powerOn()
			return time.Time{}
		}
		if err := Persist(&rd, h.store, h.journal); err != nil {
			h.t.Fatal(err)
		}
		for _, o := range rd.Messages {
			if h.drop == nil || !h.drop(linksim.Return, o.Msg) {
				h.sim.Send(linksim.Return, o.Frame)
			}
		}
		if len(rd.Completed) > 0 && h.completions == 0 {
			h.rxDoneUp = h.sim.Stats(linksim.Forward).UpTime
		}
		h.completions += len(rd.Completed)
	}
	h.recv.Advance()
	if h.ingest != nil {
		return Earliest(rd.Deadline, h.ingest.deadline())
	}
	return rd.Deadline
}

// run drives the simulation until the sender is done, or fails the test
// after limit of simulated time.
func (h *harness) run(limit time.Duration) {
	h.t.Helper()
	h.sender.SetLink(h.sim.Now(), h.link())
	h.recv.SetLink(h.sim.Now(), h.link())
	idle := 0
	for !h.sender.Done() {
		if h.sim.Elapsed() > limit {
			done, total := h.sender.Progress()
			h.t.Fatalf("no completion after %v simulated: sender knows %d/%d chunks; stats %+v", limit, done, total, h.sender.Stats)
		}
		for len(h.senderCuts) > 0 && h.sim.Elapsed() >= h.senderCuts[0] {
			h.senderCuts = h.senderCuts[1:]
			h.restartSender()
		}
		for len(h.recvCuts) > 0 && h.sim.Elapsed() >= h.recvCuts[0] {
			h.recvCuts = h.recvCuts[1:]
			if h.recv != nil {
				h.powerLoss()
				h.powerOn()
			}
		}
		if h.adversary != nil {
			h.adversary()
		}
		dl := Earliest(h.doSender(), h.doReceiver())
		if len(h.senderCuts) > 0 {
			dl = Earliest(dl, epoch.Add(h.senderCuts[0]))
		}
		if len(h.recvCuts) > 0 {
			dl = Earliest(dl, epoch.Add(h.recvCuts[0]))
		}
		before := h.sim.Now()
		ev, ok := h.sim.Step(dl)
		if !ok {
			if dl.IsZero() {
				h.t.Fatalf("simulation ran dry at %v", h.sim.Elapsed())
			}
			if !h.sim.Now().After(before) {
				if idle++; idle > 100 {
					h.t.Fatalf("no progress at %v (deadline %v)", h.sim.Elapsed(), dl.Sub(epoch))
				}
			} else {
				idle = 0
			}
			continue
		}
		idle = 0
		h.events++
		switch ev.Kind {
		case linksim.EventDeliver:
			if ev.Dir == linksim.Forward {
				switch {
				case h.recv != nil && h.ingest != nil:
					h.ingest.push(h.sim.Now(), ev.Frame)
				case h.recv != nil:
					_ = h.recv.Step(h.sim.Now(), ev.Frame)
				}
			} else {
				h.checkReport(ev.Frame)
				_ = h.sender.Step(h.sim.Now(), ev.Frame)
			}
		case linksim.EventLink:
			l := LinkState{Forward: ev.State.Forward, Return: ev.State.Return}
			h.sender.SetLink(h.sim.Now(), l)
			if h.recv != nil {
				h.recv.SetLink(h.sim.Now(), l)
			}
		case linksim.EventPower:
			if ev.On {
				h.powerOn()
			} else {
				h.powerLoss()
			}
		}
	}
	if err := h.sender.Err(); err != nil {
		h.t.Fatalf("transfer failed: %v", err)
	}
	// A genuine vehicle never contradicts itself, whatever the link does
	// (loss, duplication, reordering, restarts, power cuts).
	if h.adversary == nil && h.sender.Stats.Contradictions != 0 {
		h.t.Fatalf("%d contradictions without an adversary", h.sender.Stats.Contradictions)
	}
}

// checkReport fails the test if a report arriving at the ground claims a
// chunk the receiver's journal does not hold durably: a report never claims
// what is not durable.
func (h *harness) checkReport(frame []byte) {
	m, err := h.scfg.ReturnCodec.Decode(frame)
	if err != nil {
		return
	}
	r, ok := m.(*protocol.Report)
	if !ok || r.NeedOffer || h.journal.Has(KeyDone(h.id)) {
		return
	}
	claim := func(a, b int) {
		for x := a; x < b; x++ {
			if !h.journal.Has(KeyChunk(h.id, x, x < h.plan.Geometry().H)) {
				h.t.Fatalf("%v: report claims chunk %d, which is not journaled", h.sim.Elapsed(), x)
			}
		}
	}
	claim(0, int(r.Watermark))
	pos := int(r.Cursor)
	r.Ranges(func(s, e uint32) {
		claim(pos, int(s))
		pos = int(e)
	})
	claim(pos, int(r.End))
	h.reportsChecked++
}

// check verifies the receiver holds exactly the source data.
func (h *harness) check() {
	h.t.Helper()
	if !h.journal.Has(KeyDone(h.id)) {
		h.t.Fatal("journal has no completion record")
	}
	if got := h.store.Bytes(h.id); !bytes.Equal(got, h.data) {
		h.t.Fatalf("reconstructed %d bytes differ from the %d source bytes", len(got), len(h.data))
	}
}

// metrics are the benchmark figures (docs/transfer.md defines them).
type metrics struct {
	efficiency, overhead float64
	returnBytes          int64
	resentJournaled      int
	upTime               time.Duration
	lossRate             float64
	rxEfficiency         float64 // efficiency counting link-up time until the receiver completed
}

func (h *harness) metrics() metrics {
	up := h.sim.Stats(linksim.Forward)
	ret := h.sim.Stats(linksim.Return)
	payload := float64(len(h.data))
	capacity := h.prof.Forward.Rate / 8 * up.UpTime.Seconds() * (1 - up.LossRate())
	return metrics{
		efficiency:      payload / capacity,
		overhead:        (float64(up.Bytes) - payload) / float64(up.Bytes),
		returnBytes:     ret.Bytes,
		resentJournaled: h.resentJournaled,
		upTime:          up.UpTime,
		lossRate:        up.LossRate(),
		rxEfficiency:    payload / (h.prof.Forward.Rate / 8 * h.rxDoneUp.Seconds() * (1 - up.LossRate())),
	}
}
