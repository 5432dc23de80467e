package delta

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/opencontainers/go-digest"
)

// The run seed and -long (more pairs, larger layers) come from
// internal/testrand.
var pairsFlag = flag.Int("delta.pairs", 200, "image pairs in the round-trip property test (ten times as many with -long)")

// seed returns the test's seed, logged (BOOTORBIT_SEED replays it).
func seed(t testing.TB) uint64 {
	t.Helper()
	return testrand.Seed(t)
}

// sources turns in-memory tars into layer sources.
func sources(tars [][]byte) []LayerSource {
	var out []LayerSource
	for _, t := range tars {
		t := t
		out = append(out, LayerSource{DiffID: digest.FromBytes(t), Open: func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(t)), nil
		}})
	}
	return out
}

func baseOf(tars [][]byte) MapBase {
	m := MapBase{}
	for _, t := range tars {
		m[digest.FromBytes(t)] = bytes.NewReader(t)
	}
	return m
}

// roundTrip computes a bundle from oldTars to newTars and applies it,
// checking every rebuilt layer byte for byte.
func roundTrip(t *testing.T, oldTars, newTars [][]byte, opts Options) (*Bundle, []byte) {
	t.Helper()
	var buf bytes.Buffer
	opts.TempDir = t.TempDir()
	if _, err := ComputeLayers(context.Background(), sources(oldTars), Target{Config: []byte("{}"), Layers: sources(newTars)}, &buf, opts); err != nil {
		t.Fatalf("compute: %v", err)
	}
	b, err := OpenBundle(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatalf("open bundle: %v", err)
	}
	base := baseOf(oldTars)
	for i, lp := range b.Header.Layers {
		if lp.DiffID != digest.FromBytes(newTars[i]) {
			t.Fatalf("layer %d: bundle diff_id %s", i, lp.DiffID)
		}
		if lp.Decision == Reuse {
			if base.Layer(lp.DiffID) == nil {
				t.Fatalf("layer %d reused but not in base", i)
			}
			continue
		}
		var out bytes.Buffer
		if err := b.ApplyLayer(context.Background(), i, base, &out); err != nil {
			t.Fatalf("apply layer %d: %v", i, err)
		}
		if !bytes.Equal(out.Bytes(), newTars[i]) {
			t.Fatalf("layer %d rebuilt with %d bytes, differs from the %d-byte target", i, out.Len(), len(newTars[i]))
		}
	}
	return b, buf.Bytes()
}

