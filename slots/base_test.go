package slots

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/opencontainers/go-digest"
)

// LayerBase is a delta.Base without slots importing delta.
var _ delta.Base = (*LayerBase)(nil)

// dirRig is a Manager over two directory slots on the OS, booted from
// neither, so that the test installs into A and then reads it as a base.
func dirRig(t *testing.T) (*Manager, Options) {
	t.Helper()
	base := t.TempDir()
	o := Options{StateDir: filepath.Join(base, "state"), Now: fixedClock(), Extract: ExtractOptions{Sync: SyncNone},
		A: Slot{Backend: BackendDir, Path: filepath.Join(base, "a")}, B: Slot{Backend: BackendDir, Path: filepath.Join(base, "b")}}
	for _, d := range []string{o.A.Path, o.B.Path} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return m, o
}

// digests returns the diff_ids of tars.
func digests(tars ...[]byte) []digest.Digest {
	var ds []digest.Digest
	for _, b := range tars {
		ds = append(ds, digest.FromBytes(b))
	}
	return ds
}

// layerBytes reads layer d of b whole, through ReadAt in pieces of
// varying size.
func layerBytes(t *testing.T, b *LayerBase, d digest.Digest, piece int) []byte {
	t.Helper()
	ra := b.Layer(d)
	if ra == nil {
		t.Fatalf("layer %s not in the base", d)
	}
	size, _ := b.Size(d)
	out := make([]byte, 0, size)
	buf := make([]byte, piece)
	for off := int64(0); off < size; {
		n, err := ra.ReadAt(buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if err == io.EOF && off == size {
			break
		}
		if err != nil {
			t.Fatalf("layer %s at %d: %v", d, off, err)
		}
	}
	return out
}

// gnuRecord pads a tar to GNU tar's 10240-byte records, as `tar -cf`
// writes them: trailing zeros that are part of the layer and its diff_id.
func gnuRecord(b []byte) []byte {
	if r := len(b) % 10240; r != 0 {
		b = append(b, make([]byte, 10240-r)...)
	}
	return b
}

// threeLayers is an image with what a real one has: directories, files
// small and larger than an index chunk, PAX long names, symlinks, hard
// links, a whiteout and an opaque directory in later layers, and GNU
// record padding.
func threeLayers(t *testing.T) [][]byte {
	r := testRand(t)
	big := make([]byte, 300<<10+7)
	for i := range big {
		big[i] = byte(r.IntN(256))
	}
	long := "usr/share/" + strings.Repeat("long-directory-name/", 8) + "file.txt"
	l1 := newTB().dir("etc").file("etc/hostname", "sat\n").file("etc/app.conf", "level=1\n").
		dir("usr").dir("usr/bin").file("usr/bin/tool", string(big)).link("usr/bin/tool2", "usr/bin/tool").
		symlink("usr/bin/sh", "tool").file(long, "deep\n").dir("opt").file("opt/old", "gone soon").
		file("usr/empty", "").dir("var").bytes()
	l2 := newTB().file("usr/bin/.wh.tool2", "").dir("opt").file("opt/.wh..wh..opq", "").file("opt/new", "fresh").
		file("usr/lib.so", strings.Repeat("library ", 20000)).bytes()
	l3 := newTB().file("etc/app.conf", "level=3\n").file("usr/bin/extra", string(big[:70000])).bytes()
	return [][]byte{gnuRecord(l1), l2, gnuRecord(l3)}
}

// TestBaseRebuildsLayers installs an image into a directory slot and reads
// every layer back from the slot and its index: byte for byte where no
// later layer changed the layer's files, and different exactly where one
// did.
func TestBaseRebuildsLayers(t *testing.T) {
	m, o := dirRig(t)
	ctx := context.Background()
	layers := threeLayers(t)
	for _, withIDs := range []bool{true, false} {
		img := Image{Label: "img", Layers: readers(layers...)}
		if withIDs {
			img.DiffIDs = digests(layers...)
		} else {
			m.o.Extract.Workers = 2 // small files written by workers: same index
		}
		res, err := m.Install(ctx, A, img)
		if err != nil {
			t.Fatal(err)
		}
		if res.IndexBytes == 0 || res.IndexSkipped != "" {
			t.Fatalf("no index: %+v", res)
		}
		fi, err := os.Stat(indexPath(o.StateDir, A))
		if err != nil || fi.Size() != res.IndexBytes {
			t.Fatalf("index file: %v (%d bytes reported)", err, res.IndexBytes)
		}
		b, err := m.Base(A)
		if err != nil {
			t.Fatal(err)
		}
		if got := b.Layers(); fmt.Sprint(got) != fmt.Sprint(digests(layers...)) {
			t.Fatalf("layers %v", got)
		}
		for i, l := range layers {
			d := digest.FromBytes(l)
			for _, piece := range []int{1 << 20, 4096, 511} {
				if i == 0 {
					continue // below
				}
				got := layerBytes(t, b, d, piece)
				if !bytes.Equal(got, l) {
					t.Fatalf("layer %d (pieces of %d) differs from the installed layer", i, piece)
				}
			}
		}
		// Layer 0: layer 3 replaced etc/app.conf (it reads as the new
		// content) and layer 2's opaque opt removed opt/old (an error
		// naming it); the rest is intact.
		l0 := layers[0]
		conf, gone := bytes.Index(l0, []byte("level=1\n")), bytes.Index(l0, []byte("gone soon"))
		ra0 := b.Layer(digest.FromBytes(l0))
		buf := make([]byte, 512)
		for off := 0; off < len(l0); off += 512 {
			n, err := ra0.ReadAt(buf, int64(off))
			switch {
			case off <= gone && gone < off+512:
				if err == nil || !strings.Contains(err.Error(), "opt/old") {
					t.Fatalf("layer 0 at %d (opt/old): %v", off, err)
				}
			case err != nil && !(err == io.EOF && off+n == len(l0)):
				t.Fatalf("layer 0 at %d: %v", off, err)
			case off <= conf && conf < off+512:
				if bytes.Equal(buf[:n], l0[off:off+n]) || !bytes.Contains(buf[:n], []byte("level=3\n")) {
					t.Fatalf("layer 0 at %d: etc/app.conf reads %q", off, buf[:n])
				}
			case !bytes.Equal(buf[:n], l0[off:off+n]):
				t.Fatalf("layer 0 differs at %d", off)
			}
		}
		if b.Layer(digest.FromString("nope")) != nil {
			t.Fatal("a layer not installed is in the base")
		}
		// A read past the end.
		ra := b.Layer(digest.FromBytes(layers[1]))
		if n, err := ra.ReadAt(make([]byte, 10), int64(len(layers[1])-4)); n != 4 || err != io.EOF {
			t.Fatalf("read over the end: %d %v", n, err)
		}
		b.Close()
	}
}

// diffRuns returns the [start, end) runs where a and b differ.
func diffRuns(a, b []byte) [][2]int {
	var runs [][2]int
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			if len(runs) > 0 && runs[len(runs)-1][1] >= i-512 {
				runs[len(runs)-1][1] = i + 1
			} else {
				runs = append(runs, [2]int{i, i + 1})
			}
		}
	}
	return runs
}

