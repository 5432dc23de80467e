package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/internal/testtool"
	"github.com/opencontainers/go-digest"
)

var fixedTime = time.Unix(1700000000, 0)

// ext4Image makes a filesystem image of sizeKiB holding files, reproducibly
// (fixed UUID, hash seed and time, as hil/vm's slot images, and every
// inode's times set afterwards): two calls with the same files give the
// same bytes, and versions differ only where their files make them.
func ext4Image(t testing.TB, files map[string][]byte, sizeKiB int) []byte {
	t.Helper()
	mkfs := testtool.Need(t, "mkfs.ext4")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	// In a fixed order: the tree's directory order is what mkfs follows.
	for _, name := range slices.Sorted(maps.Keys(files)) {
		data := files[name]
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "fs.ext4")
	cmd := exec.Command(mkfs, "-q", "-F", "-U", "626f6f74-6f72-6269-7400-000000000001",
		"-E", "hash_seed=626f6f74-6f72-6269-7400-000000000002", "-d", root, img, fmt.Sprintf("%dk", sizeKiB))
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	// mkfs.ext4 -d copies each inode's times from the tree: ctime no one
	// can set, atime moves as the tree is read. debugfs sets them to the
	// fixed time.
	var cmds strings.Builder
	filepath.WalkDir(root, func(p string, _ os.DirEntry, _ error) error {
		rel, _ := filepath.Rel(root, p)
		for _, field := range []string{"atime", "mtime", "ctime"} {
			fmt.Fprintf(&cmds, "sif \"/%s\" %s @%d\n", filepath.ToSlash(strings.TrimPrefix(rel, ".")), field, fixedTime.Unix())
		}
		return nil
	})
	cmdFile := filepath.Join(dir, "debugfs.cmds")
	if err := os.WriteFile(cmdFile, []byte(cmds.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(testtool.Need(t, "debugfs"), "-w", "-f", cmdFile, img)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000")
	if out, err := cmd.CombinedOutput(); err != nil || bytes.Contains(out, []byte("sif:")) {
		t.Fatalf("debugfs: %v: %s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rootfsFiles is a small system tree: binaries, libraries, text.
func rootfsFiles(version int) map[string][]byte {
	rng := rand.New(rand.NewPCG(5, 5))
	files := map[string][]byte{
		"etc/version":      []byte(fmt.Sprintf("version=%d\n", version)),
		"etc/hostname":     []byte("obc1\n"),
		"etc/flightd.json": []byte(strings.Repeat(`{"vehicle": 42, "slots": ["a", "b"]}`+"\n", 40)),
	}
	for i := 0; i < 12; i++ {
		files[fmt.Sprintf("usr/lib/lib%02d.so", i)] = binaryLike(rng, 128<<10+rng.IntN(256<<10))
	}
	files["usr/bin/flightd"] = binaryLike(rng, 3<<20)
	return files
}

// rawPair is version 1 and 2 of a 20 MiB ext4 filesystem image; grow
// makes version 2 change more: a rebuilt binary (shifted code) and a new
// file besides the version file.
// The pairs are built once per test binary (mkfs takes a while).
func rawPair(t testing.TB, grow bool) (old, nw []byte) {
	t.Helper()
	rawPairs.Lock()
	defer rawPairs.Unlock()
	if p, ok := rawPairs.m[grow]; ok {
		return p[0], p[1]
	}
	v1, v2 := rootfsFiles(1), rootfsFiles(2)
	if grow {
		v2["usr/bin/flightd"] = shift(v2["usr/bin/flightd"])
		v2["usr/share/doc/notes.txt"] = bytes.Repeat([]byte("release notes for version 2\n"), 4000)
	}
	old, nw = ext4Image(t, v1, 20<<10), ext4Image(t, v2, 20<<10)
	rawPairs.m[grow] = [2][]byte{old, nw}
	return old, nw
}

var rawPairs = struct {
	sync.Mutex
	m map[bool][2][]byte
}{m: map[bool][2][]byte{}}

// TestRawLayerDelta: a layer that is not a tar (a raw slot's filesystem
// image) is diffed against the base layer at the same index, not sent
// whole: kilobytes for a version that changes one small file.
func TestRawLayerDelta(t *testing.T) {
	for _, tc := range []struct {
		name string
		grow bool
		max  int // bundle bytes
	}{
		{"one-small-file", false, 16 << 10},
		{"rebuilt-binary-and-new-file", true, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, nw := rawPair(t, tc.grow)
			if bytes.Equal(old, nw) {
				t.Fatal("the two versions are the same image")
			}
			if !tc.grow {
				if again := ext4Image(t, rootfsFiles(1), 20<<10); !bytes.Equal(again, old) {
					t.Error("mkfs.ext4 -d did not make the same image twice")
				}
			}
			if es, trailer, _ := scanTar(bytes.NewReader(nw), int64(len(nw))); len(es) != 0 || trailer != 0 {
				t.Fatalf("an ext4 image scans as a tar: %d entries, trailer at %d", len(es), trailer)
			}
			b, bundle := roundTrip(t, [][]byte{old}, [][]byte{nw}, Options{})
			lp := b.Header.Layers[0]
			if lp.Decision != Delta {
				t.Errorf("decision %q, want %q", lp.Decision, Delta)
			}
			changed := 0
			for i := 0; i < len(nw); i += opaqueBlock {
				if !bytes.Equal(old[i:i+opaqueBlock], nw[i:i+opaqueBlock]) {
					changed++
				}
			}
			t.Logf("%s: %d-byte images, %d of %d KiB blocks differ; bundle %d bytes (header %d), %d parts",
				tc.name, len(nw), changed, len(nw)/opaqueBlock, len(bundle), b.HeaderSize(), len(lp.Parts))
			if len(bundle) > tc.max {
				t.Errorf("bundle of %d bytes, want at most %d", len(bundle), tc.max)
			}
		})
	}
}

// TestRawLayerTools puts ours beside xdelta3 and, with -long (bsdiff
// takes minutes on 20 MiB), bsdiff and the whole image at zstd -19 on the
// same pair of filesystem images (what docs/delta.md reports).
func TestRawLayerTools(t *testing.T) {
	tools := []string{"xdelta3"}
	if testrand.Long() {
		tools = append(tools, "bsdiff", "zstd")
	}
	for _, tool := range tools {
		needTool(t, tool)
	}
	for _, grow := range []bool{false, true} {
		old, nw := rawPair(t, grow)
		dir := t.TempDir()
		o, n := filepath.Join(dir, "old"), filepath.Join(dir, "new")
		if err := os.WriteFile(o, old, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(n, nw, 0o644); err != nil {
			t.Fatal(err)
		}
		size := func(args ...string) int {
			out := filepath.Join(dir, "out")
			os.Remove(out)
			cmd := exec.Command(args[0], append(args[1:], out)...)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v: %v: %s", args, err, b)
			}
			fi, err := os.Stat(out)
			if err != nil {
				t.Fatal(err)
			}
			return int(fi.Size())
		}
		ours := len(computeBytes(t, [][]byte{old}, [][]byte{nw}, Options{}))
		bsd, zst := "(-long)", "(-long)"
		if testrand.Long() {
			bsd, zst = fmt.Sprint(size("bsdiff", o, n)), fmt.Sprint(size("zstd", "-q", "-19", "-f", n, "-o"))
		}
		t.Logf("grow=%v, %d-byte images: ours %d bytes, bsdiff %s, xdelta3 -9 %d, zstd -19 (whole image) %s", grow, len(nw), ours,
			bsd, size("xdelta3", "-e", "-9", "-f", "-s", o, n), zst)
	}
}

// TestRawLayerShapes round-trips opaque layers of odd shapes: no base at
// that index, a shorter and a longer base, sizes that are not a multiple
// of the block, moved blocks, zero stretches, and a base that is a tar.
func TestRawLayerShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 7))
	base := binaryLike(rng, 3<<20+123)
	moved := append(append(append([]byte{}, base[1<<20:2<<20]...), base[:1<<20]...), base[2<<20:]...)
	edited := append([]byte{}, base...)
	for i := 0; i < 40; i++ {
		off := rng.IntN(len(edited) - 100)
		copy(edited[off:], binaryLike(rng, 1+rng.IntN(100)))
	}
	zeroed := append([]byte{}, base...)
	clear(zeroed[500000:1500000])
	grown := append(append([]byte{}, edited...), binaryLike(rng, 700<<10)...)
	tarBase := tarsOf(t, []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "etc/motd", Data: []byte("hello\n")}}}})
	for _, tc := range []struct {
		name     string
		old, new [][]byte
	}{
		{"edited", [][]byte{base}, [][]byte{edited}},
		{"moved-blocks", [][]byte{base}, [][]byte{moved}},
		{"zeroed", [][]byte{base}, [][]byte{zeroed}},
		{"grown", [][]byte{base}, [][]byte{grown}},
		{"shrunk", [][]byte{grown}, [][]byte{base[:2<<20+77]}},
		{"no-base-at-index", [][]byte{}, [][]byte{edited}},
		{"second-layer", [][]byte{tarBase[0], base}, [][]byte{tarBase[0], edited}},
		{"tar-base", [][]byte{tarBase[0]}, [][]byte{edited}},
		// The image was in a tar (the other form of a raw slot's layer).
		{"tar-form-base", tarsOf(t, []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "rootfs.img", Data: base}}}}), [][]byte{edited}},
		{"tar-form-target", [][]byte{base}, tarsOf(t, []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "rootfs.img", Data: edited}}}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, bundle := roundTrip(t, tc.old, tc.new, Options{PartSize: 1 << 20})
			t.Logf("%s: %d bytes rebuilt from a %d-byte bundle", tc.name, len(tc.new[len(tc.new)-1]), len(bundle))
		})
	}
}

