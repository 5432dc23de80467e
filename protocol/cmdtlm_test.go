package protocol

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestCmdTlmRoundTrip(t *testing.T) {
	for _, max := range []int{256, 1024} {
		c := mustCodec(t, max)
		for _, m := range sampleMessages(t) {
			f, err := c.Encode(m)
			if err != nil {
				t.Fatalf("max %d: Encode %T: %v", max, m, err)
			}
			got, err := c.Decode(f)
			if err != nil {
				t.Fatalf("max %d: Decode %T %x: %v", max, m, f, err)
			}
			f2, err := c.Encode(got)
			if err != nil || !bytes.Equal(f, f2) {
				t.Fatalf("max %d: %T re-encodes to %x, %v; want %x", max, m, f2, err, f)
			}
			if reflect.TypeOf(got) != reflect.TypeOf(m) {
				t.Fatalf("decoded %T, want %T", got, m)
			}
			t.Logf("max %d: %-12v %3d bytes", max, m.Type(), len(f))
		}
	}
}

// TestCmdTlmFieldValues checks decoded values, not only bytes.
func TestCmdTlmFieldValues(t *testing.T) {
	c := mustCodec(t, 1024)
	in := &Telemetry{Vehicle: 9, Packet: 2, Time: -5, Params: []Param{{ID: 1, Value: 7}, {ID: 2, Value: "x"}, {ID: 3, Value: 0.5}}}
	f, err := c.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	got := m.(*Telemetry)
	want := &Telemetry{Vehicle: 9, Packet: 2, Time: -5, Params: []Param{{ID: 1, Value: uint64(7)}, {ID: 2, Value: "x"}, {ID: 3, Value: 0.5}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %#v, want %#v", got, want)
	}

	cmd := &Command{Vehicle: 1, Seq: 5, Opcode: 3}
	type args struct {
		Slot   string `cbor:"1,keyasint"`
		Reboot bool   `cbor:"2,keyasint,omitempty"`
	}
	if err := cmd.SetArgs(args{Slot: "B", Reboot: true}); err != nil {
		t.Fatal(err)
	}
	f, err = c.Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	m, err = c.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	var a args
	if err := m.(*Command).DecodeArgs(&a); err != nil || a != (args{Slot: "B", Reboot: true}) {
		t.Fatalf("DecodeArgs = %+v, %v", a, err)
	}
	var wrong struct {
		Slot int `cbor:"1,keyasint"`
	}
	if err := m.(*Command).DecodeArgs(&wrong); !errors.Is(err, ErrInvalidField) {
		t.Fatalf("DecodeArgs into the wrong type: %v", err)
	}
}

func TestCmdTlmInvalid(t *testing.T) {
	c := mustCodec(t, 65536)
	sig := make([]byte, 64)
	cases := []struct {
		name string
		m    Message
		want error
	}{
		{"command seq 0", &Command{}, ErrInvalidField},
		{"command args too long", &Command{Seq: 1, Args: append([]byte{0x59, 0x04, 0x01}, make([]byte, 1025)...)}, ErrLimit},
		{"command args explicit null", &Command{Seq: 1, Args: []byte{0xf6}}, ErrNonCanonical},
		{"command args non-canonical", &Command{Seq: 1, Args: []byte{0x18, 0x01}}, ErrNonCanonical},
		{"command args two items", &Command{Seq: 1, Args: []byte{0x01, 0x02}}, ErrMalformed},
		{"command args simple value", &Command{Seq: 1, Args: []byte{0xf7}}, ErrMalformed},
		{"command args nesting", &Command{Seq: 1, Args: append(bytes.Repeat([]byte{0x81}, 20), 0)}, ErrLimit},
		{"command short signature", &Command{Seq: 1, Auth: &Auth{Key: 1, Sig: sig[:63]}}, ErrInvalidField},
		{"verification stage 0", &Verification{Seq: 1}, ErrInvalidField},
		{"verification stage 7", &Verification{Seq: 1, Stage: 7}, ErrInvalidField},
		{"verification step on accepted", &Verification{Seq: 1, Stage: StageAccepted, Step: 1}, ErrInvalidField},
		{"verification failed without code", &Verification{Seq: 1, Stage: StageFailed}, ErrInvalidField},
		{"telemetry too many params", &Telemetry{Params: make([]Param, MaxParams+1)}, ErrLimit},
		{"telemetry null value", &Telemetry{Params: []Param{{ID: 1}}}, ErrInvalidField},
		{"telemetry nested value", &Telemetry{Params: []Param{{ID: 1, Value: []any{1}}}}, ErrInvalidField},
		{"telemetry NaN", &Telemetry{Params: []Param{{ID: 1, Value: math.NaN()}}}, ErrInvalidField},
		{"telemetry NaN float32", &Telemetry{Params: []Param{{ID: 1, Value: float32(math.NaN())}}}, ErrInvalidField},
		{"telemetry long text", &Telemetry{Params: []Param{{ID: 1, Value: strings.Repeat("x", MaxValueLen+1)}}}, ErrInvalidField},
		{"telemetry long bytes", &Telemetry{Params: []Param{{ID: 1, Value: make([]byte, MaxValueLen+1)}}}, ErrInvalidField},
		{"event severity", &Event{Severity: 4}, ErrInvalidField},
		{"event long text", &Event{Text: strings.Repeat("x", MaxEventText+1)}, ErrLimit},
		{"event bad utf-8", &Event{Text: "\xff"}, ErrInvalidField},
		{"event too many args", &Event{Args: make([]any, MaxEventArgs+1)}, ErrLimit},
		{"event map arg", &Event{Args: []any{map[string]any{}}}, ErrInvalidField},
	}
	for _, tc := range cases {
		if _, err := c.Encode(tc.m); !errors.Is(err, tc.want) {
			t.Errorf("%s: Encode error %v, want %v", tc.name, err, tc.want)
		}
	}
	// The same rules hold on the decode side, for frames a peer sealed.
	for _, tc := range []struct {
		name  string
		frame []byte
		want  error
	}{
		{"command seq 0", seal(hdrFor(TypeCommand), hx("a1 03 00")), ErrInvalidField},
		{"command without seq", seal(hdrFor(TypeCommand), hx("a1 04 01")), ErrNonCanonical},
		{"command args non-canonical", seal(hdrFor(TypeCommand), hx("a2 03 01 05 1801")), ErrNonCanonical},
		{"command args null", seal(hdrFor(TypeCommand), hx("a2 03 01 05 f6")), ErrNonCanonical},
		{"command args simple value", seal(hdrFor(TypeCommand), hx("a2 03 01 05 82 f5 f0")), ErrMalformed},
		{"command auth short sig", seal(hdrFor(TypeCommand), hx("a2 03 01 06 82 01 41 00")), ErrInvalidField},
		{"command auth not array", seal(hdrFor(TypeCommand), hx("a2 03 01 06 01")), ErrInvalidField},
		{"verification stage 9", seal(hdrFor(TypeVerification), hx("a2 02 01 03 09")), ErrInvalidField},
		{"telemetry map value", seal(hdrFor(TypeTelemetry), hx("a1 05 81 82 01 a1 01 01")), ErrInvalidField},
		{"telemetry param 3 items", seal(hdrFor(TypeTelemetry), hx("a1 05 81 83 01 01 01")), ErrInvalidField},
		{"telemetry float64 that fits float16", seal(hdrFor(TypeTelemetry), hx("a1 05 81 82 01 fb3ff8000000000000")), ErrNonCanonical},
		{"event huge text", seal(hdrFor(TypeEvent), hx("a1 06 7a ffffffff")), ErrMalformed},
	} {
		checkRejected(t, c, tc.name, tc.frame, tc.want)
	}
}

func TestCommandAuthentication(t *testing.T) {
	k1, k2, k3 := testKey(1), testKey(2), testKey(3)
	kr, err := NewKeyring(Key{ID: 1, Pub: k1.Public().(ed25519.PublicKey)}, Key{ID: 2, Pub: k2.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(c Command, id KeyID, k ed25519.PrivateKey) *Command {
		if err := SignCommand(&c, id, k); err != nil {
			t.Fatal(err)
		}
		return &c
	}
	base := Command{Vehicle: 42, Target: 1, Seq: 10, Opcode: 7, Args: []byte{0x82, 0x01, 0x61, 0x42}}
	good := sign(base, 1, k1)
	if err := VerifyCommand(kr, good); err != nil {
		t.Fatalf("genuine command: %v", err)
	}
	if err := VerifyCommand(kr, sign(base, 2, k2)); err != nil {
		t.Fatalf("command under the rotated-in key: %v", err)
	}
	alter := func(f func(c *Command)) *Command {
		c := *good
		c.Auth = &Auth{Key: good.Auth.Key, Sig: append([]byte(nil), good.Auth.Sig...)}
		f(&c)
		return &c
	}
	cases := []struct {
		name string
		c    *Command
		want error
	}{
		{"unsigned", &base, ErrUnauthenticated},
		{"unknown key id", sign(base, 3, k3), ErrUnknownKey},
		{"signed by another key under id 1", sign(base, 1, k3), ErrBadSignature},
		{"key id swapped", alter(func(c *Command) { c.Auth.Key = 2 }), ErrBadSignature},
		{"vehicle changed", alter(func(c *Command) { c.Vehicle++ }), ErrBadSignature},
		{"target changed", alter(func(c *Command) { c.Target++ }), ErrBadSignature},
		{"seq changed", alter(func(c *Command) { c.Seq++ }), ErrBadSignature},
		{"opcode changed", alter(func(c *Command) { c.Opcode++ }), ErrBadSignature},
		{"args changed", alter(func(c *Command) { c.Args = []byte{0x82, 0x02, 0x61, 0x42} }), ErrBadSignature},
		{"args dropped", alter(func(c *Command) { c.Args = nil }), ErrBadSignature},
		{"signature bit flipped", alter(func(c *Command) { c.Auth.Sig[5] ^= 4 }), ErrBadSignature},
		{"signature zero", alter(func(c *Command) { c.Auth.Sig = make([]byte, 64) }), ErrBadSignature},
		{"signature short", alter(func(c *Command) { c.Auth.Sig = c.Auth.Sig[:10] }), ErrBadSignature},
	}
	for _, tc := range cases {
		var ctr Counters
		err := VerifyCommand(kr, tc.c)
		r := ctr.Count(err)
		if !errors.Is(err, tc.want) || r.Err() != tc.want || ctr.Get(r) != 1 {
			t.Errorf("%s: %v (reason %v), want %v", tc.name, err, r, tc.want)
		}
	}
	if !errors.Is(VerifyCommand(kr, good), nil) || ReasonOf(ErrForged) != ReasonBadSignature {
		t.Fatal("ErrForged is not ErrBadSignature")
	}

	// A command signature never verifies in another domain.
	msg, err := CommandSignedBytes(good, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(k1.Public().(ed25519.PublicKey), testDomain, msg, good.Auth.Sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("cross-domain verify: %v", err)
	}
	if err := Verify(k1.Public().(ed25519.PublicKey), DomainCommand, msg, good.Auth.Sig); err != nil {
		t.Fatalf("same-domain verify: %v", err)
	}
}

// TestCommandSignedBytesLayout pins the signed bytes, for second implementations.
func TestCommandSignedBytesLayout(t *testing.T) {
	c := &Command{Vehicle: 42, Target: 1, Seq: 10, Opcode: 7, Args: []byte{0x01}}
	b, err := CommandSignedBytes(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	// [16, 42, 1, 10, 7, 1, 3]
	if want := hx("87 10 182a 01 0a 07 01 03"); !bytes.Equal(b, want) {
		t.Fatalf("signed bytes %x, want %x", b, want)
	}
	c.Args = nil
	b, _ = CommandSignedBytes(c, 3)
	if want := hx("87 10 182a 01 0a 07 f6 03"); !bytes.Equal(b, want) {
		t.Fatalf("signed bytes without args %x, want %x", b, want)
	}
	sm, err := SignedMessage(DomainCommand, b)
	if err != nil || string(sm[:len("bootorbit\x00command/v1\x00")]) != "bootorbit\x00command/v1\x00" {
		t.Fatalf("signed message %q, %v", sm, err)
	}
}

// testDomain is a signature domain of the tests only.
const testDomain = "test/v1"

func TestSignHelpers(t *testing.T) {
	k := testKey(7)
	pub := k.Public().(ed25519.PublicKey)
	sig := Sign(k, testDomain, []byte("plan"))
	if err := Verify(pub, testDomain, []byte("plan"), sig); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"other message": Verify(pub, testDomain, []byte("plan!"), sig),
		"other domain":  Verify(pub, DomainCommand, []byte("plan"), sig),
		"short key":     Verify(pub[:31], testDomain, []byte("plan"), sig),
		"empty domain":  Verify(pub, "", []byte("plan"), sig),
		"NUL in domain": Verify(pub, "offer\x00", []byte("plan"), sig),
		// Moving bytes between domain and message must not keep a signature valid.
		"shifted split": Verify(pub, "test/v", append([]byte("1\x00"), "plan"...), sig),
	} {
		if !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The keyring is immutable: neither the caller's key nor a looked-up
	// one aliases it.
	callers := append(ed25519.PublicKey(nil), pub...)
	kr, err := NewKeyring(Key{ID: 1, Pub: callers})
	if err != nil {
		t.Fatal(err)
	}
	callers[0] ^= 1
	if got, ok := kr.Lookup(1); !ok || !bytes.Equal(got, pub) {
		t.Fatalf("Lookup(1) = %x, %v after the caller changed its key", got, ok)
	} else {
		got[0] ^= 1
	}
	if err := kr.Verify(1, testDomain, []byte("plan"), sig); err != nil {
		t.Fatalf("keyring changed through its keys: %v", err)
	}
	if _, ok := kr.Lookup(2); ok {
		t.Error("Lookup of an absent id succeeded")
	}
	if _, err := NewKeyring(Key{ID: 1, Pub: pub}, Key{ID: 1, Pub: pub}); err == nil {
		t.Error("duplicate key id accepted")
	}
	if _, err := NewKeyring(Key{ID: 1, Pub: pub[:5]}); err == nil {
		t.Error("short key accepted")
	}
	if _, err := NewKeyring(make([]Key, MaxKeys+1)...); err == nil {
		t.Error("too many keys accepted")
	}
}

func TestReplayWindow(t *testing.T) {
	var w ReplayWindow
	mustAccept := func(seq uint64) {
		t.Helper()
		if err := w.Accept(seq); err != nil {
			t.Fatalf("Accept(%d): %v", seq, err)
		}
	}
	mustReject := func(seq uint64) {
		t.Helper()
		var ctr Counters
		err := w.Check(seq)
		if r := ctr.Count(err); r != ReasonReplayed || !errors.Is(err, ErrReplayed) {
			t.Fatalf("Check(%d) = %v (reason %v), want replayed", seq, err, r)
		}
		before := w
		if err := w.Accept(seq); !errors.Is(err, ErrReplayed) || w != before {
			t.Fatalf("Accept(%d) = %v, window changed %v", seq, err, w != before)
		}
	}
	mustReject(0)
	mustAccept(1)
	mustReject(1)
	mustAccept(3)
	mustAccept(2) // out of order, inside the window
	mustReject(2)
	mustReject(3)
	mustAccept(200) // a jump: 73..199 remain acceptable, 72 and below too old
	mustReject(200)
	mustReject(72) // 200-72 = 128: outside the window
	mustAccept(73) // 200-73 = 127: the oldest number the window tells apart
	mustReject(73)
	mustAccept(199)
	mustAccept(136) // across the 64-bit word boundary
	mustReject(136)
	mustAccept(math.MaxUint64)
	mustReject(math.MaxUint64)
	mustReject(199)
	if w.Highest() != math.MaxUint64 {
		t.Fatalf("Highest = %d", w.Highest())
	}
}

// TestReplayWindowModel compares the window with replayModel over random
// sequences: seeded, BOOTORBIT_SEED replays.
func TestReplayWindowModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 1))
	for range 200 {
		var w ReplayWindow
		model := newReplayModel()
		for range 500 {
			var seq uint64
			switch rng.IntN(4) {
			case 0:
				seq = model.top + 1 + uint64(rng.IntN(3))
			case 1:
				seq = model.top + uint64(rng.IntN(200))
			default:
				seq = max(model.top, 150) - uint64(rng.IntN(150))
			}
			fresh := model.fresh(seq)
			if err := w.Check(seq); (err == nil) != fresh {
				t.Fatalf("Check(%d) with top %d = %v, model says fresh=%v", seq, model.top, err, fresh)
			}
			if rng.IntN(3) > 0 {
				model.accept(t, &w, seq)
			}
		}
	}
}

func TestReplayWindowState(t *testing.T) {
	var w ReplayWindow
	for _, s := range []uint64{5, 1, 3, 70} {
		if err := w.Accept(s); err != nil {
			t.Fatal(err)
		}
	}
	b, err := w.MarshalBinary()
	if err != nil || len(b) != ReplayWindowStateLen {
		t.Fatalf("state %x, %v", b, err)
	}
	// top 70; accepted 70 (bit 0), 5 (65), 3 (67), 1 (69).
	want := hx("01 0000000000000046 0000000000000001 000000000000002a")
	if !bytes.Equal(b, want) {
		t.Fatalf("state %x, want %x", b, want)
	}
	for name, bad := range map[string][]byte{
		"empty":         nil,
		"short":         b[:24],
		"long":          append(append([]byte(nil), b...), 0),
		"version":       append([]byte{2}, b[1:]...),
		"bits, no top":  hx("01 0000000000000000 0000000000000001 0000000000000000"),
		"top unmarked":  hx("01 0000000000000005 0000000000000002 0000000000000000"),
		"bits below 1":  hx("01 0000000000000002 0000000000000005 0000000000000000"),
		"bits below 1b": hx("01 0000000000000040 0000000000000001 0000000000000001"),
	} {
		var w2 ReplayWindow
		if err := w2.UnmarshalBinary(bad); !errors.Is(err, ErrMalformed) || w2 != (ReplayWindow{}) {
			t.Errorf("%s: UnmarshalBinary = %v", name, err)
		}
	}
}

func TestReasons(t *testing.T) {
	seen := map[string]bool{}
	for r := Reason(0); r < NumReasons; r++ {
		s := r.String()
		if s == "" || s == "invalid" || seen[s] {
			t.Errorf("reason %d has name %q", r, s)
		}
		seen[s] = true
		if e := r.Err(); e != nil {
			if got := ReasonOf(e); got != r {
				t.Errorf("ReasonOf(%v) = %v, want %v", e, got, r)
			}
			if !strings.HasPrefix(e.Error(), "protocol: ") {
				t.Errorf("sentinel %q lacks the package prefix", e)
			}
		} else if r != ReasonNone && r != ReasonOther {
			t.Errorf("reason %v has no sentinel", r)
		}
	}
	if ReasonOf(nil) != ReasonNone || ReasonOf(errors.New("x")) != ReasonOther {
		t.Error("ReasonOf nil/other")
	}
	if NumReasons.String() != "invalid" {
		t.Error("out-of-range reason name")
	}
	var c Counters
	c.Count(nil)
	c.Count(errors.New("x"))
	c.Add(ReasonChecksum)
	c.Add(NumReasons) // ignored
	if c.Total() != 2 || c.Get(ReasonOther) != 1 || c.Get(ReasonChecksum) != 1 || c.Get(NumReasons) != 0 {
		t.Errorf("counters %v", c.Snapshot())
	}
}

// TestCommandPipeline runs commands the way a vehicle must: stream in,
// deframe, decode, check freshness, verify, accept and persist, and only
// then act. Replays, forgeries and corrupted frames are counted by reason and
// never act nor change the persisted window.
func TestCommandPipeline(t *testing.T) {
	ground := testKey(1)
	forger := testKey(9)
	kr, err := NewKeyring(Key{ID: 1, Pub: ground.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	c := mustCodec(t, 256)
	var uplink bytes.Buffer
	w := NewWriter(&uplink, c.MaxFrame())
	send := func(cmd Command, key ed25519.PrivateKey) []byte {
		if key != nil {
			if err := SignCommand(&cmd, 1, key); err != nil {
				t.Fatal(err)
			}
		}
		f, err := c.Encode(&cmd)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
		return f
	}
	first := send(Command{Vehicle: 42, Seq: 1, Opcode: 1}, ground)
	send(Command{Vehicle: 42, Seq: 3, Opcode: 3}, ground)
	send(Command{Vehicle: 42, Seq: 2, Opcode: 2}, ground)  // late, still fresh
	send(Command{Vehicle: 42, Seq: 4, Opcode: 66}, forger) // forged
	send(Command{Vehicle: 42, Seq: 4, Opcode: 66}, nil)    // unsigned
	_ = w.WriteFrame(first)                                // replayed bytes
	send(Command{Vehicle: 42, Seq: 4, Opcode: 4}, ground)  // genuine 4 still accepted
	corrupt := send(Command{Vehicle: 42, Seq: 5, Opcode: 5}, ground)
	stream := uplink.Bytes()
	// Corrupt the last frame on the wire (its record is the tail of the stream).
	stream[len(stream)-len(corrupt)/2] ^= 0x10

	var (
		window    ReplayWindow
		persisted []byte // the window state as flightd would have it on disk
		ctr       Counters
		executed  []uint16
	)
	persisted, _ = window.MarshalBinary()
	rd := NewReader(bytes.NewReader(stream), c.MaxFrame())
	for {
		f, err := rd.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil {
			ctr.Count(err)
			continue
		}
		m, err := c.Decode(f)
		if err != nil {
			ctr.Count(err)
			continue
		}
		cmd := m.(*Command)
		if err := window.Check(cmd.Seq); err != nil {
			ctr.Count(err)
			continue
		}
		if err := VerifyCommand(kr, cmd); err != nil {
			ctr.Count(err)
			continue
		}
		if err := window.Accept(cmd.Seq); err != nil {
			t.Fatal(err)
		}
		persisted, _ = window.MarshalBinary()
		executed = append(executed, cmd.Opcode)
	}
	if want := []uint16{1, 3, 2, 4}; !reflect.DeepEqual(executed, want) {
		t.Errorf("executed opcodes %v, want %v", executed, want)
	}
	for r, want := range map[Reason]uint64{ReasonBadSignature: 1, ReasonUnauthenticated: 1, ReasonReplayed: 1} {
		if got := ctr.Get(r); got != want {
			t.Errorf("%v count %d, want %d", r, got, want)
		}
	}
	if ctr.Get(ReasonChecksum)+ctr.Get(ReasonTruncated) != 1 || ctr.Total() != 4 {
		t.Errorf("counters %s", reasonCounts(&ctr))
	}
	var restored ReplayWindow
	if err := restored.UnmarshalBinary(persisted); err != nil || restored.Highest() != 4 {
		t.Fatalf("persisted window: highest %d, %v", restored.Highest(), err)
	}
	// After a restart, the old commands are still replays.
	for seq := uint64(1); seq <= 4; seq++ {
		if err := restored.Check(seq); !errors.Is(err, ErrReplayed) {
			t.Errorf("after restart, seq %d: %v", seq, err)
		}
	}
	t.Logf("executed %v; rejected: %s", executed, reasonCounts(&ctr))
}

// TestReasonNumbersStable pins the reason numbers: they travel in telemetry
// and verification codes, and docs/protocol.md §6 lists them.
func TestReasonNumbersStable(t *testing.T) {
	want := []string{"none", "other", "too-large", "truncated", "checksum", "version", "unknown-type",
		"malformed", "limit", "non-canonical", "invalid-field", "unauthenticated", "unknown-key",
		"bad-signature", "replayed", "stream-garbage", "wrong-vehicle", "rate-limited", "contradiction", "unknown-transfer"}
	if int(NumReasons) != len(want) {
		t.Fatalf("%d reasons, the pinned list has %d: append new ones, never renumber", NumReasons, len(want))
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range want {
		if got := Reason(i).String(); got != name {
			t.Errorf("reason %d is %q, want %q", i, got, name)
		}
		if row := fmt.Sprintf("| %d | %s |", i, name); !strings.Contains(string(doc), row) {
			t.Errorf("docs/protocol.md lacks the row %q", row)
		}
	}
}

// TestEnvelopeBoundsExact pins every CMD/TLM bound at its value: a message
// at the bound encodes and decodes, one past it is refused by Encode and,
// sealed by a careless peer, by Decode, with the same sentinel.
func TestEnvelopeBoundsExact(t *testing.T) {
	c := mustCodec(t, MaxMaxFrame)
	bstrArgs := func(n int) *Command { // args of exactly n bytes (n >= 259)
		a := append([]byte{0x59, byte((n - 3) >> 8), byte(n - 3)}, make([]byte, n-3)...)
		return &Command{Seq: 1, Args: a}
	}
	nestedArgs := func(levels int) *Command {
		return &Command{Seq: 1, Args: append(bytes.Repeat([]byte{0x81}, levels), 0)}
	}
	value := func(v any) *Telemetry { return &Telemetry{Params: []Param{{ID: 1, Value: v}}} }
	params := func(n int) *Telemetry {
		p := make([]Param, n)
		for i := range p {
			p[i] = Param{ID: uint16(i), Value: uint64(1)}
		}
		return &Telemetry{Params: p}
	}
	eventArgs := func(n int) *Event {
		a := make([]any, n)
		for i := range a {
			a[i] = uint64(i)
		}
		return &Event{Args: a}
	}
	for _, tc := range []struct {
		name     string
		at, over Message
		want     error
	}{
		{"command args bytes", bstrArgs(MaxCommandArgs), bstrArgs(MaxCommandArgs + 1), ErrLimit},
		{"command args nesting", nestedArgs(MaxArgsNesting), nestedArgs(MaxArgsNesting + 1), ErrLimit},
		{"text value", value(strings.Repeat("x", MaxValueLen)), value(strings.Repeat("x", MaxValueLen+1)), ErrInvalidField},
		{"byte value", value(make([]byte, MaxValueLen)), value(make([]byte, MaxValueLen+1)), ErrInvalidField},
		{"telemetry params", params(MaxParams), params(MaxParams + 1), ErrLimit},
		{"event text", &Event{Text: strings.Repeat("x", MaxEventText)}, &Event{Text: strings.Repeat("x", MaxEventText+1)}, ErrLimit},
		{"event args", eventArgs(MaxEventArgs), eventArgs(MaxEventArgs + 1), ErrLimit},
	} {
		f, err := c.Encode(tc.at)
		if err != nil {
			t.Errorf("%s at the bound: Encode: %v", tc.name, err)
		} else if _, err := c.Decode(f); err != nil {
			t.Errorf("%s at the bound: Decode: %v", tc.name, err)
		}
		if _, err := c.Encode(tc.over); !errors.Is(err, tc.want) {
			t.Errorf("%s past the bound: Encode: %v, want %v", tc.name, err, tc.want)
		}
		body, err := encMode.Marshal(tc.over)
		if err != nil {
			t.Fatal(err)
		}
		checkRejected(t, c, tc.name+" past the bound", seal(hdrFor(tc.over.Type()), body), tc.want)
	}
}

// TestSignatureDomainsDisjoint backs the claim in sign.go and
// docs/protocol.md §5.5: the transfer messages sign under their own
// prefixes (transfer_msg.go), none of which starts with the prefix every
// Sign message starts with, so a signature made for one kind never verifies as
// the other, even under the same key.
func TestSignatureDomainsDisjoint(t *testing.T) {
	for name, b := range map[string][]byte{
		"offer":  OfferSigningBytes(&Offer{ID: 1, Size: 1, ChunkSize: MinChunkSize}),
		"cancel": CancelSigningBytes(&Cancel{ID: 1, Reason: CancelByGround}),
	} {
		if bytes.HasPrefix(b, []byte(signPrefix)) {
			t.Errorf("%s signing bytes %q start with the Sign prefix %q", name, b, signPrefix)
		}
	}
}
