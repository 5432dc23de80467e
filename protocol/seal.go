package protocol

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Sealing is the optional confidentiality layer of the uplink
// (docs/protocol.md §8), for missions whose images or commands must not
// travel in clear, as CCSDS SDLS provides. It sits between the link and the
// codec: the ground encodes a frame with an inner codec (NewInnerCodec),
// seals it (Sealer) and sends the sealed frame; the vehicle opens every
// frame it receives (Opener) and decodes what comes out. Nothing negotiates
// it: both sides' configurations say so, and a vehicle configured with seal
// keys refuses every frame that is not sealed, or an attacker would just
// send clear frames.
//
// The cipher is AES-256-GCM from the standard library: it is the SDLS
// baseline (CCSDS 355.0-B), AES-256 is what defence programmes require
// (NSA's CNSA suite), it runs in hardware on the flight computers we
// target (ARMv8 crypto extensions) and on ground servers (AES-NI), and it
// adds no dependency. GCM's one weakness, nonce reuse, is
// designed out by the nonce construction (see SeqSource).

const (
	// SealKeyLen is the length of a seal key: AES-256.
	SealKeyLen = 32
	// SealTagLen is the length of the AES-GCM tag every sealed frame carries.
	SealTagLen = 16
	// SealNonceLen is the length of the AES-GCM nonce: vehicle, key id and
	// sequence number, 4 bytes each, big endian. Only the sequence number
	// travels.
	SealNonceLen = 12
	// MaxSealSeq is the last sequence number a seal key can use; a key that
	// reached it must be replaced (a new key id).
	MaxSealSeq = 1<<32 - 1
	// MaxSealKeys bounds an Opener's keyring.
	MaxSealKeys = MaxKeys
)

// sealAD starts the associated data of every seal; the version, the
// vehicle and the key id follow (sealADLen bytes in all).
const (
	sealAD        = "bootorbit\x00seal/v1\x00"
	sealADLen     = len(sealAD) + 1 + 4 + 4
	sealArrayHead = 0x83 // [key, seq, box]
	sealPlainSkip = 2    // the inner frame's 84 and version are not sealed
)

// Errors of the seal layer. Each wraps one of the package's sentinels, so
// ReasonOf and Counters count it; errors.Is tells the seal errors apart from
// the others of the same reason.
var (
	// ErrDecrypt: a sealed frame does not open under the key its key id
	// names: a wrong key, a frame for another vehicle, or altered bytes. An
	// AES-GCM tag is the frame's authenticator, so it counts as
	// bad-signature (ErrBadSignature).
	ErrDecrypt error = &wrapErr{"protocol: sealed frame does not decrypt", ErrBadSignature}
	// ErrPlaintext: a frame that is not sealed reached a vehicle configured
	// with seal keys. It counts as unauthenticated (ErrUnauthenticated).
	ErrPlaintext error = &wrapErr{"protocol: plaintext frame where sealing is required", ErrUnauthenticated}
	// ErrSealExhausted: a seal key has used its last sequence number; the
	// ground must switch to a new key id.
	ErrSealExhausted = errors.New("protocol: seal key has no sequence numbers left")
)

// wrapErr is a sentinel error that wraps another sentinel.
type wrapErr struct {
	msg    string
	parent error
}

func (e *wrapErr) Error() string { return e.msg }
func (e *wrapErr) Unwrap() error { return e.parent }

// SealKey is a symmetric key that seals ground-to-vehicle frames for one
// vehicle, with the id that names it on the wire. A key belongs to one
// vehicle and one id: the sequence numbers that keep its nonces unique are
// counted per vehicle and key id.
type SealKey struct {
	ID  KeyID
	Key []byte // SealKeyLen bytes
}

// String names the key without its bytes, so that a logged configuration
// does not leak it.
func (k SealKey) String() string { return fmt.Sprintf("seal key %d", k.ID) }

// GoString is String: %#v does not print the key either.
func (k SealKey) GoString() string { return k.String() }

