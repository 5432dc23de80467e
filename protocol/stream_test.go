package protocol

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"reflect"
	"testing"
	"testing/iotest"
)

// cobsCases are frames that exercise every COBS block boundary.
func cobsCases() [][]byte {
	nz := func(n int) []byte { return bytes.Repeat([]byte{0xa5}, n) }
	cases := [][]byte{
		{}, {0}, {0, 0}, {1}, {1, 0}, {0, 1}, {0, 0, 0, 1, 0},
		nz(253), nz(254), nz(255), nz(508), nz(509),
		append(nz(254), 0), append(nz(253), 0), append([]byte{0}, nz(254)...),
		append(append(nz(254), 0), nz(254)...),
		make([]byte, 1000),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{100, 256, 1024, 65536} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		cases = append(cases, b)
	}
	return cases
}

func TestCOBSRoundTrip(t *testing.T) {
	for _, f := range cobsCases() {
		rec := AppendStreamFrame(nil, f)
		if len(rec) > MaxEncodedLen(len(f)) {
			t.Fatalf("%d-byte frame: record of %d bytes > MaxEncodedLen %d", len(f), len(rec), MaxEncodedLen(len(f)))
		}
		if rec[0] != 0 || rec[len(rec)-1] != 0 || bytes.IndexByte(rec[1:len(rec)-1], 0) >= 0 {
			t.Fatalf("%d-byte frame: delimiters wrong in %x", len(f), rec)
		}
		d := NewDeframer(65536)
		n, got, err := d.Feed(rec)
		if err != nil || n != len(rec) || !bytes.Equal(got, f) {
			t.Fatalf("%d-byte frame: Feed = %d, %x, %v", len(f), n, got, err)
		}
	}
}

// TestCOBSFullBlockAtEnd pins the one choice COBS leaves open: a frame that
// ends with a full block of 254 non-zero bytes is followed by an empty last
// piece (code 01), and a record without it decodes to the same frame, as
// docs/protocol.md §3 tells a second implementation.
func TestCOBSFullBlockAtEnd(t *testing.T) {
	f := bytes.Repeat([]byte{0xa5}, 254)
	rec := AppendStreamFrame(nil, f)
	want := append(append([]byte{0, 0xff}, f...), 0x01, 0)
	if !bytes.Equal(rec, want) {
		t.Fatalf("record % x, want % x", rec, want)
	}
	short := append(append([]byte{0, 0xff}, f...), 0)
	if n, got, err := NewDeframer(256).Feed(short); n != len(short) || !bytes.Equal(got, f) || err != nil {
		t.Fatalf("record without the empty last piece: Feed = %d, % x, %v", n, got, err)
	}
}

// TestStreamOverhead measures the framing bytes per frame at the link
// profiles' frame sizes, for random (few zeros) and zero-heavy frames.
func TestStreamOverhead(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{256, 1024, 65536} {
		f := make([]byte, n)
		for i := range f {
			f[i] = byte(rng.Uint32())
		}
		worst := bytes.Repeat([]byte{1}, n)
		ovRand := len(AppendStreamFrame(nil, f)) - n
		ovWorst := len(AppendStreamFrame(nil, worst)) - n
		t.Logf("%5d-byte frame: stream overhead %d bytes random (%.2f%%), %d worst case; bound %d",
			n, ovRand, 100*float64(ovRand)/float64(n), ovWorst, MaxEncodedLen(n)-n)
		if ovWorst > MaxEncodedLen(n)-n || ovRand > ovWorst {
			t.Errorf("%d: overhead %d/%d beyond bound %d", n, ovRand, ovWorst, MaxEncodedLen(n)-n)
		}
	}
}

