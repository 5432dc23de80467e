package slots

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/internal/testtool"
	"github.com/bootorbit/bootorbit/slots/slotstest"
)

// requireTool skips when a cross-check tool is missing, unless
// BOOTORBIT_REQUIRE_TOOLS=1, where a missing tool fails.
func requireTool(t *testing.T, name string) string { return testtool.Need(t, name) }

// writeOCILayout writes an OCI image layout with the given uncompressed
// layers, tagged "test".
func writeOCILayout(t *testing.T, dir string, layers [][]byte) {
	t.Helper()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) (string, int) {
		d := fmt.Sprintf("%x", sha256.Sum256(b))
		if err := os.WriteFile(filepath.Join(blobs, d), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + d, len(b)
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int               `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	var diffIDs []string
	var ls []desc
	for _, l := range layers {
		d, n := put(l)
		diffIDs = append(diffIDs, d)
		ls = append(ls, desc{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: d, Size: n})
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "config": map[string]any{},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
	cd, cn := put(cfg)
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: cd, Size: cn}, "layers": ls})
	md, mn := put(man)
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []desc{{MediaType: "application/vnd.oci.image.manifest.v1+json",
		Digest: md, Size: mn, Annotations: map[string]string{"org.opencontainers.image.ref.name": "test"}}}})
	os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// TestCrossCheckUmoci extracts the same layers with umoci (the reference
// OCI unpacker) and with ExtractLayers: the trees must be identical, and
// the tree our extractor computed from the archives must match umoci's tree
// on disk.
func TestCrossCheckUmoci(t *testing.T) {
	umoci := requireTool(t, "umoci")
	if os.Geteuid() != 0 {
		t.Skip("needs root: device nodes and ownership")
	}
	l1 := newTB().dir("etc").file("etc/passwd", "root:x:0:0\n").
		hdr(&tar.Header{Name: "etc/shadow", Typeflag: tar.TypeReg, Mode: 0o640, Gid: 42}, "secret").
		dir("usr").dir("usr/bin").
		hdr(&tar.Header{Name: "usr/bin/su", Typeflag: tar.TypeReg, Mode: 0o4755}, "ELF").
		link("usr/bin/su2", "usr/bin/su").
		symlink("bin", "usr/bin").
		hdr(&tar.Header{Name: "dev/", Typeflag: tar.TypeDir, Mode: 0o755}, "").
		hdr(&tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}, "").
		hdr(&tar.Header{Name: "run/", Typeflag: tar.TypeDir, Mode: 0o755}, "").
		hdr(&tar.Header{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o620, Uid: 7}, "").
		dir("opt").dir("opt/old").file("opt/old/a", "a").file("opt/keep", "k").
		dir("var").file("var/gone", "g").
		hdr(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}, "").
		hdr(&tar.Header{Name: "etc/attr", Typeflag: tar.TypeReg, Mode: 0o644, PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v"}}, "x").
		bytes()
	l2 := newTB().file("var/.wh.gone", "").
		dir("opt").file("opt/.wh..wh..opq", "").file("opt/new", "n").
		file("etc/passwd", "root:x:0:0\nsat:x:1000:1000\n").
		file("usr/bin/.wh.su2", "").
		bytes()
	gen, _, err := slotstest.GenerateRootfs(7, 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("handmade", func(t *testing.T) { crossCheckUmoci(t, umoci, [][]byte{l1, l2}) })
	t.Run("generated", func(t *testing.T) { crossCheckUmoci(t, umoci, [][]byte{gen, l2}) })
}

func crossCheckUmoci(t *testing.T, umoci string, layers [][]byte) {
	base := t.TempDir()
	layout, theirs, ours := filepath.Join(base, "oci"), filepath.Join(base, "umoci-rootfs"), filepath.Join(base, "ours")
	writeOCILayout(t, layout, layers)
	out, err := exec.Command(umoci, "raw", "unpack", "--image", layout+":test", theirs).CombinedOutput()
	if err != nil {
		t.Fatalf("umoci raw unpack: %v\n%s", err, out)
	}
	os.Mkdir(ours, 0o755)
	res, err := ExtractLayers(context.Background(), ours, readers(layers...), ExtractOptions{Sync: SyncNone, Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ReadTree(context.Background(), theirs, ReadTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ReadTree(context.Background(), ours, ReadTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o := DigestOptions{Mtimes: true}
	if d := DiffEntries(a, b, o); d != "" {
		t.Fatalf("umoci and ExtractLayers differ: %s", d)
	}
	if d := DiffEntries(a, res.Entries, o); d != "" {
		t.Fatalf("the tree computed from the archives differs from umoci's: %s", d)
	}
	want, err := ExpectedTree(context.Background(), readers(layers...), ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d := DiffEntries(a, want.Entries, o); d != "" {
		t.Fatalf("the expected tree (computed without writing) differs from umoci's: %s", d)
	}
	t.Logf("%d entries agree; tree digest %s", len(a), TreeDigest(a, o))
}