func (k SealKey) aead() (cipher.AEAD, error) {
	if len(k.Key) != SealKeyLen {
		return nil, fmt.Errorf("protocol: seal key %d is %d bytes, want %d", k.ID, len(k.Key), SealKeyLen)
	}
	b, err := aes.NewCipher(k.Key)
	if err != nil {
		return nil, fmt.Errorf("protocol: seal key %d: %v", k.ID, err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("protocol: seal key %d: %v", k.ID, err)
	}
	return g, nil
}

// sealAssoc returns the associated data of seals for vehicle under key id.
func sealAssoc(vehicle uint32, id KeyID) [sealADLen]byte {
	var ad [sealADLen]byte
	n := copy(ad[:], sealAD)
	ad[n] = Version
	binary.BigEndian.PutUint32(ad[n+1:], vehicle)
	binary.BigEndian.PutUint32(ad[n+5:], uint32(id))
	return ad
}

// sealNonce returns the nonce of sequence number seq for vehicle under key
// id. The vehicle and the key id in it keep nonces apart even if an
// operator gives one key to two vehicles or two ids, each with its own
// counter.
func sealNonce(vehicle uint32, id KeyID, seq uint32) [SealNonceLen]byte {
	var n [SealNonceLen]byte
	binary.BigEndian.PutUint32(n[0:], vehicle)
	binary.BigEndian.PutUint32(n[4:], uint32(id))
	binary.BigEndian.PutUint32(n[8:], seq)
	return n
}

// SealOverhead returns the most bytes sealing adds to a frame on a link of
// maxFrame bytes: 18 fixed bytes (the sealed frame's header, array head and
// trailer, and the 16-byte tag, less the inner frame's own 2 header bytes
// and 5 trailer bytes, which are not sealed), and the key id, the
// sequence number and the length of the ciphertext at their longest
// (5 + 5 + 2 on links of at most 268 bytes, where no ciphertext reaches 256
// bytes; 5 + 5 + 3 on larger ones). A frame of a small key id and sequence
// number costs less; docs/protocol.md §8.3 has the figures.
func SealOverhead(maxFrame int) int {
	if maxFrame <= 268 {
		return 18 + 5 + 5 + 2
	}
	return 18 + 5 + 5 + 3
}

// InnerMaxFrame returns the largest frame that, sealed, fits a link of
// maxFrame bytes.
func InnerMaxFrame(maxFrame int) int { return maxFrame - SealOverhead(maxFrame) }

// NewInnerCodec returns the codec of the frames that travel sealed on a link
// of maxFrame bytes (in [MinMaxFrame, MaxMaxFrame]): a Codec like
// NewCodec's whose MaxFrame is InnerMaxFrame(maxFrame), which may be below
// MinMaxFrame. Both ends use it, so that the transfer engine sizes its
// chunks to what fits a sealed frame, and so that whatever the ground
// encodes can be sealed with any key id and sequence number.
func NewInnerCodec(maxFrame int) (*Codec, error) {
	c, err := NewCodec(maxFrame)
	if err != nil {
		return nil, err
	}
	c.maxFrame = InnerMaxFrame(maxFrame)
	c.dec = mustDecMode(bodyDecOptions(c.maxFrame))
	return c, nil
}

// SeqSource hands out the sequence numbers of one seal key for one vehicle.
// The number, with the vehicle and the key id, makes the AES-GCM nonce, so
// Next must never return a number twice for the same vehicle and key id, not
// across restarts of the ground, not across ground stations: a repeated
// nonce under a key reveals the XOR of two plaintexts and lets an attacker
// forge frames. Next returns a number in [1, MaxSealSeq], or an error
// (ErrSealExhausted once all are used) and then the Sealer seals nothing.
// SealCounter is the implementation groundd uses.
type SeqSource interface {
	Next() (uint32, error)
}

// SealCounter is a SeqSource over a persisted high-water mark: before it
// hands out a number above the mark it has recorded, it reserves a block of
// numbers by having save record a new mark durably, and it hands out
// numbers only below a mark save has returned from. After a crash or a
// restart the counter resumes above the recorded mark, so a number is
// never handed out twice; a restart loses at most the rest of a block.
//
// Why a counter rather than random nonces or a random prefix: a counter
// cannot collide, it needs only 4 bytes on the wire where a random nonce
// needs 12 (every byte counts on a 256-byte frame), and its failure mode
// is visible (a store that cannot record the mark stops sealing), where a
// random prefix of the few bytes a frame can spare collides silently after
// some tens of thousands of restarts. Several ground stations share the
// mark through the ground's store (a transaction on the vehicle's record),
// as they share the uplink queue. It is safe for concurrent use.
type SealCounter struct {
	mu    sync.Mutex
	next  uint64 // the next number to hand out
	mark  uint64 // numbers up to mark are reserved (recorded durably)
	block uint64
	save  func(mark uint32) error
}

// NewSealCounter returns a counter that resumes above mark, the last mark
// its save recorded (0 for a new key). save must return only once the new
// mark is durable (written and synced, or committed), and return an error
// otherwise. block is how many numbers one save reserves, at least 1.
func NewSealCounter(mark, block uint32, save func(mark uint32) error) (*SealCounter, error) {
	if block == 0 {
		return nil, errors.New("protocol: seal counter block is 0")
	}
	if save == nil {
		return nil, errors.New("protocol: seal counter without a save function")
	}
	return &SealCounter{next: uint64(mark) + 1, mark: uint64(mark), block: uint64(block), save: save}, nil
}

// Next implements SeqSource.
func (c *SealCounter) Next() (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next > MaxSealSeq {
		return 0, ErrSealExhausted
	}
	if c.next > c.mark {
		mark := min(c.next+c.block-1, MaxSealSeq)
		if err := c.save(uint32(mark)); err != nil {
			return 0, fmt.Errorf("protocol: seal counter: record mark %d: %w", mark, err)
		}
		c.mark = mark
	}
	seq := c.next
	c.next++
	return uint32(seq), nil
}

// Mark returns the highest number reserved so far (recorded by save).
func (c *SealCounter) Mark() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return uint32(c.mark)
}

