package transfer

import (
	"container/heap"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
)

// Plan is a signed transfer plan: the offer and the hash tree of the data.
type Plan struct {
	Offer  protocol.Offer
	geo    geometry
	blocks [][]byte // hash blocks by global index
	src    io.ReaderAt
	key    ed25519.PrivateKey
}

// ChunkSizeFor returns the largest chunk size whose Chunk frames fit the
// codec's maximum frame for a transfer of size bytes with id: it encodes,
// it does not guess.
func ChunkSizeFor(c *protocol.Codec, id uint64, size uint64) (int, error) {
	fits := func(p int, idx uint32) bool {
		_, err := c.Encode(&protocol.Chunk{ID: id, Index: idx, Data: make([]byte, p)})
		return err == nil
	}
	maxIdx := uint32(protocol.MaxChunks - 1)
	best := 0
	for range 4 {
		lo, hi := protocol.MinChunkSize-1, c.MaxFrame()
		for lo < hi {
			mid := (lo + hi + 1) / 2
			if fits(mid, maxIdx) {
				lo = mid
			} else {
				hi = mid - 1
			}
		}
		if lo < protocol.MinChunkSize {
			return 0, fmt.Errorf("%w: frame %d too small for a chunk", ErrGeometry, c.MaxFrame())
		}
		g, err := newGeometry(size, lo)
		if err != nil {
			return 0, err
		}
		best = lo
		if uint32(g.t-1) >= maxIdx {
			break
		}
		maxIdx = uint32(g.t - 1)
	}
	// The last round sized chunks for an index bound computed with a
	// smaller chunk: check the final geometry still fits.
	g, err := newGeometry(size, best)
	if err != nil {
		return 0, err
	}
	for !fits(best, uint32(g.t-1)) {
		best--
		if g, err = newGeometry(size, best); err != nil {
			return 0, err
		}
	}
	return best, nil
}

// NewPlan hashes size bytes of src into the hash tree, and builds and signs
// the offer for transfer id to vehicle (ids must increase per key: the
// receiver refuses an id at or below one it has finished; the signature
// binds the vehicle, so no other vehicle accepts the offer). chunk 0 means
// the largest that fits the codec's frames.
func NewPlan(c *protocol.Codec, vehicle uint32, id uint64, target []byte, src io.ReaderAt, size uint64, chunk int, keyID uint32, key ed25519.PrivateKey) (*Plan, error) {
	if chunk == 0 {
		var err error
		if chunk, err = ChunkSizeFor(c, id, size); err != nil {
			return nil, err
		}
	}
	g, err := newGeometry(size, chunk)
	if err != nil {
		return nil, err
	}
	p := &Plan{geo: g, blocks: make([][]byte, g.h), src: src, key: key}
	// Level 1: the hashes of the data chunks.
	below := make([]byte, 0, g.n*HashLen)
	buf := make([]byte, chunk)
	for i := 0; i < g.n; i++ {
		b := buf[:g.length(g.h+i)]
		if _, err := src.ReadAt(b, int64(i)*int64(chunk)); err != nil && !(errors.Is(err, io.EOF) && i == g.n-1) {
			return nil, fmt.Errorf("transfer: plan: read chunk %d: %w", i, err)
		}
		h := g.hash(g.h+i, b)
		below = append(below, h[:]...)
	}
	for j := range g.levels {
		next := make([]byte, 0, g.levels[j]*HashLen)
		for b := 0; b < g.levels[j]; b++ {
			x := g.off[j] + b
			content := below[b*g.k*HashLen : min(len(below), (b+1)*g.k*HashLen)]
			p.blocks[x] = content
			h := g.hash(x, content)
			next = append(next, h[:]...)
		}
		below = next
	}
	root := g.root(p.blocks[0])
	p.Offer = protocol.Offer{ID: id, KeyID: keyID, Vehicle: vehicle, Size: size, ChunkSize: uint32(chunk), Root: root[:], Target: target}
	p.Offer.Sig = ed25519.Sign(key, protocol.OfferSigningBytes(&p.Offer))
	if err := p.Offer.Validate(); err != nil {
		return nil, fmt.Errorf("transfer: plan: %w", err)
	}
	if _, err := c.Encode(&p.Offer); err != nil {
		return nil, fmt.Errorf("transfer: plan: offer does not fit a frame: %w", err)
	}
	return p, nil
}

// Chunks returns the number of chunks of the plan: hash blocks, data chunks.
func (p *Plan) Chunks() (hashBlocks, data int) { return p.geo.h, p.geo.n }