func tarsOf(t testing.TB, layers []ocitest.Layer) [][]byte {
	var out [][]byte
	for _, l := range layers {
		b, err := ocitest.Tar(l.Entries)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestRoundTripProperty applies bundles between hundreds of generated image
// pairs and checks that every target layer comes back exactly.
func TestRoundTripProperty(t *testing.T) {
	s := seed(t)
	pairs := *pairsFlag
	if testrand.Long() {
		pairs *= 10
	}
	for i := 0; i < pairs; i++ {
		ps := s + uint64(i)
		rng := rand.New(rand.NewPCG(ps, 0))
		old := ocitest.RandomLayers(rng, ocitest.GenOptions{Files: 1 + rng.IntN(12), MaxFileSize: 4 << 10})
		nw, log := ocitest.Modify(rng, old, ocitest.ModifyOptions{MaxFileSize: 4 << 10})
		opts := Options{PartSize: int64(1+rng.IntN(8)) << 12} // small parts: many boundaries
		t.Run(fmt.Sprintf("pair%d", ps), func(t *testing.T) {
			t.Logf("seed %d: %s", ps, strings.Join(log, "; "))
			roundTrip(t, tarsOf(t, old), tarsOf(t, nw), opts)
		})
		if t.Failed() {
			return
		}
	}
}

// file content like an executable: structured bytes with addresses.
func binaryLike(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		op := byte(rng.IntN(16))
		addr := uint32(i*3 + rng.IntN(64))
		b[i], b[i+1], b[i+2], b[i+3] = 0x48, 0x8b, op, 0
		b[i+4], b[i+5], b[i+6], b[i+7] = byte(addr), byte(addr>>8), byte(addr>>16), 0
	}
	return b
}

// shift changes a binary the way a rebuild does: code inserted in the
// middle moves the later addresses that cross it (here one instruction in
// four).
func shift(b []byte) []byte {
	nw := append([]byte(nil), b[:len(b)/2]...)
	nw = append(nw, []byte("new code inserted here")...)
	for i := len(b) / 2; i+8 <= len(b); i += 8 {
		c := append([]byte(nil), b[i:i+8]...)
		if i%32 == 0 {
			c[4] += 22
		}
		nw = append(nw, c...)
	}
	return nw
}

func TestMovedFileAndLayeredUpdate(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 42))
	big := binaryLike(rng, 400<<10)
	lib := binaryLike(rng, 300<<10)
	other := binaryLike(rng, 200<<10)
	layer0 := []ocitest.Entry{
		{Type: ocitest.Dir, Name: "usr"}, {Type: ocitest.Dir, Name: "usr/bin"}, {Type: ocitest.Dir, Name: "usr/lib"},
		{Name: "usr/bin/big", Data: big}, {Name: "usr/lib/libx.so.1", Data: lib},
	}
	layer1 := []ocitest.Entry{{Type: ocitest.Dir, Name: "opt"}, {Name: "opt/other", Data: other}}
	old := tarsOf(t, []ocitest.Layer{{Entries: layer0}, {Entries: layer1}})

	t.Run("moved", func(t *testing.T) {
		// other moves from layer 1 into layer 0; big moves up to layer 1.
		n0 := []ocitest.Entry{layer0[0], layer0[1], layer0[2], layer0[4], {Type: ocitest.Dir, Name: "opt"}, {Name: "opt/other", Data: other}}
		n1 := []ocitest.Entry{{Name: "usr/bin/big", Data: big}}
		b, bundle := roundTrip(t, old, tarsOf(t, []ocitest.Layer{{Entries: n0}, {Entries: n1}}), Options{})
		if len(bundle) > 4<<10 {
			t.Errorf("moving files cost %d bytes; want references, not data", len(bundle))
		}
		for i, lp := range b.Header.Layers {
			if lp.Decision != Delta {
				t.Errorf("layer %d: decision %s, want delta", i, lp.Decision)
			}
		}
	})
	t.Run("layered", func(t *testing.T) {
		// Old layers kept; a new top layer holds new versions of base
		// files: they must be coded against the base copies.
		up := []ocitest.Entry{{Name: "usr/bin/big", Data: shift(big)}, {Name: "usr/lib/libx.so.1", Data: shift(lib)}}
		nw := append(append([][]byte(nil), old...), tarsOf(t, []ocitest.Layer{{Entries: up}})...)
		b, bundle := roundTrip(t, old, nw, Options{})
		if b.Header.Layers[0].Decision != Reuse || b.Header.Layers[1].Decision != Reuse || b.Header.Layers[2].Decision != Delta {
			t.Errorf("decisions %s %s %s, want reuse reuse delta", b.Header.Layers[0].Decision, b.Header.Layers[1].Decision, b.Header.Layers[2].Decision)
		}
		if len(bundle) > 20<<10 {
			t.Errorf("layered update of 700 KiB of shifted binaries cost %d bytes", len(bundle))
		}
		t.Logf("layered update bundle: %d bytes for %d bytes of new layer", len(bundle), len(nw[2]))
	})
}

