package slots

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func extractAndCheck(t *testing.T, layers ...[]byte) (string, map[string]Entry) {
	t.Helper()
	dir := t.TempDir()
	res, err := ExtractLayers(context.Background(), dir, readers(layers...), ExtractOptions{Sync: SyncNone, Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadTree(context.Background(), dir, ReadTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o := DigestOptions{Mtimes: true}
	if d := DiffEntries(res.Entries, got, o); d != "" {
		t.Fatalf("disk differs from the archive's tree: %s", d)
	}
	// The tree computed beforehand, without writing, is the same.
	want, err := ExpectedTree(context.Background(), readers(layers...), ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d := DiffEntries(want.Entries, got, o); d != "" {
		t.Fatalf("disk differs from the expected tree: %s", d)
	}
	if want.Files != res.Files || want.Bytes != res.Bytes {
		t.Fatalf("expected tree counts %d files %d bytes, extraction %d %d", want.Files, want.Bytes, res.Files, res.Bytes)
	}
	// Without hashing the small files go to the workers; with one worker
	// everything is written in archive order: the same tree either way.
	for _, workers := range []int{1, 2} {
		d := t.TempDir()
		if _, err := ExtractLayers(context.Background(), d, readers(layers...), ExtractOptions{Sync: SyncNone, Workers: workers}); err != nil {
			t.Fatalf("workers %d: %v", workers, err)
		}
		es, err := ReadTree(context.Background(), d, ReadTreeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d := DiffEntries(want.Entries, es, o); d != "" {
			t.Fatalf("workers %d: disk differs from the expected tree: %s", workers, d)
		}
	}
	if TreeDigest(res.Entries, o) != TreeDigest(got, o) {
		t.Fatal("digests differ while entries are equal")
	}
	return dir, entryMap(t, got)
}

func TestExtractEntryTypes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for device nodes and ownership")
	}
	l := newTB().dir("usr/").dir("usr/bin").
		hdr(&tar.Header{Name: "usr/bin/tool", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 1000, Gid: 50}, "#!/bin/sh\n").
		link("usr/bin/tool2", "usr/bin/tool").
		symlink("bin", "usr/bin").
		symlink("usr/bin/abs", "/etc/passwd").
		hdr(&tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}, "").
		hdr(&tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Devmajor: 8, Devminor: 0, Mode: 0o660, Gid: 6}, "").
		hdr(&tar.Header{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o600}, "").
		hdr(&tar.Header{Name: "etc/cap", Typeflag: tar.TypeReg, PAXRecords: map[string]string{"SCHILY.xattr.user.test": "v1\x00bin"}}, "x").
		hdr(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}, "").
		bytes()
	dir, m := extractAndCheck(t, l)
	want := map[string]byte{"usr": 'd', "usr/bin": 'd', "usr/bin/tool": 'f', "usr/bin/tool2": 'f', "bin": 'l',
		"usr/bin/abs": 'l', "dev": 'd', "dev/null": 'c', "dev/sda": 'b', "run/fifo": 'p', "etc/cap": 'f', "tmp": 'd'}
	for p, typ := range want {
		if m[p].Type != typ {
			t.Errorf("%s: type %q, want %q", p, m[p].Type, typ)
		}
	}
	if len(m) != len(want)+2 { // + implicit run, etc
		t.Errorf("%d entries, want %d: %v", len(m), len(want)+2, m)
	}
	if e := m["usr/bin/tool"]; e.Mode != 0o4755 || e.UID != 1000 || e.GID != 50 || e.Mtime != testTime.UnixNano() {
		t.Errorf("tool: %+v", e)
	}
	if e := m["tmp"]; e.Mode != 0o1777 || e.Mtime != testTime.UnixNano() {
		t.Errorf("tmp: %+v", e)
	}
	if e := m["dev/null"]; e.Major != 1 || e.Minor != 3 || e.Mode != 0o666 {
		t.Errorf("dev/null: %+v", e)
	}
	if e := m["bin"]; e.Link != "usr/bin" || e.Mtime != testTime.UnixNano() {
		t.Errorf("symlink: %+v", e)
	}
	if e := m["run"]; e.Mode != 0o755 {
		t.Errorf("implicit dir: %+v", e)
	}
	if e := m["etc/cap"]; len(e.Xattrs) != 1 || e.Xattrs[0].Value != "v1\x00bin" {
		t.Errorf("xattrs: %+v", e.Xattrs)
	}
	var a, b unix.Stat_t
	unix.Stat(filepath.Join(dir, "usr/bin/tool"), &a)
	unix.Stat(filepath.Join(dir, "usr/bin/tool2"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link: inodes %d %d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
}

// TestWorkerErrorNamesEntry: a small file that fails on a worker (an xattr
// namespace the kernel refuses) fails the extraction with its own name,
// as it does when written in archive order.
func TestWorkerErrorNamesEntry(t *testing.T) {
	l := newTB().file("a", "1").
		hdr(&tar.Header{Name: "b", Typeflag: tar.TypeReg, PAXRecords: map[string]string{"SCHILY.xattr.bogus.x": "v"}}, "2").
		file("c", "3").dir("d").file("d/e", "4").bytes()
	for _, workers := range []int{1, 2} {
		_, err := ExtractLayers(context.Background(), t.TempDir(), readers(l), ExtractOptions{Sync: SyncNone, Workers: workers})
		if err == nil || !strings.HasPrefix(err.Error(), `layer 0: entry "b": set xattr bogus.x`) {
			t.Errorf("workers %d: %v", workers, err)
		}
	}
}
