package protocol

import (
	"bytes"
	"errors"
	"testing"
)

func testMACKey(id KeyID, b byte) MACKey {
	return MACKey{ID: id, Key: bytes.Repeat([]byte{b}, MACKeyLen)}
}

// TestReturnAuth checks every vehicle-to-ground message type round-trips
// through ReturnAuth and ReturnVerifier, and that each way of getting it
// wrong is refused with its reason, without moving the replay window.
func TestReturnAuth(t *testing.T) {
	c := mustCodec(t, 256)
	key := testMACKey(1, 0x11)
	auth, err := NewReturnAuth(42, key, 1)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewReturnVerifier(42, key, testMACKey(2, 0x22))
	if err != nil {
		t.Fatal(err)
	}
	msgs := []ReturnMessage{
		&Report{ID: 7, Watermark: 3, Cursor: 3, End: 10, High: 12, Last: 9, Ack: 77, Missing: Ranges{1, 2}},
		&Complete{ID: 7},
		&Cancel{ID: 7, Reason: CancelAck},
		&Verification{Vehicle: 42, Seq: 1001, Stage: StageAccepted, Opcode: 7},
		&Telemetry{Vehicle: 42, Packet: 1, Params: []Param{{ID: 1, Value: uint64(3)}}},
		&Event{Vehicle: 42, ID: 12, Text: "slot B good"},
	}
	var frames [][]byte
	for _, m := range msgs {
		if err := auth.Sign(m); err != nil {
			t.Fatal(err)
		}
		f, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
		t.Logf("%v: %d bytes with its tag", m.Type(), len(f))
	}
	decode := func(f []byte) Message {
		m, err := c.Decode(f)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for i, f := range frames {
		if err := v.Verify(decode(f)); err != nil {
			t.Errorf("%v: %v", msgs[i].Type(), err)
		}
	}
	top := v.win.Highest()
	other, _ := NewReturnVerifier(43, key)
	wrongKey, _ := NewReturnAuth(42, testMACKey(1, 0x33), 9)
	stray := &Complete{ID: 8}
	_ = wrongKey.Sign(stray)
	unknown, _ := NewReturnAuth(42, testMACKey(5, 0x11), 9)
	unk := &Complete{ID: 8}
	_ = unknown.Sign(unk)
	altered := &Report{ID: 7, Watermark: 3, Cursor: 3, End: 10, High: 12}
	_ = auth.Sign(altered)
	altered.Watermark = 10
	for _, tc := range []struct {
		name string
		v    *ReturnVerifier
		m    Message
		want error
	}{
		{"replayed", v, decode(frames[2]), ErrReplayed},
		{"no tag", v, &Complete{ID: 7}, ErrUnauthenticated},
		{"not a return message", v, &Chunk{ID: 7, Index: 1, Data: []byte{1}}, ErrUnauthenticated},
		{"altered", v, altered, ErrBadSignature},
		{"wrong key bytes", v, stray, ErrBadSignature},
		{"unknown key id", v, unk, ErrUnknownKey},
		{"another vehicle's verifier", other, decode(frames[1]), ErrBadSignature},
	} {
		if err := tc.v.Verify(tc.m); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if v.win.Highest() != top {
		t.Errorf("refused messages moved the window: %d -> %d", top, v.win.Highest())
	}

	// A restart opens a new epoch: numbers never repeat, and the frames of
	// the old epoch still in the window are told apart.
	again, _ := NewReturnAuth(42, key, 2)
	m := &Complete{ID: 9}
	_ = again.Sign(m)
	if m.MAC.Seq() != 2<<32|1 {
		t.Errorf("first seq of epoch 2: %#x", m.MAC.Seq())
	}
	if err := v.Verify(m); err != nil {
		t.Fatal(err)
	}
	// The persisted window restores: a replay after a ground restart is
	// still a replay.
	st, _ := v.MarshalBinary()
	v2, _ := NewReturnVerifier(42, key)
	if err := v2.UnmarshalBinary(st); err != nil {
		t.Fatal(err)
	}
	if err := v2.Verify(m); !errors.Is(err, ErrReplayed) {
		t.Errorf("after a ground restart: %v, want replayed", err)
	}
	// The last number of an epoch is the last.
	auth.counter = ^uint32(0) - 1
	if err := auth.Sign(&Complete{ID: 1}); err != nil {
		t.Fatal(err)
	}
	if err := auth.Sign(&Complete{ID: 1}); !errors.Is(err, ErrLimit) {
		t.Errorf("past the epoch's last number: %v, want limit", err)
	}
	if _, err := NewReturnAuth(42, key, 0); err == nil {
		t.Error("epoch 0 accepted")
	}
}

// TestRequestTag checks the ground's tag on report requests: it verifies
// with the vehicle's key, and not once anything it covers changes.
func TestRequestTag(t *testing.T) {
	c := mustCodec(t, 256)
	key := testMACKey(1, 0x11)
	v, _ := NewReturnVerifier(42, key)
	auth, _ := NewReturnAuth(42, key, 1)
	m := &ReportRequest{ID: 7, Seq: 1 << 40}
	if err := v.SignRequest(m); err != nil {
		t.Fatal(err)
	}
	f, err := c.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.VerifyRequest(got.(*ReportRequest)); err != nil {
		t.Fatalf("genuine request: %v", err)
	}
	t.Logf("tagged request: %d bytes", len(f))
	other, _ := NewReturnAuth(43, key, 1)
	rotated, _ := NewReturnAuth(42, testMACKey(2, 0x11), 1)
	altered := *m
	altered.Seq++
	for _, tc := range []struct {
		name string
		a    *ReturnAuth
		m    *ReportRequest
		want error
	}{
		{"no tag", auth, &ReportRequest{ID: 7, Seq: 1}, ErrUnauthenticated},
		{"altered seq", auth, &altered, ErrBadSignature},
		{"another vehicle", other, m, ErrBadSignature},
		{"another key id", rotated, m, ErrUnknownKey},
	} {
		if err := tc.a.VerifyRequest(tc.m); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := c.Encode(&ReportRequest{ID: 7, Seq: 1, MAC: &RequestTag{Key: 1, Sum: make([]byte, 8)}}); !errors.Is(err, ErrInvalidField) {
		t.Errorf("short request mac: %v", err)
	}
}

// TestMACTagBounds checks a tag's shape is enforced by Decode.
func TestMACTagBounds(t *testing.T) {
	c := mustCodec(t, 256)
	for _, tag := range []*MACTag{
		{Key: 1, Epoch: 0, Counter: 1, Sum: make([]byte, MACLen)},
		{Key: 1, Epoch: 1, Counter: 0, Sum: make([]byte, MACLen)},
		{Key: 1, Epoch: 1, Counter: 1, Sum: make([]byte, MACLen-1)},
	} {
		if _, err := c.Encode(&Complete{ID: 1, MAC: tag}); !errors.Is(err, ErrInvalidField) {
			t.Errorf("tag %+v: %v", tag, err)
		}
	}
	if _, err := c.Encode(&Cancel{ID: 1, Reason: CancelByGround, Sig: make([]byte, SignatureLen),
		MAC: &MACTag{Key: 1, Epoch: 1, Counter: 1, Sum: make([]byte, MACLen)}}); !errors.Is(err, ErrInvalidField) {
		t.Errorf("cancel with a signature and a mac: %v", err)
	}
}