// TestBaseConcurrentReads reads one layer from several goroutines at
// random offsets: every read gives the layer's bytes.
func TestBaseConcurrentReads(t *testing.T) {
	m, _ := dirRig(t)
	layers := threeLayers(t)
	if _, err := m.Install(context.Background(), A, Image{Layers: readers(layers...), DiffIDs: digests(layers...)}); err != nil {
		t.Fatal(err)
	}
	b, err := m.Base(A)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	want := layers[2]
	ra := b.Layer(digest.FromBytes(want))
	r := testRand(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		seed := r.Uint64()
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := seed
			for i := 0; i < 200; i++ {
				x = x*6364136223846793005 + 1442695040888963407
				off := int64(x>>33) % int64(len(want))
				n := int64(x>>20)%70000 + 1
				buf := make([]byte, min(n, int64(len(want))-off))
				if _, err := ra.ReadAt(buf, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
					errs <- fmt.Errorf("bytes [%d,+%d) differ", off, len(buf))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// newImage modifies the image of threeLayers: a changed file in layer 2,
// and a new layer; layers 0 and 1 stay.
func newImage(layers [][]byte) [][]byte {
	l3 := newTB().file("etc/app.conf", "level=4\n").file("usr/bin/extra", strings.Repeat("x", 1000)).
		file("usr/new", "n").bytes()
	return [][]byte{layers[0], layers[1], l3, newTB().file("etc/motd", "hi").bytes()}
}

func computeBundle(t *testing.T, from, to [][]byte) *delta.Bundle {
	t.Helper()
	src := func(tars [][]byte) []delta.LayerSource {
		var out []delta.LayerSource
		for _, b := range tars {
			out = append(out, delta.LayerSource{DiffID: digest.FromBytes(b), Open: func() (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(b)), nil
			}})
		}
		return out
	}
	var buf bytes.Buffer
	if _, err := delta.ComputeLayers(context.Background(), src(from), delta.Target{Config: []byte("{}"), Layers: src(to)}, &buf,
		delta.Options{TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	b, err := delta.OpenBundle(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBaseDeltaApply rebuilds a new image from a delta against the
// installed one, reading the base from the slot: exactly the new
// diff_ids. Then an /etc file changed on the slot after install gives a
// MismatchError for the range holding it, and every other range verifies.
func TestBaseDeltaApply(t *testing.T) {
	m, o := dirRig(t)
	ctx := context.Background()
	// The old image: layer 3 rewrites nothing of layer 1 so that all of
	// it can serve as a base.
	old := threeLayers(t)
	old[2] = newTB().file("usr/bin/extra", "e").bytes()
	if _, err := m.Install(ctx, A, Image{Layers: readers(old...), DiffIDs: digests(old...)}); err != nil {
		t.Fatal(err)
	}
	nw := newImage(old)
	nw[2] = newTB().file("usr/bin/extra", "e2").file("etc/hostname", "sat\n").bytes()
	// The new layer 4 changes etc/hostname and the large tool by a byte:
	// a delta against layer 1's files.
	tool, _ := os.ReadFile(filepath.Join(o.A.Path, "usr/bin/tool"))
	tool2 := append([]byte(nil), tool...)
	tool2[1000] ^= 0xFF
	nw[3] = newTB().file("etc/hostname", "sat-2\n").file("usr/bin/tool", string(tool2)).bytes()
	bundle := computeBundle(t, old, nw)
	base, err := m.Base(A)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	var ranges int
	for li, lp := range bundle.Header.Layers {
		if lp.Decision == delta.Reuse {
			if _, ok := base.Size(lp.DiffID); !ok {
				t.Fatalf("layer %d reused but not in the base", li)
			}
			continue
		}
		var out bytes.Buffer
		if err := bundle.ApplyLayer(ctx, li, base, &out); err != nil {
			t.Fatalf("layer %d: %v", li, err)
		}
		if digest.FromBytes(out.Bytes()) != digest.FromBytes(nw[li]) {
			t.Fatalf("layer %d rebuilt differs", li)
		}
		for _, p := range lp.Parts {
			ranges += len(p.Ranges)
		}
	}
	if ranges == 0 {
		t.Fatal("the bundle reads nothing of the base: the test shows nothing")
	}

	// A local edit of etc/hostname (same size, so that only its bytes
	// differ).
	if err := os.WriteFile(filepath.Join(o.A.Path, "etc/hostname"), []byte("SAT\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostOff := int64(bytes.Index(old[0], []byte("sat\n")))
	var mismatches, verified int
	for li, lp := range bundle.Header.Layers {
		if lp.Decision == delta.Reuse {
			continue
		}
		errs := bundle.VerifyBase(ctx, li, base)
		for _, err := range errs {
			var me *delta.MismatchError
			if !errors.As(err, &me) || !errors.Is(err, delta.ErrBaseMismatch) {
				t.Fatalf("layer %d: %v is not a MismatchError", li, err)
			}
			if me.Base != digest.FromBytes(old[0]) || hostOff < me.Off || hostOff >= me.Off+me.Len {
				t.Fatalf("layer %d: mismatch %v does not hold etc/hostname's content at %d", li, err, hostOff)
			}
			t.Logf("reported: %v", err)
			mismatches++
		}
		for _, p := range lp.Parts {
			verified += len(p.Ranges)
		}
		var out bytes.Buffer
		if err := bundle.ApplyLayer(ctx, li, base, &out); (err != nil) != (len(errs) > 0) || out.Len() != 0 && err != nil {
			t.Fatalf("layer %d: apply %v with %d mismatches, %d bytes out", li, err, len(errs), out.Len())
		}
	}
	if mismatches == 0 {
		t.Fatal("the local edit of etc/hostname was not reported")
	}
	t.Logf("%d of %d ranges verified", verified-mismatches, verified)
}

// TestBaseRawSlot reads a raw slot's layer back from the device and the
// index: a tar holding the filesystem image, and the image itself.
func TestBaseRawSlot(t *testing.T) {
	r := testRand(t)
	fsImg := make([]byte, 100<<10+3)
	for i := range fsImg {
		fsImg[i] = byte(r.IntN(256))
	}
	layer := gnuRecord(newTB().hdr(&tar.Header{Name: "rootfs.ext4", Typeflag: tar.TypeReg}, string(fsImg)).bytes())
	for _, tc := range []struct {
		name string
		img  Image
		want []byte
	}{
		{"tar", Image{Layers: readers(layer), DiffIDs: digests(layer)}, layer},
		{"tar, hashed", Image{Layers: readers(layer)}, layer},
		{"raw stream", Image{Layers: readers(fsImg), RawStream: true, Digest: digest.FromBytes(fsImg).String()}, fsImg},
		{"raw stream, hashed", Image{Layers: readers(fsImg), RawStream: true}, fsImg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newMemRig(t)
			m, err := Open(rig.o)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.Install(context.Background(), B, tc.img); err != nil {
				t.Fatal(err)
			}
			b, err := m.Base(B)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			d := digest.FromBytes(tc.want)
			if got := layerBytes(t, b, d, 3000); !bytes.Equal(got, tc.want) {
				t.Fatalf("layer differs (%d bytes, want %d)", len(got), len(tc.want))
			}
			// Bit rot on the device: that byte differs, nothing fails.
			f, _ := rig.fs.OpenRW("dev/b")
			f.WriteAt([]byte{^tc.want[len(tc.want)/2]}, int64(len(tc.want)/2)-int64(len(tc.want)-len(fsImg)))
			f.Close()
			if got := layerBytes(t, b, d, 1<<20); bytes.Equal(got, tc.want) || len(diffRuns(got, tc.want)) != 1 {
				t.Fatal("bit rot not seen")
			}
		})
	}
}

// TestIndexLifecycle: the index exists only for a slot whose content it
// describes. It is removed once the slot is recorded writing (Prepare, a
// new Install, a failed one), and Base refuses a slot without one.
func TestIndexLifecycle(t *testing.T) {
	m, o := dirRig(t)
	ctx := context.Background()
	layers := threeLayers(t)
	if _, err := m.Base(A); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("empty slot: %v", err)
	}
	if _, err := m.Install(ctx, A, Image{Layers: readers(layers...)}); err != nil {
		t.Fatal(err)
	}
	exists := func() bool { _, err := os.Stat(indexPath(o.StateDir, A)); return err == nil }
	if !exists() {
		t.Fatal("no index after install")
	}
	if err := m.Prepare(ctx, A); err != nil {
		t.Fatal(err)
	}
	if exists() {
		t.Fatal("index kept after Prepare")
	}
	if _, err := m.Base(A); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("writing slot: %v", err)
	}
	// A failed install leaves neither an index nor its temporary file.
	bad := append([]byte(nil), layers[0][:3000]...)
	if _, err := m.Install(ctx, A, Image{Layers: readers(bad)}); err == nil {
		t.Fatal("truncated layer installed")
	}
	if names, _ := filepath.Glob(filepath.Join(o.StateDir, "layers-*")); len(names) != 0 {
		t.Fatalf("state dir after a failed install: %v", names)
	}
	// An index from an older install of a slot recorded writing (a crash
	// after the record, before the removal) is not served.
	if _, err := m.Install(ctx, A, Image{Layers: readers(layers...)}); err != nil {
		t.Fatal(err)
	}
	idx, _ := os.ReadFile(indexPath(o.StateDir, A))
	if err := m.Prepare(ctx, A); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(indexPath(o.StateDir, A), idx, 0o644)
	if _, err := m.Base(A); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("stale index of a writing slot: %v", err)
	}
	// The layer stream's producer reports a bad layer after its last
	// byte: the install fails (the recorder reads the stream to its end).
	pr, pw := io.Pipe()
	go func() {
		pw.Write(layers[1])
		pw.CloseWithError(errors.New("diff_id mismatch"))
	}()
	if _, err := m.Install(ctx, A, Image{Layers: []io.Reader{pr}}); err == nil || !strings.Contains(err.Error(), "diff_id mismatch") {
		t.Fatalf("install of a layer reported bad at its end: %v", err)
	}
}

// TestIndexSparseEntry: a GNU sparse file's archived bytes are not its
// content; the index keeps them inline and still gives the layer back.
func TestIndexSparseEntry(t *testing.T) {
	m, _ := dirRig(t)
	// A PAX 1.0 sparse file: map "1\n0\n5\n" (one 5-byte data block at 0)
	// in the data area, real size 4096.
	body := []byte("1\n0\n5\n")
	body = append(body, make([]byte, 512-len(body))...)
	body = append(body, "hello"...)
	var pax []byte
	for _, kv := range []string{"GNU.sparse.major=1", "GNU.sparse.minor=0", "GNU.sparse.name=sparse", "GNU.sparse.realsize=4096"} {
		n := len(kv) + 3
		if n+1 >= 100 {
			n++
		}
		pax = append(pax, fmt.Sprintf("%d %s\n", n+1, kv)...)
	}
	layer := append(rawEntry("PaxHeader", tar.TypeXHeader, pax), rawEntry("GNUSparseFile.0/sparse", tar.TypeReg, body)...)
	layer = append(layer, newTB().file("plain", "abc").bytes()...)
	res, err := m.Install(context.Background(), A, Image{Layers: readers(layer)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != 4096+3 {
		t.Fatalf("content %d bytes: the sparse entry was not read as sparse", res.Bytes)
	}
	base, err := m.Base(A)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	if got := layerBytes(t, base, digest.FromBytes(layer), 100); !bytes.Equal(got, layer) {
		t.Fatal("layer with a sparse entry differs")
	}
}

// TestIndexCorrupted: every truncation and many bit flips of an index
// give ErrIndex from Base or, for a flip in chunk data, an error or
// different bytes from a read: never a panic, never a hang.
func TestIndexCorrupted(t *testing.T) {
	m, o := dirRig(t)
	layers := threeLayers(t)
	if _, err := m.Install(context.Background(), A, Image{Layers: readers(layers...), DiffIDs: digests(layers...)}); err != nil {
		t.Fatal(err)
	}
	p := indexPath(o.StateDir, A)
	good, _ := os.ReadFile(p)
	defer os.WriteFile(p, good, 0o644)
	check := func(what string, data []byte) {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := m.Base(A)
		if err != nil {
			if !errors.Is(err, ErrIndex) {
				t.Fatalf("%s: %v does not wrap ErrIndex", what, err)
			}
			return
		}
		defer b.Close()
		for _, d := range b.Layers() {
			size, _ := b.Size(d)
			io.Copy(io.Discard, io.NewSectionReader(b.Layer(d), 0, size))
		}
	}
	for _, n := range []int{0, 1, footerSize - 1, footerSize, len(good) / 2, len(good) - footerSize, len(good) - 1} {
		check(fmt.Sprintf("truncated to %d", n), good[:n])
	}
	r := testRand(t)
	for i := 0; i < 300; i++ {
		bad := append([]byte(nil), good...)
		at := r.IntN(len(bad))
		if i%2 == 0 {
			at = len(bad) - 1 - r.IntN(min(len(bad), 400)) // the table and footer
		}
		bad[at] ^= byte(1 + r.IntN(255))
		check(fmt.Sprintf("byte %d flipped", at), bad)
	}
	check("version 2", append(append([]byte(nil), good[:len(good)-12]...), append([]byte{0, 0, 0, 2}, indexMagic...)...))
}

// FuzzIndexTable decodes hostile tables: errors, never a panic, and a
// decoded table is consistent.
func FuzzIndexTable(f *testing.F) {
	f.Add(encodeTable([]*layerIndex{{diffID: digest.FromString("a"), size: 2000, kind: segFile,
		segs:   []segment{{off: 512, n: 10, path: "etc/x"}, {off: 1536, n: 20, path: "etc/y"}},
		chunks: []chunk{{clen: 100, raw: 1970}}}}), int64(100))
	f.Add(encodeTable([]*layerIndex{{diffID: digest.FromString("b"), size: 9, kind: segDevice, segs: []segment{{n: 9}}}}), int64(0))
	f.Fuzz(func(t *testing.T, table []byte, area int64) {
		layers, err := parseTable(table, area)
		if err != nil {
			if !errors.Is(err, ErrIndex) {
				t.Fatal(err)
			}
			return
		}
		for _, l := range layers {
			var end, content, inline int64
			for _, s := range l.segs {
				if s.off < end || s.n <= 0 || s.off+s.n > l.size || s.inline != s.off-content {
					t.Fatalf("segment %+v after %d", s, end)
				}
				end, content = s.off+s.n, content+s.n
			}
			for _, c := range l.chunks {
				inline += c.raw
				if c.fileOff+c.clen > area {
					t.Fatalf("chunk %+v beyond %d", c, area)
				}
			}
			if inline != l.size-content {
				t.Fatalf("chunks hold %d inline bytes of %d", inline, l.size-content)
			}
		}
	})
}

// TestIndexOverVFSCrash: the index is written through the Manager's FS,
// synced and renamed before the slot is recorded written, so that after a
// power cut at any step a written slot has its index (raw slot on MemFS).
func TestIndexOverVFSCrash(t *testing.T) {
	r := testRand(t)
	layer := newTB().hdr(&tar.Header{Name: "fs.img", Typeflag: tar.TypeReg}, strings.Repeat("filesystem", 5000)).bytes()
	rig := newMemRig(t)
	m, err := Open(rig.o)
	if err != nil {
		t.Fatal(err)
	}
	before := rig.fs.Ops()
	if _, err := m.Install(context.Background(), B, Image{Layers: readers(layer)}); err != nil {
		t.Fatal(err)
	}
	ops := rig.fs.Ops() - before
	if ops < 10 {
		t.Fatalf("only %d operations", ops)
	}
	for cut := 0; cut < ops; cut++ {
		rig := newMemRig(t)
		m, err := Open(rig.o)
		if err != nil {
			t.Fatal(err)
		}
		rig.fs.SetCrashAfter(cut, r)
		m.Install(context.Background(), B, Image{Layers: readers(layer)})
		after := rig.fs.Crashed()
		if after == nil {
			t.Fatalf("cut %d: no power cut", cut)
		}
		o := rig.o
		o.FS = after
		m2, err := Open(o)
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		st := m2.Status().Slots[1]
		b, err := m2.Base(B)
		switch {
		case st.State == Written && err != nil:
			t.Fatalf("cut %d: written slot without its index: %v", cut, err)
		case st.State == Written:
			if got := layerBytes(t, b, digest.FromBytes(layer), 4096); !bytes.Equal(got, layer) {
				t.Fatalf("cut %d: layer differs", cut)
			}
			b.Close()
		case err == nil:
			t.Fatalf("cut %d: slot %s serves a base", cut, st.State)
		}
	}
}

// TestIndexAbandoned: an image beyond the index's limits installs all the
// same, without an index (the result says why), and is no base.
func TestIndexAbandoned(t *testing.T) {
	for _, lim := range []struct {
		name         string
		segs, chunks int
	}{{"files", 3, maxIndexChunks}, {"chunks", maxIndexSegments, 1}} {
		t.Run(lim.name, func(t *testing.T) {
			defer func(l struct{ segs, chunks int }) { recordLimits = l }(recordLimits)
			recordLimits.segs, recordLimits.chunks = lim.segs, lim.chunks
			m, o := dirRig(t)
			layers := threeLayers(t)
			res, err := m.Install(context.Background(), A, Image{Layers: readers(layers...), DiffIDs: digests(layers...)})
			if err != nil {
				t.Fatal(err)
			}
			if res.IndexBytes != 0 || !strings.Contains(res.IndexSkipped, "more than") {
				t.Fatalf("index %d bytes, skipped %q", res.IndexBytes, res.IndexSkipped)
			}
			if names, _ := filepath.Glob(filepath.Join(o.StateDir, "layers-*")); len(names) != 0 {
				t.Fatalf("left %v", names)
			}
			if _, err := m.Base(A); !errors.Is(err, ErrNoIndex) {
				t.Fatalf("base: %v", err)
			}
		})
	}
}
