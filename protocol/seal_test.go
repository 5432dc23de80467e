package protocol

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// seqFunc adapts a function to SeqSource.
type seqFunc func() (uint32, error)

func (f seqFunc) Next() (uint32, error) { return f() }

// seqFrom counts up from first, without persistence: for tests only.
func seqFrom(first uint32) SeqSource {
	n := first
	return seqFunc(func() (uint32, error) { n++; return n - 1, nil })
}

// sealKey derives a test seal key from a byte.
func sealKey(id KeyID, b byte) SealKey {
	return SealKey{ID: id, Key: bytes.Repeat([]byte{b}, SealKeyLen)}
}

func mustSealer(t testing.TB, vehicle uint32, k SealKey, maxFrame int, seqs SeqSource) *Sealer {
	t.Helper()
	s, err := NewSealer(SealerConfig{Vehicle: vehicle, Key: k, MaxFrame: maxFrame, Seqs: seqs})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustOpener(t testing.TB, vehicle uint32, maxFrame int, keys ...SealKey) *Opener {
	t.Helper()
	o, err := NewOpener(OpenerConfig{Vehicle: vehicle, MaxFrame: maxFrame, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func mustSeal(t testing.TB, s *Sealer, frame []byte) []byte {
	t.Helper()
	b, err := s.Seal(frame)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixCRC recomputes the CRC trailer of a frame, so that a tampered frame
// reaches the checks after the CRC.
func fixCRC(f []byte) []byte {
	f = append([]byte(nil), f...)
	binary.BigEndian.PutUint32(f[len(f)-4:], Checksum(f[:len(f)-4]))
	return f
}

// fullChunk returns a test chunk frame of exactly n bytes.
func fullChunk(t testing.TB, c *Codec, n int) []byte {
	t.Helper()
	for d := n; d > 0; d-- {
		f, err := c.Encode(&testChunk{Transfer: 1, Part: 1, Index: 1, Data: bytes.Repeat([]byte{0xa5}, d)})
		if err == nil && len(f) == n {
			return f
		}
	}
	t.Fatalf("no test chunk frame of %d bytes", n)
	return nil
}

// TestSealRoundTrip: every sample message, and a frame of the largest inner
// size, sealed under the longest key id and sequence number, fits the link
// and opens to the identical frame, which decodes.
func TestSealRoundTrip(t *testing.T) {
	for _, link := range []int{MinMaxFrame, 1024, MaxMaxFrame} {
		inner, err := NewInnerCodec(link)
		if err != nil {
			t.Fatal(err)
		}
		if inner.MaxFrame() != InnerMaxFrame(link) {
			t.Fatalf("inner codec max %d, want %d", inner.MaxFrame(), InnerMaxFrame(link))
		}
		k := sealKey(MaxSealSeq, 7)
		s := mustSealer(t, 42, k, link, seqFrom(MaxSealSeq-100))
		o := mustOpener(t, 42, link, sealKey(1, 9), k)
		frames := [][]byte{fullChunk(t, inner, inner.MaxFrame())}
		for _, m := range sampleMessages(t) {
			f, err := inner.Encode(m)
			if err != nil {
				continue // too big for the smallest link
			}
			frames = append(frames, f)
		}
		for _, f := range frames {
			sealed := mustSeal(t, s, f)
			if len(sealed) > link {
				t.Fatalf("link %d: a %d-byte frame sealed is %d bytes", link, len(f), len(sealed))
			}
			if bytes.Contains(sealed, f[2:len(f)-5]) {
				t.Errorf("link %d: sealed frame contains its plaintext", link)
			}
			got, err := o.Open(sealed)
			if err != nil || !bytes.Equal(got, f) {
				t.Fatalf("link %d: opens to %x, %v; want %x", link, got, err, f)
			}
			if _, err := inner.Decode(got); err != nil {
				t.Fatalf("link %d: opened frame does not decode: %v", link, err)
			}
		}
		if len(mustSeal(t, s, frames[0])) != link {
			t.Errorf("link %d: the largest inner frame does not fill the link at worst", link)
		}
		if _, err := s.Seal(fullChunk(t, mustCodec(t, link), inner.MaxFrame()+1)); !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("link %d: sealing a frame over the inner max: %v", link, err)
		}
	}
}

// TestSealOverhead measures what sealing adds to a frame, for the figures
// of docs/protocol.md §8.3: go test ./protocol -run SealOverhead -v.
func TestSealOverhead(t *testing.T) {
	for _, link := range []int{256, 1024} {
		inner, _ := NewInnerCodec(link)
		f := fullChunk(t, inner, inner.MaxFrame())
		for _, tc := range []struct {
			id  KeyID
			seq uint32
		}{{1, 1}, {1, 200}, {1, 60000}, {1, 100000}, {MaxSealSeq, MaxSealSeq}} {
			s := mustSealer(t, 42, sealKey(tc.id, 1), link, seqFrom(tc.seq))
			got := len(mustSeal(t, s, f)) - len(f)
			h := 2
			if len(f)-7+SealTagLen >= 256 {
				h = 3
			}
			if want := 18 + len(appendCBORHead(nil, 0, uint64(tc.id))) + len(appendCBORHead(nil, 0, uint64(tc.seq))) + h; got != want {
				t.Errorf("link %d, key %d, seq %d: overhead %d, formula %d", link, tc.id, tc.seq, got, want)
			}
			if got > SealOverhead(link) {
				t.Errorf("link %d: overhead %d over SealOverhead %d", link, got, SealOverhead(link))
			}
			t.Logf("link %4d B: key id %d, seq %d: a %d-byte frame seals to %d: +%d bytes (%.1f%% of the link frame)",
				link, tc.id, tc.seq, len(f), len(f)+got, got, 100*float64(got)/float64(link))
		}
		t.Logf("link %4d B: inner max frame %d (SealOverhead %d reserved)", link, inner.MaxFrame(), SealOverhead(link))
	}
}

// TestOpenRejects: every way a frame can be wrong is refused with its
// reason, counted, and never opens.
func TestOpenRejects(t *testing.T) {
	const link = 1024
	inner, _ := NewInnerCodec(link)
	k1, k2 := sealKey(1, 1), sealKey(2, 2)
	o := mustOpener(t, 42, link, k1, k2)
	plain, err := inner.Encode(&Chunk{ID: 7, Index: 3, Data: []byte("confidential payload bytes")})
	if err != nil {
		t.Fatal(err)
	}
	good := mustSeal(t, mustSealer(t, 42, k1, link, seqFrom(1000)), plain)
	if got, err := o.Open(good); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("good frame: %x, %v", got, err)
	}
	// A key under id 3 with the same bytes as key 1: moving a frame from id
	// 1 to id 3 must still fail, the id being bound.
	oSame := mustOpener(t, 42, link, k1, sealKey(3, 1))
	toID3 := append([]byte(nil), good...)
	toID3[4] = 3 // the key id, one byte

	tamperedSeq := append([]byte(nil), good...)
	tamperedSeq[7]++ // 19 03 e8: the sequence number's low byte
	// 84 01 0f 83 | 01 | 19 03 e8 | 58 33 | box: the box head is at 8.
	const headAt, boxAt = 8, 10
	tamperedBox := append([]byte(nil), good...)
	tamperedBox[boxAt+3] ^= 0x10
	tamperedTag := append([]byte(nil), good...)
	tamperedTag[len(good)-6] ^= 1

	cases := []struct {
		name   string
		o      *Opener
		frame  []byte
		want   error
		reason Reason
	}{
		{"wrong key", o, mustSeal(t, mustSealer(t, 42, sealKey(1, 99), link, seqFrom(1)), plain), ErrDecrypt, ReasonBadSignature},
		{"wrong vehicle", o, mustSeal(t, mustSealer(t, 43, k1, link, seqFrom(1)), plain), ErrDecrypt, ReasonBadSignature},
		{"unknown key id", o, mustSeal(t, mustSealer(t, 42, sealKey(9, 1), link, seqFrom(1)), plain), ErrUnknownKey, ReasonUnknownKey},
		{"plaintext", o, plain, ErrPlaintext, ReasonUnauthenticated},
		{"plaintext unknown type", o, seal(hdrFor(200), hx("a0")), ErrPlaintext, ReasonUnauthenticated},
		{"key id moved", oSame, fixCRC(toID3), ErrDecrypt, ReasonBadSignature},
		{"seq changed", o, fixCRC(tamperedSeq), ErrDecrypt, ReasonBadSignature},
		{"ciphertext byte", o, fixCRC(tamperedBox), ErrDecrypt, ReasonBadSignature},
		{"tag byte", o, fixCRC(tamperedTag), ErrDecrypt, ReasonBadSignature},
		{"tampered, CRC not fixed", o, tamperedBox, ErrChecksum, ReasonChecksum},
		{"truncated", o, good[:len(good)-20], ErrChecksum, ReasonChecksum},
		{"truncated box, CRC fixed", o, seal(good[:3], hx("83 01 19 03e8 58 20"), good[boxAt:boxAt+32]), ErrDecrypt, ReasonBadSignature},
		{"box shorter than a tag", o, seal(good[:3], hx("83 01 19 03e8 50"), good[boxAt:boxAt+16]), ErrInvalidField, ReasonInvalidField},
		{"seq 0", o, seal(good[:3], hx("83 01 00"), good[headAt:len(good)-5]), ErrInvalidField, ReasonInvalidField},
		{"seq over 32 bits", o, seal(good[:3], hx("83 01 1b 0000000100000000"), good[headAt:len(good)-5]), ErrInvalidField, ReasonInvalidField},
		{"non-canonical seq", o, seal(good[:3], hx("83 01 1a 000003e8"), good[headAt:len(good)-5]), ErrNonCanonical, ReasonNonCanonical},
		{"map body", o, seal(good[:3], hx("a1 01 01")), ErrInvalidField, ReasonInvalidField},
		{"two elements", o, seal(good[:3], hx("82 01 01")), ErrInvalidField, ReasonInvalidField},
		{"trailing bytes", o, seal(good[:len(good)-5], hx("00")), ErrMalformed, ReasonMalformed},
		{"other version", o, fixCRC(append([]byte{0x84, Version + 1}, good[2:]...)), ErrVersion, ReasonVersion},
		{"too large", o, make([]byte, link+1), ErrFrameTooLarge, ReasonTooLarge},
		{"empty", o, nil, ErrTruncated, ReasonTruncated},
	}
	for _, tc := range cases {
		var ctr Counters
		got, err := tc.o.Open(tc.frame)
		if err == nil || got != nil {
			t.Errorf("%s: opened to %x, %v", tc.name, got, err)
			continue
		}
		if r := ctr.Count(err); !errors.Is(err, tc.want) || r != tc.reason || ctr.Get(r) != 1 {
			t.Errorf("%s: %v counted as %v, want %v (%v)", tc.name, err, r, tc.want, tc.reason)
		}
		dst := []byte("kept")
		if out, _ := tc.o.AppendOpen(dst, tc.frame); !bytes.Equal(out, dst) {
			t.Errorf("%s: AppendOpen changed dst to %q", tc.name, out)
		}
	}
}

// TestOpenEveryCutAndFlip: a sealed frame cut at every length, or with any
// bit flipped (with the CRC fixed or not), never opens, and every refusal
// has a reason.
func TestOpenEveryCutAndFlip(t *testing.T) {
	const link = 256
	inner, _ := NewInnerCodec(link)
	k := sealKey(5, 5)
	o := mustOpener(t, 42, link, k)
	plain, _ := inner.Encode(&ReportRequest{ID: 9, Seq: 4})
	good := mustSeal(t, mustSealer(t, 42, k, link, seqFrom(77)), plain)
	var ctr Counters
	try := func(what string, f []byte) {
		t.Helper()
		got, err := o.Open(f)
		if err == nil {
			t.Fatalf("%s opened to %x", what, got)
		}
		if ctr.Count(err) == ReasonOther {
			t.Fatalf("%s: unclassified %v", what, err)
		}
	}
	for n := range len(good) {
		try(fmt.Sprintf("cut at %d", n), good[:n])
		try(fmt.Sprintf("cut at %d, CRC fixed", n), seal(good[:max(0, n-5)]))
	}
	for i := range 8 * (len(good) - 4) {
		f := append([]byte(nil), good...)
		f[i/8] ^= 1 << (i % 8)
		try(fmt.Sprintf("bit %d flipped", i), f)
		try(fmt.Sprintf("bit %d flipped, CRC fixed", i), fixCRC(f))
	}
	t.Logf("refusals by reason: %s", reasonCounts(&ctr))
}

// TestSealKeyRotation: the vehicle holds ids 1 and 2; the ground seals
// under 1, then switches to 2; both open. Configured without 1, the
// vehicle refuses 1 as an unknown key and still opens 2.
func TestSealKeyRotation(t *testing.T) {
	const link = 1024
	inner, _ := NewInnerCodec(link)
	old, cur := sealKey(1, 1), sealKey(2, 2)
	plain, _ := inner.Encode(&ReportRequest{ID: 1, Seq: 1})
	onOld := mustSeal(t, mustSealer(t, 42, old, link, seqFrom(1)), plain)
	onCur := mustSeal(t, mustSealer(t, 42, cur, link, seqFrom(1)), plain)
	both := mustOpener(t, 42, link, old, cur)
	for _, f := range [][]byte{onOld, onCur} {
		if got, err := both.Open(f); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("during rotation: %x, %v", got, err)
		}
	}
	after := mustOpener(t, 42, link, cur)
	if _, err := after.Open(onOld); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("old key after rotation: %v, want unknown key", err)
	}
	if got, err := after.Open(onCur); err != nil || !bytes.Equal(got, plain) {
		t.Errorf("new key after rotation: %x, %v", got, err)
	}
}

// TestSealCounter: numbers are handed out only below a recorded mark, a
// restart from the recorded mark never repeats one, a failed save hands
// out nothing, and the last number is the last.
func TestSealCounter(t *testing.T) {
	var saved []uint32
	var fail bool
	save := func(m uint32) error {
		if fail {
			return errors.New("disk full")
		}
		saved = append(saved, m)
		return nil
	}
	seen := map[uint32]bool{}
	var stored uint32
	for restart := range 5 {
		c, err := NewSealCounter(stored, 4, save)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 + restart {
			seq, err := c.Next()
			if err != nil {
				t.Fatal(err)
			}
			if seen[seq] || seq == 0 || seq > c.Mark() {
				t.Fatalf("restart %d: seq %d (mark %d) seen before or not reserved", restart, seq, c.Mark())
			}
			seen[seq] = true
		}
		stored = saved[len(saved)-1] // the power cut: only the mark survives
	}
	if want := []uint32{4, 8, 12, 16, 20, 24, 28, 32}; fmt.Sprint(saved) != fmt.Sprint(want) {
		t.Errorf("marks %v, want %v", saved, want)
	}

	c, _ := NewSealCounter(0, 10, save)
	fail = true
	if seq, err := c.Next(); err == nil || seq != 0 || c.Mark() != 0 {
		t.Errorf("failed save: seq %d, %v, mark %d", seq, err, c.Mark())
	}
	fail = false
	if seq, err := c.Next(); err != nil || seq != 1 {
		t.Errorf("after a failed save: %d, %v", seq, err)
	}

	c, _ = NewSealCounter(MaxSealSeq-1, 10, save)
	if seq, err := c.Next(); err != nil || seq != MaxSealSeq || c.Mark() != MaxSealSeq {
		t.Errorf("last number: %d, %v, mark %d", seq, err, c.Mark())
	}
	if _, err := c.Next(); !errors.Is(err, ErrSealExhausted) {
		t.Errorf("past the last number: %v", err)
	}
	s := mustSealer(t, 1, sealKey(1, 1), 256, c)
	inner, _ := NewInnerCodec(256)
	f, _ := inner.Encode(&ReportRequest{ID: 1, Seq: 1})
	if out, err := s.AppendSeal([]byte("x"), f); !errors.Is(err, ErrSealExhausted) || string(out) != "x" {
		t.Errorf("sealing with an exhausted key: %q, %v", out, err)
	}
	if _, err := NewSealCounter(0, 0, save); err == nil {
		t.Error("block 0 accepted")
	}
}

// TestSealConfig: configurations that cannot work are refused.
func TestSealConfig(t *testing.T) {
	k := sealKey(1, 1)
	var many []SealKey
	for i := range MaxSealKeys + 1 {
		many = append(many, sealKey(KeyID(i), byte(i)))
	}
	for name, cfg := range map[string]OpenerConfig{
		"no keys":      {MaxFrame: 256},
		"too many":     {MaxFrame: 256, Keys: many},
		"duplicate id": {MaxFrame: 256, Keys: []SealKey{k, sealKey(1, 2)}},
		"short key":    {MaxFrame: 256, Keys: []SealKey{{ID: 1, Key: make([]byte, 16)}}},
		"small frame":  {MaxFrame: 255, Keys: []SealKey{k}},
	} {
		if _, err := NewOpener(cfg); err == nil {
			t.Errorf("opener %s accepted", name)
		}
	}
	if _, err := NewOpener(OpenerConfig{MaxFrame: 256, Keys: many[:MaxSealKeys]}); err != nil {
		t.Errorf("opener with %d keys: %v", MaxSealKeys, err)
	}
	for name, cfg := range map[string]SealerConfig{
		"no seqs":     {MaxFrame: 256, Key: k},
		"long key":    {MaxFrame: 256, Key: SealKey{ID: 1, Key: make([]byte, 33)}, Seqs: seqFrom(1)},
		"large frame": {MaxFrame: MaxMaxFrame + 1, Key: k, Seqs: seqFrom(1)},
	} {
		if _, err := NewSealer(cfg); err == nil {
			t.Errorf("sealer %s accepted", name)
		}
	}
	s := mustSealer(t, 1, k, 256, seqFrom(1))
	inner, _ := NewInnerCodec(256)
	f, _ := inner.Encode(&ReportRequest{ID: 1, Seq: 1})
	for name, bad := range map[string][]byte{
		"bad crc":    append(append([]byte(nil), f[:len(f)-1]...), f[len(f)-1]^1),
		"short":      f[:5],
		"sealed":     mustSeal(t, s, f),
		"other head": fixCRC(append([]byte{0x83}, f[1:]...)),
	} {
		if _, err := s.Seal(bad); err == nil || ReasonOf(err) == ReasonOther {
			t.Errorf("sealing %s: %v", name, err)
		}
	}
	if _, err := s.Seal(f); err != nil {
		t.Fatal(err)
	}
	zero := mustSealer(t, 1, k, 256, seqFunc(func() (uint32, error) { return 0, nil }))
	if _, err := zero.Seal(f); err == nil {
		t.Error("sealed with sequence number 0")
	}
}

// TestSealKeyNotPrinted: printing a key or a configuration that holds one
// does not print the key's bytes.
func TestSealKeyNotPrinted(t *testing.T) {
	k := SealKey{ID: 3, Key: bytes.Repeat([]byte{0xab}, SealKeyLen)}
	cfg := SealerConfig{Vehicle: 1, Key: k, MaxFrame: 256}
	ocfg := OpenerConfig{Vehicle: 1, MaxFrame: 256, Keys: []SealKey{k}}
	for _, s := range []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k),
		fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), fmt.Sprintf("%v %+v %#v", ocfg, ocfg, ocfg),
	} {
		if strings.Contains(s, "ab") || strings.Contains(s, "171") || strings.Contains(s, "\xab") {
			t.Errorf("key bytes printed: %s", s)
		}
	}
}

