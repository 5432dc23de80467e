package protocol

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// seal wraps header+body bytes in a frame with a correct CRC trailer, so a
// test reaches the checks after the CRC.
func seal(parts ...[]byte) []byte {
	var f []byte
	for _, p := range parts {
		f = append(f, p...)
	}
	f = append(f, crcHead)
	return binary.BigEndian.AppendUint32(f, Checksum(f))
}

// sealWith is seal with another byte in place of the trailer's 0x44, and a
// CRC that matches it.
func sealWith(head byte, frame []byte) []byte {
	f := append(append([]byte(nil), frame...), head)
	return binary.BigEndian.AppendUint32(f, Checksum(f))
}

func hx(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// hdr is a good version-2 header for a test chunk.
var hdr = hx("84 02 18f0")

func hdrFor(t MsgType) []byte { return appendUint8([]byte{frameArrayHead, Version}, uint8(t)) }

// checkRejected decodes frame, requires the error to wrap want and to be
// counted under want's reason.
func checkRejected(t *testing.T, c *Codec, name string, frame []byte, want error) {
	t.Helper()
	var ctr Counters
	m, err := c.Decode(frame)
	if m != nil || err == nil {
		t.Errorf("%s: decoded %#v, want %v", name, m, want)
		return
	}
	r := ctr.Count(err)
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", name, err, want)
	}
	if r.Err() != want || ctr.Get(r) != 1 || ctr.Total() != 1 {
		t.Errorf("%s: reason %v (counters %v), want the reason of %v", name, r, ctr.Snapshot(), want)
	}
}

func TestDecodeMalformed(t *testing.T) {
	c := mustCodec(t, 1024)
	good := seal(hdr, hx("a2 01 07 04 42 dead"))
	if _, err := c.Decode(good); err != nil {
		t.Fatalf("control frame: %v", err)
	}
	for _, tc := range malformedCases() {
		checkRejected(t, c, tc.name, tc.frame, tc.want)
	}
	// The nesting bound is exact: a body MaxNesting deep decodes, one more
	// level does not.
	deep := func(levels int) []byte {
		return seal(hdrFor(typeTestAny), hx("a1 01"), bytes.Repeat([]byte{0x81}, levels-1), hx("00"))
	}
	// false, true and null are the simple values a body may hold.
	if _, err := c.Decode(seal(hdrFor(typeTestAny), hx("a1 01 83 f4 f5 f6"))); err != nil {
		t.Errorf("false, true, null: %v", err)
	}
	if _, err := c.Decode(deep(MaxNesting)); err != nil {
		t.Errorf("body %d deep: %v", MaxNesting, err)
	}
	checkRejected(t, c, "one level too deep", deep(MaxNesting+1), ErrLimit)
}

type malformedCase struct {
	name  string
	frame []byte
	want  error
}