func (p *Plan) chunk(x int, buf []byte) ([]byte, error) {
	if x < p.geo.h {
		return p.blocks[x], nil
	}
	b := buf[:p.geo.length(x)]
	if _, err := p.src.ReadAt(b, int64(x-p.geo.h)*int64(p.geo.chunk)); err != nil && !(errors.Is(err, io.EOF) && x == p.geo.t-1) {
		return nil, fmt.Errorf("transfer: read chunk %d: %w", x, err)
	}
	return b, nil
}

// SenderConfig configures a Sender.
type SenderConfig struct {
	// Codec encodes the frames sent to the vehicle.
	Codec *protocol.Codec
	// ReturnCodec decodes the frames from the vehicle; nil means Codec.
	ReturnCodec *protocol.Codec
	// Verifier authenticates every frame from the vehicle (required). It
	// holds the vehicle's replay window: share one per vehicle among its
	// senders and its telemetry, and persist it across restarts.
	Verifier *protocol.ReturnVerifier
	// MaxContradictions is how many contradictions (EventContradiction)
	// the sender absorbs, each by falling back to the conservative view,
	// before it ends the transfer with ErrContradictions (default 8): a
	// vehicle whose reports keep contradicting themselves never makes the
	// sender loop.
	MaxContradictions int
	// Rate is the uplink rate in bits per second: the sender paces at it
	// unless the receiver's reports show the vehicle takes less (flow
	// control, docs/transfer.md), and never above it.
	Rate float64
	// FixedRate turns flow control off: the sender paces at Rate whatever
	// the receiver takes (the behaviour before flow control, for
	// comparisons).
	FixedRate bool
	// RTT is the expected round trip time; the base of the timers.
	RTT time.Duration
	// SeqBase must exceed every sequence number an earlier incarnation of
	// this sender used for the transfer (groundd derives it from the wall
	// clock); reports echoing older numbers are not mistaken for answers.
	SeqBase uint64
	// Resume says the transfer may have been under way before this sender
	// started (a restart): nothing is sent until reports say it is missing.
	Resume bool
	// ReorderTime is how long the link may hold a frame back behind later
	// ones; a chunk counts as lost only if sent this long before a report's
	// anchor. 0 for a link that keeps order.
	ReorderTime time.Duration
	// MaxBackoff caps the retransmission timers (default 64 RTT, at least
	// 1 min); the report request timer stops at 8 timeouts below it while
	// the fate of some chunk is unknown.
	MaxBackoff time.Duration
	// SilenceTimeout: a contact (a period with the link up both ways) that
	// lasted at least this long without a word from the receiver is dead:
	// when the sender has nothing else to send, the chunks it sent in that
	// contact are presumed lost - a pass that carried nothing. Default
	// max(8 RTO, 2 min); negative disables it.
	SilenceTimeout time.Duration
}

// SenderStats counts what the sender did.
type SenderStats struct {
	Frames, Bytes  int64 // everything sent
	ChunksSent     int64 // chunk frames, first sends and resends
	ChunksResent   int64 // chunk frames of a chunk this sender sent before
	PayloadBytes   int64 // data-chunk bytes (not hash blocks), first sends and resends
	Offers         int64
	Requests       int64
	Reports        int64
	Presumed       int64 // chunks presumed lost after a silence (SilenceTimeout)
	DecodeErrors   int64
	IgnoredReplies int64
	Rejected       int64 // frames that failed authentication (see Counters)
	Contradictions int64 // EventContradiction raised
	FlowSamples    int64 // delivery-rate samples taken from reports (flow control)
	FlowLimited    int64 // times the sender found the receiver the bottleneck and slowed down
	PaceChanges    int64 // changes of the pace
}

// Chunk states at the sender.
const (
	stUnsent   uint8 = iota // never sent, known missing (a fresh transfer)
	stUnknown               // the receiver may hold it: wait for a report
	stInFlight              // sent, fate not known yet
	stMissing               // known lost: send again, first
	stDone                  // the receiver journaled it
)

type sendRec struct {
	seq     uint64
	at      time.Time
	el      time.Duration // active time at the send
	both    bool          // the link was up both ways at the send
	contact int           // the contact (up-both-ways period) of the send
	x       int           // -1 for a report request
	n       int32         // frame bytes
}

type indexHeap []int

