package protocol

import (
	"bytes"
	"crypto/ed25519"
	"testing"

	"github.com/bootorbit/bootorbit/internal/testrand"
)

// testSeed returns the seed of a randomized test, logged so a failure can
// be replayed (BOOTORBIT_SEED=N, see internal/testrand).
func testSeed(t testing.TB) uint64 {
	t.Helper()
	return testrand.Seed(t)
}

// testKey derives a deterministic ed25519 key from a byte.
func testKey(b byte) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = b
	}
	return ed25519.NewKeyFromSeed(seed)
}

// sampleMessages returns one or more valid messages of every type this file's
// owner defines, plus the test types.
func sampleMessages(t testing.TB) []Message {
	t.Helper()
	cmd := &Command{Vehicle: 42, Target: 3, Seq: 1001, Opcode: 7}
	if err := cmd.SetArgs(map[string]any{"slot": "B", "reboot": true, "n": 3}); err != nil {
		t.Fatal(err)
	}
	if err := SignCommand(cmd, 1, testKey(1)); err != nil {
		t.Fatal(err)
	}
	auth, err := NewReturnAuth(42, MACKey{ID: 1, Key: bytes.Repeat([]byte{0x11}, MACKeyLen)}, 3)
	if err != nil {
		t.Fatal(err)
	}
	tagged := &Verification{Vehicle: 42, Seq: 1001, Stage: StageCompleted, Opcode: 7}
	tlm := &Telemetry{Vehicle: 42, Packet: 2, Seq: 300, Params: []Param{{ID: 1, Value: uint64(70000)}}}
	for _, m := range []ReturnMessage{tagged, tlm} {
		if err := auth.Sign(m); err != nil {
			t.Fatal(err)
		}
	}
	return []Message{
		&testChunk{Transfer: 0x9abcdef0, Part: 3, Index: 4000, Data: []byte("some chunk data \x00\x00\xff")},
		&testBound{N: 5, List: []uint32{1, 2}, Name: "n"},
		cmd,
		&Command{Seq: 1},
		&Verification{Vehicle: 42, Seq: 1001, Stage: StageAccepted, Opcode: 7},
		&Verification{Seq: 1001, Stage: StageProgress, Step: 2},
		&Verification{Seq: 1002, Stage: StageRejected, Code: CodeOf(ReasonReplayed)},
		&Telemetry{Vehicle: 42, Packet: 1, Time: 1_790_000_000_000, Seq: 77, Params: []Param{
			{ID: 1, Value: uint64(3)}, {ID: 2, Value: int64(-40)}, {ID: 3, Value: 1.5},
			{ID: 4, Value: 3.14159}, {ID: 5, Value: true}, {ID: 6, Value: "B"}, {ID: 7, Value: []byte{1, 2, 3}},
		}},
		&Telemetry{},
		&Event{Vehicle: 42, ID: 12, Severity: SeverityWarning, Time: 1_790_000_000_001, Seq: 5,
			Text: "slot B: boot attempt 2 of 3", Args: []any{"B", uint64(2), int64(-1)}},
		&Event{},
		tagged,
		tlm,
	}
}

// replayModel is an exact model of a ReplayWindow: the set of numbers
// accepted and the highest of them.
type replayModel struct {
	seen map[uint64]bool
	top  uint64
}

func newReplayModel() *replayModel { return &replayModel{seen: map[uint64]bool{}} }

// fresh reports whether a window must accept seq.
func (m *replayModel) fresh(seq uint64) bool {
	return seq != 0 && !m.seen[seq] && (seq > m.top || m.top-seq < ReplayWindowSize)
}

// accept offers seq to w and to the model, requires w to accept exactly
// what the model calls fresh, and w's persisted state to restore to w.
func (m *replayModel) accept(t testing.TB, w *ReplayWindow, seq uint64) {
	t.Helper()
	fresh := m.fresh(seq)
	if err := w.Accept(seq); (err == nil) != fresh {
		t.Fatalf("Accept(%d) with top %d = %v, model says fresh=%v", seq, m.top, err, fresh)
	}
	if fresh {
		m.seen[seq] = true
		m.top = max(m.top, seq)
	}
	b, err := w.MarshalBinary()
	var w2 ReplayWindow
	if err == nil {
		err = w2.UnmarshalBinary(b)
	}
	if err != nil || w2 != *w {
		t.Fatalf("state %x does not restore: %v", b, err)
	}
}