// SealerConfig configures a Sealer.
type SealerConfig struct {
	// Vehicle is the id of the vehicle the frames are for; every seal is
	// bound to it.
	Vehicle uint32
	// Key is the vehicle's current seal key.
	Key SealKey
	// MaxFrame is the link's maximum frame size, the same at both ends (in
	// [MinMaxFrame, MaxMaxFrame]): no sealed frame is longer.
	MaxFrame int
	// Seqs hands out Key's sequence numbers for Vehicle.
	Seqs SeqSource
}

// Sealer seals ground-to-vehicle frames for one vehicle under one key.
// Rotating keys means a new Sealer, with the new key's own SeqSource. A
// Sealer is safe for concurrent use if its SeqSource is.
type Sealer struct {
	vehicle  uint32
	id       KeyID
	aead     cipher.AEAD
	ad       [sealADLen]byte
	innerMax int
	seqs     SeqSource
}

// NewSealer returns a Sealer for cfg.
func NewSealer(cfg SealerConfig) (*Sealer, error) {
	if cfg.MaxFrame < MinMaxFrame || cfg.MaxFrame > MaxMaxFrame {
		return nil, fmt.Errorf("protocol: sealer: max frame %d out of range [%d, %d]", cfg.MaxFrame, MinMaxFrame, MaxMaxFrame)
	}
	if cfg.Seqs == nil {
		return nil, errors.New("protocol: sealer: no sequence source")
	}
	g, err := cfg.Key.aead()
	if err != nil {
		return nil, err
	}
	return &Sealer{
		vehicle: cfg.Vehicle, id: cfg.Key.ID, aead: g, ad: sealAssoc(cfg.Vehicle, cfg.Key.ID),
		innerMax: InnerMaxFrame(cfg.MaxFrame), seqs: cfg.Seqs,
	}, nil
}

// KeyID returns the id of the key the Sealer seals under.
func (s *Sealer) KeyID() KeyID { return s.id }

// Seal returns frame sealed. frame must be a frame as a Codec encodes it,
// at most InnerMaxFrame bytes (NewInnerCodec's codec makes no longer ones).
// Each call uses a new sequence number, so sealing the same frame twice
// gives two different sealed frames.
func (s *Sealer) Seal(frame []byte) ([]byte, error) {
	return s.AppendSeal(make([]byte, 0, min(len(frame), s.innerMax)+SealOverhead(MaxMaxFrame)), frame)
}

