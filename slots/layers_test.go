package slots

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

func paths(m map[string]Entry) string {
	var ps []string
	for p := range m {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return strings.Join(ps, " ")
}

func TestWhiteoutsAndOpaque(t *testing.T) {
	l1 := newTB().dir("etc").file("etc/a", "1").file("etc/b", "1").
		dir("opt").dir("opt/sub").file("opt/sub/x", "1").file("opt/keep", "1").
		dir("gone").file("gone/f", "1").bytes()
	l2 := newTB().
		file("etc/.wh.a", "").           // whiteout a file
		file(".wh.gone", "").            // whiteout a whole directory
		file("opt/new", "2").            // same layer as the opaque marker, before it
		file("opt/.wh..wh..opq", "").    // hide lower opt/*
		file("opt/after", "2").          // same layer, after the marker
		file("nothere/.wh.x", "").       // whiteout under a missing dir: nothing
		file(".wh..wh.plnk", "").        // aufs metadata: ignored
		file("etc/b", "changed").bytes() // override
	dir, m := extractAndCheck(t, l1, l2)
	if got, want := paths(m), "etc etc/b opt opt/after opt/new"; got != want {
		t.Fatalf("tree %q, want %q", got, want)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "etc/b"))
	if string(b) != "changed" {
		t.Errorf("etc/b = %q", b)
	}
}

func TestReplaceTypes(t *testing.T) {
	l1 := newTB().dir("d").file("d/f", "x").file("f", "file").symlink("l", "f").bytes()
	l2 := newTB().file("d", "now a file").dir("f").file("f/inner", "y").file("l", "now a file").bytes()
	_, m := extractAndCheck(t, l1, l2)
	if got, want := paths(m), "d f f/inner l"; got != want {
		t.Fatalf("tree %q, want %q", got, want)
	}
	if m["d"].Type != 'f' || m["f"].Type != 'd' || m["l"].Type != 'f' {
		t.Fatalf("types: %c %c %c", m["d"].Type, m["f"].Type, m["l"].Type)
	}
}

func TestHardlinkSurvivesTargetReplacement(t *testing.T) {
	l1 := newTB().file("a", "old").link("b", "a").bytes()
	l2 := newTB().file("a", "new").bytes()
	_, m := extractAndCheck(t, l1, l2)
	if m["a"].Size != 3 || m["a"].SHA256 == m["b"].SHA256 {
		t.Fatal("b should keep the old content after a is replaced")
	}
}

func TestExtractEmptiesSlot(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "old/deep"), 0o755)
	os.WriteFile(filepath.Join(dir, "old/deep/f"), []byte("x"), 0o644)
	os.Symlink("/", filepath.Join(dir, "rootlink"))
	os.Mkdir(filepath.Join(dir, "lost+found"), 0o700)
	if _, err := ExtractLayers(context.Background(), dir, readers(newTB().file("new", "n").bytes()), ExtractOptions{Sync: SyncNone}); err != nil {
		t.Fatal(err)
	}
	names, _ := os.ReadDir(dir)
	var got []string
	for _, n := range names {
		got = append(got, n.Name())
	}
	if strings.Join(got, " ") != "lost+found new" {
		t.Fatalf("slot holds %v", got)
	}
}

func TestSyncModes(t *testing.T) {
	for _, mode := range []SyncMode{SyncFS, SyncEach} {
		dir := t.TempDir()
		l := newTB().dir("a").file("a/f", "x").file("g", "y").bytes()
		if _, err := ExtractLayers(context.Background(), dir, readers(l), ExtractOptions{Sync: mode}); err != nil {
			t.Fatalf("mode %d: %v", mode, err)
		}
	}
}

