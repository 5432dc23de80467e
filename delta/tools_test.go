package delta

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/internal/testtool"
)

// needTool skips the test when name is not installed, unless
// BOOTORBIT_REQUIRE_TOOLS=1, when it fails.
func needTool(t *testing.T, name string) { testtool.Need(t, name) }

// gnuTar packs dir with GNU tar in the given format and returns the bytes.
func gnuTar(t *testing.T, dir, format string) []byte {
	t.Helper()
	cmd := exec.Command("tar", "--format="+format, "--sort=name", "--mtime=@1700000000", "--owner=0", "--group=0", "--numeric-owner", "-C", dir, "-cf", "-", ".")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("tar: %v: %s", err, errb.String())
	}
	return out.Bytes()
}

// TestGNUTarLayers round-trips layers written by GNU tar, in its gnu and
// oldgnu (long names as 'L' members) and pax formats, with hard links,
// symlinks and long paths, through compute and apply: the writer's exact
// bytes must come back, and a small edit must cost little.
func TestGNUTarLayers(t *testing.T) {
	needTool(t, "tar")
	build := func(dir string, version int) {
		long := filepath.Join(dir, strings.Repeat("deep-directory-name/", 8))
		for _, d := range []string{"usr/bin", "etc", long} {
			if err := os.MkdirAll(filepath.Join(dir, strings.TrimPrefix(d, dir)), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		bin := binaryLike(rand.New(rand.NewPCG(1, 1)), 64<<10)
		if version > 0 {
			bin = shift(bin)
		}
		files := map[string][]byte{
			"usr/bin/tool": bin,
			"etc/conf":     []byte(fmt.Sprintf("version=%d\n", version)),
			strings.TrimPrefix(filepath.Join(long, "file-with-a-rather-long-name-to-exceed-the-ustar-limit.txt"), dir+"/"): bytes.Repeat([]byte("text "), 300+version),
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Link(filepath.Join(dir, "usr/bin/tool"), filepath.Join(dir, "usr/bin/tool-link")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("tool", filepath.Join(dir, "usr/bin/alias")); err != nil {
			t.Fatal(err)
		}
	}
	oldDir, newDir := t.TempDir(), t.TempDir()
	build(oldDir, 0)
	build(newDir, 1)
	for _, format := range []string{"gnu", "oldgnu", "pax"} {
		t.Run(format, func(t *testing.T) {
			o, n := gnuTar(t, oldDir, format), gnuTar(t, newDir, format)
			es, trailer, err := scanTar(bytes.NewReader(n), int64(len(n)))
			if err != nil {
				t.Fatal(err)
			}
			var long bool
			for _, e := range es {
				long = long || strings.HasSuffix(e.Path, "exceed-the-ustar-limit.txt")
			}
			if !long || trailer == 0 {
				t.Errorf("scan found %d entries (long name found: %v), trailer at %d of %d", len(es), long, trailer, len(n))
			}
			_, bundle := roundTrip(t, [][]byte{o}, [][]byte{n}, Options{})
			t.Logf("%s: layer %d bytes, bundle %d bytes", format, len(n), len(bundle))
			if len(bundle) > len(n)/10 {
				t.Errorf("bundle of %d bytes for a small edit of a %d-byte layer", len(bundle), len(n))
			}
		})
	}
}
