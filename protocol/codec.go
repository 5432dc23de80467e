package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"reflect"
	"sync"

	"github.com/fxamacker/cbor/v2"
)

// Version is the protocol version this build writes and the only one it
// reads. Version 2 binds offers and cancels to a vehicle and authenticates
// every vehicle-to-ground message (MACTag).
const Version = 2

// Frame size bounds accepted by NewCodec.
const (
	MinMaxFrame = 256   // a UHF radio frame
	MaxMaxFrame = 65536 // 64 KiB
)

// Frame layout (docs/protocol.md has the byte-by-byte specification):
//
//	0x84                 CBOR array of 4 items
//	version              CBOR unsigned int (0x02 for version 2)
//	type                 CBOR unsigned int (one byte for types 0..23)
//	body                 the message: one CBOR item, a map with integer keys
//	0x44 c0 c1 c2 c3     CBOR byte string of 4 bytes: CRC-32C (Castagnoli),
//	                     big endian, over every byte before c0 (including 0x44)
//
// The CRC sits at a fixed place from the end, so a receiver checks it before
// parsing any CBOR. The whole frame is still one well-formed CBOR item.
const (
	frameArrayHead = 0x84 // major type 4 (array), 4 items
	crcHead        = 0x44 // major type 2 (byte string), 4 bytes
	trailerLen     = 5    // crcHead + 4 CRC bytes
	// MinFrameLen is the shortest possible frame: array head, version, type,
	// a one-byte body (an empty map) and the trailer.
	MinFrameLen = 1 + 1 + 1 + 1 + trailerLen
	// FrameOverhead is the number of bytes a frame adds around the body for
	// the message types 0..23 (all of today's): 3 header bytes + 5 trailer bytes.
	FrameOverhead = 3 + trailerLen
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC-32C (Castagnoli, reflected, init and xorout
// 0xFFFFFFFF; check value of "123456789" is 0xE3069283) of b.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Validator is the optional interface a Message implements to bound its own
// fields. It is the contract between the codec and every message type:
//
//   - Decode calls Validate after the body unmarshalled and was found
//     canonical, before the message is returned. Encode calls it before
//     encoding, so a sender cannot produce a frame its peer would reject.
//   - Validate must check every length, count and range the message's
//     consumers rely on (e.g. "digest is 32 bytes", "at most 64 ranges",
//     "offset+len <= size"), so that code receiving a decoded message never
//     has to re-check the shape of outside input. The codec already bounds
//     the whole frame to MaxFrame bytes, rejects wrong CBOR types, unknown
//     keys, duplicate keys, tags, indefinite lengths and non-canonical
//     encodings.
//   - Validate must be cheap, must not allocate in proportion to anything
//     but the message itself, and must not panic on any value the struct can
//     hold (a nil slice, a zero struct, the maximum integer).
//   - It returns nil or an error describing the field. A plain error is
//     wrapped as ErrInvalidField; an error that already wraps one of this
//     package's sentinels (e.g. ErrLimit) is passed on as it is.
type Validator interface {
	Validate() error
}

var (
	registryMu sync.Mutex
	registry   [256]func() Message
)

// Register makes a message type decodable; call it from init() in the file
// that defines the message. newMsg must return a new non-nil pointer to a
// struct whose Type() is t; Decode unmarshals the body into it. Register
// panics on a duplicate or inconsistent registration (a programming error).
// A Codec sees the types registered before NewCodec.
func Register(t MsgType, newMsg func() Message) {
	if newMsg == nil {
		panic("protocol: Register with nil constructor")
	}
	m := newMsg()
	if m == nil {
		panic(fmt.Sprintf("protocol: Register(%d): constructor returned nil", t))
	}
	if rv := reflect.ValueOf(m); rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("protocol: Register(%d): constructor must return a non-nil pointer to a struct, got %T", t, m))
	}
	if m.Type() != t {
		panic(fmt.Sprintf("protocol: Register(%d): %T reports type %d", t, m, m.Type()))
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if registry[t] != nil {
		panic(fmt.Sprintf("protocol: Register(%d): type already registered", t))
	}
	registry[t] = newMsg
}

// Codec encodes messages into frames and decodes frames into messages. It is
// immutable after NewCodec and safe for concurrent use.
type Codec struct {
	maxFrame int
	types    [256]func() Message
	enc      cbor.UserBufferEncMode
	dec      cbor.DecMode
}

// Decoding limits applied by every Codec on top of the frame size.
const (
	// MaxNesting is the deepest nesting of arrays and maps a message body
	// may have (the body's own map is level 1).
	MaxNesting = 16
)

var (
	encMode = mustEncMode()
	// canonPool holds buffers for Decode's canonical re-encoding.
	canonPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

func mustEncMode() cbor.UserBufferEncMode {
	opts := cbor.CoreDetEncOptions()
	// Time values never appear in messages (times are integers), but pin
	// everything that could make two encoders disagree.
	opts.IndefLength = cbor.IndefLengthForbidden
	opts.TagsMd = cbor.TagsForbidden
	em, err := opts.UserBufferEncMode()
	if err != nil {
		panic(err)
	}
	return em
}

// bodyDecOptions are the decoding rules of frame bodies of at most maxFrame
// bytes.
func bodyDecOptions(maxFrame int) cbor.DecOptions {
	// No element of an array and no pair of a map takes less than one byte,
	// so a frame of maxFrame bytes cannot hold more: the counts are bounded by
	// the frame size, and fxamacker/cbor checks the whole item is well formed
	// (every declared element present) before it allocates for any of it.
	return decOptions(MaxNesting, max(16, maxFrame), max(16, maxFrame/2))
}

// decOptions are the rules for every CBOR item this package decodes from the
// wire (frame bodies, command arguments), with the given nesting depth and
// element and pair counts.
func decOptions(nesting, elements, pairs int) cbor.DecOptions {
	return cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:   nesting,
		MaxArrayElements:  elements,
		MaxMapPairs:       pairs,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
		IntDec:            cbor.IntDecConvertNone,
		// Byte strings never decode into Go strings nor vice versa: a field's
		// CBOR major type is part of its definition.
		ByteStringToString:  cbor.ByteStringToStringForbidden,
		FieldNameByteString: cbor.FieldNameByteStringForbidden,
		BinaryUnmarshaler:   cbor.BinaryUnmarshalerNone,
		SimpleValues:        onlyBoolAndNull,
	}
}

// onlyBoolAndNull rejects every CBOR simple value but false, true and null
// (20..22): undefined and the unassigned ones have no meaning a message
// could give them, and would decode into Go values that other
// implementations need not reproduce. The well-formedness check applies it,
// before anything is decoded.
var onlyBoolAndNull = func() *cbor.SimpleValueRegistry {
	var reject []func(*cbor.SimpleValueRegistry) error
	for sv := range 256 {
		if (sv < 20 || sv > 22) && (sv < 24 || sv > 31) { // 24..31 are not simple values
			reject = append(reject, cbor.WithRejectedSimpleValue(cbor.SimpleValue(sv)))
		}
	}
	r, err := cbor.NewSimpleValueRegistryFromDefaults(reject...)
	if err != nil {
		panic(err)
	}
	return r
}()

// mustDecMode returns the DecMode of opts, which are constants of this
// package.
func mustDecMode(opts cbor.DecOptions) cbor.DecMode {
	dm, err := opts.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}

// NewDecMode returns a decoder with the rules of every CBOR item the
// protocol decodes from outside (no tags, no indefinite lengths, no
// duplicate or unknown keys, no invalid UTF-8, no byte string for a text
// string or the reverse, no simple value but false, true and null), with
// the given bounds on nesting depth and on the elements of an array and
// the pairs of a map (fxamacker/cbor's floor for the counts is 16). It is
// exported for the documents that travel beside frames (update plans), so
// that they are decoded by the same rules and not by a copy of them.
func NewDecMode(nesting, elements, pairs int) (cbor.DecMode, error) {
	dm, err := decOptions(nesting, elements, pairs).DecMode()
	if err != nil {
		return nil, fmt.Errorf("protocol: decoder options: %v", err)
	}
	return dm, nil
}

// EncMode returns the protocol's encoder: RFC 8949 core deterministic
// encoding, no indefinite lengths, no tags. A document whose bytes are
// signed is re-encoded with it on decoding and refused unless the bytes
// are the same.
func EncMode() cbor.EncMode { return encMode }

// NewCodec returns a Codec for frames of at most maxFrame bytes, which must
// be in [MinMaxFrame, MaxMaxFrame]. Both ends of a link must agree on it.
func NewCodec(maxFrame int) (*Codec, error) {
	if maxFrame < MinMaxFrame || maxFrame > MaxMaxFrame {
		return nil, fmt.Errorf("protocol: max frame %d out of range [%d, %d]", maxFrame, MinMaxFrame, MaxMaxFrame)
	}
	dm, err := bodyDecOptions(maxFrame).DecMode()
	if err != nil {
		return nil, fmt.Errorf("protocol: decoder options: %v", err)
	}
	c := &Codec{maxFrame: maxFrame, enc: encMode, dec: dm}
	registryMu.Lock()
	c.types = registry
	registryMu.Unlock()
	return c, nil
}

// MaxFrame returns the largest frame, in bytes, this Codec encodes or decodes.
func (c *Codec) MaxFrame() int { return c.maxFrame }

// Encode returns the frame for m. It fails with ErrUnknownType if m's type
// was not registered before NewCodec (Decode would refuse the frame), with
// ErrFrameTooLarge if the frame would exceed MaxFrame, and with the error of
// m's Validate method if m implements Validator.
func (c *Codec) Encode(m Message) ([]byte, error) {
	return c.AppendEncode(make([]byte, 0, 64), m)
}

// AppendEncode appends the frame for m to dst and returns the extended
// slice. On error dst is returned unchanged in length (its spare capacity
// may have been written).
func (c *Codec) AppendEncode(dst []byte, m Message) ([]byte, error) {
	if m == nil {
		return dst, fmt.Errorf("%w: nil message", ErrInvalidField)
	}
	t := m.Type()
	if c.types[t] == nil {
		return dst, fmt.Errorf("%w: %v is not registered", ErrUnknownType, t)
	}
	if err := validate(m); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, frameArrayHead, Version)
	dst = appendUint8(dst, uint8(t))
	buf := bytes.NewBuffer(dst)
	if err := c.enc.MarshalToBuffer(m, buf); err != nil {
		return dst[:start], fmt.Errorf("protocol: encode %v: %v", t, err)
	}
	dst = buf.Bytes()
	if n := len(dst) - start + trailerLen; n > c.maxFrame {
		return dst[:start], fmt.Errorf("%w: %v message needs %d bytes, max frame %d", ErrFrameTooLarge, t, n, c.maxFrame)
	}
	dst = append(dst, crcHead)
	return binary.BigEndian.AppendUint32(dst, Checksum(dst[start:])), nil
}

