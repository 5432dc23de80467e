package transfer

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
)

// Journal keys. Everything of one transfer lives under "t"+id so that one
// OpDeletePrefix forgets it.
//
//	"t" id               the accepted offer (its frame)
//	"t" id "h" index     a verified hash block (value: its content)
//	"t" id "c" index     a data chunk stored and synced (empty value)
//	"d" id               a finished transfer: status, key id, root
//	"f" keyid            the highest finished transfer id of a ground key
func keyOffer(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{'t'}, id)
}

func keyChunk(id uint64, x int, block bool) []byte {
	k := keyOffer(id)
	if block {
		k = append(k, 'h')
	} else {
		k = append(k, 'c')
	}
	return binary.BigEndian.AppendUint32(k, uint32(x))
}

func keyDone(id uint64) []byte   { return binary.BigEndian.AppendUint64([]byte{'d'}, id) }
func keyFloor(key uint32) []byte { return binary.BigEndian.AppendUint32([]byte{'f'}, key) }
func finishedValue(f finished) []byte {
	v := []byte{f.status}
	v = binary.BigEndian.AppendUint32(v, f.key)
	return append(v, f.root...)
}

// Finished statuses.
const (
	statusComplete  = 1
	statusCancelled = 2
)

type finished struct {
	status uint8
	key    uint32
	root   []byte
}

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	// Codec decodes the frames the ground sends.
	Codec *protocol.Codec
	// ReturnCodec encodes the frames sent back; nil means Codec. Its
	// maximum frame size bounds every report.
	ReturnCodec *protocol.Codec
	// Vehicle is this vehicle's id: offers and cancels signed for another
	// vehicle are counted (protocol.ReasonWrongVehicle) and dropped.
	Vehicle uint32
	// Keys are the ground's offer-signing public keys by key id.
	Keys map[uint32]ed25519.PublicKey
	// Auth tags every message sent to the ground (required). Its epoch must
	// be new for every NewReceiver: see protocol.NewReturnAuth.
	Auth *protocol.ReturnAuth
	// MaxSize bounds the size of a transfer accepted (default protocol.MaxTransferSize).
	MaxSize uint64
	// MaxActive bounds the transfers in progress at once (default 4).
	MaxActive int
	// MaxPending bounds the chunks held in memory because their hash block
	// has not arrived yet (default 512), counting every candidate.
	MaxPending int
	// ReportInterval: while chunks arrive, a report at least this often
	// (link-up time; default 5 s).
	ReportInterval time.Duration
	// MinReportGap: at most one report per transfer in this time (default 100 ms).
	MinReportGap time.Duration
	// MaxFinished bounds the finished transfers remembered one by one
	// (default 64); older ones are covered by the per-key floor.
	MaxFinished int
	// AnswerRate and AnswerBurst are the token bucket of answers to what
	// anyone can send or replay: report requests other than the ground's
	// fresh authenticated ones, repeated or replayed offers, cancels of
	// finished transfers. At most AnswerBurst
	// answers at once (default 8), refilled at AnswerRate per second of the
	// time given to Step (default 2); the rest are counted
	// (protocol.ReasonRateLimited) and dropped, so a flood of requests is not
	// amplified onto the narrow return link.
	AnswerRate  float64
	AnswerBurst int
	// Accept, if set, is the vehicle's own acceptance policy: it is asked
	// about every new offer that passed the receiver's checks (vehicle,
	// signature, replay, limits), before anything of it is journaled. A
	// refusal (ok false) is counted in Stats.OffersRefused and answered,
	// from the answer budget, with a Cancel of the reason returned (for
	// instance protocol.CancelRefused); nothing is recorded, so the same
	// offer sent again is asked about again. It must not call the Receiver.
	Accept func(o *protocol.Offer) (reason uint8, ok bool)
}

func (c *ReceiverConfig) setDefaults() error {
	if c.Codec == nil {
		return errors.New("transfer: receiver config: no codec")
	}
	if c.ReturnCodec == nil {
		c.ReturnCodec = c.Codec
	}
	if len(c.Keys) == 0 {
		return errors.New("transfer: receiver config: no ground keys")
	}
	if c.Auth == nil {
		return errors.New("transfer: receiver config: no return-link authenticator")
	}
	for id, k := range c.Keys {
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("transfer: receiver config: key %d is %d bytes", id, len(k))
		}
	}
	if c.MaxSize == 0 {
		c.MaxSize = protocol.MaxTransferSize
	}
	if c.MaxActive <= 0 {
		c.MaxActive = 4
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 512
	}
	if c.ReportInterval <= 0 {
		c.ReportInterval = 5 * time.Second
	}
	if c.MinReportGap <= 0 {
		c.MinReportGap = 100 * time.Millisecond
	}
	if c.MaxFinished <= 0 {
		c.MaxFinished = 64
	}
	if c.AnswerRate <= 0 {
		c.AnswerRate = 2
	}
	if c.AnswerBurst <= 0 {
		c.AnswerBurst = 8
	}
	return nil
}

