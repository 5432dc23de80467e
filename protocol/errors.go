package protocol

import (
	"errors"
	"sync/atomic"
)

// Sentinel errors. Every error this package returns for bad input wraps exactly
// one of them (with detail added by fmt.Errorf("%w: ...")), so callers can
// match with errors.Is and count with ReasonOf.
var (
	// ErrFrameTooLarge: a frame (or a stream record) is longer than the
	// configured maximum frame size. Checked before anything else.
	ErrFrameTooLarge = errors.New("protocol: frame too large")
	// ErrTruncated: fewer bytes than the smallest possible frame, or a stream
	// record cut short by the end of the stream or by resynchronisation.
	ErrTruncated = errors.New("protocol: truncated")
	// ErrChecksum: the CRC-32C trailer does not match. Corruption anywhere in a
	// datagram, including a datagram cut short, ends here: nothing before the
	// checksum is trusted, so it cannot tell a cut from a flipped bit.
	ErrChecksum = errors.New("protocol: bad checksum")
	// ErrVersion: the frame carries a protocol version this build does not speak.
	ErrVersion = errors.New("protocol: unsupported version")
	// ErrUnknownType: the message type is not registered.
	ErrUnknownType = errors.New("protocol: unknown message type")
	// ErrMalformed: the checksum is good but the bytes are not a well-formed
	// frame (bad header, bad CBOR, trailing bytes inside the body, duplicate
	// map keys, tags, indefinite lengths, invalid UTF-8, simple values other
	// than false, true and null).
	ErrMalformed = errors.New("protocol: malformed frame")
	// ErrLimit: a bound was exceeded: nesting depth, an element or pair
	// count, or a length or count a message's Validate bounds.
	ErrLimit = errors.New("protocol: limit exceeded")
	// ErrNonCanonical: the frame is well formed but not in Core Deterministic
	// Encoding (non-shortest integers, unsorted keys, explicit zero values of
	// fields omitted when zero, absent fields that must be present...). Every
	// frame has exactly one valid encoding.
	ErrNonCanonical = errors.New("protocol: non-canonical encoding")
	// ErrInvalidField: a field has the wrong CBOR type, or a value out of the
	// bounds the message's Validate method enforces, or a map key the message
	// does not define.
	ErrInvalidField = errors.New("protocol: invalid field")
	// ErrUnauthenticated: a message that must be authenticated carries no
	// authentication.
	ErrUnauthenticated = errors.New("protocol: unauthenticated")
	// ErrUnknownKey: the authentication names a key id the verifier does not
	// hold (never held, or retired by rotation).
	ErrUnknownKey = errors.New("protocol: unknown key")
	// ErrBadSignature: the signature does not verify: a forged or altered
	// message.
	ErrBadSignature = errors.New("protocol: bad signature")
	// ErrForged is ErrBadSignature under the name the design documents use.
	ErrForged = ErrBadSignature
	// ErrReplayed: an authenticated message whose sequence number was already
	// accepted, or is too old for the replay window to tell.
	ErrReplayed = errors.New("protocol: replayed")
	// ErrStreamGarbage: bytes on a stream link that are not part of any
	// frame and were skipped while resynchronising.
	ErrStreamGarbage = errors.New("protocol: stream garbage")
	// ErrWrongVehicle: an authenticated message for another vehicle (a
	// capture of another vehicle's traffic, or a misrouted frame).
	ErrWrongVehicle = errors.New("protocol: wrong vehicle")
	// ErrRateLimited: an answer to an unauthenticated (or replayable)
	// request that the answer budget did not allow; the request is dropped.
	ErrRateLimited = errors.New("protocol: rate limited")
	// ErrContradiction: an authenticated report that contradicts what the
	// sender knows (claims chunks never sent, or missing chunks an earlier
	// report claimed); the sender falls back to the conservative view.
	ErrContradiction = errors.New("protocol: contradictory report")
	// ErrUnknownTransfer: a chunk or request naming a transfer the receiver
	// has no offer for (another vehicle's, or made up).
	ErrUnknownTransfer = errors.New("protocol: unknown transfer")
)

// Reason classifies a rejection into a small fixed set, for counters and
// telemetry. The numeric values are stable (they travel in telemetry).
type Reason uint8

