package protocol

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// newFuzzCodecs returns codecs of the smallest and the largest frame size,
// which decode every fuzz input. They are made in the fuzz target, not in a
// package variable: a Codec sees the types registered before NewCodec, and
// package variables are set before the tests' init registers the test types.
func newFuzzCodecs(t testing.TB) []*Codec {
	return []*Codec{mustCodec(t, MinMaxFrame), mustCodec(t, MaxMaxFrame)}
}

// FuzzDecode: Decode never panics, every error is classified, and whatever
// decodes re-encodes to the identical bytes (one encoding per message).
// Seeds: valid frames of every type, the malformed table of
// TestDecodeMalformed's kinds, and testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	fuzzCodecs := newFuzzCodecs(f)
	c := fuzzCodecs[1]
	for _, m := range sampleMessages(f) {
		b, err := c.Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add(seal(hdr, hx("a1 04 5a ffffffff")))
	f.Add(seal(hdrFor(typeTestAny), hx("a1 01"), bytes.Repeat([]byte{0x81}, 40), hx("00")))
	f.Add(seal(hdr, hx("a2 04 41 aa 01 07")))
	f.Add(seal(hdrFor(TypeTelemetry), hx("a1 05 81 82 01 fb3ff8000000000000")))
	f.Add(seal(hdrFor(TypeCommand), hx("a2 03 01 05 1801")))
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, c := range fuzzCodecs {
			m, err := c.Decode(frame)
			if err != nil {
				if m != nil {
					t.Fatalf("Decode returned a message and an error: %v", err)
				}
				if ReasonOf(err) == ReasonOther {
					t.Fatalf("unclassified error: %v", err)
				}
				continue
			}
			again, err := c.Encode(m)
			if err != nil {
				t.Fatalf("decoded %#v does not re-encode: %v", m, err)
			}
			if !bytes.Equal(again, frame) {
				t.Fatalf("decoded %#v re-encodes to\n%x, input was\n%x", m, again, frame)
			}
		}
	})
}

// FuzzDecodeBody fuzzes the part after the CRC: the fuzzer's bytes become
// the body of a correctly sealed frame of a chosen type, so mutations reach
// the CBOR parser and the Validate methods instead of dying at the CRC.
func FuzzDecodeBody(f *testing.F) {
	fuzzCodecs := newFuzzCodecs(f)
	c := fuzzCodecs[1]
	for _, m := range sampleMessages(f) {
		b, err := c.Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		off := 3
		if m.Type() >= 24 {
			off = 4
		}
		f.Add(uint8(m.Type()), b[off:len(b)-trailerLen])
	}
	f.Add(uint8(TypeCommand), hx("a2 03 01 05 f6"))
	f.Add(uint8(typeTestAny), hx("a1 01 9a ffffffff 00"))
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		frame := seal(hdrFor(MsgType(typ)), body)
		for _, c := range fuzzCodecs {
			m, err := c.Decode(frame)
			if err != nil {
				if ReasonOf(err) == ReasonOther {
					t.Fatalf("unclassified error: %v", err)
				}
				continue
			}
			again, err := c.Encode(m)
			if err != nil || !bytes.Equal(again, frame) {
				t.Fatalf("decoded %#v re-encodes to %x (%v), input %x", m, again, err, frame)
			}
			if cmd, ok := m.(*Command); ok {
				// Whatever decodes can be verified without panicking.
				kr, _ := NewKeyring(Key{ID: 1, Pub: make([]byte, 32)})
				_ = VerifyCommand(kr, cmd)
			}
		}
	})
}