// ReceiverStats counts what the receiver did and refused.
type ReceiverStats struct {
	OffersAccepted  int64
	OffersRefused   int64 // replayed, conflicting, over limits
	Forged          int64 // bad signature on an offer or cancel
	UnknownKey      int64
	Unauthenticated int64 // a ground cancel without signature
	WrongVehicle    int64 // an offer or cancel for another vehicle
	RateLimited     int64 // answers dropped by the answer budget (AnswerRate)
	// RequestsUnauthenticated counts report requests without a valid MAC
	// (answered, if at all, from the answer budget).
	RequestsUnauthenticated int64
	// RequestsAuthenticated counts report requests whose MAC verified with
	// a Seq newer than the transfer's last (the ground's, not a replay).
	RequestsAuthenticated int64
	Unsent                int64 // messages not sent: the epoch's sequence numbers are spent
	Replayed              int64
	ChunksJournaled       int64 // data chunks and hash blocks
	Duplicates            int64 // chunks already held
	HashFailures          int64 // dropped: fail the hash tree
	BadChunks             int64 // dropped: bad index or length
	UnknownTransfer       int64 // dropped: no offer for the transfer
	LateChunks            int64 // chunks of a finished transfer
	Pending               int64 // chunks held for their hash block (candidates)
	PendingDropped        int64 // dropped: MaxPending candidates held already
	CandidatesFull        int64 // dropped: its index holds MaxCandidates other candidates
	Reports               int64
	Completed             int64
	Cancelled             int64
	DecodeErrors          int64 // see Counters for the reason
	UnexpectedFrames      int64
}

type rxTransfer struct {
	offer    protocol.Offer
	geo      geometry
	blocks   [][]byte // verified hash blocks
	have     bitset
	count    int
	wm, high int // all below wm held; none at or above high
	// pending holds, by index, the distinct candidates received for a
	// chunk whose hash block has not arrived: a forgery must not take the
	// place of the genuine chunk, which may come after it.
	pending  map[int][][]byte
	npending int // candidates in pending
	last     uint32
	ack      uint64 // Seq of the latest authenticated report request
	authSeq  uint64 // the highest authenticated request Seq since the start
	cursor   int
	dirty    bool // chunks arrived since the last report
	want     bool // a report was asked for
	lastRep  time.Duration
	reported bool
}

// Receiver is the vehicle side of transfers. It is not safe for concurrent use.
type Receiver struct {
	cfg      ReceiverConfig
	clock    clock
	active   map[uint64]*rxTransfer
	finished map[uint64]finished
	floors   map[uint32]uint64
	tokens   float64   // answer budget left (AnswerBurst at most)
	tokensAt time.Time // when tokens was last refilled
	rd       Ready
	// Counters counts every frame or answer dropped, by reason: decoding,
	// authentication, wrong vehicle, rate limit, chunks that fail the plan.
	Counters protocol.Counters
	Stats    ReceiverStats
}

// NewReceiver returns a receiver whose durable state is recs: what the
// journal holds (Journal.Load), empty for a new vehicle. Call Ready at once:
// a transfer the journal shows whole is completed then. A completion the
// caller did not get to act on before a restart shows as Completed(id).
func NewReceiver(cfg ReceiverConfig, recs []Record) (*Receiver, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	r := &Receiver{
		cfg: cfg, active: map[uint64]*rxTransfer{}, finished: map[uint64]finished{},
		floors: map[uint32]uint64{}, clock: clock{link: LinkState{true, true}, returnOnly: true},
		tokens: float64(cfg.AnswerBurst),
	}
	sort.Slice(recs, func(a, b int) bool { return bytes.Compare(recs[a].Key, recs[b].Key) < 0 })
	for _, rec := range recs {
		if err := r.restore(rec); err != nil {
			return nil, fmt.Errorf("transfer: journal record %x: %w", rec.Key, err)
		}
	}
	for id, t := range r.active {
		if t.count == t.geo.t {
			r.complete(id, t)
		}
	}
	return r, nil
}

