package slots

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sandbox is a temp dir with the slot inside it and a "victim" file next
// to it that no archive may touch.
func sandbox(t *testing.T) (slot, outside string) {
	t.Helper()
	base := t.TempDir()
	slot = filepath.Join(base, "slot")
	outside = filepath.Join(base, "outside")
	for _, d := range []string{slot, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("intact"), 0o644); err != nil {
		t.Fatal(err)
	}
	return slot, outside
}

// assertOutsideIntact checks that the directory next to the slot holds
// exactly the victim, unchanged.
func assertOutsideIntact(t *testing.T, outside string) {
	t.Helper()
	var names []string
	filepath.WalkDir(filepath.Dir(outside), func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(filepath.Dir(outside), p)
		if rel == "slot" && d.IsDir() {
			return filepath.SkipDir
		}
		names = append(names, rel)
		return nil
	})
	if strings.Join(names, ",") != ".,outside,outside/victim" {
		t.Fatalf("something was created or removed outside the slot: %v", names)
	}
	b, err := os.ReadFile(filepath.Join(outside, "victim"))
	if err != nil || string(b) != "intact" {
		t.Fatalf("victim changed: %q %v", b, err)
	}
}

func hostileCorpus() []struct {
	name   string
	layers [][]byte
	want   error
} {
	// Paths are relative to the slot; "../outside" is the sandbox's victim dir.
	huge := strings.Repeat("a", 2<<20)
	truncated := newTB().file("a", strings.Repeat("x", 10000)).bytes()
	truncated = truncated[:2048]
	truncatedHeader := newTB().file("a", "x").bytes()[:300]
	absurd := func() []byte {
		var b bytes.Buffer
		w := tar.NewWriter(&b)
		w.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Size: 1 << 50, Mode: 0o644, Format: tar.FormatPAX})
		return b.Bytes() // no body: refused before reading it
	}()
	return []struct {
		name   string
		layers [][]byte
		want   error
	}{
		{"dotdot", [][]byte{newTB().file("../outside/victim", "pwned").bytes()}, ErrEscape},
		{"dotdot inside", [][]byte{newTB().file("a/../../outside/x", "pwned").bytes()}, ErrEscape},
		{"absolute", [][]byte{newTB().file("/tmp/pwned", "pwned").bytes()}, ErrEscape},
		{"symlink then write through", [][]byte{newTB().symlink("evil", "../outside").file("evil/victim", "pwned").bytes()}, ErrEscape},
		{"absolute symlink then write through", [][]byte{newTB().symlink("evil", "/").file("evil/tmp/pwned", "pwned").bytes()}, ErrEscape},
		{"symlinked parent dir deep", [][]byte{newTB().dir("a").symlink("a/b", "../../outside").file("a/b/c/victim", "pwned").bytes()}, ErrEscape},
		{"symlinked parent across layers", [][]byte{newTB().symlink("evil", "../outside").bytes(), newTB().file("evil/victim", "pwned").bytes()}, ErrEscape},
		{"symlink then dir through", [][]byte{newTB().symlink("evil", "../outside").dir("evil/newdir").bytes()}, ErrEscape},
		{"hardlink outside", [][]byte{newTB().link("x", "../outside/victim").bytes()}, ErrEscape},
		{"hardlink absolute", [][]byte{newTB().link("x", "/etc/passwd").bytes()}, ErrEscape},
		{"hardlink through symlink", [][]byte{newTB().symlink("evil", "../outside").link("x", "evil/victim").bytes()}, ErrBadEntry},
		{"hardlink to missing", [][]byte{newTB().link("x", "nothere").bytes()}, ErrBadEntry},
		{"hardlink to dir", [][]byte{newTB().dir("d").link("x", "d").bytes()}, ErrBadEntry},
		{"whiteout escape", [][]byte{newTB().file("../outside/.wh.victim", "").bytes()}, ErrEscape},
		{"whiteout dotdot", [][]byte{newTB().file(".wh...", "").bytes()}, ErrEscape},
		{"whiteout through symlink", [][]byte{newTB().symlink("evil", "../outside").file("evil/.wh.victim", "").bytes()}, ErrEscape},
		{"opaque through symlink", [][]byte{newTB().symlink("evil", "../outside").file("evil/.wh..wh..opq", "").bytes()}, ErrEscape},
		{"huge name", [][]byte{newTB().file(strings.Repeat("d/", 2100)+"f", "x").bytes()}, ErrTooLarge},
		{"huge component", [][]byte{newTB().file(strings.Repeat("n", 300), "x").bytes()}, ErrTooLarge},
		{"huge pax record", [][]byte{append(rawEntry("PaxHeaders/f", tar.TypeXHeader, []byte(fmt.Sprintf("%d comment=%s\n", len(huge)+len(" comment=\n")+7, huge))), newTB().file("f", "x").bytes()...)}, ErrTooLarge},
		{"huge gnu long name", [][]byte{append(rawEntry("././@LongLink", tar.TypeGNULongName, []byte(huge)), newTB().file("f", "x").bytes()...)}, ErrTooLarge},
		{"huge symlink target", [][]byte{newTB().symlink("l", strings.Repeat("t", 5000)).bytes()}, ErrBadEntry},
		{"absurd size", [][]byte{absurd}, ErrTooLarge},
		{"truncated body", [][]byte{truncated}, ErrTruncated},
		{"truncated header", [][]byte{truncatedHeader}, ErrTruncated},
		{"garbage", [][]byte{bytes.Repeat([]byte("garbage!"), 128)}, ErrBadArchive},
		{"negative uid", [][]byte{newTB().hdr(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Uid: -5}, "x").bytes()}, ErrBadEntry},
		{"too many xattrs", [][]byte{newTB().hdr(&tar.Header{Name: "f", Typeflag: tar.TypeReg, PAXRecords: manyXattrs(200)}, "x").bytes()}, ErrTooLarge},
		{"unsupported type", [][]byte{newTB().hdr(&tar.Header{Name: "f", Typeflag: 'Z'}, "").bytes()}, ErrUnsupported},
		// The /etc and /var policy works on the slot's own directories: an
		// etc or var that is anything else is refused (TestHostileEtcVar
		// runs these through install, merge, reset and seeding).
		{"etc -> /etc", [][]byte{newTB().symlink("etc", "/etc").bytes()}, ErrBadEntry},
		{"etc -> ../outside", [][]byte{newTB().symlink("etc", "../outside").bytes()}, ErrBadEntry},
		{"etc regular file", [][]byte{newTB().file("etc", "x").bytes()}, ErrBadEntry},
		{"etc dir then symlink", [][]byte{newTB().dir("etc").file("etc/a", "1").bytes(), newTB().symlink("etc", "../outside").bytes()}, ErrBadEntry},
		{"etc hard link", [][]byte{newTB().file("f", "x").link("etc", "f").bytes()}, ErrBadEntry},
		{"var -> ../outside", [][]byte{newTB().symlink("var", "../outside").bytes()}, ErrBadEntry},
		{"var fifo", [][]byte{newTB().hdr(&tar.Header{Name: "var", Typeflag: tar.TypeFifo}, "").bytes()}, ErrBadEntry},
		{"lost+found file", [][]byte{newTB().file("lost+found", "x").bytes()}, ErrBadEntry},
		{"sparse past the declared size", [][]byte{sparseTar("big", 64<<20)}, ErrTooLarge},
	}
}

