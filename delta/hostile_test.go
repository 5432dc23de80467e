package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// smallPair is a deterministic old/new layer pair with edits, a moved
// file and new files, for seeds and hostile-input tests.
func smallPair(t testing.TB) (old, nw [][]byte) {
	rng := rand.New(rand.NewPCG(11, 11))
	a, c := binaryLike(rng, 20<<10), binaryLike(rng, 12<<10)
	old = tarsOf(t, []ocitest.Layer{{Entries: []ocitest.Entry{
		{Type: ocitest.Dir, Name: "usr"}, {Name: "usr/a", Data: a}, {Name: "usr/c", Data: c}, {Name: "etc/x.conf", Data: []byte("k=v\n")},
	}}})
	nw = tarsOf(t, []ocitest.Layer{{Entries: []ocitest.Entry{
		{Type: ocitest.Dir, Name: "usr"}, {Name: "usr/a", Data: shift(a)}, {Name: "opt/c", Data: c}, {Name: "etc/x.conf", Data: []byte("k=w\n")},
		{Name: "usr/new", Data: []byte(strings.Repeat("fresh ", 300))},
	}}})
	return old, nw
}

func computeBytes(t testing.TB, old, nw [][]byte, opts Options) []byte {
	var buf bytes.Buffer
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	if _, err := ComputeLayers(context.Background(), sources(old), Target{Config: []byte("{}"), Layers: sources(nw)}, &buf, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// assemble builds a bundle from a header and a payload, fixing up the
// payload size.
func assemble(t testing.TB, h *Header, payload []byte) []byte {
	h.PayloadSize = int64(len(payload))
	b, err := encMode.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(Magic), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(out[len(Magic):], uint32(len(b)))
	return append(append(out, b...), payload...)
}

// craftPart makes a part from raw streams, with consistent digests for
// the payload (so that the streams themselves are what is tested). diff is
// the plain difference bytes; craftPart splits them into runs.
func craftPart(ops, diff, lit []byte, outSize int64, ranges []Range) (Part, []byte) {
	z, nz, d := splitDiff(diff)
	return craftRaw([numStreams][]byte{ops, z, nz, d, lit}, outSize, ranges)
}

func craftRaw(raws [numStreams][]byte, outSize int64, ranges []Range) (Part, []byte) {
	enc := testEncoder
	p := Part{OutSize: outSize, OutDigest: make([]byte, 32), Ranges: ranges}
	var payload []byte
	for i, raw := range raws {
		z := enc.EncodeAll(raw, nil)
		payload = append(payload, z...)
		p.Streams[i] = Stream{Len: int64(len(z)), Raw: int64(len(raw))}
	}
	p.PayloadSize = int64(len(payload))
	s := sha256.Sum256(payload)
	p.PayloadDigest = s[:]
	return p, payload
}

var testEncoder, _ = zstd.NewWriter(nil, zstd.WithZeroFrames(true), zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))

func uv(x ...int64) []byte {
	var b []byte
	for _, v := range x {
		b = binary.AppendUvarint(b, uint64(v))
	}
	return b
}

func TestHostileBundles(t *testing.T) {
	baseTar := []byte(strings.Repeat("base bytes ", 100))
	bd := digest.FromBytes(baseTar)
	sum := sha256.Sum256(baseTar[:500])
	rng0 := []Range{{Layer: 0, Off: 0, Len: 500, Digest: sum[:], Path: "f"}}
	base := MapBase{bd: bytes.NewReader(baseTar)}
	layer := func(p Part) *Header {
		return &Header{Version: Version, Base: []digest.Digest{bd}, Config: []byte("{}"),
			Layers: []LayerPlan{{DiffID: digest.FromString("x"), Size: p.OutSize, Decision: Delta, Parts: []Part{p}}}}
	}
	withOps := func(ops []byte, out int64) []byte {
		p, pl := craftPart(ops, nil, nil, out, rng0)
		return assemble(t, layer(p), pl)
	}
	copyOp := func(delta, n int64) []byte {
		return append(append([]byte{opCopy}, binary.AppendVarint(nil, delta)...), uv(n)...)
	}
	// A zstd frame whose header asks for a 1 GiB window, then one raw
	// block of 100 bytes.
	huge := append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 20 << 3, 0x21, 0x03, 0x00}, bytes.Repeat([]byte{1}, 100)...)
	cases := []struct {
		name   string
		bundle func() []byte
		want   error
		msg    string
	}{
		{"bad magic", func() []byte { return []byte("NOTDELTA\x00\x00\x00\x01\xa0") }, ErrFormat, "bad magic"},
		{"short", func() []byte { return []byte("BODE") }, ErrFormat, "magic"},
		{"header length beyond limit", func() []byte { return []byte(Magic + "\xff\xff\xff\xff") }, ErrLimit, "header of"},
		{"header length beyond file", func() []byte { return []byte(Magic + "\x00\x00\x10\x00\xa0") }, ErrFormat, "header of"},
		{"not cbor", func() []byte { return []byte(Magic + "\x00\x00\x00\x02\xff\xff") }, ErrFormat, "header"},
		{"version", func() []byte { return assemble(t, &Header{Version: 99}, nil) }, ErrFormat, "version 99"},
		{"bad decision", func() []byte {
			h := layer(Part{})
			h.Layers[0].Decision = "magic"
			h.Layers[0].Parts = nil
			return assemble(t, h, nil)
		}, ErrFormat, "decision"},
		{"part too big", func() []byte {
			p, pl := craftPart(nil, nil, nil, MaxPartOut+1, nil)
			return assemble(t, layer(p), pl)
		}, ErrLimit, "part output"},
		{"range names missing base layer", func() []byte {
			p, pl := craftPart(nil, nil, nil, 1, []Range{{Layer: 3, Len: 1, Digest: make([]byte, 32)}})
			return assemble(t, layer(p), pl)
		}, ErrFormat, "base layer 3"},
		{"overlapping ranges", func() []byte {
			p, pl := craftPart(nil, nil, nil, 1, []Range{{Layer: 0, Off: 0, Len: 100, Digest: make([]byte, 32)}, {Layer: 0, Off: 50, Len: 100, Digest: make([]byte, 32)}})
			return assemble(t, layer(p), pl)
		}, ErrFormat, "overlaps"},
		{"empty part", func() []byte {
			p, pl := craftPart(nil, nil, nil, 0, nil)
			return assemble(t, layer(p), pl)
		}, ErrLimit, "part output of 0"},
		{"payload beyond file", func() []byte {
			p, pl := craftPart(nil, nil, nil, 1, nil)
			p.PayloadOff = 1 << 40
			return assemble(t, layer(p), pl)
		}, ErrFormat, "payload"},
		{"stream lengths wrap around", func() []byte {
			// 4 * 2^62 wraps to 0, so the sum alone would match the payload
			// while the streams reach far past it.
			p, pl := craftPart(copyOp(0, 5), nil, nil, 5, rng0)
			for i := range p.Streams[:streamLit] {
				p.Streams[i].Len = 1 << 62
			}
			p.Streams[streamLit].Len = p.PayloadSize
			return assemble(t, layer(p), pl)
		}, ErrFormat, "stream 0 lengths"},
		{"truncated payload", func() []byte {
			b := withOps(copyOp(0, 5), 5)
			return b[:len(b)-1]
		}, ErrFormat, "header says"},
		{"trailing bytes", func() []byte { return append(withOps(copyOp(0, 5), 5), 0) }, ErrFormat, "header says"},
		{"short part digest", func() []byte {
			p, pl := craftPart(copyOp(0, 5), nil, nil, 5, rng0)
			p.OutDigest = p.OutDigest[:31]
			return assemble(t, layer(p), pl)
		}, ErrFormat, "digest length"},
		{"short range digest", func() []byte {
			p, pl := craftPart(copyOp(0, 5), nil, nil, 5, []Range{{Layer: 0, Off: 0, Len: 500, Digest: sum[:31], Path: "f"}})
			return assemble(t, layer(p), pl)
		}, ErrFormat, "range 0: digest length 31"},
		{"lit bytes unused", func() []byte {
			p, pl := craftPart(append([]byte{opLit}, uv(3)...), nil, []byte("abcdef"), 3, rng0)
			return assemble(t, layer(p), pl)
		}, ErrFormat, "lit stream: 3 bytes unused"},
		{"parts do not cover layer", func() []byte {
			p, pl := craftPart(nil, nil, nil, 1, nil)
			h := layer(p)
			h.Layers[0].Size = 2
			return assemble(t, h, pl)
		}, ErrFormat, "cover"},
		{"copy outside base", func() []byte { return withOps(copyOp(450, 100), 100) }, ErrFormat, "outside"},
		{"copy before base", func() []byte { return withOps(copyOp(-1, 10), 10) }, ErrFormat, "outside"},
		{"op longer than part", func() []byte { return withOps(copyOp(0, 20), 10) }, ErrFormat, "op length"},
		{"zero-length op", func() []byte { return withOps(append([]byte{opLit}, uv(0)...), 10) }, ErrFormat, "op length"},
		{"unknown op", func() []byte { return withOps([]byte{9, 1}, 1) }, ErrFormat, "unknown op"},
		{"ops end early", func() []byte { return withOps(copyOp(0, 5), 10) }, ErrFormat, "ops end"},
		{"ops left over", func() []byte { return withOps(append(copyOp(0, 5), copyOp(0, 5)...), 5) }, ErrFormat, "left over"},
		{"lit stream short", func() []byte {
			p, pl := craftPart(append([]byte{opLit}, uv(10)...), nil, []byte("abc"), 10, rng0)
			return assemble(t, layer(p), pl)
		}, ErrFormat, "lit stream"},
		{"difference runs unused", func() []byte {
			p, pl := craftPart(copyOp(0, 5), []byte("xx"), nil, 5, rng0)
			return assemble(t, layer(p), pl)
		}, ErrFormat, "difference runs"},
		{"empty difference run", func() []byte {
			add := append(append([]byte{opAdd}, binary.AppendVarint(nil, 0)...), uv(5)...)
			p, pl := craftRaw([numStreams][]byte{add, uv(0, 5), uv(0, 5), []byte("abcde"), nil}, 5, rng0)
			return assemble(t, layer(p), pl)
		}, ErrFormat, "difference run of 0 zero and 0 non-zero"},
		{"difference bytes missing", func() []byte {
			add := append(append([]byte{opAdd}, binary.AppendVarint(nil, 0)...), uv(5)...)
			p, pl := craftRaw([numStreams][]byte{add, uv(0), uv(5), []byte("ab"), nil}, 5, rng0)
			return assemble(t, layer(p), pl)
		}, ErrFormat, "diff stream"},
		{"declared raw length lies", func() []byte {
			p, pl := craftPart(append([]byte{opLit}, uv(3)...), nil, []byte("abcdef"), 3, rng0)
			p.Streams[streamLit].Raw = 3
			return assemble(t, layer(p), pl)
		}, ErrFormat, "longer than declared"},
		{"huge zstd window", func() []byte {
			p, pl := craftPart(append([]byte{opLit}, uv(100)...), nil, nil, 100, rng0)
			var before int64
			for _, s := range p.Streams[:streamLit] {
				before += s.Len
			}
			pl = append(pl[:before], huge...)
			p.Streams[streamLit] = Stream{Len: int64(len(huge)), Raw: 100}
			p.PayloadSize = int64(len(pl))
			s := sha256.Sum256(pl)
			p.PayloadDigest = s[:]
			return assemble(t, layer(p), pl)
		}, ErrFormat, "window"},
		{"payload digest", func() []byte {
			p, pl := craftPart(copyOp(0, 5), nil, nil, 5, rng0)
			p.PayloadDigest[0] ^= 1
			return assemble(t, layer(p), pl)
		}, ErrFormat, "sha256"},
		{"wrong output", func() []byte { return withOps(copyOp(0, 5), 5) }, ErrOutput, "part output"},
		{"parts right, layer wrong", func() []byte {
			// Every part matches its own digest, but together they are
			// not the layer the header names: only the diff_id check sees it.
			p, pl := craftPart(copyOp(0, 5), nil, nil, 5, rng0)
			s := sha256.Sum256(baseTar[:5])
			p.OutDigest = s[:]
			return assemble(t, layer(p), pl)
		}, ErrOutput, "rebuilt as"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.bundle()
			bu, err := OpenBundle(bytes.NewReader(b), int64(len(b)))
			if err == nil {
				err = bu.ApplyLayer(context.Background(), 0, base, io.Discard)
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
			t.Logf("%v", err)
		})
	}
}