func (h indexHeap) Len() int           { return len(h) }
func (h indexHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h indexHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *indexHeap) Push(x any)        { *h = append(*h, x.(int)) }
func (h *indexHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Sender is the ground side of one transfer. It is not safe for concurrent use.
type Sender struct {
	cfg      SenderConfig
	plan     *Plan
	geo      geometry
	clock    clock
	st       []uint8
	doneBits bitset // chunks known done, for skipping them a word at a time
	lastSeq  []uint64
	fifo     []sendRec
	head     int
	missing  indexHeap
	nextNew  int
	nDone    int
	nUnknown int
	seq      uint64

	offerAcked     bool
	offerTries     int // offers sent since the offer was last (re)armed
	offerDue       time.Duration
	offerRTO       time.Duration
	reqDue         time.Duration
	reqRTO         time.Duration
	lastReq        uint64
	lastChunk      uint64
	lastHeard      time.Duration // active time of the last valid message from the receiver
	presumedAt     time.Duration
	contact        int // count of contacts: periods with the link up both ways
	contactStart   time.Duration
	born           time.Time // first time the sender saw
	heardInContact bool
	deadContacts   map[int]bool
	nextSend       time.Time
	flow           flowCtl
	sinceReq       int  // bytes of chunk frames sent since the last report request
	aos            bool // a contact began: ask before sending more chunks

	lastRepSeq uint64 // return-link sequence number of the newest report applied

	cancelling bool
	done       bool
	err        error
	out        []Outgoing
	events     []Event
	// Counters counts every frame dropped, by reason: decoding,
	// authentication (unauthenticated, unknown-key, bad-signature,
	// replayed), and contradictions.
	Counters protocol.Counters
	Stats    SenderStats
}

// NewSender returns the sender of plan.
func NewSender(cfg SenderConfig, plan *Plan) (*Sender, error) {
	if cfg.Codec == nil {
		return nil, errors.New("transfer: sender config: no codec")
	}
	if cfg.ReturnCodec == nil {
		cfg.ReturnCodec = cfg.Codec
	}
	if cfg.Rate <= 0 {
		return nil, errors.New("transfer: sender config: no rate")
	}
	if cfg.RTT <= 0 {
		return nil, errors.New("transfer: sender config: no RTT")
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = max(64*cfg.RTT, time.Minute)
	}
	if cfg.Verifier == nil {
		return nil, errors.New("transfer: sender config: no return-link verifier")
	}
	if cfg.MaxContradictions <= 0 {
		cfg.MaxContradictions = 8
	}
	g := plan.geo
	s := &Sender{
		cfg: cfg, plan: plan, geo: g, st: make([]uint8, g.t), doneBits: newBitset(g.t), lastSeq: make([]uint64, g.t),
		seq: cfg.SeqBase, clock: clock{link: LinkState{true, true}}, deadContacts: map[int]bool{},
	}
	if cfg.Resume {
		for i := range s.st {
			s.st[i] = stUnknown
		}
		s.nUnknown = g.t
		s.nextNew = g.t
	}
	s.flow = flowCtl{link: cfg.Rate, rate: cfg.Rate}
	s.offerRTO = s.baseRTO()
	s.reqRTO = s.baseRTO()
	if s.cfg.SilenceTimeout == 0 {
		s.cfg.SilenceTimeout = max(8*s.baseRTO(), 2*time.Minute)
	}
	return s, nil
}

// frameTime is how long a frame of n bytes takes at the configured rate.
func (s *Sender) frameTime(n int) time.Duration {
	return time.Duration(float64(n*8) / s.cfg.Rate * float64(time.Second))
}

// paceTime is the time between the starts of two frames, the first of n
// bytes, at the pace: the link's rate, or less under flow control.
func (s *Sender) paceTime(n int) time.Duration {
	return time.Duration(float64(n*8) / s.flow.rate * float64(time.Second))
}

// Pace is the rate in bits per second the sender paces at now: the
// configured rate, or less while flow control finds the receiver slower.
func (s *Sender) Pace() float64 { return s.flow.rate }

// baseRTO is the wait for an answer: a round trip, a full frame each way,
// and a margin.
func (s *Sender) baseRTO() time.Duration {
	return s.cfg.RTT + 2*s.frameTime(s.cfg.Codec.MaxFrame()) + s.cfg.ReorderTime + s.cfg.RTT/4 + 50*time.Millisecond
}

// Done says the transfer is over: complete (Err nil), refused or cancelled.
func (s *Sender) Done() bool { return s.done }

// Err is why the transfer ended without completing.
func (s *Sender) Err() error { return s.err }

// Progress returns the chunks the receiver is known to hold and the total.
func (s *Sender) Progress() (done, total int) { return s.nDone, s.geo.t }

// SetLink tells the sender what it knows of the link.
func (s *Sender) SetLink(now time.Time, st LinkState) {
	s.touch(now)
	if st.Forward && !s.clock.link.Forward && s.nextSend.Before(now) {
		s.nextSend = now
	}
	if st.up() && !s.clock.link.up() {
		// A new contact: flow control samples only what was sent in it.
		s.flow.reset(s.seq)
		// The timers backed off because the receiver did not answer, which
		// a pass that carried nothing (announced up like any other) or the
		// gap before it explains: in a new contact, ask at once what the
		// receiver holds and offer again at once, from the base timeout.
		// Otherwise a lost pass leaves the request timer at its cap (8
		// RTO, as long as a short pass) and the next pass asks late or not
		// at all, while the chunks sent into the lost pass wait for an
		// answer to be sent again (TestLostPassGroundRestart).
		s.aos = true
		s.reqDue, s.reqRTO = s.clock.elapsed, s.baseRTO()
		if !s.offerAcked {
			s.offerDue, s.offerRTO = min(s.offerDue, s.clock.elapsed), s.baseRTO()
		}
		s.contact++
		s.contactStart = s.clock.elapsed
		s.heardInContact = false
	}
	if !st.up() && s.clock.link.up() && !s.heardInContact && s.cfg.SilenceTimeout >= 0 &&
		s.clock.elapsed-s.contactStart >= s.cfg.SilenceTimeout {
		// A whole contact, long enough, without a word from the receiver:
		// the link carried nothing in it, up to its very end.
		s.deadContacts[s.contact] = true
		s.presumedAt = -1
	}
	s.clock.link = st
}

// Cancel abandons the transfer: the sender sends a signed cancel until the
// receiver acknowledges it.
func (s *Sender) Cancel() {
	if s.done {
		return
	}
	s.cancelling = true
	s.reqDue, s.reqRTO = s.clock.elapsed, s.baseRTO()
}

// Step takes one frame received from the vehicle.
func (s *Sender) Step(now time.Time, frame []byte) error {
	s.touch(now)
	m, err := s.cfg.ReturnCodec.Decode(frame)
	if err != nil {
		s.Counters.Count(err)
		s.Stats.DecodeErrors++
		return err
	}
	// Everything from the vehicle is authenticated before it is believed.
	if err := s.cfg.Verifier.Verify(m); err != nil {
		s.Counters.Count(err)
		s.Stats.Rejected++
		return err
	}
	id := s.plan.Offer.ID
	switch m := m.(type) {
	case *protocol.Report:
		if m.ID != id || s.done {
			s.Stats.IgnoredReplies++
			return nil
		}
		s.Stats.Reports++
		s.lastHeard = s.clock.elapsed
		s.heardInContact = true
		if m.NeedOffer {
			s.offerAcked = false
			s.offerTries = 0
			s.offerDue = s.clock.elapsed
			return nil
		}
		s.offerAcked = true
		s.offerRTO = s.baseRTO()
		if tag := protocol.TagOf(m); tag != nil {
			if tag.Epoch != s.flow.epoch {
				// The receiver restarted: its losses before say nothing
				// of its rate.
				s.flow.epoch = tag.Epoch
				s.flow.reset(s.seq)
			}
		}
		s.apply(m, now, protocol.TagOf(m).Seq())
		return nil
	case *protocol.Complete:
		if m.ID != id || s.done {
			s.Stats.IgnoredReplies++
			return nil
		}
		s.lastHeard = s.clock.elapsed
		s.heardInContact = true
		if n := s.unclaimed(); n > 0 {
			// The vehicle cannot hold chunks no one ever sent it, and
			// that none of its reports said it held.
			return s.contradiction(n, fmt.Sprintf("complete while %d chunks were never sent nor reported held", n))
		}
		s.done = true
		if s.cancelling {
			// Complete before our cancel arrived: the data is there anyway.
			s.cancelling = false
		}
		s.nDone = s.geo.t
		return nil
	case *protocol.Cancel:
		if m.ID != id || s.done {
			s.Stats.IgnoredReplies++
			return nil
		}
		s.done = true
		if m.Reason == protocol.CancelAck && s.cancelling {
			s.err = ErrCancelled
		} else {
			s.err = fmt.Errorf("%w: transfer %d, reason %d", ErrRefused, id, m.Reason)
		}
		return nil
	}
	s.Stats.IgnoredReplies++
	return fmt.Errorf("%w: %v from the vehicle", ErrUnexpected, m.Type())
}

// classify says what a report tells of chunk x.
func classify(m *protocol.Report, ranges [][2]int, x int) uint8 {
	switch {
	case x < int(m.Watermark):
		return stDone
	case x >= int(m.High):
		return stMissing
	case x >= int(m.Cursor) && x < int(m.End):
		i := sort.Search(len(ranges), func(i int) bool { return ranges[i][1] > x })
		if i < len(ranges) && ranges[i][0] <= x {
			return stMissing
		}
		return stDone
	}
	return stUnknown
}

func (s *Sender) markDone(x int) {
	switch s.st[x] {
	case stDone:
		return
	case stUnknown:
		s.nUnknown--
	}
	s.st[x] = stDone
	s.doneBits.set(x)
	s.nDone++
}

// markDoneRange marks [a, b) done, skipping what already is.
func (s *Sender) markDoneRange(a, b int) {
	for x := s.doneBits.nextClear(a, b); x < b; x = s.doneBits.nextClear(x+1, b) {
		s.markDone(x)
	}
}

// markMissing records that the receiver lacks x. If x's hash block is not
// known to be journaled, x may be waiting in the receiver's memory for it:
// ask again rather than send x twice.
func (s *Sender) markMissing(x int) {
	p, _, top := s.geo.parent(x)
	if !top && s.st[p] != stDone {
		if s.st[x] != stUnknown {
			s.st[x] = stUnknown
			s.nUnknown++
		}
		return
	}
	if s.st[x] == stUnknown {
		s.nUnknown--
	}
	s.st[x] = stMissing
	heap.Push(&s.missing, x)
}

// unclaimed returns how many chunks a fresh (not Resume) sender has
// neither sent nor seen a report claim (a claim taken back no longer
// counts). A restarted sender cannot tell, and returns 0.
func (s *Sender) unclaimed() int {
	if s.cfg.Resume {
		return 0
	}
	n := 0
	for x := s.doneBits.nextClear(0, s.geo.t); x < s.geo.t; x = s.doneBits.nextClear(x+1, s.geo.t) {
		if s.lastSeq[x] == 0 {
			n++
		}
	}
	return n
}

// contradiction raises EventContradiction and counts it; past the budget
// the transfer ends with ErrContradictions.
func (s *Sender) contradiction(chunks int, detail string) error {
	s.Stats.Contradictions++
	s.Counters.Add(protocol.ReasonContradiction)
	s.events = append(s.events, Event{Transfer: s.plan.Offer.ID, Kind: EventContradiction, Chunks: chunks, Detail: detail})
	err := fmt.Errorf("%w: transfer %d: %s", protocol.ErrContradiction, s.plan.Offer.ID, detail)
	if s.Stats.Contradictions > int64(s.cfg.MaxContradictions) && !s.done {
		s.done, s.err = true, fmt.Errorf("%w: %d, last: %s", ErrContradictions, s.Stats.Contradictions, detail)
	}
	return err
}

// undo takes back a chunk a report had claimed: it is not proven received
// any more, so it is sent again (or, if its hash block is not done either,
// asked about).
func (s *Sender) undo(x int) {
	s.st[x] = stUnknown
	s.nUnknown++
	s.doneBits.clear(x)
	s.nDone--
	s.markMissing(x)
}

// checkReport compares a report with what the sender knows before it is
// applied. A report newer than every report applied so far (by its
// return-link sequence number, which orders the vehicle's journal states)
// that lists as missing a chunk an earlier report claimed takes the claim
// back: a contradiction, as the receiver's journal only grows. A report
// claiming chunks this sender never sent is believed, not a contradiction:
// the receiver journals only chunks that verify against the root the
// ground signed, and the same chunks may have reached it another way (a
// replay of an identical transfer to another vehicle, under the same id).
// A false claim costs the lying vehicle its own data; if a later report
// takes it back, that is a contradiction and the chunks are sent. It
// returns the claim limit (chunks at or past it are not believed done).
func (s *Sender) checkReport(m *protocol.Report, seq uint64, ranges [][2]int) int {
	t := s.geo.t
	limit := t
	if seq <= s.lastRepSeq {
		return limit
	}
	s.lastRepSeq = seq
	var back []int
	for _, r := range ranges {
		for x := s.doneBits.nextSet(r[0], r[1]); x < r[1]; x = s.doneBits.nextSet(x+1, r[1]) {
			back = append(back, x)
		}
	}
	for x := s.doneBits.nextSet(int(m.High), t); x < t; x = s.doneBits.nextSet(x+1, t) {
		back = append(back, x)
	}
	if len(back) > 0 {
		for _, x := range back {
			s.undo(x)
		}
		_ = s.contradiction(len(back), fmt.Sprintf("report lists missing %d chunks an earlier report claimed", len(back)))
	}
	return limit
}

func (s *Sender) apply(m *protocol.Report, now time.Time, seq uint64) {
	t := s.geo.t
	if int(m.High) > t {
		s.Stats.IgnoredReplies++
		return
	}
	var ranges [][2]int
	m.Ranges(func(a, b uint32) { ranges = append(ranges, [2]int{int(a), int(b)}) })
	limit := s.checkReport(m, seq, ranges)
	if s.done {
		return
	}
	s.markDoneRange(0, min(int(m.Watermark), limit))
	pos := int(m.Cursor)
	for _, r := range ranges {
		s.markDoneRange(pos, min(r[0], limit))
		pos = r[1]
	}
	s.markDoneRange(pos, min(int(m.End), limit))
	// The report's anchor: the latest of our sends the receiver had seen
	// when it made the report (the request it answers, or the last chunk
	// it got). Without one, the report may predate frames of ours - or of
	// an earlier incarnation of this sender - still in flight, and says
	// nothing about what is missing.
	anchor := uint64(0)
	if m.Ack > s.cfg.SeqBase && m.Ack <= s.seq {
		anchor = m.Ack
	}
	if m.Last > 0 && int(m.Last) <= t {
		anchor = max(anchor, s.lastSeq[m.Last-1])
	}
	if anchor == 0 {
		return
	}
	var anchorAt time.Time
	if s.cfg.ReorderTime > 0 {
		i := sort.Search(len(s.fifo)-s.head, func(i int) bool { return s.fifo[s.head+i].seq >= anchor })
		if s.head+i < len(s.fifo) && s.fifo[s.head+i].seq == anchor {
			anchorAt = s.fifo[s.head+i].at
		} else {
			anchorAt = now
		}
	}
	// Chunks whose state was unknown (a restart, or waiting for their hash
	// block) and that the report says are missing. On a link that reorders,
	// frames of an earlier incarnation may overtake ours by up to
	// ReorderTime: only a report anchored later than that speaks for them.
	if s.nUnknown > 0 && (s.cfg.ReorderTime == 0 || !anchorAt.Before(s.born.Add(s.cfg.ReorderTime))) {
		for _, r := range ranges {
			for x := r[0]; x < r[1]; x++ {
				if s.st[x] == stUnknown {
					s.markMissing(x)
				}
			}
		}
		for x := int(m.High); x < t && s.nUnknown > 0; x++ {
			if s.st[x] == stUnknown {
				s.markMissing(x)
			}
		}
	}
	// Chunks in flight that must have arrived before the report was made:
	// those sent before the anchor.
	for s.head < len(s.fifo) {
		e := s.fifo[s.head]
		if e.seq >= anchor || (s.cfg.ReorderTime > 0 && e.at.After(anchorAt.Add(-s.cfg.ReorderTime))) {
			break
		}
		s.head++
		if e.x >= 0 && s.st[e.x] == stDone && s.lastSeq[e.x] == e.seq {
			// Journaled, as the report said (marked above): a delivery
			// for flow control.
			s.flow.add(&e, true)
		}
		if e.x < 0 || s.st[e.x] != stInFlight || s.lastSeq[e.x] != e.seq {
			continue
		}
		switch classify(m, ranges, e.x) {
		case stDone:
			s.markDone(e.x)
		case stMissing:
			if p, _, top := s.geo.parent(e.x); (top || s.st[p] == stDone) && (e.x < int(m.High) || m.End == m.High) {
				// Flow control counts a chunk lost only in the part of the
				// index space the report describes (past High too only if
				// the description reaches it: a chunk it does not describe
				// would count lost when missing and not at all when
				// journaled), and only if its hash block is known held (if
				// not, the chunk may wait for it in the receiver's memory).
				s.flow.add(&e, false)
			}
			s.markMissing(e.x)
		default:
			s.st[e.x] = stUnknown
			s.nUnknown++
		}
	}
	if !s.cfg.FixedRate {
		if s.flow.acc.frames >= flowMinSample {
			s.Stats.FlowSamples++
		}
		limited := s.flow.limited
		if s.flow.sample() {
			s.flow.reset(s.seq)
			s.Stats.PaceChanges++
			if s.flow.limited && !limited {
				s.Stats.FlowLimited++
			}
		}
	}
	if s.head > 4096 && s.head > len(s.fifo)/2 {
		s.fifo = append(s.fifo[:0], s.fifo[s.head:]...)
		s.head = 0
	}
	if m.Ack >= s.lastReq && s.lastReq > 0 {
		// Our last request is answered: if we still lack answers, ask
		// again as soon as there is nothing better to send.
		s.reqDue = s.clock.elapsed
		s.reqRTO = s.baseRTO()
	}
}

// Tick sends what is due at now, paced at the configured rate.
func (s *Sender) Tick(now time.Time) {
	s.touch(now)
	if s.done || !s.clock.link.Forward {
		return
	}
	id := s.plan.Offer.ID
	for !s.nextSend.After(now) {
		k, x := s.pick(true)
		if k == pickNone {
			return
		}
		s.seq++
		var m protocol.Message
		switch k {
		case pickCancel:
			c := &protocol.Cancel{ID: id, Reason: protocol.CancelByGround, Vehicle: s.plan.Offer.Vehicle}
			c.Sig = ed25519.Sign(s.plan.key, protocol.CancelSigningBytes(c))
			m = c
		case pickOffer:
			o := s.plan.Offer
			m = &o
			s.Stats.Offers++
		case pickRequest:
			rq := &protocol.ReportRequest{ID: id, Seq: s.seq}
			if err := s.cfg.Verifier.SignRequest(rq); err != nil {
				s.done, s.err = true, fmt.Errorf("transfer: tag request: %w", err)
				return
			}
			m = rq
			s.lastReq = s.seq
			s.sinceReq = 0
			x = -1
			s.Stats.Requests++
		case pickChunk:
			b, err := s.plan.chunk(x, make([]byte, s.geo.chunk))
			if err != nil {
				s.done, s.err = true, err
				return
			}
			m = &protocol.Chunk{ID: id, Index: uint32(x), Data: b}
			if s.lastSeq[x] != 0 {
				s.Stats.ChunksResent++
			}
			s.lastSeq[x] = s.seq
			s.st[x] = stInFlight
			s.lastChunk = s.seq
			s.Stats.ChunksSent++
			if x >= s.geo.h {
				s.Stats.PayloadBytes += int64(len(b))
			}
		}
		f, err := s.cfg.Codec.Encode(m)
		if err != nil {
			s.done, s.err = true, fmt.Errorf("transfer: encode %v: %w", m.Type(), err)
			return
		}
		if k == pickChunk {
			s.sinceReq += len(f)
		}
		if k == pickChunk || k == pickRequest {
			// at is when the frame has left the transmitter: a frame can
			// only be overtaken (ReorderTime) after that.
			s.fifo = append(s.fifo, sendRec{seq: s.seq, at: now.Add(s.frameTime(len(f))), el: s.clock.elapsed,
				both: s.clock.link.up(), contact: s.contact, x: x, n: int32(len(f))})
		}
		s.Stats.Frames++
		s.Stats.Bytes += int64(len(f))
		s.out = append(s.out, Outgoing{Frame: f, Msg: m})
		if s.nextSend.Before(now.Add(-s.paceTime(len(f)))) {
			s.nextSend = now
		}
		s.nextSend = s.nextSend.Add(s.paceTime(len(f)))
	}
}

const (
	pickNone = iota
	pickCancel
	pickOffer
	pickChunk
	pickRequest
)

// pick chooses what to send next: a cancel, the offer, missing chunks
// (lowest index first), new chunks (hash blocks first), or a report
// request. take commits the choice (timers, queues).
//
// Two rules keep chunks from outrunning what the receiver can verify,
// while the link is up both ways (a report can come back). No chunk goes
// out before the offer is acknowledged, or for one timeout at most: the
// receiver drops every chunk of a transfer it has no offer for, and the
// first ones are the hash blocks everything else hangs on. And a chunk
// whose parent block is not known journaled goes after a report request,
// if the parent went out since the last request or that request is
// overdue: a lost block is known, and sent again, about a round trip after
// its loss, before the chunks it covers fill the receiver's pending buffer
// (MaxPending) and are dropped. That is one request per tree level on a
// fresh transfer, then one per report while blocks are in doubt.
func (s *Sender) pick(take bool) (kind, x int) {
	el := s.clock.elapsed
	up := s.clock.link.up()
	if s.cancelling {
		if !up || el < s.reqDue {
			return pickNone, 0
		}
		if take {
			s.reqDue = el + s.reqRTO
			s.reqRTO = min(2*s.reqRTO, s.cfg.MaxBackoff)
		}
		return pickCancel, 0
	}
	if !s.offerAcked && el >= s.offerDue && (up || s.Stats.Offers == 0) {
		if take {
			s.offerDue = el + s.offerRTO
			s.offerRTO = min(2*s.offerRTO, s.cfg.MaxBackoff)
			s.offerTries++
		}
		return pickOffer, 0
	}
	if s.aos && up {
		if s.nUnknown > 0 || s.head < len(s.fifo) {
			// Something sent before this contact is not accounted for.
			if take {
				s.aos = false
			}
			return s.pickRequest(take)
		}
		if take {
			s.aos = false
		}
	}
	if !s.offerAcked && up && s.offerTries < 2 {
		// Wait for the offer's acknowledgement, one timeout at most: if
		// it does not come, the offer goes again and chunks follow it, so
		// that a return link silently down does not stall the uplink. A
		// resumed sender asks what the receiver holds meanwhile.
		if s.nUnknown > 0 && el >= s.reqDue {
			return s.pickRequest(take)
		}
		return pickNone, 0
	}
	if x, ok := s.nextChunk(); ok {
		if p, _, top := s.geo.parent(x); up && !top && s.st[p] != stDone && (s.lastSeq[p] > s.lastReq || el >= s.reqDue) {
			return s.pickRequest(take)
		}
		if up && !s.cfg.FixedRate && s.sinceReq >= flowReqBytes {
			// Flow control samples what reports say of the chunks
			// before them: ask at a steady cadence while streaming.
			return s.pickRequest(take)
		}
		if take && s.missing.Len() > 0 && s.missing[0] == x {
			heap.Pop(&s.missing)
		}
		return pickChunk, x
	}
	if s.presume() {
		return s.pick(take)
	}
	// Nothing to send: ask what the receiver holds, at once if chunks went
	// out since the last request, else when the timer says.
	if !up {
		return pickNone, 0
	}
	if s.lastChunk > s.lastReq || el >= s.reqDue {
		return s.pickRequest(take)
	}
	return pickNone, 0
}

// nextChunk returns the chunk to send next, if any: the lowest missing one,
// else the next never sent.
func (s *Sender) nextChunk() (x int, ok bool) {
	for len(s.missing) > 0 {
		x := s.missing[0]
		if s.st[x] != stMissing {
			heap.Pop(&s.missing)
			continue
		}
		return x, true
	}
	for s.nextNew < s.geo.t && s.st[s.nextNew] != stUnsent {
		s.nextNew++
	}
	if s.nextNew < s.geo.t {
		return s.nextNew, true
	}
	return 0, false
}

// pickRequest chooses a report request; take arms its timer: one timeout,
// doubling while unanswered, reset when chunks went out since the last.
// While some chunk's fate is unknown the doubling stops at
// maxDoubtBackoff timeouts rather than MaxBackoff: a request is a few
// bytes on a link that is otherwise idle, and each one left unsent is
// link-up time in which nothing can be resent.
func (s *Sender) pickRequest(take bool) (kind, x int) {
	if take {
		if s.lastChunk > s.lastReq {
			s.reqRTO = s.baseRTO()
		}
		s.reqDue = s.clock.elapsed + s.reqRTO
		limit := s.cfg.MaxBackoff
		if s.nDone < s.geo.t {
			limit = min(limit, maxDoubtBackoff*s.baseRTO())
		}
		s.reqRTO = min(2*s.reqRTO, limit)
	}
	return pickRequest, 0
}

// maxDoubtBackoff caps, in timeouts, the request timer while the sender
// does not know the fate of every chunk.
const maxDoubtBackoff = 8

// Ready returns the frames to send, the events and the next deadline. Call
// Advance once they are sent.
func (s *Sender) Ready() Ready {
	rd := Ready{Messages: s.out, Events: s.events}
	if s.done || !s.clock.link.Forward {
		return rd
	}
	if k, _ := s.pick(false); k != pickNone {
		rd.Deadline = s.nextSend
		if rd.Deadline.Before(s.clock.last) {
			rd.Deadline = s.clock.last
		}
		return rd
	}
	if !s.clock.link.up() {
		return rd
	}
	var due time.Duration
	switch {
	case s.cancelling:
		due = s.reqDue
	case !s.offerAcked:
		due = s.offerDue
		if s.nUnknown > 0 || s.offerTries >= 2 {
			// Requests go meanwhile (pick).
			due = min(due, s.reqDue)
		}
	default:
		due = s.reqDue
	}
	rd.Deadline = s.clock.wall(due)
	if rd.Deadline.Before(s.nextSend) {
		rd.Deadline = s.nextSend
	}
	return rd
}

// Advance tells the sender the last Ready's frames were sent.
func (s *Sender) Advance() { s.out, s.events = nil, nil }

// presume marks as missing the chunks in flight that a dead contact
// swallowed: sent while the link was up both ways, after the last word from
// the receiver, in a contact that lasted at least SilenceTimeout without any
// word from the receiver. The silence says the link carried nothing in that
// contact (a lost pass); the next contact may then resend them even without
// a return link. It reports whether any chunk was marked.
func (s *Sender) presume() bool {
	el := s.clock.elapsed
	if s.cfg.SilenceTimeout < 0 || el == s.presumedAt || len(s.deadContacts) == 0 {
		return false
	}
	s.presumedAt = el
	found := false
	for i := s.head; i < len(s.fifo); i++ {
		e := s.fifo[i]
		if e.x < 0 || !e.both || e.el < s.lastHeard || s.st[e.x] != stInFlight || s.lastSeq[e.x] != e.seq {
			continue
		}
		if !s.deadContacts[e.contact] {
			continue
		}
		s.markMissing(e.x)
		if s.st[e.x] == stMissing {
			s.Stats.Presumed++
			found = true
		}
	}
	return found
}

func (s *Sender) touch(now time.Time) {
	s.clock.advance(now)
	if s.born.IsZero() {
		s.born = now
	}
}