func manyXattrs(n int) map[string]string {
	m := map[string]string{}
	for i := 0; i < n; i++ {
		m["SCHILY.xattr.user.a"+strings.Repeat("b", i)] = "v"
	}
	return m
}

func TestHostileArchives(t *testing.T) {
	for _, walk := range []bool{false, true} {
		for _, tc := range hostileCorpus() {
			name := tc.name
			if walk {
				name += " (walk fallback)"
			}
			t.Run(name, func(t *testing.T) {
				forceWalk = walk
				defer func() { forceWalk = false }()
				slot, outside := sandbox(t)
				// Every image of the corpus declares 1 MiB.
				_, err := ExtractLayers(context.Background(), slot, readers(tc.layers...), ExtractOptions{Sync: SyncNone, DeclaredSize: 1 << 20})
				if !errors.Is(err, tc.want) {
					t.Fatalf("error %v, want %v", err, tc.want)
				}
				if !strings.HasPrefix(err.Error(), "layer ") {
					t.Errorf("error %q does not say which layer", err)
				}
				t.Log(err)
				assertOutsideIntact(t, outside)
				// The expected tree, computed without writing, refuses
				// the archive for the same reason.
				if _, err := ExpectedTree(context.Background(), readers(tc.layers...), ExtractOptions{DeclaredSize: 1 << 20}); !errors.Is(err, tc.want) {
					t.Errorf("ExpectedTree: error %v, want %v", err, tc.want)
				}
			})
		}
	}
}