// fixDigests makes every part's payload digest match, so that fuzzing
// reaches the stream decoders and the op interpreter.
func fixDigests(b *Bundle) {
	for li := range b.Header.Layers {
		for pi := range b.Header.Layers[li].Parts {
			p := &b.Header.Layers[li].Parts[pi]
			h := sha256.New()
			io.Copy(h, io.NewSectionReader(b.r, b.payloadOff+p.PayloadOff, p.PayloadSize))
			p.PayloadDigest = h.Sum(nil)
		}
	}
}

func FuzzBundleDecode(f *testing.F) {
	old, nw := smallPair(f)
	valid := computeBytes(f, old, nw, Options{PartSize: 8 << 10})
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add([]byte(Magic + "\x00\x00\x00\x01\xa0"))
	base := baseOf(old)
	f.Fuzz(func(t *testing.T, b []byte) {
		bu, err := OpenBundle(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrLimit) {
				t.Fatalf("decode error without a package sentinel: %v", err)
			}
			return
		}
		fixDigests(bu)
		for li, lp := range bu.Header.Layers {
			if lp.Decision == Reuse || lp.Size > 1<<20 {
				continue
			}
			var out bytes.Buffer
			if err := bu.ApplyLayer(context.Background(), li, base, &out); err == nil {
				if digest.FromBytes(out.Bytes()) != lp.DiffID {
					t.Fatalf("layer %d applied without error but does not match its diff_id", li)
				}
			}
		}
	})
}

