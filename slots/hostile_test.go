package slots

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
				_, err := ExtractLayers(context.Background(), slot, readers(tc.layers...), ExtractOptions{Sync: SyncNone})
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
				if _, err := ExpectedTree(context.Background(), readers(tc.layers...), ExtractOptions{}); !errors.Is(err, tc.want) {
					t.Errorf("ExpectedTree: error %v, want %v", err, tc.want)
				}
			})
		}
	}
}