// canary is a directory outside the slots that no install, merge, reset
// or seeding may touch; snapshot describes it byte for byte (types, modes,
// owners, contents, link targets, times).
func canarySnapshot(t *testing.T, dir string) string {
	t.Helper()
	es, err := ReadTree(context.Background(), dir, ReadTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i := range es {
		writeRecord(&b, &es[i], DigestOptions{Mtimes: true})
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "root %o %d", st.Mode, st.Mtim.Nano())
	return b.String()
}

// etcVarRig is two directory slots, a state directory, a persistent /var
// and a canary directory beside them. Slot A runs image etcBase with local
// /etc changes (local.conf added, keep.conf deleted), as in the report of
// issue 9.
type etcVarRig struct {
	base, canary string
	o            Options
	m            *Manager
	canaryWant   string
}

var etcBase = newTB().dir("etc").file("etc/keep.conf", "k").file("etc/app.conf", "v1").
	dir("usr").file("usr/bin", "1").dir("var").file("var/seed", "s").bytes()

func newEtcVarRig(t *testing.T) *etcVarRig {
	t.Helper()
	base := t.TempDir()
	r := &etcVarRig{base: base, canary: filepath.Join(base, "canary")}
	r.o = Options{StateDir: filepath.Join(base, "state"), Booted: B, Now: fixedClock(), VarDir: filepath.Join(base, "var"),
		A: Slot{Backend: BackendDir, Path: filepath.Join(base, "a")}, B: Slot{Backend: BackendDir, Path: filepath.Join(base, "b")}}
	for _, d := range []string{r.o.A.Path, r.o.B.Path, r.o.VarDir, r.canary, filepath.Join(r.canary, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	etcTree(t, r.canary, "keep.conf=k", "app.conf=v1", "sub/x=canary")
	ctx := context.Background()
	mB, err := Open(r.o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mB.Install(ctx, A, Image{Label: "base", Layers: readers(etcBase)}); err != nil {
		t.Fatal(err)
	}
	r.o.Booted = A
	if r.m, err = Open(r.o); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(r.o.A.Path, "etc/local.conf"), []byte("running slot's"), 0o600)
	os.Remove(filepath.Join(r.o.A.Path, "etc/keep.conf"))
	r.canaryWant = canarySnapshot(t, r.canary)
	return r
}

// check asserts that the canary is intact and that nothing of the host's
// /etc reached the state directory or the persistent /var.
func (r *etcVarRig) check(t *testing.T) {
	t.Helper()
	if got := canarySnapshot(t, r.canary); got != r.canaryWant {
		t.Errorf("the canary outside the slots changed:\n%s\nwant\n%s", got, r.canaryWant)
	}
	for _, d := range []string{r.o.StateDir, r.o.VarDir} {
		filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
			if err == nil && (de.Name() == "shadow" || de.Name() == "passwd" || de.Name() == "hostname" || de.Name() == "local.conf" && strings.HasPrefix(p, r.o.VarDir)) {
				t.Errorf("host or running-slot file copied to %s", p)
			}
			return nil
		})
	}
}

// hostileEtcVar lists images whose top-level etc or var is not a
// directory. "CANARY" in a link target is replaced by the canary's path.
func hostileEtcVar() []struct {
	name  string
	build func(*tb) *tb
	root  bool // needs CAP_MKNOD
} {
	rest := func(b *tb) *tb { return b.dir("usr").file("usr/bin", "2") }
	return []struct {
		name  string
		build func(*tb) *tb
		root  bool
	}{
		{"etc -> /etc", func(b *tb) *tb { return rest(b).symlink("etc", "/etc").dir("var") }, false},
		{"etc -> ../canary", func(b *tb) *tb { return rest(b).symlink("etc", "../canary").dir("var") }, false},
		{"etc -> absolute canary", func(b *tb) *tb { return rest(b).symlink("etc", "CANARY").dir("var") }, false},
		{"etc is a regular file", func(b *tb) *tb { return rest(b).file("etc", "not a dir").dir("var") }, false},
		{"etc is a fifo", func(b *tb) *tb {
			return rest(b).hdr(&tar.Header{Name: "etc", Typeflag: tar.TypeFifo}, "").dir("var")
		}, false},
		{"etc hard link to a file", func(b *tb) *tb { return rest(b).link("etc", "usr/bin").dir("var") }, false},
		{"etc dir replaced by a symlink in a later entry", func(b *tb) *tb {
			return rest(b).dir("etc").file("etc/a", "1").symlink("etc", "../canary").dir("var")
		}, false},
		{"var -> ../canary", func(b *tb) *tb { return rest(b).dir("etc").symlink("var", "../canary") }, false},
		{"var -> /etc", func(b *tb) *tb { return rest(b).dir("etc").symlink("var", "/etc") }, false},
		{"var is a regular file", func(b *tb) *tb { return rest(b).dir("etc").file("var", "x") }, false},
		{"var is a fifo", func(b *tb) *tb {
			return rest(b).dir("etc").hdr(&tar.Header{Name: "var", Typeflag: tar.TypeFifo}, "")
		}, false},
		{"var is a char device", func(b *tb) *tb {
			return rest(b).dir("etc").hdr(&tar.Header{Name: "var", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, "")
		}, true},
	}
}

// TestHostileEtcVar: an image whose etc or var is not a directory is
// refused by the extraction (and by ExpectedTree), before the /etc
// carry-over, the pristine copy or anything else outside the extraction
// runs; the canary stays byte for byte as it was, nothing of the host's
// /etc reaches the state directory, and the failed install leaves the slot
// writing, with no pristine copy, so that a retry with a good image
// succeeds.
func TestHostileEtcVar(t *testing.T) {
	for _, tc := range hostileEtcVar() {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() != 0 {
				t.Skip("needs root")
			}
			r := newEtcVarRig(t)
			img := tc.build(newTB()).bytes()
			img = bytes.ReplaceAll(img, []byte("CANARY"), []byte(r.canary))
			if strings.Contains(tc.name, "absolute canary") {
				// The symlink target is in the header: rebuild rather
				// than patch the checksum.
				img = newTB().dir("usr").file("usr/bin", "2").symlink("etc", r.canary).dir("var").bytes()
			}
			ctx := context.Background()
			if _, err := ExpectedTree(ctx, readers(img), ExtractOptions{}); !errors.Is(err, ErrBadEntry) {
				t.Errorf("ExpectedTree: %v, want %v", err, ErrBadEntry)
			}
			_, err := r.m.Install(ctx, B, Image{Label: "hostile", Layers: readers(img)})
			if !errors.Is(err, ErrBadEntry) {
				t.Fatalf("install: %v, want %v", err, ErrBadEntry)
			}
			t.Log(err)
			r.check(t)
			if s := r.m.Status().Slots[1]; s.State != Writing {
				t.Errorf("slot B after a refused install: %+v", s)
			}
			if _, err := os.Lstat(r.m.pristineDir(B)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused install left a pristine /etc for B: %v", err)
			}
			if err := r.m.FactoryReset(ctx, B, false); !errors.Is(err, ErrTransition) {
				t.Errorf("factory reset of a slot left writing: %v", err)
			}
			good := newTB().dir("etc").file("etc/keep.conf", "k").file("etc/app.conf", "v2").dir("var").bytes()
			res, err := r.m.Install(ctx, B, Image{Label: "good", Layers: readers(good)})
			if err != nil {
				t.Fatalf("retry with a good image: %v", err)
			}
			if res.Etc == nil || fmt.Sprint(res.Etc.Kept) != "[local.conf]" || fmt.Sprint(res.Etc.Deleted) != "[keep.conf]" {
				t.Errorf("merge after the retry: %+v", res.Etc)
			}
			r.check(t)
		})
	}
}