// appendUint8 appends v as a CBOR unsigned integer in its shortest form.
func appendUint8(dst []byte, v uint8) []byte {
	if v < 24 {
		return append(dst, v)
	}
	return append(dst, 0x18, v)
}

// headUint reads the CBOR unsigned integer at the start of b, as the frame
// header uses them (version, type: one value byte at most).
type headUint int

const (
	headOK           headUint = iota
	headNotUint               // not major type 0, or b is empty
	headTooBig                // an unsigned integer of more than one value byte
	headNonCanonical          // 0x18 followed by a value below 24
)

// readUint reads a CBOR unsigned integer of at most one value byte from b:
// its value, the number of bytes it took, and how it went.
func readUint(b []byte) (v uint64, n int, st headUint) {
	if len(b) == 0 || b[0]>>5 != 0 {
		return 0, 0, headNotUint
	}
	switch ai := b[0] & 0x1f; {
	case ai < 24:
		return uint64(ai), 1, headOK
	case ai == 24 && len(b) >= 2:
		if b[1] < 24 {
			return 0, 0, headNonCanonical
		}
		return uint64(b[1]), 2, headOK
	case ai == 24:
		return 0, 0, headNotUint
	}
	return 0, 0, headTooBig
}

// headErr turns a failed header read into an error: big numbers are foreign
// (errForeign: ErrVersion or ErrUnknownType), the rest malformed.
func headErr(st headUint, what string, errForeign error) error {
	switch st {
	case headTooBig:
		return fmt.Errorf("%w: %s does not fit a byte", errForeign, what)
	case headNonCanonical:
		return fmt.Errorf("%w: %s is not in its shortest form", ErrNonCanonical, what)
	}
	return fmt.Errorf("%w: %s is not an unsigned integer", ErrMalformed, what)
}

