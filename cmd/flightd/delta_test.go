//go:build linux

package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
)

func TestDeltaApplyCommand(t *testing.T) {
	dir := t.TempDir()
	lay := filepath.Join(dir, "img")
	rng := rand.New(rand.NewPCG(4, 4))
	data := make([]byte, 50000)
	for i := range data {
		data[i] = byte(rng.IntN(256))
	}
	edited := append([]byte(nil), data...)
	edited[100] ^= 1
	old := []ocitest.Layer{
		{Entries: []ocitest.Entry{{Name: "usr/bin/a", Data: data}}, Compression: oci.Uncompressed},
		{Entries: []ocitest.Entry{{Name: "etc/keep", Data: []byte("same")}}, Compression: oci.Gzip},
	}
	oldIm := ocitest.Build(t, lay, "old", old)
	ocitest.Build(t, lay, "new", []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "usr/bin/a", Data: edited}}}, old[1]})
	from, err := oci.Open(oci.Ref{Layout: lay, Tag: "old"})
	if err != nil {
		t.Fatal(err)
	}
	to, err := oci.Open(oci.Ref{Layout: lay, Tag: "new"})
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "b.bundle")
	if _, err := delta.ComputeFile(context.Background(), from, to, bundle, delta.Options{TempDir: dir, Tag: "new"}); err != nil {
		t.Fatal(err)
	}
	run := func(out string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := commands.Execute(context.Background(), []string{"delta", "apply", "--bundle", bundle, "--base", "oci:" + lay + ":old", "--out", out, "--tmp", dir}, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	code, stdout, stderr := run(filepath.Join(dir, "out"))
	if code != 0 || !strings.Contains(stdout, "each matching the diff_id in the new config") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if _, err := oci.Open(oci.Ref{Layout: filepath.Join(dir, "out"), Tag: "new"}); err != nil {
		t.Fatalf("rebuilt image: %v", err)
	}

	// One byte of the referenced file changed on the vehicle: exit 1,
	// naming the layer, the part and the file.
	p, err := oci.BlobPath(lay, oldIm.DiffIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	blob, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	blob[bytes.Index(blob, data[:64])+5000] ^= 1
	if err := os.WriteFile(p, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = run(filepath.Join(dir, "out2"))
	if code != 1 {
		t.Fatalf("damaged base: exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{"1 of 2 layers not rebuilt", "layer 0 part 0: file usr/bin/a", "want sha256:", "have sha256:"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, stderr)
		}
	}
	if !strings.Contains(stdout, "layer 1 ") || !strings.Contains(stdout, "ok, matches diff_id") {
		t.Errorf("the intact layer should still be rebuilt: %s", stdout)
	}
}