// TestHostileEtcVarOnDisk: a slot that already holds an etc or var that is
// not a directory (written before the extraction refused it, or changed
// underneath) is never followed by the /etc carry-over, the pristine copy,
// the factory reset, the /var seeding or verification: each refuses or
// leaves the link alone, and the canary stays as it was.
func TestHostileEtcVarOnDisk(t *testing.T) {
	for _, walk := range []bool{false, true} {
		for _, tc := range hostileEtcVar() {
			name := tc.name
			if walk {
				name += " (walk fallback)"
			}
			t.Run(name, func(t *testing.T) {
				forceWalk = walk
				defer func() { forceWalk = false }()
				hostileEtcVarOnDisk(t, tc.name, tc.build, tc.root)
			})
		}
	}
}

func hostileEtcVarOnDisk(t *testing.T, name string, build func(*tb) *tb, needRoot bool) {
	tc := struct {
		name  string
		build func(*tb) *tb
	}{name, build} // the case, as the loop names it
	if needRoot && os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	r := newEtcVarRig(t)
	ctx := context.Background()
	// B holds a normal image; then its top level is made hostile
	// on disk, as the archive would have made it.
	if _, err := r.m.Install(ctx, B, Image{Label: "good", Layers: readers(etcBase)}); err != nil {
		t.Fatal(err)
	}
	img := tc.build(newTB()).bytes()
	if strings.Contains(tc.name, "absolute canary") {
		img = newTB().dir("usr").file("usr/bin", "2").symlink("etc", r.canary).dir("var").bytes()
	}
	for _, top := range []string{"etc", "var"} {
		os.RemoveAll(filepath.Join(r.o.B.Path, top))
	}
	os.RemoveAll(r.o.VarDir)
	os.Mkdir(r.o.VarDir, 0o755)
	// Write the hostile entries with the plain tar reader, outside
	// the extractor (which refuses them).
	tr := tar.NewReader(bytes.NewReader(img))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		top, _, _ := strings.Cut(h.Name, "/")
		if top != "etc" && top != "var" {
			continue
		}
		p := filepath.Join(r.o.B.Path, h.Name)
		os.RemoveAll(p)
		switch h.Typeflag {
		case tar.TypeDir:
			os.Mkdir(p, 0o755)
		case tar.TypeReg:
			os.WriteFile(p, []byte("x"), 0o644)
		case tar.TypeSymlink:
			os.Symlink(strings.ReplaceAll(h.Linkname, "CANARY", r.canary), p)
		case tar.TypeLink:
			os.Link(filepath.Join(r.o.B.Path, h.Linkname), p)
		case tar.TypeFifo:
			unix.Mkfifo(p, 0o644)
		case tar.TypeChar:
			unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))))
		}
	}
	top := "etc"
	if strings.HasPrefix(tc.name, "var") {
		top = "var"
	}
	if top == "etc" {
		res := &InstallResult{}
		if err := r.m.carryEtc(ctx, B, res); err == nil {
			t.Errorf("carryEtc through %s: no error (report %+v)", tc.name, res.Etc)
		} else {
			t.Log(err)
		}
		r.check(t)
		if err := r.m.FactoryReset(ctx, B, false); err == nil {
			t.Errorf("factory reset through %s: no error", tc.name)
		}
		r.check(t)
		if _, err := MergeEtc(ctx, r.m.pristineDir(A), filepath.Join(r.o.A.Path, "etc"), filepath.Join(r.o.B.Path, "etc")); err == nil {
			t.Errorf("MergeEtc into %s: no error", tc.name)
		}
		r.check(t)
	} else {
		if seeded, err := r.m.SeedVar(ctx, B); err == nil || seeded {
			t.Errorf("SeedVar from %s: seeded %v, error %v", tc.name, seeded, err)
		}
		r.check(t)
		if names, _ := os.ReadDir(r.o.VarDir); len(names) != 0 {
			t.Errorf("/var seeded through %s: %v", tc.name, names)
		}
	}
	// Verification reads the slot without following anything.
	if _, err := r.m.Verify(ctx, B); err != nil {
		t.Errorf("verify: %v", err)
	}
	es, err := ReadTree(ctx, r.o.B.Path, ReadTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if strings.HasPrefix(e.Path, top+"/") {
			t.Errorf("the tree read through %s: %s", tc.name, e.Path)
		}
	}
	r.check(t)
}