// Decode checks and decodes one frame. Checks run in this order, each failure
// wrapping its sentinel: size (ErrFrameTooLarge, ErrTruncated), CRC
// (ErrChecksum), header (ErrMalformed, ErrVersion, ErrUnknownType), body
// (ErrMalformed, ErrLimit, ErrInvalidField), canonical form (ErrNonCanonical),
// then the message's own Validate (ErrInvalidField or its own sentinel).
// Decode never panics, and allocates only in proportion to len(frame). The
// returned message is the pointer the type's registered constructor made; it
// does not alias frame.
func (c *Codec) Decode(frame []byte) (Message, error) {
	n := len(frame)
	if n > c.maxFrame {
		return nil, fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, n, c.maxFrame)
	}
	if n < MinFrameLen {
		return nil, fmt.Errorf("%w: %d bytes, a frame has at least %d", ErrTruncated, n, MinFrameLen)
	}
	if frame[n-trailerLen] != crcHead {
		return nil, fmt.Errorf("%w: no checksum trailer", ErrChecksum)
	}
	if want, got := binary.BigEndian.Uint32(frame[n-4:]), Checksum(frame[:n-4]); want != got {
		return nil, fmt.Errorf("%w: crc32c %08x, frame says %08x", ErrChecksum, got, want)
	}
	// Every version starts with a short array head and the version, so a
	// frame of another version (perhaps with more elements) is told apart
	// from a malformed one before the array length is held against it.
	if frame[0]>>5 != 4 || frame[0]&0x1f >= 24 {
		return nil, fmt.Errorf("%w: frame head 0x%02x, want 0x%02x", ErrMalformed, frame[0], frameArrayHead)
	}
	off := 1
	ver, k, st := readUint(frame[off : n-trailerLen])
	if st != headOK {
		return nil, headErr(st, "version", ErrVersion)
	}
	if ver != Version {
		return nil, fmt.Errorf("%w: %d, this build speaks %d", ErrVersion, ver, Version)
	}
	if frame[0] != frameArrayHead {
		return nil, fmt.Errorf("%w: frame head 0x%02x, want 0x%02x", ErrMalformed, frame[0], frameArrayHead)
	}
	off += k
	typ, k, st := readUint(frame[off : n-trailerLen])
	if st != headOK {
		return nil, headErr(st, "message type", ErrUnknownType)
	}
	off += k
	newMsg := c.types[typ]
	if newMsg == nil {
		return nil, fmt.Errorf("%w: %d", ErrUnknownType, typ)
	}
	body := frame[off : n-trailerLen]
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty body", ErrMalformed)
	}
	m := newMsg()
	if err := c.dec.Unmarshal(body, m); err != nil {
		return nil, classifyCBOR(MsgType(typ), err)
	}
	// Exactly one encoding is valid: re-encode and compare. This rejects
	// non-shortest heads, unsorted keys, explicit zero values of omitempty
	// fields and anything else Core Deterministic Encoding forbids, and makes
	// "what decodes re-encodes to the same bytes" hold by construction.
	buf := canonPool.Get().(*bytes.Buffer)
	buf.Reset()
	err := c.enc.MarshalToBuffer(m, buf)
	same := err == nil && bytes.Equal(buf.Bytes(), body)
	if buf.Cap() <= MaxMaxFrame {
		canonPool.Put(buf)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v body does not re-encode: %v", ErrInvalidField, MsgType(typ), err)
	}
	if !same {
		return nil, fmt.Errorf("%w: %v body is not in deterministic encoding", ErrNonCanonical, MsgType(typ))
	}
	if err := validate(m); err != nil {
		return nil, err
	}
	return m, nil
}