// TestRawBaseLies: a delta against a raw base whose bytes do not bear out
// the bundle's ranges (a shorter device, an edited block, a range beyond
// the base's end) is refused before any output, naming the byte range.
func TestRawBaseLies(t *testing.T) {
	old, nw := rawPair(t, false)
	b, err := OpenBundle(bytesReader(computeBytes(t, [][]byte{old}, [][]byte{nw}, Options{PartSize: 4 << 20})))
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(old)
	check := func(name string, base Base, want string) {
		t.Helper()
		var out bytes.Buffer
		err := b.ApplyLayer(context.Background(), 0, base, &out)
		if !errors.Is(err, ErrBaseMismatch) {
			t.Fatalf("%s: %v, want a base mismatch", name, err)
		}
		if out.Len() != 0 {
			t.Errorf("%s: %d bytes written before the mismatch was found", name, out.Len())
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want it to say %q", name, err, want)
		}
		t.Logf("%s: %v", name, err)
	}
	// The device holds less than the layer recorded (a smaller slot).
	check("short", MapBase{d: bytes.NewReader(old[:len(old)/2])}, "base layer has only")
	// A block of the booted slot changed since install.
	edited := append([]byte{}, old...)
	edited[len(edited)-5000] ^= 1
	check("edited", MapBase{d: bytes.NewReader(edited)}, "bytes [")

	// A hostile bundle naming a range beyond the base's end, with the
	// digest of what lies there being zeros: refused, not read as zeros.
	h := *b.Header
	h.Layers = append([]LayerPlan(nil), h.Layers...)
	lp := &h.Layers[0]
	lp.Parts = append([]Part(nil), lp.Parts...)
	p := &lp.Parts[0]
	p.Ranges = append([]Range(nil), p.Ranges...)
	last := &p.Ranges[len(p.Ranges)-1]
	last.Off = int64(len(old)) - 512
	zeros := make([]byte, last.Len)
	sum := sha256.Sum256(zeros)
	last.Digest = sum[:]
	payload := make([]byte, h.PayloadSize)
	if _, err := b.r.ReadAt(payload, b.payloadOff); err != nil {
		t.Fatal(err)
	}
	hb, err := OpenBundle(bytesReader(assemble(t, &h, payload)))
	if err != nil {
		t.Fatalf("a range beyond the base's end is a base question, not a format one: %v", err)
	}
	err = hb.ApplyLayer(context.Background(), 0, MapBase{d: bytes.NewReader(old)}, &bytes.Buffer{})
	if !errors.Is(err, ErrBaseMismatch) || !strings.Contains(err.Error(), "base layer has only") {
		t.Fatalf("range beyond the base: %v", err)
	}
	t.Logf("range beyond the base: %v", err)
}

