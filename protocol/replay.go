package protocol

import (
	"encoding/binary"
	"fmt"
)

// ReplayWindowSize is how many sequence numbers below the highest accepted
// one a ReplayWindow still tells apart: older ones are rejected as replays.
const ReplayWindowSize = 128

// ReplayWindowStateLen is the length of a ReplayWindow's persisted state.
const ReplayWindowStateLen = 1 + 8 + 16

// ReplayWindow is an anti-replay window over sequence numbers, as in IPsec
// (RFC 4303, section 3.4.3): the highest sequence number accepted and a
// bitmap of the ReplayWindowSize numbers at and below it. It is sans-IO: the
// caller persists its state (MarshalBinary, 25 bytes) and restores it
// (UnmarshalBinary). The zero value has accepted nothing. Not safe for
// concurrent use.
//
// Sequence numbers start at 1; 0 is never valid. Numbers may arrive out of
// order and with gaps; each is accepted at most once.
//
// The order that keeps forged frames from moving the window (a forger must
// not be able to make genuine commands look like replays):
//
//  1. w.Check(seq): cheap; drop replays before spending a signature check.
//  2. VerifyCommand: authenticate.
//  3. w.Accept(seq), then persist the window state durably,
//  4. only then act on the command, so a power cut after acting can never
//     let the same command run twice.
type ReplayWindow struct {
	top  uint64    // highest accepted sequence number; 0: none yet
	bits [2]uint64 // bit i (of 128, bits[0] low): top-i was accepted
}

// Highest returns the highest sequence number accepted (0 if none).
func (w *ReplayWindow) Highest() uint64 { return w.top }

// Check returns nil if seq has not been accepted and is new enough to tell,
// else an error wrapping ErrReplayed. It does not change w.
func (w *ReplayWindow) Check(seq uint64) error {
	if seq == 0 {
		return fmt.Errorf("%w: sequence number 0", ErrReplayed)
	}
	if seq > w.top {
		return nil
	}
	d := w.top - seq
	if d >= ReplayWindowSize {
		return fmt.Errorf("%w: seq %d is older than the window (highest %d, window %d)", ErrReplayed, seq, w.top, ReplayWindowSize)
	}
	if w.bits[d/64]&(1<<(d%64)) != 0 {
		return fmt.Errorf("%w: seq %d already accepted", ErrReplayed, seq)
	}
	return nil
}

// Accept records seq as accepted. It returns the same error Check would
// and leaves w unchanged in that case.
func (w *ReplayWindow) Accept(seq uint64) error {
	if err := w.Check(seq); err != nil {
		return err
	}
	if seq > w.top {
		w.shift(seq - w.top)
		w.top = seq
		w.bits[0] |= 1
		return nil
	}
	d := w.top - seq
	w.bits[d/64] |= 1 << (d % 64)
	return nil
}

// shift moves the bitmap k places towards older numbers.
func (w *ReplayWindow) shift(k uint64) {
	switch {
	case k >= 128:
		w.bits = [2]uint64{}
	case k >= 64:
		w.bits = [2]uint64{0, w.bits[0] << (k - 64)}
	case k > 0:
		w.bits = [2]uint64{w.bits[0] << k, w.bits[1]<<k | w.bits[0]>>(64-k)}
	}
}

// replayStateVersion is the first byte of a persisted window.
const replayStateVersion = 1

// MarshalBinary returns the window state: a version byte (1), the highest
// sequence number (8 bytes, big endian), then the bitmap (bits 0..63, then
// 64..127, each 8 bytes big endian).
func (w *ReplayWindow) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, ReplayWindowStateLen)
	b = append(b, replayStateVersion)
	b = binary.BigEndian.AppendUint64(b, w.top)
	b = binary.BigEndian.AppendUint64(b, w.bits[0])
	return binary.BigEndian.AppendUint64(b, w.bits[1]), nil
}

// UnmarshalBinary restores a state from MarshalBinary. It rejects a state
// of the wrong length or version, and one that is not self-consistent.
func (w *ReplayWindow) UnmarshalBinary(b []byte) error {
	if len(b) != ReplayWindowStateLen {
		return fmt.Errorf("%w: replay window state of %d bytes, want %d", ErrMalformed, len(b), ReplayWindowStateLen)
	}
	if b[0] != replayStateVersion {
		return fmt.Errorf("%w: replay window state format %d, want %d", ErrMalformed, b[0], replayStateVersion)
	}
	top := binary.BigEndian.Uint64(b[1:])
	bits := [2]uint64{binary.BigEndian.Uint64(b[9:]), binary.BigEndian.Uint64(b[17:])}
	switch {
	case top == 0 && bits != [2]uint64{}:
		return fmt.Errorf("%w: replay window state: bits without a highest seq", ErrMalformed)
	case top != 0 && bits[0]&1 == 0:
		return fmt.Errorf("%w: replay window state: highest seq not marked", ErrMalformed)
	case top < ReplayWindowSize && top != 0 && bitsAbove(bits, top):
		return fmt.Errorf("%w: replay window state: bits below seq 1", ErrMalformed)
	}
	w.top, w.bits = top, bits
	return nil
}

// bitsAbove reports whether any bit at distance >= top is set (numbers <= 0).
func bitsAbove(bits [2]uint64, top uint64) bool {
	for d := top; d < ReplayWindowSize; d++ {
		if bits[d/64]&(1<<(d%64)) != 0 {
			return true
		}
	}
	return false
}