func (r *Receiver) restore(rec Record) error {
	k, v := rec.Key, rec.Value
	switch {
	case len(k) == 5 && k[0] == 'f':
		if len(v) != 8 {
			return errors.New("bad floor")
		}
		r.floors[binary.BigEndian.Uint32(k[1:])] = binary.BigEndian.Uint64(v)
	case len(k) == 9 && k[0] == 'd':
		if len(v) < 5 {
			return errors.New("bad finished record")
		}
		r.finished[binary.BigEndian.Uint64(k[1:])] = finished{status: v[0], key: binary.BigEndian.Uint32(v[1:5]), root: v[5:]}
	case len(k) == 9 && k[0] == 't':
		m, err := r.cfg.Codec.Decode(v)
		if err != nil {
			return err
		}
		o, ok := m.(*protocol.Offer)
		if !ok {
			return errors.New("not an offer")
		}
		t, err := newRxTransfer(*o)
		if err != nil {
			return err
		}
		r.active[o.ID] = t
	case len(k) == 14 && k[0] == 't' && (k[9] == 'h' || k[9] == 'c'):
		t := r.active[binary.BigEndian.Uint64(k[1:9])]
		if t == nil {
			return errors.New("chunk of no transfer")
		}
		x := int(binary.BigEndian.Uint32(k[10:]))
		if x >= t.geo.t || (k[9] == 'h') != (x < t.geo.h) {
			return errors.New("chunk index out of range")
		}
		if k[9] == 'h' {
			if len(v) != t.geo.length(x) {
				return errors.New("hash block length")
			}
			t.blocks[x] = append([]byte(nil), v...)
		}
		t.mark(x)
	default:
		return errors.New("unknown key")
	}
	return nil
}

func newRxTransfer(o protocol.Offer) (*rxTransfer, error) {
	g, err := newGeometry(o.Size, int(o.ChunkSize))
	if err != nil {
		return nil, err
	}
	return &rxTransfer{offer: o, geo: g, blocks: make([][]byte, g.h), have: newBitset(g.t), pending: map[int][][]byte{}}, nil
}

func (t *rxTransfer) mark(x int) {
	if t.have.has(x) {
		return
	}
	t.have.set(x)
	t.count++
	if x >= t.high {
		t.high = x + 1
	}
	if x == t.wm {
		t.wm = t.have.nextClear(t.wm, t.geo.t)
	}
}