func validate(m Message) error {
	v, ok := m.(Validator)
	if !ok {
		return nil
	}
	err := v.Validate()
	if err == nil {
		return nil
	}
	if ReasonOf(err) == ReasonOther {
		return fmt.Errorf("%w: %v: %v", ErrInvalidField, m.Type(), err)
	}
	return err
}

// classifyCBOR maps an fxamacker/cbor decoding error onto a sentinel.
func classifyCBOR(t MsgType, err error) error {
	if ReasonOf(err) != ReasonOther {
		// A custom unmarshaler (e.g. Params) already chose the sentinel.
		return err
	}
	var (
		typeErr    *cbor.UnmarshalTypeError
		unknownErr *cbor.UnknownFieldError
		dupErr     *cbor.DupMapKeyError
		nestErr    *cbor.MaxNestedLevelError
		arrErr     *cbor.MaxArrayElementsError
		mapErr     *cbor.MaxMapPairsError
		extraErr   *cbor.ExtraneousDataError
	)
	switch {
	case errors.As(err, &nestErr), errors.As(err, &arrErr), errors.As(err, &mapErr):
		return fmt.Errorf("%w: %v body: %v", ErrLimit, t, err)
	case errors.As(err, &typeErr), errors.As(err, &unknownErr):
		return fmt.Errorf("%w: %v body: %v", ErrInvalidField, t, err)
	case errors.As(err, &dupErr):
		return fmt.Errorf("%w: %v body: duplicate map key: %v", ErrMalformed, t, err)
	case errors.As(err, &extraErr):
		return fmt.Errorf("%w: %v body: trailing bytes: %v", ErrMalformed, t, err)
	}
	return fmt.Errorf("%w: %v body: %v", ErrMalformed, t, err)
}