// TestSealConcurrent: one Sealer and one Opener used from several
// goroutines (run with -race).
func TestSealConcurrent(t *testing.T) {
	k := sealKey(1, 1)
	c, _ := NewSealCounter(0, 16, func(uint32) error { return nil })
	s := mustSealer(t, 42, k, 256, c)
	o := mustOpener(t, 42, 256, k)
	inner, _ := NewInnerCodec(256)
	f, _ := inner.Encode(&ReportRequest{ID: 1, Seq: 1})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for range 200 {
				b, err := s.Seal(f)
				if err == nil {
					_, err = o.Open(b)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if c.Mark() < 800 {
		t.Errorf("mark %d after 800 seals", c.Mark())
	}
}

// The example of docs/protocol.md §8: the key 00 01 .. 1f under id 1 seals
// for vehicle 42, with sequence number 1, the report request {id 7, seq 1}.
func specSealExample(t testing.TB) (key SealKey, plain, sealed []byte) {
	key = SealKey{ID: 1, Key: make([]byte, SealKeyLen)}
	for i := range key.Key {
		key.Key[i] = byte(i)
	}
	inner, _ := NewInnerCodec(256)
	plain, err := inner.Encode(&ReportRequest{ID: 7, Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	return key, plain, mustSeal(t, mustSealer(t, 42, key, 256, seqFrom(1)), plain)
}

// TestSealSpec keeps docs/protocol.md §8 honest: the example frames are what
// this implementation produces, and the stated bounds are the constants.
func TestSealSpec(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- seal-example:([a-z-]+) -->\n```hex\n(.*?)```")
	examples := map[string][]byte{}
	for _, m := range re.FindAllSubmatch(raw, -1) {
		b, err := hex.DecodeString(strings.Join(strings.Fields(string(m[2])), ""))
		if err != nil {
			t.Fatalf("example %s: %v", m[1], err)
		}
		examples[string(m[1])] = b
	}
	key, plain, sealed := specSealExample(t)
	if !bytes.Equal(examples["plain"], plain) {
		t.Errorf("plain example:\n%x\nimplementation:\n%x", examples["plain"], plain)
	}
	if !bytes.Equal(examples["sealed"], sealed) {
		t.Errorf("sealed example:\n%x\nimplementation:\n%x", examples["sealed"], sealed)
	}
	if got, err := mustOpener(t, 42, 256, key).Open(examples["sealed"]); err != nil || !bytes.Equal(got, plain) {
		t.Errorf("sealed example opens to %x, %v", got, err)
	}
	ad, nonce := sealAssoc(42, 1), sealNonce(42, 1, 1)
	doc := strings.Join(strings.Fields(string(raw)), " ")
	for _, phrase := range []string{
		spaced(ad[:]), spaced(nonce[:]),
		fmt.Sprintf("| %d | sealed |", TypeSealed),
		fmt.Sprintf("(at most %d keys, `MaxSealKeys`)", MaxSealKeys),
		"up to 2^32 − 1 (`MaxSealSeq`)",
		fmt.Sprintf("reserves %d bytes on links of at most 268 bytes and %d on larger ones (`SealOverhead`)", SealOverhead(256), SealOverhead(1024)),
	} {
		if !strings.Contains(doc, phrase) {
			t.Errorf("docs/protocol.md does not say %q", phrase)
		}
	}
}

// FuzzOpen: Open never panics, every refusal has a reason, what opens fits
// the bounds, and sealing what opened with the same key and sequence number
// gives back the identical bytes: a sealed frame has one encoding, so no
// altered copy of a genuine frame opens. Seeds: testdata/fuzz/FuzzOpen
// (sealed frames of every sample message, cut, tampered and plain ones).
func FuzzOpen(f *testing.F) {
	for _, seed := range sealFuzzSeeds(f) {
		f.Add(seed)
	}
	keys := []SealKey{sealKey(1, 1), sealKey(MaxSealSeq, 2)}
	links := []int{MinMaxFrame, MaxMaxFrame}
	var openers []*Opener
	for _, link := range links {
		openers = append(openers, mustOpener(f, 42, link, keys...))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		// The input as a frame, and as the body of a sealed frame with a
		// good header and CRC, so that mutations reach the body's parser
		// and the key lookup instead of dying at the CRC.
		for _, frame := range [][]byte{input, seal(hdrFor(TypeSealed), input)} {
			fuzzOpenOne(t, openers, links, keys, frame)
		}
	})
}

// fuzzOpenOne checks FuzzOpen's properties on one frame.
func fuzzOpenOne(t *testing.T, openers []*Opener, links []int, keys []SealKey, frame []byte) {
	for i, o := range openers {
		got, err := o.Open(frame)
		if err != nil {
			if got != nil {
				t.Fatalf("Open returned a frame and an error: %v", err)
			}
			if ReasonOf(err) == ReasonOther {
				t.Fatalf("unclassified error: %v", err)
			}
			continue
		}
		if len(got) < MinFrameLen || len(got) > len(frame)-18 {
			t.Fatalf("a %d-byte frame opened to %d bytes", len(frame), len(got))
		}
		var b sealedBody
		if err := o.outer.dec.Unmarshal(frame[3:len(frame)-trailerLen], &b); err != nil {
			t.Fatal(err)
		}
		k := keys[0]
		if KeyID(b.Key) != k.ID {
			k = keys[1]
		}
		s := mustSealer(t, 42, k, links[i], seqFunc(func() (uint32, error) { return b.Seq, nil }))
		if again, err := s.Seal(got); len(got) <= InnerMaxFrame(links[i]) && (err != nil || !bytes.Equal(again, frame)) {
			t.Fatalf("opened frame seals again to\n%x (%v), input was\n%x", again, err, frame)
		}
	}
}

// sealFuzzSeeds returns FuzzOpen's seeds: every sample message sealed under
// both fuzz keys, then each cut, with a byte changed, and in clear.
func sealFuzzSeeds(t testing.TB) map[string][]byte {
	inner, _ := NewInnerCodec(MinMaxFrame)
	seeds := map[string][]byte{}
	for i, m := range sampleMessages(t) {
		f, err := inner.Encode(m)
		if err != nil {
			continue
		}
		for _, k := range []SealKey{sealKey(1, 1), sealKey(MaxSealSeq, 2)} {
			s := mustSealer(t, 42, k, MinMaxFrame, seqFrom(uint32(i)*1000+1))
			b := mustSeal(t, s, f)
			name := seedName(fmt.Sprintf("%02d-%v-key-%d", i, m.Type(), k.ID))
			seeds["sealed-"+name] = b
			seeds["cut-"+name] = b[:len(b)*2/3]
			tampered := append([]byte(nil), b...)
			tampered[len(b)/2] ^= 0x20
			seeds["tampered-"+name] = fixCRC(tampered)
		}
		seeds[seedName(fmt.Sprintf("plain-%02d-%v", i, m.Type()))] = f
	}
	return seeds
}

// seedName makes a seed file name of s.
func seedName(s string) string { return strings.Trim(nonAlnum.ReplaceAllString(s, "-"), "-") }

// TestWriteSealFuzzCorpus keeps testdata/fuzz/FuzzOpen in step with the
// seeds: go test ./protocol -run WriteSealFuzzCorpus -protocol.rewrite-corpus.
// Without the flag it checks the files are present and current.
func TestWriteSealFuzzCorpus(t *testing.T) {
	for name, seed := range sealFuzzSeeds(t) {
		path := filepath.Join("testdata", "fuzz", "FuzzOpen", name)
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", seed)
		if *writeCorpus {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != content {
			t.Errorf("%s is missing or stale (%v): rerun with -protocol.rewrite-corpus", path, err)
		}
	}
}

// TestOpenAllocationBounded: opening a frame allocates in proportion to the
// frame, whatever lengths it declares, and a box that fails to decrypt
// costs no more than one that opens.
func TestOpenAllocationBounded(t *testing.T) {
	const link = MaxMaxFrame
	k := sealKey(1, 1)
	o := mustOpener(t, 42, link, k)
	inner, _ := NewInnerCodec(link)
	full := mustSeal(t, mustSealer(t, 42, k, link, seqFrom(1)), fullChunk(t, inner, inner.MaxFrame()))
	wrong := mustSeal(t, mustSealer(t, 42, sealKey(1, 2), link, seqFrom(1)), fullChunk(t, inner, inner.MaxFrame()))
	hs := hdrFor(TypeSealed)
	frames := map[string][]byte{
		"box declares 4 GiB":    seal(hs, hx("83 01 01 5a ffffffff"), make([]byte, 100)),
		"box declares 2^64":     seal(hs, hx("83 01 01 5b ffffffffffffffff"), make([]byte, 100)),
		"array declares 4 G":    seal(hs, hx("9a ffffffff 01 01"), make([]byte, 100)),
		"map declares 4 G":      seal(hs, hx("ba ffffffff 01 01"), make([]byte, 100)),
		"nested arrays":         seal(hs, bytes.Repeat([]byte{0x81}, 60000), hx("00")),
		"full frame, wrong key": wrong,
		"full frame, opens":     full,
	}
	for name, f := range frames {
		const runs = 20
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range runs {
			_, _ = o.Open(f)
		}
		runtime.ReadMemStats(&after)
		per := (after.TotalAlloc - before.TotalAlloc) / runs
		t.Logf("%-22s frame %5d bytes: %6d bytes allocated per open", name, len(f), per)
		if per > 4*uint64(len(f))+4096 {
			t.Errorf("%s: %d bytes allocated per open of a %d-byte frame", name, per, len(f))
		}
	}
}

// BenchmarkSeal and BenchmarkOpen: the cost of sealing on this machine's
// AES: go test ./protocol -run '^$' -bench 'Seal$|Open$' -benchmem
func BenchmarkSeal(b *testing.B) {
	for _, link := range []int{256, 1024, 65536} {
		inner, _ := NewInnerCodec(link)
		f := fullChunk(b, inner, inner.MaxFrame())
		s := mustSealer(b, 42, sealKey(1, 1), link, seqFrom(1))
		b.Run(fmt.Sprintf("frame=%d", link), func(b *testing.B) {
			b.SetBytes(int64(len(f)))
			b.ReportAllocs()
			buf := make([]byte, 0, link)
			for b.Loop() {
				var err error
				if buf, err = s.AppendSeal(buf[:0], f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, link := range []int{256, 1024, 65536} {
		inner, _ := NewInnerCodec(link)
		k := sealKey(1, 1)
		sealed := mustSeal(b, mustSealer(b, 42, k, link, seqFrom(1)), fullChunk(b, inner, inner.MaxFrame()))
		o := mustOpener(b, 42, link, k)
		b.Run(fmt.Sprintf("frame=%d", link), func(b *testing.B) {
			b.SetBytes(int64(len(sealed)))
			b.ReportAllocs()
			buf := make([]byte, 0, link)
			for b.Loop() {
				var err error
				if buf, err = o.AppendOpen(buf[:0], sealed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
