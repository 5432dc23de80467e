package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := commands.Execute(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestKeygenSignVerifyImages runs the release engineer's and the
// operator's commands on a layout: keygen, sign, verify, images pull, ls,
// show and check.
func TestKeygenSignVerifyImages(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	os.MkdirAll(keys, 0o755)
	code, out, errOut := run(t, "keygen", "--id", "7", "--out", filepath.Join(keys, "release-7"))
	if code != 0 || !strings.Contains(out, "key id 7") || !strings.Contains(out, "fingerprint sha256:") {
		t.Fatalf("keygen: %d %s %s", code, out, errOut)
	}
	priv, err := os.ReadFile(filepath.Join(keys, "release-7.key"))
	if err != nil {
		t.Fatal(err)
	}
	// The private key is never printed.
	body := strings.Join(strings.Split(strings.TrimSpace(string(priv)), "\n")[3:], "")
	if strings.Contains(out+errOut, body[:20]) {
		t.Error("keygen printed the private key")
	}
	if fi, _ := os.Stat(filepath.Join(keys, "release-7.key")); runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", fi.Mode().Perm())
	}
	// Never overwritten.
	if code, _, _ := run(t, "keygen", "--id", "8", "--out", filepath.Join(keys, "release-7")); code != 1 {
		t.Errorf("keygen over an existing key: exit %d, want 1", code)
	}
	if after, _ := os.ReadFile(filepath.Join(keys, "release-7.key")); !bytes.Equal(after, priv) {
		t.Error("existing private key changed")
	}
	if code, _, _ := run(t, "keygen"); code != 2 {
		t.Errorf("keygen without --id: exit %d, want 2", code)
	}

	lay := filepath.Join(dir, "lay")
	im := ocitest.Build(t, lay, "os-42", []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "etc/version", Data: []byte("42")}}, Compression: oci.Zstd}})
	ref := "oci:" + lay + ":os-42"
	// Unsigned: verify fails.
	if code, _, errOut := run(t, "verify", "--keys", keys, ref); code != 1 || !strings.Contains(errOut, "no release signature") {
		t.Errorf("verify unsigned: %d %s", code, errOut)
	}
	code, out, errOut = run(t, "sign", "--key", filepath.Join(keys, "release-7.key"), "--version", "42", "--hardware", "obc-rev-c", ref)
	if code != 0 || !strings.Contains(out, string(im.ManifestDigest)) || !strings.Contains(out, "sha256-") {
		t.Fatalf("sign: %d %s %s", code, out, errOut)
	}
	code, out, errOut = run(t, "verify", "--keys", keys, "--json", ref)
	var vd struct {
		Manifest string
		Valid    []struct {
			Version  uint64 `json:"version"`
			Hardware string `json:"hardware"`
			KeyID    uint32 `json:"key_id"`
		} `json:"valid"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &vd) != nil || len(vd.Valid) != 1 || vd.Valid[0].Version != 42 || vd.Valid[0].KeyID != 7 || vd.Valid[0].Hardware != "obc-rev-c" {
		t.Fatalf("verify: %d %s %s", code, out, errOut)
	}
	if code, out, _ := run(t, "verify", "--keys", keys, ref); code != 0 || !strings.Contains(out, "release 42 for obc-rev-c, key 7") {
		t.Errorf("verify text: %d %s", code, out)
	}
	if code, _, errOut := run(t, "verify", "--keys", keys, "--hardware", "other", ref); code != 1 || !strings.Contains(errOut, "none for hardware other") {
		t.Errorf("verify --hardware other: %d %s", code, errOut)
	}
	// A private key others can read is refused.
	loose := filepath.Join(dir, "loose.key")
	os.WriteFile(loose, priv, 0o644)
	if runtime.GOOS != "windows" {
		if code, _, errOut := run(t, "sign", "--key", loose, "--version", "43", "--hardware", "obc", ref); code != 1 || !strings.Contains(errOut, "want 0600") {
			t.Errorf("sign with a 0644 key: %d %s", code, errOut)
		}
	}

	store := filepath.Join(dir, "store")
	if code, out, errOut := run(t, "images", "pull", "--store", store, ref); code != 0 || !strings.Contains(out, "release 42 for obc-rev-c") || !strings.Contains(out, "zstd") {
		t.Fatalf("images pull: %d %s %s", code, out, errOut)
	}
	if code, out, _ := run(t, "images", "ls", "--store", store); code != 0 || !strings.Contains(out, string(im.ManifestDigest)) || !strings.Contains(out, ref) {
		t.Errorf("images ls: %d %s", code, out)
	}
	code, out, _ = run(t, "images", "show", "--store", store, "--json", string(im.ManifestDigest))
	var sd struct {
		Digest string
		Layers []struct {
			DiffID string `json:"diff_id"`
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &sd) != nil || sd.Digest != string(im.ManifestDigest) || len(sd.Layers) != 1 || sd.Layers[0].DiffID != string(im.DiffIDs[0]) {
		t.Errorf("images show: %d %s", code, out)
	}
	if code, out, _ := run(t, "images", "check", "--store", store); code != 0 || !strings.Contains(out, "every blob verified") {
		t.Errorf("images check: %d %s", code, out)
	}
	p, _ := oci.BlobPath(store, im.ManifestDigest)
	os.WriteFile(p, []byte("{}"), 0o644)
	if code, out, errOut := run(t, "images", "check", "--store", store); code != 1 || !strings.Contains(out, string(im.ManifestDigest)) {
		t.Errorf("images check of a corrupted store: %d %s %s", code, out, errOut)
	}
	if code, _, _ := run(t, "images", "pull", ref); code != 2 {
		t.Errorf("images pull without --store: exit %d, want 2", code)
	}
	if code, _, _ := run(t, "images", "pull", "--store", store, "docker://noregistry/os"); code != 2 {
		t.Errorf("bad reference: exit %d, want 2", code)
	}
}
