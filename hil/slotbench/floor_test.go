package slotbench

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/slots/slotstest"
)

// TestFilesFloor checks that the files floor, with the extractor's early
// writeback flushing many times, writes every directory and regular file of
// the layer with its content.
func TestFilesFloor(t *testing.T) {
	layer, files, err := slotstest.GenerateRootfs(1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := filesFloor(dir, layer, 64<<10); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(layer))
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		want, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, strings.TrimPrefix(h.Name, "./")))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes written, want %d", h.Name, len(got), len(want))
		}
		n++
	}
	if n != files {
		t.Fatalf("%d regular files checked, want %d", n, files)
	}
}
