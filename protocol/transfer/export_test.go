package transfer

import "time"

// The tests are package transfer_test, as net/http's are, because they use
// transfertest's doubles and transfertest imports this package. This file,
// compiled only into the test binary, exposes to them the internals they
// check: the journal keys, a plan's tree geometry, the sender's per-chunk
// states, request sequence and timeouts, and the receiver's configuration,
// finished set and answer budget.

// Journal keys (docs/transfer.md, "Journal and store").
var (
	KeyOffer = keyOffer
	KeyChunk = keyChunk
	KeyDone  = keyDone
)

// Earliest is the earlier of two deadlines, the zero time meaning none.
var Earliest = earliest

const (
	// StDone and StMissing are the sender's chunk states (States):
	// known journaled, known lost.
	StDone    = stDone
	StMissing = stMissing
	// MaxDoubtBackoff caps, in BaseRTOs, the request timer while the
	// sender does not know the fate of every chunk.
	MaxDoubtBackoff = maxDoubtBackoff
)

// Geometry is a plan's tree layout: T chunk indices in all, the first H of
// them hash blocks, each chunk ChunkLen bytes at most.
type Geometry struct {
	T, H, ChunkLen int
	g              *geometry
}

// Parent returns the index of the hash block that holds chunk x's hash and
// the hash's position in it; top is true when x is the top block itself.
func (g Geometry) Parent(x int) (p, pos int, top bool) { return g.g.parent(x) }

// Geometry returns the plan's tree layout.
func (p *Plan) Geometry() Geometry {
	return Geometry{T: p.geo.t, H: p.geo.h, ChunkLen: p.geo.chunk, g: &p.geo}
}

// Chunk returns the content of chunk x (hash block or data), in buf.
func (p *Plan) Chunk(x int, buf []byte) ([]byte, error) { return p.chunk(x, buf) }

// States returns the sender's state of every chunk, by index (not a copy).
func (s *Sender) States() []uint8 { return s.st }

// Unknown is the number of chunks whose fate the sender does not know.
func (s *Sender) Unknown() int { return s.nUnknown }

// Seq is the sequence number of the sender's latest frame (a report's Ack
// echoes it).
func (s *Sender) Seq() uint64 { return s.seq }

// TakeSeq advances the sequence as if the sender had sent a frame, and
// returns the new number.
func (s *Sender) TakeSeq() uint64 { s.seq++; return s.seq }

// ReqRTO is the sender's current report-request timeout, backoff included.
func (s *Sender) ReqRTO() time.Duration { return s.reqRTO }

// BaseRTO is the sender's request timeout before any backoff.
func (s *Sender) BaseRTO() time.Duration { return s.baseRTO() }

// Config returns the receiver's configuration, defaults filled in; tests
// change it in place.
func (r *Receiver) Config() *ReceiverConfig { return &r.cfg }

// Finished says whether the receiver remembers transfer id as finished, one
// by one (not merely below its key's floor).
func (r *Receiver) Finished(id uint64) bool { _, ok := r.finished[id]; return ok }

// SpendAnswerBudget empties the receiver's answer budget at now.
func (r *Receiver) SpendAnswerBudget(now time.Time) { r.tokens, r.tokensAt = 0, now }