// TestBaseMismatch changes one byte of one referenced base file: the part
// that reads it fails with a clear error before any output, and the other
// layer still applies.
func TestBaseMismatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	a, c := binaryLike(rng, 100<<10), binaryLike(rng, 100<<10)
	old := tarsOf(t, []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "usr/bin/a", Data: a}}}, {Entries: []ocitest.Entry{{Name: "usr/bin/c", Data: c}}}})
	nw := tarsOf(t, []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "usr/bin/a", Data: shift(a)}}}, {Entries: []ocitest.Entry{{Name: "usr/bin/c", Data: shift(c)}}}})
	b, _ := roundTrip(t, old, nw, Options{})

	bad := append([]byte(nil), old[0]...)
	i := bytes.Index(bad, a[5000:5100])
	bad[i] ^= 1
	base := MapBase{digest.FromBytes(old[0]): bytes.NewReader(bad), digest.FromBytes(old[1]): bytes.NewReader(old[1])}

	var out bytes.Buffer
	err := b.ApplyLayer(context.Background(), 0, base, &out)
	var me *MismatchError
	if !errors.Is(err, ErrBaseMismatch) || !errors.As(err, &me) {
		t.Fatalf("apply on a modified base: %v, want a base mismatch", err)
	}
	if me.Layer != 0 || me.Part != 0 || me.Path != "usr/bin/a" || me.Want == me.Have || !strings.HasPrefix(me.Have, "sha256:") {
		t.Errorf("mismatch error %+v", me)
	}
	if out.Len() != 0 {
		t.Errorf("%d bytes written before the mismatch was reported", out.Len())
	}
	t.Logf("error: %v", err)
	out.Reset()
	if err := b.ApplyLayer(context.Background(), 1, base, &out); err != nil || !bytes.Equal(out.Bytes(), nw[1]) {
		t.Fatalf("other layer: %v", err)
	}
}

// TestTarQuirks covers tars that archive/tar would not write: long names,
// non-zero padding, odd trailers, GNU base-256 sizes, garbage.
func TestTarQuirks(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	data := binaryLike(rng, 5000)
	long := strings.Repeat("d/", 80) + "file"
	tw, _ := ocitest.Tar([]ocitest.Entry{{Name: long, Data: data}, {Name: "x", Data: []byte("hello")}})
	padded := append([]byte(nil), tw...)
	// Non-zero padding after "x" and garbage after the end blocks.
	if i := bytes.Index(padded, []byte("hello")); i > 0 {
		padded[i+10] = 7
	}
	padded = append(padded, []byte("trailing garbage")...)
	cases := map[string][]byte{
		"pax-long-name":  tw,
		"dirty-padding":  padded,
		"not-a-tar":      []byte("this is not a tar at all, but bytes are bytes"),
		"empty":          {},
		"truncated":      tw[:len(tw)-1500],
		"no-end-blocks":  tw[:len(tw)-1024],
		"one-zero-block": make([]byte, 512),
	}
	for name, nwTar := range cases {
		t.Run(name, func(t *testing.T) {
			roundTrip(t, [][]byte{tw}, [][]byte{nwTar}, Options{PartSize: 3000})
		})
	}
}