// feedAll feeds p to d in pieces of random size and collects frames and errors.
func feedAll(d *Deframer, p []byte, rng *rand.Rand) (frames [][]byte, errs []error) {
	for len(p) > 0 {
		k := 1 + rng.IntN(min(len(p), 300))
		piece := p[:k]
		p = p[k:]
		for len(piece) > 0 {
			n, f, err := d.Feed(piece)
			if n == 0 {
				panic("Feed consumed nothing")
			}
			piece = piece[n:]
			if f != nil {
				frames = append(frames, append([]byte(nil), f...))
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return frames, errs
}

func TestDeframerErrors(t *testing.T) {
	good := []byte("a good frame \x00 with a zero")
	rec := AppendStreamFrame(nil, good)
	big := AppendStreamFrame(nil, make([]byte, 300))
	cases := []struct {
		name   string
		stream []byte
		errs   []error
		frames int
	}{
		{"clean", rec, nil, 1},
		{"garbage first", append([]byte("noise"), rec...), []error{ErrStreamGarbage}, 1},
		{"empty records", append([]byte{0, 0, 0}, rec...), nil, 1},
		{"oversized", append(append([]byte(nil), big...), rec...), []error{ErrFrameTooLarge}, 1},
		{"cut short", append(append([]byte(nil), rec[:len(rec)/2]...), rec...), []error{ErrTruncated}, 1},
		{"code byte points past the end", append([]byte{0, 9, 1, 2, 0}, rec...), []error{ErrTruncated}, 1},
	}
	for _, tc := range cases {
		d := NewDeframer(256)
		frames, errs := feedAll(d, tc.stream, rand.New(rand.NewPCG(5, 6)))
		if len(frames) != tc.frames || (tc.frames > 0 && !bytes.Equal(frames[len(frames)-1], good)) {
			t.Errorf("%s: frames %q", tc.name, frames)
		}
		if len(errs) != len(tc.errs) {
			t.Errorf("%s: errors %v, want %v", tc.name, errs, tc.errs)
			continue
		}
		var ctr Counters
		for i := range errs {
			if r := ctr.Count(errs[i]); !errors.Is(errs[i], tc.errs[i]) || r.Err() != tc.errs[i] {
				t.Errorf("%s: error %v, want %v", tc.name, errs[i], tc.errs[i])
			}
		}
		if d.Pending() != 0 {
			t.Errorf("%s: %d bytes pending", tc.name, d.Pending())
		}
	}
	// The buffer never grows past maxFrame, whatever the stream.
	d := NewDeframer(256)
	rng := rand.New(rand.NewPCG(7, 8))
	junk := make([]byte, 100000)
	for i := range junk {
		junk[i] = byte(rng.IntN(255) + 1)
	}
	junk[0] = 0
	for p := junk; len(p) > 0; {
		n, _, _ := d.Feed(p)
		p = p[n:]
		if d.Pending() > 256 || cap(d.buf) > 256 {
			t.Fatalf("deframer holds %d bytes (cap %d)", d.Pending(), cap(d.buf))
		}
	}
	if err := d.End(); err != nil {
		t.Fatalf("End after a reported oversized record: %v", err)
	}
}

// TestStreamResync sends real frames through a stream with faults injected
// into some of them (garbage between records, cut records, flipped bits,
// lost or corrupted delimiters and code bytes) and checks that every frame
// without a fault comes out and decodes, and no corrupted one is accepted.
// Seeded: BOOTORBIT_SEED replays.
func TestStreamResync(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 9))
	for _, max := range []int{256, 1024} {
		c := mustCodec(t, max)
		var stream []byte
		const total = 3000
		intact := map[uint64]bool{}
		for i := range uint64(total) {
			data := make([]byte, rng.IntN(max-40))
			for j := range data {
				if rng.IntN(8) > 0 {
					data[j] = byte(rng.Uint32())
				}
			}
			f, err := c.Encode(&testChunk{Transfer: 1, Index: i, Data: data})
			if err != nil {
				t.Fatal(err)
			}
			rec := AppendStreamFrame(nil, f)
			switch rng.IntN(12) {
			case 0: // garbage before the record
				g := make([]byte, rng.IntN(50))
				for j := range g {
					g[j] = byte(rng.Uint32())
				}
				stream = append(stream, g...)
				intact[i] = true
			case 1: // cut short: the tail and its delimiter are lost
				rec = rec[:1+rng.IntN(len(rec)-1)]
			case 2: // a flipped bit anywhere, delimiters included
				k := rng.IntN(len(rec) * 8)
				rec[k/8] ^= 1 << (k % 8)
			case 3: // a lost byte
				k := rng.IntN(len(rec))
				rec = append(rec[:k:k], rec[k+1:]...)
			case 4: // a corrupted COBS code byte (the first one)
				rec[1] = byte(rng.IntN(255) + 1)
				if rec[1] == AppendStreamFrame(nil, f)[1] {
					intact[i] = true
				}
			default:
				intact[i] = true
			}
			stream = append(stream, rec...)
		}
		d := NewDeframer(max)
		frames, errs := feedAll(d, stream, rng)
		var ctr Counters
		for _, err := range errs {
			ctr.Count(err)
		}
		got := map[uint64]bool{}
		for _, f := range frames {
			m, err := c.Decode(f)
			if err != nil {
				ctr.Count(err)
				continue
			}
			ch, ok := m.(*testChunk)
			if !ok || got[ch.Index] {
				t.Fatalf("unexpected or duplicate frame %#v", m)
			}
			got[ch.Index] = true
		}
		lost := 0
		for i := range uint64(total) {
			if intact[i] && !got[i] {
				t.Errorf("max %d: intact frame %d lost", max, i)
			}
			if !got[i] {
				lost++
			}
		}
		t.Logf("max %d: %d frames, %d intact, %d recovered, %d lost; rejections: %s",
			max, total, len(intact), len(got), lost, reasonCounts(&ctr))
	}
}

type errWriter struct{ n int }

func (w *errWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, errors.New("link down")
	}
	w.n--
	return len(p), nil
}