// rawImages writes an old and a new opaque image of size bytes (a
// multiple of 1 MiB) to files, a MiB at a time: the new one keeps most
// MiBs, edits a few bytes in some, rewrites some with fresh bytes
// (literal data, more than the lit window over the whole) and shifts
// others (bsdiff alignment).
func rawImages(t testing.TB, dir string, size int64) (oldPath, newPath string) {
	t.Helper()
	oldPath, newPath = filepath.Join(dir, "old.img"), filepath.Join(dir, "new.img")
	of, err := os.Create(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	defer of.Close()
	nf, err := os.Create(newPath)
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	for k := int64(0); k < size>>20; k++ {
		rng := rand.New(rand.NewPCG(uint64(k), 9))
		o := binaryLike(rng, 1<<20)
		n := append([]byte(nil), o...)
		switch k % 16 {
		case 3:
			for i := 0; i < 20; i++ {
				n[rng.IntN(len(n))] ^= 0x40
			}
		case 7:
			for i := range n {
				n[i] = byte(rng.Uint32())
			}
		case 11:
			n = shift(o)[:1<<20]
		}
		if _, err := of.Write(o); err != nil {
			t.Fatal(err)
		}
		if _, err := nf.Write(n); err != nil {
			t.Fatal(err)
		}
	}
	return oldPath, newPath
}

// TestRawApplyMemoryBound applies a delta of a large opaque layer and
// reports the peak heap growth during apply: the base is read by offset,
// never loaded. 32 MiB by default, 1 GiB with -long.
func TestRawApplyMemoryBound(t *testing.T) {
	size := int64(32 << 20)
	if testrand.Long() {
		size = 1 << 30
	}
	dir := t.TempDir()
	oldPath, newPath := rawImages(t, dir, size)
	src := func(p string) LayerSource {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		d, err := digest.FromReader(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		return LayerSource{DiffID: d, Open: func() (io.ReadCloser, error) { return os.Open(p) }}
	}
	oldSrc, newSrc := src(oldPath), src(newPath)
	bundlePath := filepath.Join(dir, "bundle")
	bf, err := os.Create(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ComputeLayers(context.Background(), []LayerSource{oldSrc}, Target{Config: []byte("{}"), Layers: []LayerSource{newSrc}}, bf, Options{TempDir: dir})
	if cerr := bf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	bf, err = os.Open(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	b, err := OpenBundle(bf, st.BundleSize)
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.Open(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.HeapInuse
	probe := &heapProbe{}
	if err := b.ApplyLayer(context.Background(), 0, MapBase{oldSrc.DiffID: base}, probe); err != nil {
		t.Fatal(err)
	}
	growth := int64(probe.peak) - int64(before)
	ls := st.Layers[0]
	t.Logf("applied a %d MiB opaque layer (%d parts, bundle %d bytes: lit %d, diff %d, ops %d): heap in use grew by at most %.1f MiB",
		size>>20, ls.Parts, st.BundleSize, ls.Streams[streamLit].Len, ls.Streams[streamDiff].Len, ls.Streams[streamOps].Len, float64(growth)/(1<<20))
	if probe.n != uint64(size) {
		t.Fatalf("rebuilt %d bytes, want %d", probe.n, size)
	}
	if growth > ApplyMemoryBound {
		t.Errorf("apply heap grew by %d bytes, above the documented bound of %d", growth, ApplyMemoryBound)
	}
}

// TestLargeFileOpaque: a changed file above opaqueFile (here lowered) in a
// tar, such as a filesystem image in the tar form of a raw slot's layer, is
// coded block-wise against its old version, not aligned whole.
func TestLargeFileOpaque(t *testing.T) {
	defer func(n int64) { opaqueFile = n }(opaqueFile)
	opaqueFile = 1 << 20
	rng := rand.New(rand.NewPCG(seed(t), 8))
	img := binaryLike(rng, 3<<20)
	edited := append([]byte(nil), img...)
	copy(edited[1<<20+100:], "version=2")
	copy(edited[2<<20:], binaryLike(rng, 4096))
	layer := func(b []byte) [][]byte {
		return tarsOf(t, []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "etc/motd", Data: []byte("hi\n")}, {Name: "rootfs.img", Data: b}}}})
	}
	var buf bytes.Buffer
	old, nw := layer(img), layer(edited)
	st, err := ComputeLayers(context.Background(), sources(old), Target{Config: []byte("{}"), Layers: sources(nw)}, &buf, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if st.Layers[0].Opaque != 1 || st.Layers[0].Diffed != 1 {
		t.Fatalf("stats %+v: want the image diffed as one opaque stretch", st.Layers[0])
	}
	_, bundle := roundTrip(t, old, nw, Options{})
	t.Logf("a %d-byte file edited in two places: bundle %d bytes", len(img), len(bundle))
	if len(bundle) > 8<<10 {
		t.Errorf("bundle of %d bytes", len(bundle))
	}
}

// TestOpaqueProperty round-trips random opaque pairs (blocks edited,
// moved, zeroed, inserted, cut; the base longer or shorter) with the
// window and job sizes shrunk so that jobs split and windows clip, and
// small parts so that operations split across parts.
func TestOpaqueProperty(t *testing.T) {
	defer func(m, j int64) { opaqueMargin, opaqueJob = m, j }(opaqueMargin, opaqueJob)
	opaqueMargin, opaqueJob = 8<<10, 32<<10
	rng := rand.New(rand.NewPCG(seed(t), 10))
	pairs := 30
	if testrand.Long() {
		pairs = 300
	}
	for i := 0; i < pairs; i++ {
		old := binaryLike(rng, 64<<10+rng.IntN(400<<10))
		nw := append([]byte(nil), old...)
		for k := rng.IntN(12); k > 0; k-- {
			off := rng.IntN(len(nw))
			n := min(len(nw)-off, 1+rng.IntN(20<<10))
			switch rng.IntN(6) {
			case 0: // edit a few bytes
				for j := 0; j < 1+rng.IntN(8); j++ {
					nw[off+rng.IntN(n)] ^= byte(1 + rng.IntN(255))
				}
			case 1: // move blocks from elsewhere
				src := rng.IntN(len(old)-opaqueBlock) &^ (opaqueBlock - 1)
				copy(nw[off&^(opaqueBlock-1):], old[src:min(len(old), src+n)])
			case 2: // zero
				clear(nw[off : off+n])
			case 3: // insert fresh bytes
				nw = append(nw[:off], append(binaryLike(rng, n), nw[off:]...)...)
			case 4: // cut
				nw = append(nw[:off], nw[off+n:]...)
			case 5: // random bytes in place
				for j := off; j < off+n; j++ {
					nw[j] = byte(rng.Uint32())
				}
			}
			if len(nw) < opaqueTrailer {
				nw = append(nw, binaryLike(rng, opaqueTrailer)...)
			}
		}
		roundTrip(t, [][]byte{old}, [][]byte{nw}, Options{PartSize: int64(16<<10 + rng.IntN(200<<10)), fastZstd: true})
	}
}
