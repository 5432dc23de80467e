package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
)

// TestBundleCommand: groundd bundle writes an update file whose plan the
// ground key signed for the vehicle and whose bundle reads to its digest.
func TestBundleCommand(t *testing.T) {
	dir := t.TempDir()
	lay := filepath.Join(dir, "img")
	base := []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "usr/bin/a", Data: bytes.Repeat([]byte("code "), 4000)}}, Compression: oci.Gzip}}
	top := ocitest.Layer{Entries: []ocitest.Entry{{Name: "usr/bin/a", Data: bytes.Repeat([]byte("code!"), 4000)}}, Compression: oci.Zstd}
	old := ocitest.Build(t, lay, "old", base)
	im := ocitest.Build(t, lay, "new", append(base, top))
	kf, err := images.GenerateKey(filepath.Join(dir, "release"), 1, bytes.NewReader(bytes.Repeat([]byte{1}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	_, relPriv, err := images.ReadPrivateKey(kf.Private)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range []ocitest.Image{old, im} {
		r, _ := images.ParseRef(m.Ref.String())
		if _, _, err := images.Sign(context.Background(), r, images.Options{}, 1, relPriv, uint64(i+1), "obc"); err != nil {
			t.Fatal(err)
		}
	}
	seed := bytes.Repeat([]byte{2}, 32)
	os.WriteFile(filepath.Join(dir, "ground.key"), []byte(hex.EncodeToString(seed)), 0o600)
	os.WriteFile(filepath.Join(dir, "mac.key"), []byte(hex.EncodeToString(bytes.Repeat([]byte{3}, protocol.MACKeyLen))), 0o600)
	cfg := `{"state_dir": "state", "ground_key": "ground.key", "ground_key_id": 4, "release_keys": "release.pub",
	  "vehicles": [{"id": 7, "mac_key": {"id": 1, "file": "mac.key"}}]}`
	cfgPath := filepath.Join(dir, "groundd.json")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)

	out := filepath.Join(dir, "new.boupdate")
	var stdout, stderr bytes.Buffer
	code := commands.Execute(context.Background(), []string{"bundle", "--config", cfgPath, "--vehicle", "7", "--image", "oci:" + lay + ":new",
		"--base", "oci:" + lay + ":old", "--out", out, "--json"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var info groundd.BundleInfo
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil {
		t.Fatalf("--json: %v\n%s", err, stdout.String())
	}
	if info.Plan == 0 || info.Base != string(old.ManifestDigest) || len(info.Layers) != 2 || info.Layers[0].Decision != "reuse" {
		t.Fatalf("info %+v", info)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, br, err := update.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	kr, _ := protocol.NewKeyring(protocol.Key{ID: 4, Pub: ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)})
	if err := update.VerifyPlan(kr, 7, p); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("bundle: %v", err)
	}

	// Without knowledge of the vehicle and no --base: refused, saying why.
	stdout.Reset()
	stderr.Reset()
	code = commands.Execute(context.Background(), []string{"bundle", "--config", cfgPath, "--vehicle", "7", "--image", "oci:" + lay + ":new", "--out", out}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "has not reported its slots") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	code = commands.Execute(context.Background(), []string{"bundle", "--config", cfgPath, "--vehicle", "7", "--image", "oci:" + lay + ":new", "--out", out, "--full", "--base", "x"}, &stdout, &stderr)
	if code != 2 {
		t.Fatalf("--full --base: exit %d", code)
	}
}