// FuzzApply feeds hostile op, difference-run and lit streams (with consistent
// framing) to the interpreter over a small base.
func FuzzApply(f *testing.F) {
	old, nw := smallPair(f)
	valid := computeBytes(f, old, nw, Options{})
	vb, err := OpenBundle(bytes.NewReader(valid), int64(len(valid)))
	if err != nil {
		f.Fatal(err)
	}
	// Seed with the real streams of the valid bundle.
	dec, _ := zstd.NewReader(nil)
	p := vb.Header.Layers[0].Parts[0]
	var raw [numStreams][]byte
	off := vb.payloadOff + p.PayloadOff
	for i, s := range p.Streams {
		z := valid[off : off+s.Len]
		raw[i], _ = dec.DecodeAll(z, nil)
		off += s.Len
	}
	f.Add(raw[streamOps], raw[streamZeros], raw[streamNonZeros], raw[streamDiff], raw[streamLit], p.OutSize)
	f.Add(copyOpBytes(0, 10), []byte{}, []byte{}, []byte{}, []byte{}, int64(10))
	base := baseOf(old)
	f.Fuzz(func(t *testing.T, ops, zeros, nonzeros, diff, lit []byte, outSize int64) {
		// A part makes at least one byte: the header check refuses an
		// empty one (ErrLimit) before any stream is read, so such a
		// bundle is not a test of the interpreter.
		if outSize <= 0 || outSize > 1<<20 {
			return
		}
		part, pl := craftRaw([numStreams][]byte{ops, zeros, nonzeros, diff, lit}, outSize, p.Ranges)
		h := &Header{Version: Version, Base: vb.Header.Base, Config: []byte("{}"),
			Layers: []LayerPlan{{DiffID: vb.Header.Layers[0].DiffID, Size: outSize, Decision: Delta, Parts: []Part{part}}}}
		h.Layers[0].Parts[0].OutDigest = p.OutDigest
		b := assemble(t, h, pl)
		bu, err := OpenBundle(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("crafted bundle does not open: %v", err)
		}
		var out bytes.Buffer
		err = bu.ApplyLayer(context.Background(), 0, base, &out)
		if err == nil && !bytes.Equal(out.Bytes(), nw[0]) {
			t.Fatalf("applied without error to the wrong bytes")
		}
		if err != nil && !errors.Is(err, ErrFormat) && !errors.Is(err, ErrOutput) {
			t.Fatalf("error without a package sentinel: %v", err)
		}
	})
}

