package update

import (
	"encoding/binary"
	"fmt"
)

// TargetKind says what a transfer carries (the first byte of
// protocol.Offer.Target).
type TargetKind byte

// Transfer target kinds.
const (
	// KindPlan: the transfer carries an encoded Plan (EncodePlan).
	KindPlan TargetKind = 'P'
	// KindBundle: the transfer carries the delta bundle of an accepted plan;
	// its size is Plan.BundleSize and its sha256 Plan.BundleDigest.
	KindBundle TargetKind = 'B'
)

// TargetLen is the length of every target: kind and 8-byte plan id.
const TargetLen = 9

// TargetPlan is the Offer.Target of the transfer carrying plan id.
func TargetPlan(id uint64) []byte { return target(KindPlan, id) }

// TargetBundle is the Offer.Target of the transfer carrying plan id's bundle.
func TargetBundle(id uint64) []byte { return target(KindBundle, id) }

func target(k TargetKind, id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{byte(k)}, id)
}

// ParseTarget parses an Offer.Target: its kind and plan id, or an error
// wrapping ErrBadTarget (wrong length, unknown kind, plan id 0).
func ParseTarget(b []byte) (TargetKind, uint64, error) {
	if len(b) != TargetLen {
		return 0, 0, fmt.Errorf("%w: %d bytes, want %d", ErrBadTarget, len(b), TargetLen)
	}
	k := TargetKind(b[0])
	if k != KindPlan && k != KindBundle {
		return 0, 0, fmt.Errorf("%w: kind 0x%02x", ErrBadTarget, b[0])
	}
	id := binary.BigEndian.Uint64(b[1:])
	if id == 0 {
		return 0, 0, fmt.Errorf("%w: plan id 0", ErrBadTarget)
	}
	return k, id, nil
}

// String returns "plan" or "bundle".
func (k TargetKind) String() string {
	switch k {
	case KindPlan:
		return "plan"
	case KindBundle:
		return "bundle"
	}
	return fmt.Sprintf("kind(0x%02x)", byte(k))
}