// FuzzDeframer: arbitrary bytes fed in arbitrary pieces never panic nor grow
// the buffer past maxFrame; the streaming Deframer reports exactly what the
// plain reference deframer (refDeframe) reports; and after any garbage,
// frames written cleanly come out intact and in order.
func FuzzDeframer(f *testing.F) {
	f.Add([]byte("garbage"), []byte{1, 2, 3}, []byte("frame one"), []byte("frame two"))
	f.Add([]byte{0, 5, 1, 1}, []byte{7}, []byte{0, 0, 0}, bytes.Repeat([]byte{9}, 300))
	f.Add(AppendStreamFrame(nil, bytes.Repeat([]byte{1}, 254)), []byte{}, []byte{}, []byte{0})
	f.Add(bytes.Repeat([]byte{0xff}, 600), []byte{200, 3}, []byte("x"), []byte("y"))
	f.Fuzz(func(t *testing.T, garbage, cuts, f1, f2 []byte) {
		const max = 256
		if len(f1) > max || len(f2) > max {
			return
		}
		got, want := deframeEvents(t, garbage, max, cuts), refDeframe(garbage, max)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Deframer %v, reference %v", got, want)
		}
		stream := append([]byte(nil), garbage...)
		stream = AppendStreamFrame(stream, f1)
		stream = AppendStreamFrame(stream, f2)
		ev := deframeEvents(t, stream, max, cuts)
		if !reflect.DeepEqual(ev, refDeframe(stream, max)) {
			t.Fatalf("Deframer %v, reference %v", ev, refDeframe(stream, max))
		}
		if len(ev) < 2 || ev[len(ev)-2] != (streamEvent{frame: string(f1)}) || ev[len(ev)-1] != (streamEvent{frame: string(f2)}) {
			t.Fatalf("clean frames %x, %x not at the end of %v", f1, f2, ev)
		}
	})
}

// FuzzReplayWindow drives a window with arbitrary sequence numbers and
// checks it against an exact model: accept each number once, reject what is
// older than the window, and persist/restore to the same state.
func FuzzReplayWindow(f *testing.F) {
	f.Add([]byte{1, 2, 3, 3, 200, 72, 73})
	f.Add(binary.BigEndian.AppendUint64(nil, ^uint64(0)))
	f.Fuzz(func(t *testing.T, ops []byte) {
		var w ReplayWindow
		model := newReplayModel()
		for len(ops) > 0 {
			var seq uint64
			if ops[0] == 0xff && len(ops) >= 9 {
				seq = binary.BigEndian.Uint64(ops[1:9])
				ops = ops[9:]
			} else {
				// Small steps around the top exercise the bitmap.
				seq = model.top + uint64(ops[0]) - min(model.top, 128)
				ops = ops[1:]
			}
			model.accept(t, &w, seq)
		}
	})
}

var nonAlnum = regexp.MustCompile("[^a-z0-9]+")

var writeCorpus = flag.Bool("protocol.rewrite-corpus", false, "rewrite testdata/fuzz seed files of the codec fuzz targets")

// TestWriteFuzzCorpus keeps testdata/fuzz in step with the malformed-frame
// table and the sample messages: go test ./protocol -run WriteFuzzCorpus -args -protocol.rewrite-corpus.
// Without the flag it checks the files are present and current.
func TestWriteFuzzCorpus(t *testing.T) {
	c := mustCodec(t, 1024)
	files := map[string]string{}
	add := func(target, name string, vals ...[]byte) {
		name = strings.Trim(nonAlnum.ReplaceAllString(name, "-"), "-")
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, v := range vals {
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		}
		files[filepath.Join("testdata", "fuzz", target, name)] = b.String()
	}
	for _, tc := range malformedCases() {
		add("FuzzDecode", "malformed-"+tc.name, tc.frame)
	}
	var stream []byte
	for i, m := range sampleMessages(t) {
		f, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		add("FuzzDecode", fmt.Sprintf("valid-%02d-%v", i, m.Type()), f)
		stream = AppendStreamFrame(stream, f)
	}
	add("FuzzDeframer", "sample-stream", stream[:len(stream)/2], []byte{3, 50, 7}, []byte("one"), []byte("two"))
	add("FuzzDeframer", "cut-record", AppendStreamFrame(nil, bytes.Repeat([]byte{7}, 300))[:200], nil, []byte{0}, bytes.Repeat([]byte{0}, 256))
	for path, content := range files {
		if *writeCorpus {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Errorf("%s is missing or stale (%v): rerun with -protocol.rewrite-corpus", path, err)
		}
	}
}