// AppendSeal appends frame sealed to dst. On error dst is returned
// unchanged in length.
func (s *Sealer) AppendSeal(dst, frame []byte) ([]byte, error) {
	n := len(frame)
	switch {
	case n > s.innerMax:
		return dst, fmt.Errorf("%w: frame of %d bytes to seal, max %d", ErrFrameTooLarge, n, s.innerMax)
	case n < MinFrameLen:
		return dst, fmt.Errorf("%w: frame of %d bytes to seal", ErrTruncated, n)
	case frame[n-trailerLen] != crcHead || binary.BigEndian.Uint32(frame[n-4:]) != Checksum(frame[:n-4]):
		return dst, fmt.Errorf("%w: frame to seal has a bad trailer", ErrChecksum)
	case frame[0] != frameArrayHead || frame[1] != Version:
		return dst, fmt.Errorf("%w: frame to seal has header %x", ErrMalformed, frame[:2])
	case frame[2] == byte(TypeSealed):
		return dst, fmt.Errorf("%w: frame to seal is already sealed", ErrMalformed)
	}
	seq, err := s.seqs.Next()
	if err != nil {
		return dst, fmt.Errorf("protocol: seal for key %d: %w", s.id, err)
	}
	if seq == 0 {
		return dst, fmt.Errorf("protocol: seal for key %d: sequence source returned 0", s.id)
	}
	plain := frame[sealPlainSkip : n-trailerLen]
	start := len(dst)
	dst = append(dst, frameArrayHead, Version, byte(TypeSealed), sealArrayHead)
	dst = appendCBORHead(dst, 0, uint64(s.id))
	dst = appendCBORHead(dst, 0, uint64(seq))
	dst = appendCBORHead(dst, 2, uint64(len(plain)+SealTagLen))
	nonce := sealNonce(s.vehicle, s.id, seq)
	dst = s.aead.Seal(dst, nonce[:], plain, s.ad[:])
	dst = append(dst, crcHead)
	return binary.BigEndian.AppendUint32(dst, Checksum(dst[start:])), nil
}

// appendCBORHead appends a CBOR head of major type major and argument v in its
// shortest form.
func appendCBORHead(dst []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(dst, m|byte(v))
	case v <= 0xff:
		return append(dst, m|24, byte(v))
	case v <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, m|25), uint16(v))
	case v <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(dst, m|26), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(dst, m|27), v)
}

// sealedBody is the body of a sealed frame: [key id, seq, box], box being
// the ciphertext of the inner frame's type and body followed by the tag.
type sealedBody struct {
	_   struct{} `cbor:",toarray"`
	Key uint32
	Seq uint32
	Box []byte
}

func (*sealedBody) Type() MsgType { return TypeSealed }

// Validate bounds the fields before any key is looked up: a sequence
// number is never 0, and the box holds at least the tag and a type and a
// one-byte body.
func (b *sealedBody) Validate() error {
	switch {
	case b.Seq == 0:
		return errors.New("sealed frame sequence number 0")
	case len(b.Box) < SealTagLen+2:
		return fmt.Errorf("sealed frame box of %d bytes, at least %d", len(b.Box), SealTagLen+2)
	}
	return nil
}

// OpenerConfig configures an Opener.
type OpenerConfig struct {
	// Vehicle is this vehicle's id; frames sealed for another do not open.
	Vehicle uint32
	// MaxFrame is the link's maximum frame size (in [MinMaxFrame,
	// MaxMaxFrame]); longer frames are refused before anything else.
	MaxFrame int
	// Keys are the seal keys the vehicle accepts, 1 to MaxSealKeys of
	// them with distinct ids. Rotation: add the new key, let the ground
	// switch to it, then configure the vehicle without the old one.
	Keys []SealKey
}

// Opener opens sealed frames on the vehicle: it returns the inner frame,
// for the codec to decode, or an error wrapping one of the package's
// sentinels, for Counters. It accepts nothing but sealed frames. It is
// immutable and safe for concurrent use.
type Opener struct {
	vehicle uint32
	keys    []openKey
	outer   *Codec
}