// paxRecord is one "LEN key=value\n" record of a PAX extended header.
func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	for {
		s := fmt.Sprintf("%d %s=%s\n", n, k, v)
		if len(s) == n {
			return s
		}
		n = len(s)
	}
}

// sparseTar is a layer with one GNU sparse file (PAX format 0.1, which
// archive/tar reads but does not write) of logical size realSize, holding
// one byte at its end: a few hundred bytes of archive that read as
// realSize bytes.
func sparseTar(name string, realSize int64) []byte {
	recs := paxRecord("GNU.sparse.major", "0") + paxRecord("GNU.sparse.minor", "1") +
		paxRecord("GNU.sparse.name", name) + paxRecord("GNU.sparse.size", fmt.Sprint(realSize)) +
		paxRecord("GNU.sparse.numblocks", "1") + paxRecord("GNU.sparse.map", fmt.Sprintf("%d,1", realSize-1))
	out := rawEntry("PaxHeaders/"+name, tar.TypeXHeader, []byte(recs))
	out = append(out, rawEntry("GNUSparseFile.0/"+name, tar.TypeReg, []byte("x"))...)
	return append(out, make([]byte, 1024)...)
}

// TestSparseAmplification: a sparse entry that reads as far more bytes
// than the slot's filesystem holds is refused before it is written, naming
// the entry and the limit (issue 9: a 10 KB archive wrote 1 GiB of zeros).
func TestSparseAmplification(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a small tmpfs as the slot)")
	}
	slot := t.TempDir()
	if err := unix.Mount("tmpfs", slot, "tmpfs", 0, "size=16m"); err != nil {
		t.Skip("tmpfs:", err)
	}
	defer unix.Unmount(slot, 0)
	layer := sparseTar("big", 1<<30)
	if len(layer) > 10<<10 {
		t.Fatalf("the archive is %d bytes", len(layer))
	}
	// archive/tar expands it: the entry reads as 1 GiB.
	hdrs := tar.NewReader(bytes.NewReader(layer))
	if h, err := hdrs.Next(); err != nil || h.Size != 1<<30 || h.Name != "big" {
		t.Fatalf("sparse entry read as %+v, %v", h, err)
	}
	_, err := ExtractLayers(context.Background(), slot, readers(layer), ExtractOptions{Sync: SyncNone})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), `"big"`) || !strings.Contains(err.Error(), "capacity") {
		t.Fatalf("error %v, want %v naming the entry and the slot's capacity", err, ErrTooLarge)
	}
	t.Log(err)
	if _, err := os.Lstat(filepath.Join(slot, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused entry was created: %v", err)
	}
	// Within the capacity the same kind of entry is fine.
	if _, err := ExtractLayers(context.Background(), slot, readers(sparseTar("small", 1<<20)), ExtractOptions{Sync: SyncNone}); err != nil {
		t.Fatal(err)
	}
}

