package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
)

func TestDeltaCommand(t *testing.T) {
	dir := t.TempDir()
	lay := filepath.Join(dir, "img")
	base := []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "usr/bin/a", Data: bytes.Repeat([]byte("code "), 4000)}}, Compression: oci.Gzip}}
	top := ocitest.Layer{Entries: []ocitest.Entry{{Name: "usr/bin/a", Data: bytes.Repeat([]byte("code!"), 4000)}}, Compression: oci.Zstd}
	ocitest.Build(t, lay, "old", base)
	im := ocitest.Build(t, lay, "new", append(base, top))
	out := filepath.Join(dir, "b.bundle")
	var stdout, stderr bytes.Buffer
	code := commands.Execute(context.Background(), []string{"delta", "--from", "oci:" + lay + ":old", "--to", "oci:" + lay + "@" + string(im.ManifestDigest), "--out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	got := stdout.String()
	for _, want := range []string{"layer 0 " + string(im.DiffIDs[0]) + "  reuse", "layer 1 " + string(im.DiffIDs[1]) + "  delta", "total:"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() == 0 {
		t.Fatalf("bundle: %v", err)
	}
	// --json: one document, the same decisions.
	stdout.Reset()
	code = commands.Execute(context.Background(), []string{"delta", "--json", "--part-size", "16KiB", "--from", "oci:" + lay + ":old", "--to", "oci:" + lay + ":new", "--out", out}, &stdout, &stderr)
	var doc struct {
		Layers []struct {
			Decision string
		} `json:"layers"`
		BundleSize int64 `json:"bundle_size"`
	}
	if code != 0 || json.Unmarshal(stdout.Bytes(), &doc) != nil || len(doc.Layers) != 2 || doc.Layers[0].Decision != "reuse" || doc.BundleSize == 0 {
		t.Errorf("--json: exit %d: %s", code, stdout.String())
	}
	if code := commands.Execute(context.Background(), []string{"delta", "--from", "oci:" + lay + ":old"}, &stdout, &stderr); code != 2 {
		t.Errorf("missing flags: exit %d, want 2", code)
	}
}