// TestEarlyWriteback checks the flusher of SyncFS: it runs while the
// extraction goes on (small FlushEvery), the result is the
// same tree, and a writeback error it sees fails the extraction, naming
// syncfs, even though the final syncfs on another descriptor succeeds.
func TestEarlyWriteback(t *testing.T) {
	b := newTB().dir("a")
	for i := range 20 {
		b.file(fmt.Sprintf("a/f%d", i), strings.Repeat("x", 1000+i))
	}
	layer := b.bytes()
	defer func(f func(int) error) { flushSyncfs = f }(flushSyncfs)
	var flushes atomic.Int32
	var fail atomic.Bool
	flushSyncfs = func(fd int) error {
		flushes.Add(1)
		if fail.Load() {
			return unix.EIO
		}
		return unix.Syncfs(fd)
	}
	for _, workers := range []int{1, 2} {
		flushes.Store(0)
		fail.Store(false)
		dir := t.TempDir()
		res, err := ExtractLayers(context.Background(), dir, readers(layer), ExtractOptions{FlushEvery: 4000, Workers: workers})
		if err != nil {
			t.Fatalf("workers %d: %v", workers, err)
		}
		// Flushes asked for while one runs are merged: at least one.
		if n := flushes.Load(); n < 1 {
			t.Fatalf("workers %d: no flush of 20 KB in 4000-byte steps", workers)
		}
		got, err := ReadTree(context.Background(), dir, ReadTreeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want, err := ExpectedTree(context.Background(), readers(layer), ExtractOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d := DiffEntries(want.Entries, got, DigestOptions{Mtimes: true}); d != "" {
			t.Fatalf("workers %d: disk differs from the expected tree: %s", workers, d)
		}
		if res.Files != 20 {
			t.Fatalf("workers %d: %d files", workers, res.Files)
		}

		flushes.Store(0)
		fail.Store(true)
		_, err = ExtractLayers(context.Background(), t.TempDir(), readers(layer), ExtractOptions{FlushEvery: 4000, Workers: workers})
		if !errors.Is(err, unix.EIO) || !strings.Contains(err.Error(), "syncfs") {
			t.Fatalf("workers %d: injected writeback error: got %v", workers, err)
		}
	}
	// Off: only the final syncfs, the flusher never runs.
	flushes.Store(0)
	fail.Store(false)
	if _, err := ExtractLayers(context.Background(), t.TempDir(), readers(layer), ExtractOptions{FlushEvery: -1}); err != nil {
		t.Fatal(err)
	}
	if n := flushes.Load(); n != 0 {
		t.Fatalf("FlushEvery -1: %d flushes", n)
	}
}

func TestExtractCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ExtractLayers(ctx, t.TempDir(), readers(newTB().file("f", "x").bytes()), ExtractOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

func TestExtractLimits(t *testing.T) {
	l := newTB().file("a", "12345").file("b", "12345").bytes()
	for _, tc := range []struct {
		o    ExtractOptions
		want string
	}{
		{ExtractOptions{MaxEntries: 1}, "more than 1 entries"},
		{ExtractOptions{MaxFileSize: 4}, "size 5 (limit 4)"},
		{ExtractOptions{MaxTotal: 8}, "more than 8 content bytes"},
	} {
		tc.o.Sync = SyncNone
		_, err := ExtractLayers(context.Background(), t.TempDir(), readers(l), tc.o)
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v", tc.o, err)
		}
	}
}

// FuzzExtract feeds arbitrary bytes (as one or two layers) to the extractor
// in a sandbox and asserts that nothing outside the slot changes and that,
// when extraction succeeds, the disk matches the archive's tree.
func FuzzExtract(f *testing.F) {
	for _, tc := range hostileCorpus() {
		if len(tc.layers) == 1 && len(tc.layers[0]) < 64<<10 {
			f.Add(tc.layers[0], []byte{})
		}
	}
	f.Add(newTB().dir("etc").file("etc/a", "1").symlink("l", "etc").link("h", "etc/a").bytes(),
		newTB().file("etc/.wh.a", "").file("etc/.wh..wh..opq", "").file("l/x", "y").bytes())
	f.Add(newTB().hdr(&tar.Header{Name: "p", Typeflag: tar.TypeFifo}, "").bytes(), []byte{})
	f.Fuzz(func(t *testing.T, l1, l2 []byte) {
		slot, outside := sandbox(t)
		layers := [][]byte{l1}
		if len(l2) > 0 {
			layers = append(layers, l2)
		}
		o := ExtractOptions{Sync: SyncNone, MaxTotal: 16 << 20, MaxEntries: 10000, Hash: true}
		res, err := ExtractLayers(context.Background(), slot, readers(layers...), o)
		assertOutsideIntact(t, outside)
		// The same without hashing, small files written by the workers:
		// it fails where the other fails, and otherwise gives the same tree.
		slot2, outside2 := sandbox(t)
		po := o
		po.Hash, po.Workers = false, 2
		_, perr := ExtractLayers(context.Background(), slot2, readers(layers...), po)
		assertOutsideIntact(t, outside2)
		if (perr == nil) != (err == nil) {
			t.Fatalf("with hashing: %v; with workers: %v", err, perr)
		}
		if perr == nil {
			got2, err := ReadTree(context.Background(), slot2, ReadTreeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if d := DiffEntries(res.Entries, got2, DigestOptions{}); d != "" {
				t.Fatalf("with workers the disk differs from the archive's tree: %s", d)
			}
		}
		if err != nil {
			if err.Error() == "" || !strings.HasPrefix(err.Error(), "layer ") {
				t.Fatalf("unclear error %q", err)
			}
			return
		}
		got, err := ReadTree(context.Background(), slot, ReadTreeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d := DiffEntries(res.Entries, got, DigestOptions{}); d != "" {
			t.Fatalf("disk differs from the archive's tree: %s", d)
		}
		// What extraction accepts, the expected tree computed without
		// writing accepts too, and it is the tree on disk.
		want, err := ExpectedTree(context.Background(), readers(layers...), o)
		if err != nil {
			t.Fatalf("extraction succeeded, ExpectedTree: %v", err)
		}
		if d := DiffEntries(want.Entries, got, DigestOptions{}); d != "" {
			t.Fatalf("disk differs from the expected tree: %s", d)
		}
	})
}

// TestFinalSyncfsCoversEverything checks what makes an early-writeback
// extraction durable: the final syncfs runs even though the flusher ran
// (a flush covers only what was written before it), exactly once, after
// everything is written (every file of every worker, the old tree deleted,
// the directory times set), and no flush runs after it.
func TestFinalSyncfsCoversEverything(t *testing.T) {
	b := newTB().dir("a").dir("a/b")
	for i := range 40 {
		b.file(fmt.Sprintf("a/b/f%d", i), strings.Repeat("z", 2000+i))
	}
	b.file("big", strings.Repeat("y", 3<<20)).link("a/hard", "big").symlink("a/s", "b")
	layer := b.bytes()
	want, err := ExpectedTree(context.Background(), readers(layer), ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func(f, g func(int) error) { flushSyncfs, finalSyncfs = f, g }(flushSyncfs, finalSyncfs)
	var flushes, finals, flushesAfter int
	var dir, atFinal string
	flushSyncfs = func(fd int) error {
		flushes++ // the flusher runs one at a time, and stop waits for it
		if finals > 0 {
			flushesAfter++
		}
		return unix.Syncfs(fd)
	}
	finalSyncfs = func(fd int) error {
		finals++
		got, err := ReadTree(context.Background(), dir, ReadTreeOptions{})
		if err != nil {
			atFinal = err.Error()
		} else {
			atFinal = DiffEntries(want.Entries, got, DigestOptions{Mtimes: true})
		}
		return unix.Syncfs(fd)
	}
	for _, workers := range []int{1, 2} {
		flushes, finals, flushesAfter, atFinal = 0, 0, 0, ""
		dir = t.TempDir()
		// An old tree to delete, so that its deletion is on the write path.
		if err := os.MkdirAll(filepath.Join(dir, "old/deep"), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 30 {
			if err := os.WriteFile(filepath.Join(dir, "old/deep", fmt.Sprint(i)), []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := ExtractLayers(context.Background(), dir, readers(layer), ExtractOptions{FlushEvery: 10000, Workers: workers}); err != nil {
			t.Fatalf("workers %d: %v", workers, err)
		}
		if flushes == 0 || finals != 1 || flushesAfter != 0 {
			t.Fatalf("workers %d: %d flushes, %d final syncfs, %d flushes after it: want some, exactly 1, none", workers, flushes, finals, flushesAfter)
		}
		if atFinal != "" {
			t.Fatalf("workers %d: at the final syncfs the slot was not complete: %s", workers, atFinal)
		}
	}
}