// TestWhiteoutsKeepLostFound: neither a whiteout of lost+found nor an
// opaque marker at the root deletes the slot's top-level lost+found, which
// belongs to the filesystem (fsck), not to the image.
func TestWhiteoutsKeepLostFound(t *testing.T) {
	for _, tc := range []struct {
		name   string
		layers [][]byte
	}{
		{"whiteout", [][]byte{newTB().file("a", "1").file(".wh.lost+found", "").bytes()}},
		{"root opaque marker", [][]byte{newTB().file("a", "1").bytes(), newTB().file(".wh..wh..opq", "").file("b", "2").bytes()}},
		{"root opaque marker first", [][]byte{newTB().file(".wh..wh..opq", "").file("b", "2").bytes()}},
		// What fsck put in lost+found is the filesystem's too.
		{"whiteout inside lost+found", [][]byte{newTB().file("a", "1").file("lost+found/.wh.#12", "").bytes()}},
		{"opaque marker inside lost+found", [][]byte{newTB().file("a", "1").file("lost+found/.wh..wh..opq", "").bytes()}},
		{"opaque marker inside ./lost+found", [][]byte{newTB().file("a", "1").file("./lost+found//.wh..wh..opq", "").bytes()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			slot, outside := sandbox(t)
			os.Mkdir(filepath.Join(slot, "lost+found"), 0o700)
			os.WriteFile(filepath.Join(slot, "lost+found", "#12"), []byte("fsck"), 0o600)
			if _, err := ExtractLayers(context.Background(), slot, readers(tc.layers...), ExtractOptions{Sync: SyncNone}); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(slot, "lost+found", "#12")); err != nil || string(b) != "fsck" {
				t.Fatalf("lost+found deleted: %q %v", b, err)
			}
			assertOutsideIntact(t, outside)
		})
	}
}