func TestReaderWriter(t *testing.T) {
	frames := cobsCases()[:17]
	var buf bytes.Buffer
	w := NewWriter(&buf, 1024)
	for _, f := range frames {
		if err := w.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteFrame(make([]byte, 1025)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized WriteFrame: %v", err)
	}
	stream := buf.Bytes()
	for name, r := range map[string]io.Reader{
		"whole":    bytes.NewReader(stream),
		"one byte": iotest.OneByteReader(bytes.NewReader(stream)),
		"data+eof": iotest.DataErrReader(bytes.NewReader(stream)),
	} {
		rd := NewReader(r, 1024)
		for i, want := range frames {
			got, err := rd.ReadFrame()
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: frame %d = %x, %v", name, i, got, err)
			}
		}
		if _, err := rd.ReadFrame(); err != io.EOF {
			t.Fatalf("%s: at end: %v", name, err)
		}
	}
	// A stream that ends inside a record.
	rd := NewReader(bytes.NewReader(stream[:len(stream)-3]), 1024)
	var err error
	for err == nil {
		_, err = rd.ReadFrame()
	}
	if !errors.Is(err, ErrTruncated) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut stream: %v", err)
	}
	if _, err := rd.ReadFrame(); err != io.EOF {
		t.Fatalf("after the cut: %v", err)
	}
	// A stream that ends after a code byte, before any data.
	d := NewDeframer(256)
	if n, f, err := d.Feed([]byte{0, 5}); n != 2 || f != nil || err != nil {
		t.Fatalf("Feed(00 05) = %d, %x, %v", n, f, err)
	}
	if err := d.End(); !errors.Is(err, ErrTruncated) {
		t.Fatalf("End after a code byte: %v", err)
	}
	// A stream of garbage only.
	rd = NewReader(bytes.NewReader([]byte("line noise")), 1024)
	if _, err := rd.ReadFrame(); !errors.Is(err, ErrStreamGarbage) {
		t.Fatalf("garbage stream: %v", err)
	}
	// Write errors are sticky.
	w = NewWriter(&errWriter{n: 1}, 256)
	if err := w.WriteFrame([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame([]byte{1}); err == nil {
		t.Fatal("write error lost")
	}
	if err := w.WriteFrame([]byte{1}); err == nil {
		t.Fatal("write error not sticky")
	}
	// Read errors are sticky.
	rd = NewReader(iotest.ErrReader(errors.New("serial port gone")), 256)
	for range 2 {
		if _, err := rd.ReadFrame(); err == nil || err.Error() != "serial port gone" {
			t.Fatalf("read error: %v", err)
		}
	}
}

func TestPacketLink(t *testing.T) {
	a, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback UDP: %v", err)
	}
	defer a.Close()
	b, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := mustCodec(t, 256)
	la, lb := NewPacketLink(a, 256), NewPacketLink(b, 256)
	f, err := c.Encode(&Event{ID: 1, Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if err := la.WriteFrame(f, b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	got, from, err := lb.ReadFrame()
	if err != nil || !bytes.Equal(got, f) || from.String() != a.LocalAddr().String() {
		t.Fatalf("ReadFrame = %x from %v, %v", got, from, err)
	}
	if _, err := c.Decode(got); err != nil {
		t.Fatal(err)
	}
	if err := la.WriteFrame(make([]byte, 257), b.LocalAddr()); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized WriteFrame: %v", err)
	}
	// A datagram longer than the frame limit, sent around the link.
	if _, err := a.WriteTo(make([]byte, 300), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lb.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized datagram: %v", err)
	}
}

// streamEvent is what a deframer reports: a frame, or a rejection reason.
type streamEvent struct {
	frame  string
	reason Reason
}

// refDeframe is a reference deframer written the plain way: cut the stream
// at zero bytes, then COBS-decode each whole record with the textbook loop.
// The streaming Deframer must report exactly the same events.
func refDeframe(stream []byte, max int) []streamEvent {
	var ev []streamEvent
	first := bytes.IndexByte(stream, 0)
	if first < 0 {
		return nil // no delimiter: nothing reported before End
	}
	if first > 0 {
		ev = append(ev, streamEvent{reason: ReasonStreamGarbage})
	}
	rest := stream[first+1:]
	for {
		end := bytes.IndexByte(rest, 0)
		unfinished := end < 0
		if unfinished {
			end = len(rest)
		}
		rec := rest[:end]
		rest = rest[min(end+1, len(rest)):]
		if len(rec) == 0 {
			if unfinished {
				return ev
			}
			continue
		}
		out, reason := []byte{}, ReasonNone
	decode:
		for i := 0; i < len(rec); {
			code := int(rec[i])
			i++
			for j := 1; j < code; j++ {
				if i >= len(rec) {
					reason = ReasonTruncated
					break decode
				}
				out = append(out, rec[i])
				i++
				if len(out) > max {
					reason = ReasonTooLarge
					break decode
				}
			}
			if code < 0xff && i < len(rec) {
				out = append(out, 0)
				if len(out) > max {
					reason = ReasonTooLarge
					break decode
				}
			}
		}
		switch {
		case unfinished:
			// Only End reports an unfinished record, unless it is already
			// too long: that is reported as soon as it is known.
			if reason == ReasonTooLarge {
				ev = append(ev, streamEvent{reason: reason})
			}
			return ev
		case reason != ReasonNone:
			ev = append(ev, streamEvent{reason: reason})
		default:
			ev = append(ev, streamEvent{frame: string(out)})
		}
	}
}

// deframeEvents feeds stream to a Deframer in the pieces cuts gives and
// returns its events.
func deframeEvents(t testing.TB, stream []byte, max int, cuts []byte) []streamEvent {
	d := NewDeframer(max)
	var ev []streamEvent
	for i := 0; len(stream) > 0; i++ {
		k := len(stream)
		if i < len(cuts) {
			k = min(k, 1+int(cuts[i]))
		}
		piece := stream[:k]
		stream = stream[k:]
		for len(piece) > 0 {
			n, fr, err := d.Feed(piece)
			if n <= 0 || n > len(piece) || (fr != nil && err != nil) {
				t.Fatalf("Feed consumed %d of %d, frame %v, err %v", n, len(piece), fr != nil, err)
			}
			if d.Pending() > max {
				t.Fatalf("deframer holds %d bytes", d.Pending())
			}
			piece = piece[n:]
			switch {
			case err != nil:
				ev = append(ev, streamEvent{reason: ReasonOf(err)})
			case fr != nil:
				ev = append(ev, streamEvent{frame: string(fr)})
			}
		}
	}
	return ev
}

// TestDeframerDifferential compares the Deframer with refDeframe on random
// streams of valid records, junk and faults. Seeded: BOOTORBIT_SEED replays.
func TestDeframerDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 10))
	for range 2000 {
		var stream []byte
		for range rng.IntN(8) {
			switch rng.IntN(4) {
			case 0: // junk with zeros
				b := make([]byte, rng.IntN(600))
				for i := range b {
					if rng.IntN(4) > 0 {
						b[i] = byte(rng.Uint32())
					}
				}
				stream = append(stream, b...)
			default:
				f := make([]byte, rng.IntN(700))
				for i := range f {
					if rng.IntN(3) > 0 {
						f[i] = byte(rng.IntN(255) + 1)
					}
				}
				rec := AppendStreamFrame(nil, f)
				if rng.IntN(4) == 0 {
					rec = rec[:rng.IntN(len(rec))]
				}
				stream = append(stream, rec...)
			}
		}
		cuts := make([]byte, 20)
		for i := range cuts {
			cuts[i] = byte(rng.Uint32())
		}
		got, want := deframeEvents(t, stream, 256, cuts), refDeframe(stream, 256)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("stream %x:\nDeframer %v\nreference %v", stream, got, want)
		}
	}
}