// Rejection reasons, one per sentinel error.
const (
	ReasonNone            Reason = iota // not an error
	ReasonOther                         // an error from outside this package's set
	ReasonTooLarge                      // ErrFrameTooLarge
	ReasonTruncated                     // ErrTruncated
	ReasonChecksum                      // ErrChecksum
	ReasonVersion                       // ErrVersion
	ReasonUnknownType                   // ErrUnknownType
	ReasonMalformed                     // ErrMalformed
	ReasonLimit                         // ErrLimit
	ReasonNonCanonical                  // ErrNonCanonical
	ReasonInvalidField                  // ErrInvalidField
	ReasonUnauthenticated               // ErrUnauthenticated
	ReasonUnknownKey                    // ErrUnknownKey
	ReasonBadSignature                  // ErrBadSignature (forged)
	ReasonReplayed                      // ErrReplayed
	ReasonStreamGarbage                 // ErrStreamGarbage
	ReasonWrongVehicle                  // ErrWrongVehicle
	ReasonRateLimited                   // ErrRateLimited
	ReasonContradiction                 // ErrContradiction
	ReasonUnknownTransfer               // ErrUnknownTransfer

	// NumReasons is the number of reasons: the size of Counters.
	NumReasons
)

var reasonErrs = [NumReasons]error{
	ReasonTooLarge:        ErrFrameTooLarge,
	ReasonTruncated:       ErrTruncated,
	ReasonChecksum:        ErrChecksum,
	ReasonVersion:         ErrVersion,
	ReasonUnknownType:     ErrUnknownType,
	ReasonMalformed:       ErrMalformed,
	ReasonLimit:           ErrLimit,
	ReasonNonCanonical:    ErrNonCanonical,
	ReasonInvalidField:    ErrInvalidField,
	ReasonUnauthenticated: ErrUnauthenticated,
	ReasonUnknownKey:      ErrUnknownKey,
	ReasonBadSignature:    ErrBadSignature,
	ReasonReplayed:        ErrReplayed,
	ReasonStreamGarbage:   ErrStreamGarbage,
	ReasonWrongVehicle:    ErrWrongVehicle,
	ReasonRateLimited:     ErrRateLimited,
	ReasonContradiction:   ErrContradiction,
	ReasonUnknownTransfer: ErrUnknownTransfer,
}

var reasonNames = [NumReasons]string{
	ReasonNone:            "none",
	ReasonOther:           "other",
	ReasonTooLarge:        "too-large",
	ReasonTruncated:       "truncated",
	ReasonChecksum:        "checksum",
	ReasonVersion:         "version",
	ReasonUnknownType:     "unknown-type",
	ReasonMalformed:       "malformed",
	ReasonLimit:           "limit",
	ReasonNonCanonical:    "non-canonical",
	ReasonInvalidField:    "invalid-field",
	ReasonUnauthenticated: "unauthenticated",
	ReasonUnknownKey:      "unknown-key",
	ReasonBadSignature:    "bad-signature",
	ReasonReplayed:        "replayed",
	ReasonStreamGarbage:   "stream-garbage",
	ReasonWrongVehicle:    "wrong-vehicle",
	ReasonRateLimited:     "rate-limited",
	ReasonContradiction:   "contradiction",
	ReasonUnknownTransfer: "unknown-transfer",
}

// String returns the reason's short stable name, e.g. "checksum".
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "invalid"
}

// Err returns the sentinel error of r, or nil for ReasonNone and ReasonOther.
func (r Reason) Err() error {
	if r < NumReasons {
		return reasonErrs[r]
	}
	return nil
}

// ReasonOf classifies err: ReasonNone for nil, the reason of the first
// sentinel err wraps (in the order of the Reason constants), ReasonOther for
// anything else.
func ReasonOf(err error) Reason {
	if err == nil {
		return ReasonNone
	}
	for r := ReasonTooLarge; r < NumReasons; r++ {
		if errors.Is(err, reasonErrs[r]) {
			return r
		}
	}
	return ReasonOther
}

// Counters counts rejections by reason in fixed memory (one word per reason,
// no maps), safe for concurrent use. The zero value is ready to use.
type Counters struct {
	n [NumReasons]atomic.Uint64
}

// Count adds one to err's reason and returns that reason. A nil err counts
// nothing and returns ReasonNone.
func (c *Counters) Count(err error) Reason {
	r := ReasonOf(err)
	if r != ReasonNone {
		c.n[r].Add(1)
	}
	return r
}

// Add adds one to reason r (ignored when r is out of range).
func (c *Counters) Add(r Reason) {
	if r < NumReasons {
		c.n[r].Add(1)
	}
}

// Get returns the count of reason r.
func (c *Counters) Get(r Reason) uint64 {
	if r < NumReasons {
		return c.n[r].Load()
	}
	return 0
}

// Snapshot returns all counts, indexed by Reason.
func (c *Counters) Snapshot() [NumReasons]uint64 {
	var s [NumReasons]uint64
	for i := range s {
		s[i] = c.n[i].Load()
	}
	return s
}

// Total returns the sum of all counts.
func (c *Counters) Total() uint64 {
	var t uint64
	for i := range c.n {
		t += c.n[i].Load()
	}
	return t
}