func copyOpBytes(delta, n int64) []byte {
	return append(append([]byte{opCopy}, binary.AppendVarint(nil, delta)...), uv(n)...)
}

func bytesReader(b []byte) (*bytes.Reader, int64) { return bytes.NewReader(b), int64(len(b)) }

// FuzzRoundTrip checks the central property on arbitrary bytes: whatever
// the old and new layers hold (tars, broken tars, anything), the bundle
// rebuilds the new layer exactly.
func FuzzRoundTrip(f *testing.F) {
	// Small seeds: coverage-guided fuzzing instruments every comparison,
	// and suffix sorting and alignment make many.
	rng := rand.New(rand.NewPCG(12, 12))
	a := binaryLike(rng, 1500)
	old := tarsOf(f, []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "usr/a", Data: a}, {Name: "etc/c", Data: []byte("x=1\n")}}}})
	nw := tarsOf(f, []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "usr/a", Data: shift(a)}, {Name: "etc/c", Data: []byte("x=2\n")}, {Name: "usr/n", Data: []byte("new")}}}})
	f.Add(old[0], nw[0])
	f.Add(old[0][:1500], nw[0][:2048])
	f.Add([]byte{}, []byte("not a tar"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, o, n []byte) {
		if bytes.Equal(o, n) || len(o) > 64<<10 || len(n) > 64<<10 {
			return // equal: a reused layer, nothing to apply
		}
		var buf bytes.Buffer
		_, err := ComputeLayers(context.Background(), sources([][]byte{o}), Target{Config: []byte("{}"), Layers: sources([][]byte{n})}, &buf, Options{TempDir: dir, PartSize: 4 << 10, fastZstd: true})
		if err != nil {
			t.Fatal(err)
		}
		b, err := OpenBundle(bytesReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := b.ApplyLayer(context.Background(), 0, baseOf([][]byte{o}), &out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), n) {
			t.Fatal("rebuilt layer differs")
		}
	})
}