// malformedCases are frames of every malformed kind with the sentinel each
// must yield (for a 1024-byte codec). good is a valid control frame.
func malformedCases() []malformedCase {
	good := seal(hdr, hx("a2 01 07 04 42 dead"))
	nested := bytes.Repeat([]byte{0x81}, 40)
	return []malformedCase{
		{"empty", nil, ErrTruncated},
		{"shorter than any frame", good[:MinFrameLen-1], ErrTruncated},
		{"oversized", make([]byte, 1025), ErrFrameTooLarge},
		{"zeros", make([]byte, 64), ErrChecksum},
		{"crc wrong", append(append([]byte(nil), good[:len(good)-1]...), good[len(good)-1]^1), ErrChecksum},
		{"trailer not a 4-byte bstr", append(append([]byte(nil), good[:len(good)-5]...), 0x45, 0, 0, 0, 0), ErrChecksum},
		{"trailer head 45, crc matching", sealWith(0x45, good[:len(good)-5]), ErrChecksum},
		{"trailing byte after crc", append(append([]byte(nil), good...), 0), ErrChecksum},
		{"two frames", append(append([]byte(nil), good...), good...), ErrChecksum},
		{"head not array(4)", seal(hx("83 02 18f0"), hx("a0")), ErrMalformed},
		{"head not an array", seal(hx("a4 01 18f0"), hx("a0")), ErrMalformed},
		{"head array(24)", seal(hx("98 18 01 18f0"), hx("a0")), ErrMalformed},
		{"version 3 with 5 elements", seal(hx("85 03 18f0"), hx("a0 00")), ErrVersion},
		{"version 1", seal(hx("84 01 18f0"), hx("a0")), ErrVersion},
		{"version 0", seal(hx("84 00 18f0"), hx("a0")), ErrVersion},
		{"version 300", seal(hx("84 19012c 18f0"), hx("a0")), ErrVersion},
		{"version 1 non-shortest", seal(hx("84 1801 18f0"), hx("a0")), ErrNonCanonical},
		{"version is text", seal(hx("84 6131 18f0"), hx("a0")), ErrMalformed},
		{"version is negative", seal(hx("84 20 18f0"), hx("a0")), ErrMalformed},
		{"unknown type 30", seal(hx("84 02 181e"), hx("a0")), ErrUnknownType},
		{"unknown type 0", seal(hx("84 02 00"), hx("a0")), ErrUnknownType},
		{"unregistered small type", seal(hdrFor(typeTestSmall), hx("a0")), ErrUnknownType},
		{"type 70000", seal(hx("84 02 1a00011170"), hx("a0")), ErrUnknownType},
		{"type non-shortest", seal(hx("84 02 1802"), hx("a0")), ErrNonCanonical},
		{"type 23 non-shortest", seal(hx("84 02 1817"), hx("a0")), ErrNonCanonical},
		{"type 24 unknown", seal(hx("84 02 1818"), hx("a0")), ErrUnknownType},
		{"type is bytes", seal(hx("84 02 41f0"), hx("a0")), ErrMalformed},
		{"empty body", seal(hdr), ErrMalformed},
		{"body truncated", seal(hdr, hx("a2 01 07 04 43 dead")), ErrMalformed},
		{"body trailing bytes", seal(hdr, hx("a1 01 07 00")), ErrMalformed},
		{"body two items", seal(hdr, hx("a0 a0")), ErrMalformed},
		{"reserved additional info", seal(hdr, hx("a1 01 1c")), ErrMalformed},
		{"break outside indefinite", seal(hdr, hx("a1 01 ff")), ErrMalformed},
		{"indefinite-length bstr", seal(hdr, hx("a1 04 5f 41 00 ff")), ErrMalformed},
		{"indefinite-length map", seal(hdr, hx("bf 01 07 ff")), ErrMalformed},
		{"tag", seal(hdr, hx("a1 04 c2 41 00")), ErrMalformed},
		{"duplicate key", seal(hdr, hx("a2 01 07 01 08")), ErrMalformed},
		{"huge declared bstr", seal(hdr, hx("a1 04 5a ffffffff")), ErrMalformed},
		{"huge declared bstr 64-bit", seal(hdr, hx("a1 04 5b ffffffffffffffff 00")), ErrMalformed},
		{"huge declared text", seal(hdr, hx("a1 04 7a 7fffffff 61")), ErrMalformed},
		{"huge declared map", seal(hdr, hx("ba ffffffff 01 07")), ErrLimit},
		{"huge declared array", seal(hdrFor(typeTestAny), hx("a1 01 9a ffffffff 00")), ErrLimit},
		{"map count beyond frame", seal(hdr, hx("b9 0400 01 07")), ErrLimit},
		{"nesting bomb", seal(hdrFor(typeTestAny), hx("a1 01"), nested, hx("00")), ErrLimit},
		{"map nesting bomb", seal(hdrFor(typeTestAny), bytes.Repeat(hx("a1 01"), 20), hx("00")), ErrLimit},
		{"wrong type: text for bytes", seal(hdr, hx("a1 04 63 616263")), ErrInvalidField},
		{"wrong type: bytes for uint", seal(hdr, hx("a1 01 41 07")), ErrInvalidField},
		{"wrong type: negative for uint", seal(hdr, hx("a1 01 20")), ErrInvalidField},
		{"wrong type: float for uint", seal(hdr, hx("a1 01 f93c00")), ErrInvalidField},
		{"wrong type: uint overflows uint32", seal(hdr, hx("a2 01 07 02 1b 0000000100000000")), ErrInvalidField},
		{"wrong type: body is an array", seal(hdr, hx("82 07 08")), ErrInvalidField},
		{"wrong type: body is an int", seal(hdr, hx("07")), ErrInvalidField},
		{"unknown key", seal(hdr, hx("a2 01 07 09 01")), ErrInvalidField},
		{"text key", seal(hdr, hx("a1 61 31 07")), ErrInvalidField},
		{"non-shortest int", seal(hdr, hx("a1 01 1807")), ErrNonCanonical},
		{"non-shortest length", seal(hdr, hx("a1 04 5801 aa")), ErrNonCanonical},
		{"non-shortest key", seal(hdr, hx("a1 1801 07")), ErrNonCanonical},
		{"unsorted keys", seal(hdr, hx("a2 04 41 aa 01 07")), ErrNonCanonical},
		{"explicit zero of omitempty field", seal(hdr, hx("a3 01 07 02 00 04 40")), ErrNonCanonical},
		{"absent non-omitempty field", seal(hdr, hx("a1 01 07")), ErrNonCanonical},
		{"validate: range", seal(hdrFor(typeTestBound), hx("a1 01 1903e9")), ErrInvalidField},
		{"validate: own sentinel", seal(hdrFor(typeTestBound), hx("a1 02 89 000000000000000000")), ErrLimit},
		{"invalid utf-8 text", seal(hdrFor(typeTestBound), hx("a1 03 62 fffe")), ErrMalformed},
		{"simple value undefined", seal(hdrFor(typeTestAny), hx("a1 01 f7")), ErrMalformed},
		{"simple value 16", seal(hdrFor(typeTestAny), hx("a1 01 f0")), ErrMalformed},
		{"simple value 255", seal(hdrFor(typeTestAny), hx("a1 01 f8ff")), ErrMalformed},
	}
}