// TestRootOpaqueOverLargeSlot: a root opaque marker installed over a slot
// holding many files must not reach into the directory the old tree is
// being deleted from on the side (issue 9: 11 of 16 runs failed with
// "no such file or directory").
func TestRootOpaqueOverLargeSlot(t *testing.T) {
	slot, outside := sandbox(t)
	old := newTB()
	for d := 0; d < 100; d++ {
		old.dir(fmt.Sprintf("d%d", d))
		for f := 0; f < 100; f++ {
			old.file(fmt.Sprintf("d%d/f%d", d, f), "")
		}
	}
	oldTar := old.bytes()
	layer := newTB().file(".wh..wh..opq", "").file("new", "1").bytes()
	for run := 0; run < 2; run++ {
		if _, err := ExtractLayers(context.Background(), slot, readers(oldTar), ExtractOptions{Sync: SyncNone}); err != nil {
			t.Fatal(err)
		}
		if _, err := ExtractLayers(context.Background(), slot, readers(layer), ExtractOptions{Sync: SyncNone}); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		names, _ := os.ReadDir(slot)
		if len(names) != 1 || names[0].Name() != "new" {
			t.Fatalf("run %d: slot holds %v", run, names)
		}
	}
	assertOutsideIntact(t, outside)
}

// TestOldTreeLeftToItsDeleter: the directory the old tree is moved into is
// deleted by its own goroutine alone; no whiteout or opaque marker of the
// new layers reaches into it. The deletion is held back until the layers
// are read, and then finds the old tree whole.
func TestOldTreeLeftToItsDeleter(t *testing.T) {
	for i, layer := range [][]byte{
		newTB().file(".wh..wh..opq", "").file("new", "1").bytes(),
		newTB().file("new", "1").file(".wh..wh..opq", "").bytes(),
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) { oldTreeLeftToItsDeleter(t, layer) })
	}
}

func oldTreeLeftToItsDeleter(t *testing.T, layer []byte) {
	slot, _ := sandbox(t)
	if _, err := ExtractLayers(context.Background(), slot, readers(newTB().dir("d").file("d/f", "old").bytes()), ExtractOptions{Sync: SyncNone}); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	defer func(f func(int, string) error) { removeOld = f }(removeOld)
	removeOld = func(fd int, name string) error {
		<-read
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name+"/d/f", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("the old tree was touched before its deletion: %w", err)
		}
		return removeAll(fd, name)
	}
	_, err := ExtractLayers(context.Background(), slot, []io.Reader{&closeAtEOF{r: bytes.NewReader(layer), c: read}}, ExtractOptions{Sync: SyncNone})
	if err != nil {
		t.Fatal(err)
	}
	if names, _ := os.ReadDir(slot); len(names) != 1 || names[0].Name() != "new" {
		t.Fatalf("slot holds %v", names)
	}
}

// closeAtEOF closes c once the last byte of r has been read (the tar
// reader stops at the end-of-archive blocks without asking for io.EOF).
type closeAtEOF struct {
	r    *bytes.Reader
	c    chan struct{}
	done bool
}

func (e *closeAtEOF) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if e.r.Len() == 0 && !e.done {
		e.done = true
		close(e.c)
	}
	return n, err
}