type openKey struct {
	id   KeyID
	aead cipher.AEAD
	ad   [sealADLen]byte
}

// NewOpener returns an Opener for cfg.
func NewOpener(cfg OpenerConfig) (*Opener, error) {
	if cfg.MaxFrame < MinMaxFrame || cfg.MaxFrame > MaxMaxFrame {
		return nil, fmt.Errorf("protocol: opener: max frame %d out of range [%d, %d]", cfg.MaxFrame, MinMaxFrame, MaxMaxFrame)
	}
	if len(cfg.Keys) == 0 || len(cfg.Keys) > MaxSealKeys {
		return nil, fmt.Errorf("protocol: opener: %d seal keys, want 1 to %d", len(cfg.Keys), MaxSealKeys)
	}
	o := &Opener{vehicle: cfg.Vehicle, keys: make([]openKey, 0, len(cfg.Keys))}
	for _, k := range cfg.Keys {
		if o.key(k.ID) != nil {
			return nil, fmt.Errorf("protocol: opener: seal key %d listed twice", k.ID)
		}
		g, err := k.aead()
		if err != nil {
			return nil, err
		}
		o.keys = append(o.keys, openKey{id: k.ID, aead: g, ad: sealAssoc(cfg.Vehicle, k.ID)})
	}
	// The outer codec knows one type, the sealed envelope: it checks the
	// size, the CRC, the header and the body's encoding and bounds the way
	// every frame is checked, and calls any other type unknown.
	o.outer = &Codec{maxFrame: cfg.MaxFrame, enc: encMode, dec: mustDecMode(bodyDecOptions(cfg.MaxFrame))}
	o.outer.types[TypeSealed] = func() Message { return new(sealedBody) }
	return o, nil
}

func (o *Opener) key(id KeyID) *openKey {
	for i := range o.keys {
		if o.keys[i].id == id {
			return &o.keys[i]
		}
	}
	return nil
}

// Open returns the frame sealed in frame. See AppendOpen.
func (o *Opener) Open(frame []byte) ([]byte, error) {
	return o.AppendOpen(nil, frame)
}

// AppendOpen appends the frame sealed in frame to dst. The checks run in
// this order, each failure wrapping its sentinel: the frame's size, CRC,
// header and body as for any frame (ErrFrameTooLarge, ErrTruncated,
// ErrChecksum, ErrVersion, ErrMalformed, ErrLimit, ErrNonCanonical,
// ErrInvalidField); a frame of any type but sealed is ErrPlaintext
// (unauthenticated); a key id the Opener does not hold is ErrUnknownKey;
// a box that does not decrypt and verify under that key for this vehicle
// is ErrDecrypt (bad-signature). Nothing about the inner frame is trusted
// before the tag verifies, and allocation is bounded by len(frame). On
// error dst is returned unchanged.
func (o *Opener) AppendOpen(dst, frame []byte) ([]byte, error) {
	m, err := o.outer.Decode(frame)
	if errors.Is(err, ErrUnknownType) {
		// Not a sealed frame, whatever else it is: refused as plaintext,
		// not as unknown (%v, not %w: it must count as unauthenticated).
		return dst, fmt.Errorf("%w: %v", ErrPlaintext, err)
	}
	if err != nil {
		return dst, err
	}
	b := m.(*sealedBody)
	k := o.key(KeyID(b.Key))
	if k == nil {
		return dst, fmt.Errorf("%w: seal key id %d", ErrUnknownKey, b.Key)
	}
	nonce := sealNonce(o.vehicle, k.id, b.Seq)
	// b.Box is the decoder's own copy: decrypt in place.
	plain, err := k.aead.Open(b.Box[:0], nonce[:], b.Box, k.ad[:])
	if err != nil {
		return dst, fmt.Errorf("%w: key id %d, seq %d", ErrDecrypt, b.Key, b.Seq)
	}
	start := len(dst)
	dst = append(dst, frameArrayHead, Version)
	dst = append(dst, plain...)
	dst = append(dst, crcHead)
	return binary.BigEndian.AppendUint32(dst, Checksum(dst[start:])), nil
}