// TestDecodeTruncatedEveryOffset cuts a valid frame at every length: a cut
// below the minimum frame is ErrTruncated, any other is ErrChecksum (the CRC
// is what detects a cut datagram); never a panic, never a message.
func TestDecodeTruncatedEveryOffset(t *testing.T) {
	c := mustCodec(t, 1024)
	for _, m := range sampleMessages(t) {
		f, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(f); n++ {
			want := ErrChecksum
			if n < MinFrameLen {
				want = ErrTruncated
			}
			checkRejected(t, c, m.Type().String()+" cut", f[:n], want)
		}
	}
}

// TestDecodeBitFlips flips every bit of valid frames: always ErrChecksum.
func TestDecodeBitFlips(t *testing.T) {
	c := mustCodec(t, 1024)
	for _, m := range sampleMessages(t) {
		f, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		g := make([]byte, len(f))
		for i := range len(f) * 8 {
			copy(g, f)
			g[i/8] ^= 1 << (i % 8)
			checkRejected(t, c, m.Type().String()+" flip", g, ErrChecksum)
		}
	}
}

// TestDecodeGarbage feeds random bytes of random lengths, and random bytes
// sealed with a correct CRC (reaching the parser). Seeded; BOOTORBIT_SEED replays.
func TestDecodeGarbage(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	c := mustCodec(t, 1024)
	var ctr Counters
	for range 20000 {
		b := make([]byte, rng.IntN(1100))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if rng.IntN(2) == 0 && len(b) >= 4 {
			// A plausible header, random body, correct CRC.
			b = seal(hdrFor(pickType(rng)), b[:len(b)/2])
		}
		m, err := c.Decode(b)
		if err == nil {
			// Random bytes may form a valid frame; then it must round-trip.
			f, err := c.Encode(m)
			if err != nil || !bytes.Equal(f, b) {
				t.Fatalf("decoded garbage %x does not re-encode: %x, %v", b, f, err)
			}
			continue
		}
		if r := ctr.Count(err); r == ReasonOther {
			t.Fatalf("garbage %x: unclassified error %v", b, err)
		}
	}
	t.Logf("rejections by reason: %v", reasonCounts(&ctr))
}