// TestWriteLayerReportsWriterError: when the blob writer fails first, its
// error is the one reported, not the applier's closed pipe.
func TestWriteLayerReportsWriterError(t *testing.T) {
	old, nw := smallPair(t)
	raw := computeBytes(t, old, nw, Options{})
	b, err := OpenBundle(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w, err := oci.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Without its blobs directory the writer cannot start a blob.
	if err := os.RemoveAll(filepath.Join(dir, "blobs")); err != nil {
		t.Fatal(err)
	}
	_, err = writeLayer(context.Background(), b, 0, baseOf(old), w)
	if err == nil || !strings.Contains(err.Error(), "oci: write blob") || errors.Is(err, errWriterStopped) {
		t.Fatalf("got %v, want the blob writer's error", err)
	}
	t.Logf("%v", err)
}

// TestHeaderElementsTooShort: a header whose arrays hold elements too short
// to be valid (here 60000 one-byte parts, which would decode to some 11 MB
// of Part structs) is refused before it is decoded.
func TestHeaderElementsTooShort(t *testing.T) {
	for _, key := range []string{"layers", "parts", "ranges"} {
		var v any = make([]map[string]any, 60000)
		switch key {
		case "parts":
			v = []any{map[string]any{"parts": v}}
		case "ranges":
			v = []any{map[string]any{"parts": []any{map[string]any{"ranges": v, "pad": strings.Repeat("x", 100)}}, "pad": strings.Repeat("x", 100)}}
		}
		b, err := encMode.Marshal(map[string]any{"v": Version, "layers": v})
		if err != nil {
			t.Fatal(err)
		}
		_, err = DecodeHeader(b)
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), key+" element 0 of 1 bytes is too short") {
			t.Fatalf("%s: got %v", key, err)
		}
	}
}

// TestIndexesOutOfRange: the exported per-layer and per-part entry points
// return errors for indexes the bundle does not have, rather than panic.
func TestIndexesOutOfRange(t *testing.T) {
	old, nw := smallPair(t)
	raw := computeBytes(t, old, nw, Options{})
	b, err := OpenBundle(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, base := context.Background(), baseOf(old)
	for _, li := range []int{-1, len(b.Header.Layers)} {
		if errs := b.VerifyBase(ctx, li, base); len(errs) != 1 || !strings.Contains(errs[0].Error(), "out of range") {
			t.Errorf("VerifyBase(%d): %v", li, errs)
		}
		if err := b.ApplyLayer(ctx, li, base, io.Discard); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("ApplyLayer(%d): %v", li, err)
		}
	}
	for _, pi := range []int{-1, len(b.Header.Layers[0].Parts)} {
		if err := b.ApplyPart(ctx, 0, pi, base, io.Discard); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("ApplyPart(0, %d): %v", pi, err)
		}
	}
}