// TestInstallDeclaredSize: an image that expands past the size it declares
// (Image.Size) is refused before the entry is written, naming it and the
// limit; the slot stays writing and takes a good image next.
func TestInstallDeclaredSize(t *testing.T) {
	base := t.TempDir()
	o := Options{StateDir: filepath.Join(base, "state"), Booted: A, Now: fixedClock(),
		A: Slot{Backend: BackendDir, Path: filepath.Join(base, "a")}, B: Slot{Backend: BackendDir, Path: filepath.Join(base, "b")}}
	os.MkdirAll(o.B.Path, 0o755)
	m, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	layer := sparseTar("big", 64<<20)
	_, err = m.Install(ctx, B, Image{Layers: readers(layer), Size: 1 << 20})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), `"big"`) || !strings.Contains(err.Error(), "more than 1048576 content bytes, the image's declared size") {
		t.Fatalf("error %v", err)
	}
	t.Log(err)
	if _, err := os.Lstat(filepath.Join(o.B.Path, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused entry was created: %v", err)
	}
	if s := m.Status().Slots[1]; s.State != Writing {
		t.Errorf("slot B: %+v", s)
	}
	if _, err := m.Install(ctx, B, Image{Layers: readers(sparseTar("big", 1<<20)), Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	// A raw slot: the filesystem image in the tar is held to the declared
	// size as well.
	raw := filepath.Join(base, "raw")
	os.WriteFile(raw, make([]byte, 4<<20), 0o644)
	o.B = Slot{Backend: BackendRaw, Path: raw}
	o.StateDir = filepath.Join(base, "state2")
	m, _ = Open(o)
	if _, err := m.Install(ctx, B, Image{Layers: readers(sparseTar("fs.img", 2<<20)), Size: 1 << 20}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("raw: %v", err)
	}
}

// TestPristineCopyNotReachable: the pristine copy of a new image's /etc is
// made on the running system's filesystem (the state directory), outside
// the slot and its mount options (nodev, nosuid), as soon as the image is
// installed, before it is ever booted. It keeps the image's setuid bits
// and device nodes, so it must be reachable by nobody but flightd: an
// image's etc/su (setuid root) or etc/disk (a 0666 block device) must not
// become a way in for any local user of the running system.
func TestPristineCopyNotReachable(t *testing.T) {
	r := newEtcVarRig(t)
	b := newTB().dir("etc").file("etc/keep.conf", "k").file("etc/app.conf", "v2").
		hdr(&tar.Header{Name: "etc/su", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 2}, "#!")
	if os.Geteuid() == 0 {
		b = b.hdr(&tar.Header{Name: "etc/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}, "")
	}
	img := b.dir("var").bytes()
	if _, err := r.m.Install(context.Background(), B, Image{Label: "suid", Layers: readers(img)}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(r.m.pristineDir(B), "su"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pristine copy of etc/su: %v", st.Mode())
	for p := r.m.pristineDir(B); strings.HasPrefix(p, r.o.StateDir); p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 == 0 {
			return // no one but the owner gets past p
		}
	}
	t.Errorf("the pristine copy of B's /etc (setuid files, device nodes) is reachable by every local user: %s is %v", r.m.pristineDir(B), mustMode(t, r.m.pristineDir(B)))
}

func mustMode(t *testing.T, p string) os.FileMode {
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode()
}

// TestPristineCopyBounded: the pristine copy of an image's /etc goes to the
// state directory, outside the slot's capacity check: an /etc over
// Options.MaxEtcCopy is refused with ErrEtcTooLarge before the slot is
// recorded written, and the partial copy (<slot>.new) is not left behind.
func TestPristineCopyBounded(t *testing.T) {
	r := newEtcVarRig(t)
	r.o.MaxEtcCopy = 64 << 10
	m, err := Open(r.o)
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 40<<10)
	img := newTB().dir("etc").file("etc/a.conf", big).file("etc/b.conf", big).dir("var").bytes()
	_, err = m.Install(context.Background(), B, Image{Label: "big-etc", Layers: readers(img)})
	if !errors.Is(err, ErrEtcTooLarge) {
		t.Fatalf("install of an image with an /etc over the bound: %v", err)
	}
	t.Logf("refused: %v", err)
	for _, p := range []string{m.pristineDir(B), m.pristineDir(B) + ".new"} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
	if s := m.Status().Slots[1]; s.State == Written {
		t.Fatalf("slot B recorded written: %+v", s)
	}
	// Within the bound, it installs.
	img = newTB().dir("etc").file("etc/a.conf", big).dir("var").bytes()
	if _, err := m.Install(context.Background(), B, Image{Label: "etc", Layers: readers(img)}); err != nil {
		t.Fatal(err)
	}
}