func pickType(rng *rand.Rand) MsgType {
	types := []MsgType{typeTestChunk, typeTestAny, typeTestBound, TypeCommand, TypeVerification, TypeTelemetry, TypeEvent}
	return types[rng.IntN(len(types))]
}

func reasonCounts(c *Counters) string {
	var parts []string
	for r, n := range c.Snapshot() {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%v=%d", Reason(r), n))
		}
	}
	return strings.Join(parts, " ")
}

// distinctPairs returns n map pairs {k: 0} with distinct 2-byte keys.
func distinctPairs(n int) []byte {
	var b []byte
	for k := range n {
		b = append(b, 0x19, byte(k>>8), byte(k), 0)
	}
	return b
}

// TestDecodeAllocationBounded decodes frames declaring huge lengths and
// counts: the bytes allocated per decode stay proportional to the frame,
// nowhere near the declared sizes.
func TestDecodeAllocationBounded(t *testing.T) {
	c := mustCodec(t, 65536)
	frames := map[string][]byte{
		"bstr 4 GiB":         seal(hdr, hx("a1 04 5a ffffffff")),
		"bstr 2^64":          seal(hdr, hx("a1 04 5b ffffffffffffffff")),
		"array 4 G elements": seal(hdrFor(typeTestAny), hx("a1 01 9a ffffffff"), make([]byte, 1000)),
		"array 60000 ints":   seal(hdrFor(typeTestAny), hx("a1 01 99 ea60"), make([]byte, 1000)),
		"map 4 G pairs":      seal(hdrFor(typeTestAny), hx("a1 01 ba ffffffff"), make([]byte, 1000)),
		"nested arrays":      seal(hdrFor(typeTestAny), hx("a1 01"), bytes.Repeat([]byte{0x81}, 60000)),
		"telemetry params":   seal(hdrFor(TypeTelemetry), hx("a1 05 99 ffff"), bytes.Repeat(hx("820000"), 1000)),
		// Well formed, every element present: the decoder could allocate
		// for all of them (16 bytes per 1-byte element in a []any) unless
		// the count is bounded before.
		"event args 65000 present":   seal(hdrFor(TypeEvent), hx("a1 07 99 fde8"), make([]byte, 65000)),
		"telemetry params present":   seal(hdrFor(TypeTelemetry), hx("a1 05 99 5500"), bytes.Repeat(hx("820000"), 0x5500)),
		"command args 60000 present": seal(hdrFor(TypeCommand), hx("a2 03 01 05 99 ea60"), make([]byte, 60000)),
		// The same list bomb one level down, as a value: values are scalars,
		// so the list is rejected by its head, not decoded first.
		"param value 65000 present": seal(hdrFor(TypeTelemetry), hx("a1 05 81 82 01 99 fde8"), make([]byte, 65000)),
		"event arg 65000 present":   seal(hdrFor(TypeEvent), hx("a1 07 81 99 fde8"), make([]byte, 65000)),
		"event arg map present":     seal(hdrFor(TypeEvent), hx("a1 07 81 b9 3f00"), distinctPairs(0x3f00)),
	}
	for _, tc := range malformedCases() {
		if len(tc.frame) <= c.MaxFrame() {
			frames["malformed: "+tc.name] = tc.frame
		}
	}
	for name, f := range frames {
		if _, err := c.Decode(f); err == nil {
			t.Fatalf("%s: decoded", name)
		}
		const runs = 50
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range runs {
			_, _ = c.Decode(f)
		}
		runtime.ReadMemStats(&after)
		per := (after.TotalAlloc - before.TotalAlloc) / runs
		allocs := testing.AllocsPerRun(runs, func() { _, _ = c.Decode(f) })
		t.Logf("%-30s frame %5d bytes: %6d bytes, %4.0f allocations per decode", name, len(f), per, allocs)
		if per > 4*uint64(len(f))+4096 {
			t.Errorf("%s: %d bytes allocated per decode of a %d-byte frame", name, per, len(f))
		}
	}
}