// Active lists the ids of the transfers in progress.
func (r *Receiver) Active() []uint64 {
	ids := make([]uint64, 0, len(r.active))
	for id := range r.active {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	return ids
}

// Progress returns the chunks held and the total of an active transfer.
func (r *Receiver) Progress(id uint64) (held, total int, ok bool) {
	t := r.active[id]
	if t == nil {
		return 0, 0, false
	}
	return t.count, t.geo.t, true
}

// Completed says whether transfer id completed (as far as the journal remembers).
func (r *Receiver) Completed(id uint64) bool {
	f, ok := r.finished[id]
	return ok && f.status == statusComplete
}

// SetLink tells the receiver what it knows of the link.
func (r *Receiver) SetLink(now time.Time, st LinkState) {
	r.clock.advance(now)
	wasReturn := r.clock.link.Return
	r.clock.link = st
	if st.Return && !wasReturn {
		// Return link back: tell the ground where we are straight away.
		for _, t := range r.active {
			if t.dirty || !t.reported {
				t.want = true
			}
		}
	}
}

// Step takes one frame received from the ground. The error says why a
// frame was dropped (it is also counted); the receiver goes on either way.
func (r *Receiver) Step(now time.Time, frame []byte) error {
	r.clock.advance(now)
	m, err := r.cfg.Codec.Decode(frame)
	if err != nil {
		r.Counters.Count(err)
		r.Stats.DecodeErrors++
		return err
	}
	switch m := m.(type) {
	case *protocol.Chunk:
		return r.onChunk(m)
	case *protocol.Offer:
		return r.onOffer(m)
	case *protocol.ReportRequest:
		return r.onRequest(m)
	case *protocol.Cancel:
		return r.onCancel(m)
	}
	r.Stats.UnexpectedFrames++
	return fmt.Errorf("%w: %v from the ground", ErrUnexpected, m.Type())
}

// encode tags m (every message to the ground is authenticated) and encodes
// it.
func (r *Receiver) encode(m protocol.ReturnMessage) ([]byte, error) {
	if err := r.cfg.Auth.Sign(m); err != nil {
		return nil, err
	}
	return r.cfg.ReturnCodec.Encode(m)
}

func (r *Receiver) send(m protocol.ReturnMessage) {
	f, err := r.encode(m)
	if errors.Is(err, protocol.ErrLimit) {
		// The epoch's sequence numbers are spent (2^32 frames since the
		// start): send nothing unauthenticated; a restart opens a new epoch.
		r.Stats.Unsent++
		return
	}
	if err != nil {
		// Only reports could grow, and they are sized to fit; anything
		// else is a programming error.
		panic(fmt.Sprintf("transfer: encode %v: %v", m.Type(), err))
	}
	r.rd.Messages = append(r.rd.Messages, Outgoing{Frame: f, Msg: m})
}

// wrongVehicle counts and refuses a ground message for another vehicle.
// The check is cheap and comes before the signature's: whether forged or
// captured from another vehicle's traffic, it is not ours.
func (r *Receiver) wrongVehicle(what string, id uint64, vehicle uint32) error {
	r.Stats.WrongVehicle++
	r.Counters.Add(protocol.ReasonWrongVehicle)
	return fmt.Errorf("%w: %s %d is for vehicle %d, this is %d", protocol.ErrWrongVehicle, what, id, vehicle, r.cfg.Vehicle)
}

// take spends one token of the answer budget, refilled by the time Step
// was given; false (counted as rate-limited) when there is none.
func (r *Receiver) take() bool {
	now := r.clock.last
	if r.tokensAt.IsZero() {
		r.tokensAt = now
	}
	if now.After(r.tokensAt) {
		r.tokens = min(float64(r.cfg.AnswerBurst), r.tokens+now.Sub(r.tokensAt).Seconds()*r.cfg.AnswerRate)
		r.tokensAt = now
	}
	if r.tokens < 1 {
		r.Stats.RateLimited++
		r.Counters.Add(protocol.ReasonRateLimited)
		return false
	}
	r.tokens--
	return true
}

// answer sends m, an answer to something anyone could have sent or
// replayed, if the answer budget allows.
func (r *Receiver) answer(m protocol.ReturnMessage) {
	if r.take() {
		r.send(m)
	}
}

// wantReport makes a report of t due in answer to a request or a repeated
// offer: a new report takes a token of the answer budget, one already due
// costs nothing more.
func (r *Receiver) wantReport(t *rxTransfer) bool {
	if t.want || r.take() {
		t.want = true
		return true
	}
	return false
}

func (r *Receiver) onOffer(m *protocol.Offer) error {
	if m.Vehicle != r.cfg.Vehicle {
		return r.wrongVehicle("offer", m.ID, m.Vehicle)
	}
	key, ok := r.cfg.Keys[m.KeyID]
	if !ok {
		r.Stats.UnknownKey++
		r.Counters.Add(protocol.ReasonUnknownKey)
		return fmt.Errorf("%w: offer %d names key %d", protocol.ErrUnknownKey, m.ID, m.KeyID)
	}
	if !ed25519.Verify(key, protocol.OfferSigningBytes(m), m.Sig) {
		r.Stats.Forged++
		r.Counters.Add(protocol.ReasonBadSignature)
		return fmt.Errorf("%w: offer %d", protocol.ErrBadSignature, m.ID)
	}
	if t := r.active[m.ID]; t != nil {
		if !bytes.Equal(protocol.OfferSigningBytes(&t.offer), protocol.OfferSigningBytes(m)) {
			r.Stats.OffersRefused++
			r.answer(&protocol.Cancel{ID: m.ID, Reason: protocol.CancelConflict})
			return fmt.Errorf("%w: %d", ErrConflict, m.ID)
		}
		// The ground (re)started: tell it where we are.
		if !r.wantReport(t) {
			return fmt.Errorf("%w: report on repeated offer %d", protocol.ErrRateLimited, m.ID)
		}
		return nil
	}
	if f, ok := r.finished[m.ID]; ok {
		r.Stats.Replayed++
		r.Counters.Add(protocol.ReasonReplayed)
		if f.status == statusComplete && bytes.Equal(f.root, m.Root) {
			r.answer(&protocol.Complete{ID: m.ID})
		} else {
			r.answer(&protocol.Cancel{ID: m.ID, Reason: protocol.CancelReplayed})
		}
		return fmt.Errorf("%w: offer for finished transfer %d", protocol.ErrReplayed, m.ID)
	}
	if m.ID <= r.floors[m.KeyID] {
		r.Stats.Replayed++
		r.Counters.Add(protocol.ReasonReplayed)
		r.answer(&protocol.Cancel{ID: m.ID, Reason: protocol.CancelReplayed})
		return fmt.Errorf("%w: offer %d, key %d finished %d already", protocol.ErrReplayed, m.ID, m.KeyID, r.floors[m.KeyID])
	}
	if m.Size > r.cfg.MaxSize || len(r.active) >= r.cfg.MaxActive {
		r.Stats.OffersRefused++
		r.answer(&protocol.Cancel{ID: m.ID, Reason: protocol.CancelResources})
		return fmt.Errorf("%w: offer %d of %d bytes, %d active", ErrResources, m.ID, m.Size, len(r.active))
	}
	t, err := newRxTransfer(*m)
	if err != nil {
		r.Stats.OffersRefused++
		r.answer(&protocol.Cancel{ID: m.ID, Reason: protocol.CancelResources})
		return err
	}
	if r.cfg.Accept != nil {
		if reason, ok := r.cfg.Accept(m); !ok {
			r.Stats.OffersRefused++
			r.answer(&protocol.Cancel{ID: m.ID, Reason: reason})
			return fmt.Errorf("%w: offer %d, reason %d", ErrRefused, m.ID, reason)
		}
	}
	frame, err := r.cfg.Codec.Encode(m)
	if err != nil {
		return err
	}
	r.active[m.ID] = t
	r.Stats.OffersAccepted++
	r.rd.Records = append(r.rd.Records, Record{Op: OpPut, Key: keyOffer(m.ID), Value: frame})
	t.want = true
	return nil
}

func (r *Receiver) onChunk(m *protocol.Chunk) error {
	t := r.active[m.ID]
	if t == nil {
		if _, ok := r.finished[m.ID]; ok {
			r.Stats.LateChunks++
			return nil
		}
		r.Stats.UnknownTransfer++
		r.Counters.Add(protocol.ReasonUnknownTransfer)
		return fmt.Errorf("%w: chunk of %d", ErrUnknownTransfer, m.ID)
	}
	x := int(m.Index)
	if x >= t.geo.t {
		r.Stats.BadChunks++
		r.Counters.Add(protocol.ReasonInvalidField)
		return fmt.Errorf("%w: %d of %d", ErrChunkIndex, x, t.geo.t)
	}
	if len(m.Data) != t.geo.length(x) {
		r.Stats.BadChunks++
		r.Counters.Add(protocol.ReasonInvalidField)
		return fmt.Errorf("%w: chunk %d is %d bytes, want %d", ErrChunkSize, x, len(m.Data), t.geo.length(x))
	}
	// Last, the sender's anchor for judging the chunks it has in flight,
	// moves only for a chunk whose hash verified: a chunk frame is anyone's
	// until then, and a forged one must not make the sender resend what is
	// still on its way.
	if t.have.has(x) {
		// A held chunk's parent is held: check the copy before it counts.
		want, _ := t.expected(x)
		if !t.matches(x, m.Data, want) {
			r.Stats.HashFailures++
			r.Counters.Add(protocol.ReasonBadSignature)
			return fmt.Errorf("%w: chunk %d of %d (a copy of one held)", ErrChunkHash, x, m.ID)
		}
		r.Stats.Duplicates++
		t.last, t.dirty = uint32(x)+1, true
		return nil
	}
	want, ok := t.expected(x)
	if !ok {
		return r.hold(m.ID, t, x, m.Data)
	}
	if err := r.verifyAndAccept(m.ID, t, x, m.Data, want); err != nil {
		return err
	}
	t.last, t.dirty = uint32(x)+1, true
	if t.count == t.geo.t {
		r.complete(m.ID, t)
	}
	return nil
}

// MaxCandidates bounds the distinct unverified candidates held for one
// chunk index while its hash block is missing. Holding several means a
// forged chunk arriving first cannot displace the genuine one; bounding
// them means a flood of forgeries for one index costs at most that index
// (it is asked for again), not the memory of every other index.
const MaxCandidates = 4

// hold keeps chunk x of transfer id, which cannot be verified yet, in
// memory until its hash block arrives. Nothing unverified is ever written
// or journaled.
func (r *Receiver) hold(id uint64, t *rxTransfer, x int, data []byte) error {
	cands := t.pending[x]
	for _, c := range cands {
		if bytes.Equal(c, data) {
			r.Stats.Duplicates++
			return nil
		}
	}
	if len(cands) >= MaxCandidates {
		r.Stats.CandidatesFull++
		return fmt.Errorf("%w: chunk %d of %d has %d candidates already", ErrPendingFull, x, id, len(cands))
	}
	if r.pendingCount() >= r.cfg.MaxPending {
		r.Stats.PendingDropped++
		return fmt.Errorf("%w: chunk %d of %d", ErrPendingFull, x, id)
	}
	r.Stats.Pending++
	t.pending[x] = append(cands, append([]byte(nil), data...))
	t.npending++
	t.dirty = true
	return nil
}

func (r *Receiver) pendingCount() int {
	n := 0
	for _, t := range r.active {
		n += t.npending
	}
	return n
}

// expected returns what chunk x must hash to, if its parent is known.
func (t *rxTransfer) expected(x int) (want []byte, ok bool) {
	p, pos, top := t.geo.parent(x)
	if top {
		return t.offer.Root, true
	}
	b := t.blocks[p]
	if b == nil {
		return nil, false
	}
	return b[pos*HashLen : (pos+1)*HashLen], true
}

// matches says whether chunk x's data hashes to want, what its parent
// (or the offer's root) says it must.
func (t *rxTransfer) matches(x int, data, want []byte) bool {
	if len(want) == len(t.offer.Root) && x < t.geo.h {
		if _, _, top := t.geo.parent(x); top {
			sum := t.geo.root(data)
			if bytes.Equal(sum[:], want) {
				return true
			}
		}
	}
	if len(want) == HashLen {
		sum := t.geo.hash(x, data)
		return bytes.Equal(sum[:], want)
	}
	return false
}

func (r *Receiver) verifyAndAccept(id uint64, t *rxTransfer, x int, data, want []byte) error {
	if !t.matches(x, data, want) {
		r.Stats.HashFailures++
		r.Counters.Add(protocol.ReasonBadSignature)
		return fmt.Errorf("%w: chunk %d of %d", ErrChunkHash, x, id)
	}
	data = append([]byte(nil), data...)
	if x < t.geo.h {
		t.blocks[x] = data
		r.rd.Records = append(r.rd.Records, Record{Op: OpPut, Key: keyChunk(id, x, true), Value: data})
	} else {
		r.rd.Writes = append(r.rd.Writes, Write{ID: id, Offset: int64(x-t.geo.h) * int64(t.geo.chunk), Data: data})
		r.rd.Records = append(r.rd.Records, Record{Op: OpPut, Key: keyChunk(id, x, false), Value: nil})
	}
	t.mark(x)
	r.Stats.ChunksJournaled++
	if x < t.geo.h {
		// Children waiting for this block can be verified now.
		first, n := t.geo.children(x)
		for c := first; c < first+n; c++ {
			cands, ok := t.pending[c]
			if !ok {
				continue
			}
			delete(t.pending, c)
			t.npending -= len(cands)
			accepted := false
			for _, d := range cands {
				if accepted {
					// Differs from the candidate that verified: it
					// cannot verify.
					r.Stats.HashFailures++
					continue
				}
				accepted = r.verifyAndAccept(id, t, c, d, data[(c-first)*HashLen:(c-first+1)*HashLen]) == nil
			}
		}
	}
	return nil
}

func (r *Receiver) complete(id uint64, t *rxTransfer) {
	r.finish(id, t, statusComplete)
	r.Stats.Completed++
	r.send(&protocol.Complete{ID: id})
	r.rd.Completed = append(r.rd.Completed, Completion{ID: id, Size: t.offer.Size, Target: t.offer.Target})
}

func (r *Receiver) finish(id uint64, t *rxTransfer, status uint8) {
	f := finished{status: status, key: t.offer.KeyID, root: t.offer.Root}
	r.finishRecord(id, f, true)
	r.rd.Records = append(r.rd.Records, Record{Op: OpDeletePrefix, Key: keyOffer(id)})
	delete(r.active, id)
}

// finishRecord records transfer id as finished. Only the end of a transfer
// this receiver accepted (raiseFloor) moves the key's floor: a cancel of a
// transfer never seen may be an old capture, and must end only the transfer
// it names, never refuse genuine offers of lower ids.
func (r *Receiver) finishRecord(id uint64, f finished, raiseFloor bool) {
	r.finished[id] = f
	r.rd.Records = append(r.rd.Records, Record{Op: OpPut, Key: keyDone(id), Value: finishedValue(f)})
	if raiseFloor && id > r.floors[f.key] {
		r.floors[f.key] = id
		r.rd.Records = append(r.rd.Records, Record{Op: OpPut, Key: keyFloor(f.key), Value: binary.BigEndian.AppendUint64(nil, id)})
	}
	for len(r.finished) > r.cfg.MaxFinished {
		oldest := id
		for fid := range r.finished {
			oldest = min(oldest, fid)
		}
		delete(r.finished, oldest)
		r.rd.Records = append(r.rd.Records, Record{Op: OpDeletePrefix, Key: keyDone(oldest)})
	}
}

func (r *Receiver) onRequest(m *protocol.ReportRequest) error {
	// A request whose MAC verifies and whose Seq is newer than the last
	// authenticated one of its transfer is the ground's: it is answered
	// freely and anchors the next report. Anything else - no MAC, a bad
	// one, a replay, or a transfer this receiver does not hold - may come
	// from anyone, and every answer it causes comes out of the answer
	// budget; its Seq is not trusted as an anchor.
	authErr := r.cfg.Auth.VerifyRequest(m)
	if authErr != nil {
		r.Stats.RequestsUnauthenticated++
		r.Counters.Count(authErr)
	}
	if t := r.active[m.ID]; t != nil {
		if authErr == nil && m.Seq > t.authSeq {
			t.authSeq, t.ack, t.want = m.Seq, m.Seq, true
			r.Stats.RequestsAuthenticated++
			return nil
		}
		if authErr == nil {
			// Genuine but not newer: a replay (or a request overtaken on
			// the link), answered only from the budget.
			r.Stats.Replayed++
			r.Counters.Add(protocol.ReasonReplayed)
			authErr = fmt.Errorf("%w: request %d for %d, last %d", protocol.ErrReplayed, m.Seq, m.ID, t.authSeq)
		}
		if !r.wantReport(t) {
			return fmt.Errorf("%w: request for %d", protocol.ErrRateLimited, m.ID)
		}
		return authErr
	}
	var ans protocol.ReturnMessage = &protocol.Report{ID: m.ID, NeedOffer: true}
	if f, ok := r.finished[m.ID]; ok {
		ans = &protocol.Cancel{ID: m.ID, Reason: protocol.CancelAck}
		if f.status == statusComplete {
			ans = &protocol.Complete{ID: m.ID}
		}
	}
	if !r.take() {
		return fmt.Errorf("%w: request for %d", protocol.ErrRateLimited, m.ID)
	}
	r.send(ans)
	return nil
}

func (r *Receiver) onCancel(m *protocol.Cancel) error {
	if m.Reason != protocol.CancelByGround {
		r.Stats.UnexpectedFrames++
		return fmt.Errorf("%w: cancel reason %d from the ground", ErrUnexpected, m.Reason)
	}
	if m.Vehicle != r.cfg.Vehicle {
		return r.wrongVehicle("cancel", m.ID, m.Vehicle)
	}
	if len(m.Sig) == 0 {
		r.Stats.Unauthenticated++
		r.Counters.Add(protocol.ReasonUnauthenticated)
		return fmt.Errorf("%w: cancel of %d", protocol.ErrUnauthenticated, m.ID)
	}
	msg := protocol.CancelSigningBytes(m)
	if t := r.active[m.ID]; t != nil {
		key, ok := r.cfg.Keys[t.offer.KeyID]
		if !ok {
			// The transfer's key was rotated out of the configuration
			// since its offer was journaled: no cancel can verify.
			r.Stats.UnknownKey++
			r.Counters.Add(protocol.ReasonUnknownKey)
			return fmt.Errorf("%w: cancel of %d, whose offer key %d is no longer configured", protocol.ErrUnknownKey, m.ID, t.offer.KeyID)
		}
		if !ed25519.Verify(key, msg, m.Sig) {
			r.Stats.Forged++
			r.Counters.Add(protocol.ReasonBadSignature)
			return fmt.Errorf("%w: cancel of %d", protocol.ErrBadSignature, m.ID)
		}
		r.finish(m.ID, t, statusCancelled)
		r.Stats.Cancelled++
		r.send(&protocol.Cancel{ID: m.ID, Reason: protocol.CancelAck})
		return nil
	}
	if _, ok := r.finished[m.ID]; ok {
		r.answer(&protocol.Cancel{ID: m.ID, Reason: protocol.CancelAck})
		return nil
	}
	// A cancel for a transfer whose offer never arrived: remember it, so
	// that the offer, should it arrive late, is refused.
	ids := make([]uint32, 0, len(r.cfg.Keys))
	for kid := range r.cfg.Keys {
		ids = append(ids, kid)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	for _, kid := range ids {
		if ed25519.Verify(r.cfg.Keys[kid], msg, m.Sig) {
			if m.ID <= r.floors[kid] {
				// A transfer of this key at or below its floor ended
				// and was forgotten one by one: this cancel is a
				// replay. Recording it would write to the journal per
				// replay; the ack comes from the answer budget.
				r.Stats.Replayed++
				r.Counters.Add(protocol.ReasonReplayed)
				r.answer(&protocol.Cancel{ID: m.ID, Reason: protocol.CancelAck})
				return fmt.Errorf("%w: cancel of %d, key %d finished %d already", protocol.ErrReplayed, m.ID, kid, r.floors[kid])
			}
			r.finishRecord(m.ID, finished{status: statusCancelled, key: kid}, false)
			r.Stats.Cancelled++
			r.send(&protocol.Cancel{ID: m.ID, Reason: protocol.CancelAck})
			return nil
		}
	}
	r.Stats.Forged++
	r.Counters.Add(protocol.ReasonBadSignature)
	return fmt.Errorf("%w: cancel of unknown transfer %d", protocol.ErrBadSignature, m.ID)
}

// Abandon ends active transfer id on the vehicle's own decision (an
// operator's abort, a plan refused after its bundle started): the transfer
// is finished as cancelled (an offer of it sent again is refused as
// replayed), the records that forget it are in the next Ready, and the
// ground is told with a Cancel of reason. False if id is not active.
func (r *Receiver) Abandon(id uint64, reason uint8) bool {
	t := r.active[id]
	if t == nil {
		return false
	}
	r.finish(id, t, statusCancelled)
	r.Stats.Cancelled++
	r.send(&protocol.Cancel{ID: id, Reason: reason})
	return true
}

// Tick moves the receiver's timers to now.
func (r *Receiver) Tick(now time.Time) {
	r.clock.advance(now)
	if !r.clock.link.Return {
		return
	}
	el := r.clock.elapsed
	for _, id := range r.Active() {
		t := r.active[id]
		due := (t.want && (!t.reported || el >= t.lastRep+r.cfg.MinReportGap)) ||
			(t.dirty && el >= t.lastRep+r.cfg.ReportInterval)
		if due {
			r.report(id, t)
		}
	}
}

// report sends a report of t: from the cursor, as many missing ranges as
// fit in one return frame.
func (r *Receiver) report(id uint64, t *rxTransfer) {
	t.want, t.dirty, t.reported = false, false, true
	t.lastRep = r.clock.elapsed
	start := max(t.cursor, t.wm)
	if start >= t.high {
		start = t.wm
	}
	limit := min(protocol.MaxReportRanges, r.cfg.ReturnCodec.MaxFrame()/2)
	for {
		rep := &protocol.Report{ID: id, Watermark: uint32(t.wm), Cursor: uint32(start), High: uint32(t.high), Last: t.last, Ack: t.ack}
		end, pos, n := t.high, start, 0
		for pos < t.high {
			s := t.have.nextClear(pos, t.high)
			if s >= t.high {
				break
			}
			if n == limit {
				end = s
				break
			}
			e := t.have.nextSet(s, t.high)
			rep.Missing = append(rep.Missing, uint32(s-pos), uint32(e-s))
			n++
			pos = e
		}
		rep.End = uint32(end)
		f, err := r.encode(rep)
		if errors.Is(err, protocol.ErrFrameTooLarge) && limit > 0 {
			limit = min(limit-1, limit*7/8)
			continue
		}
		if errors.Is(err, protocol.ErrLimit) && !errors.Is(err, protocol.ErrFrameTooLarge) {
			r.Stats.Unsent++
			return
		}
		if err != nil {
			panic(fmt.Sprintf("transfer: encode report: %v", err))
		}
		t.cursor = end
		if end >= t.high {
			t.cursor = 0
		}
		r.Stats.Reports++
		r.rd.Messages = append(r.rd.Messages, Outgoing{Frame: f, Msg: rep})
		return
	}
}

// Ready returns the work pending. Call Advance once it is done.
func (r *Receiver) Ready() Ready {
	rd := r.rd
	rd.Deadline = time.Time{}
	if r.clock.link.Return {
		for _, t := range r.active {
			if t.want {
				rd.Deadline = earliest(rd.Deadline, r.clock.wall(t.lastRep+r.cfg.MinReportGap))
			}
			if t.dirty {
				rd.Deadline = earliest(rd.Deadline, r.clock.wall(t.lastRep+r.cfg.ReportInterval))
			}
		}
	}
	return rd
}

// Advance tells the receiver the last Ready was carried out.
func (r *Receiver) Advance() { r.rd = Ready{} }