func TestScanTar(t *testing.T) {
	tw, err := ocitest.Tar([]ocitest.Entry{{Type: ocitest.Dir, Name: "a"}, {Name: "a/b", Data: []byte("123")}, {Type: ocitest.Symlink, Name: "a/c", Link: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	es, trailer, err := scanTar(bytes.NewReader(tw), int64(len(tw)))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, fmt.Sprintf("%s:%c:%d", e.Path, e.Type, e.DataLen))
	}
	if strings.Join(got, " ") != "a:5:0 a/b:0:3 a/c:2:0" || trailer != int64(len(tw))-1024 {
		t.Fatalf("entries %v trailer %d of %d", got, trailer, len(tw))
	}
}

// TestImageRoundTrip goes through OCI layouts: compute from two images,
// apply to the old one, and read the result back.
func TestImageRoundTrip(t *testing.T) {
	s := seed(t)
	rng := rand.New(rand.NewPCG(s, 1))
	dir := t.TempDir()
	old := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 3})
	nw, log := ocitest.Modify(rng, old, ocitest.ModifyOptions{})
	t.Logf("changes: %s", strings.Join(log, "; "))
	ocitest.Build(t, filepath.Join(dir, "img"), "old", old)
	ocitest.Build(t, filepath.Join(dir, "img"), "new", nw)
	from, err := oci.Open(oci.Ref{Layout: filepath.Join(dir, "img"), Tag: "old"})
	if err != nil {
		t.Fatal(err)
	}
	to, err := oci.Open(oci.Ref{Layout: filepath.Join(dir, "img"), Tag: "new"})
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle")
	f, err := os.Create(bundle)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Compute(context.Background(), from, to, f, Options{TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	res, err := ApplyImage(context.Background(), bundle, from, filepath.Join(dir, "out"), "new", ApplyOptions{TempDir: dir})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	got, err := oci.Open(oci.Ref{Layout: filepath.Join(dir, "out"), Tag: "new"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.ConfigBytes, to.ConfigBytes) || len(res.Layers) != len(st.Layers) {
		t.Fatalf("config differs or layer count %d vs %d", len(res.Layers), len(st.Layers))
	}
	for i := range got.Layers() {
		rc, err := got.OpenLayer(i) // verifies the diff_id
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		rc.Close()
	}

	// A header whose config names another layer than the bundle rebuilds,
	// or whose tag is not a valid tag, is refused before anything is written.
	raw, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenBundle(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(h *Header)
		msg    string
	}{
		{"config names other layers", func(h *Header) {
			d0 := h.Layers[0].DiffID.Encoded()
			h.Config = bytes.Replace(h.Config, []byte(d0), []byte(digest.FromString("other").Encoded()), 1)
		}, "config says"},
		{"bad tag", func(h *Header) { h.Tag = "../x" }, "not a valid OCI tag"},
		{"tag with a colon", func(h *Header) { h.Tag = "a:b" }, "not a valid OCI tag"},
	} {
		h := *b.Header
		tc.change(&h)
		var tampered bytes.Buffer
		if _, err := writeHeader(&tampered, &h); err != nil {
			t.Fatal(err)
		}
		tampered.Write(raw[b.HeaderSize():])
		if err := os.WriteFile(bundle, tampered.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		out2 := filepath.Join(dir, "out2")
		if _, err := ApplyImage(context.Background(), bundle, from, out2, "", ApplyOptions{TempDir: dir}); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Fatalf("%s: got %v", tc.name, err)
		}
		if _, err := os.Stat(out2); !os.IsNotExist(err) {
			t.Errorf("%s: output directory created for a refused bundle: %v", tc.name, err)
		}
	}
}

// TestApplyImageBaseMismatch flips one byte of a referenced file in the
// vehicle's copy of a base layer: the layer that needs it is reported with
// the part and file, the other layers are still rebuilt, and no image is
// committed.
func TestApplyImageBaseMismatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	a, c := binaryLike(rng, 64<<10), binaryLike(rng, 64<<10)
	dir := t.TempDir()
	lay := filepath.Join(dir, "img")
	old := []ocitest.Layer{
		{Entries: []ocitest.Entry{{Name: "usr/bin/a", Data: a}}, Compression: oci.Uncompressed},
		{Entries: []ocitest.Entry{{Name: "usr/bin/c", Data: c}}, Compression: oci.Uncompressed},
	}
	nw := []ocitest.Layer{
		{Entries: []ocitest.Entry{{Name: "usr/bin/a", Data: shift(a)}}, Compression: oci.Gzip},
		{Entries: []ocitest.Entry{{Name: "usr/bin/c", Data: shift(c)}}, Compression: oci.Zstd},
	}
	oldIm := ocitest.Build(t, lay, "old", old)
	ocitest.Build(t, lay, "new", nw)
	from, err := oci.Open(oci.Ref{Layout: lay, Tag: "old"})
	if err != nil {
		t.Fatal(err)
	}
	to, err := oci.Open(oci.Ref{Layout: lay, Tag: "new"})
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle")
	if _, err := ComputeFile(context.Background(), from, to, bundle, Options{TempDir: dir}); err != nil {
		t.Fatal(err)
	}
	// Damage the vehicle's copy of base layer 0 (stored uncompressed, so
	// its blob is the tar): one byte inside usr/bin/a.
	p, err := oci.BlobPath(lay, oldIm.DiffIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	blob, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	orig := bytes.Clone(blob)
	blob[bytes.Index(blob, a[1000:1100])] ^= 0x40
	if err := os.WriteFile(p, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	res, err := ApplyImage(context.Background(), bundle, from, out, "new", ApplyOptions{TempDir: dir})
	if err == nil || !errors.Is(err, ErrBaseMismatch) {
		t.Fatalf("apply on a damaged base: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"layer 0", "part 0", "file usr/bin/a", "want sha256:", "have sha256:", "1 of 2 layers"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if got := res.FailedLayers(); len(got) != 1 || got[0] != 0 {
		t.Errorf("failed layers %v, want [0]", got)
	}
	if res.Layers[1].Err != nil {
		t.Errorf("layer 1 should still apply: %v", res.Layers[1].Err)
	}
	// Layer 1 was written (verified by the blob writer); no image was
	// committed.
	if _, err := os.Stat(filepath.Join(out, "blobs", "sha256", to.DiffIDs()[1].Encoded())); err != nil {
		t.Errorf("layer 1 blob not written: %v", err)
	}
	if _, err := oci.Open(oci.Ref{Layout: out, Tag: "new"}); err == nil {
		t.Errorf("an image was committed although a layer failed")
	}
	t.Logf("error: %v", err)

	// Once the base is repaired, a retry into the same directory succeeds
	// over what the failed apply left there.
	if err := os.WriteFile(p, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ApplyImage(context.Background(), bundle, from, out, "new", ApplyOptions{TempDir: dir}); err != nil {
		t.Fatalf("retry after repairing the base: %v", err)
	}
	if _, err := oci.Open(oci.Ref{Layout: out, Tag: "new"}); err != nil {
		t.Errorf("retry did not commit the image: %v", err)
	}
}

// TestPartsApplyIndependently applies every part of a multi-part layer on
// its own; with one referenced byte of the base damaged, exactly the parts
// that read it fail, with a per-part error, and the others still apply.
func TestPartsApplyIndependently(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 21))
	var oe, ne []ocitest.Entry
	for i := 0; i < 12; i++ {
		d := binaryLike(rng, 20<<10)
		name := fmt.Sprintf("usr/lib/f%02d", i)
		oe = append(oe, ocitest.Entry{Name: name, Data: d})
		ne = append(ne, ocitest.Entry{Name: name, Data: shift(d)})
	}
	old := tarsOf(t, []ocitest.Layer{{Entries: oe}})
	nw := tarsOf(t, []ocitest.Layer{{Entries: ne}})
	b, _ := roundTrip(t, old, nw, Options{PartSize: 32 << 10})
	parts := b.Header.Layers[0].Parts
	if len(parts) < 5 {
		t.Fatalf("%d parts, want several", len(parts))
	}
	// The parts and the header tile the bundle file.
	end := b.HeaderSize()
	for pi := range parts {
		off, n := b.PartBytes(0, pi)
		if off != end {
			t.Fatalf("part %d at %d, previous part ended at %d", pi, off, end)
		}
		end = off + n
	}
	if end != b.HeaderSize()+b.Header.PayloadSize {
		t.Fatalf("parts end at %d of %d", end, b.HeaderSize()+b.Header.PayloadSize)
	}
	var all bytes.Buffer
	for pi := range parts {
		if err := b.ApplyPart(context.Background(), 0, pi, baseOf(old), &all); err != nil {
			t.Fatalf("part %d: %v", pi, err)
		}
	}
	if !bytes.Equal(all.Bytes(), nw[0]) {
		t.Fatal("parts applied one by one do not give the layer")
	}

	bad := append([]byte(nil), old[0]...)
	bad[bytes.Index(bad, oe[6].Data[:64])+100] ^= 1
	base := MapBase{digest.FromBytes(old[0]): bytes.NewReader(bad)}
	failed := 0
	for pi, p := range parts {
		var out bytes.Buffer
		err := b.ApplyPart(context.Background(), 0, pi, base, &out)
		reads := false
		for _, r := range p.Ranges {
			off := int64(bytes.Index(old[0], oe[6].Data[:64]) + 100)
			reads = reads || (r.Off <= off && off < r.Off+r.Len)
		}
		switch {
		case reads && !errors.Is(err, ErrBaseMismatch):
			t.Errorf("part %d reads the damaged byte but applied: %v", pi, err)
		case !reads && err != nil:
			t.Errorf("part %d does not read the damaged byte but failed: %v", pi, err)
		case reads:
			failed++
			if !strings.Contains(err.Error(), fmt.Sprintf("part %d:", pi)) {
				t.Errorf("error does not name part %d: %v", pi, err)
			}
			if out.Len() != 0 {
				t.Errorf("part %d wrote %d bytes before reporting the mismatch", pi, out.Len())
			}
		}
	}
	if failed == 0 || failed == len(parts) {
		t.Errorf("%d of %d parts failed; want some, not all", failed, len(parts))
	}
}
