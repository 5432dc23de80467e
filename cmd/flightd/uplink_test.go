//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/flightd/uplink"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/opencontainers/go-digest"
)

// checkUplink checks the uplink state in dir read-only and wants n problems.
func checkUplink(t *testing.T, dir string, n int) []uplink.Problem {
	t.Helper()
	e, err := uplink.Inspect(uplink.Config{Dir: dir}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ps := e.Check()
	if len(ps) != n {
		t.Fatalf("Check: %d problems, want %d: %v", len(ps), n, ps)
	}
	return ps
}

// TestInstallAndCheck: an update file installed offline into slot B
// through the acceptance checks, a refused one, a replay; the uplink state
// checked after each.
func TestInstallAndCheck(t *testing.T) {
	rng := testrand.New(t)
	dir := t.TempDir()
	for _, d := range []string{"a", "b", "img"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	g := filepath.Join(dir, "grubenv")
	blk, _ := watchdog.NewGRUBBlock(watchdog.GRUBEnvSize)
	raw, _ := blk.Bytes()
	bootWrite(t, g, string(raw))
	cmdline := bootWrite(t, filepath.Join(dir, "cmdline"), "rauc.slot=A")
	cfg := bootWrite(t, filepath.Join(dir, "flightd.json"), fmt.Sprintf(`{
  "slots": {"state_dir": %q, "cmdline": %q, "a": {"backend": "dir", "path": %q}, "b": {"backend": "dir", "path": %q}},
  "boot": {"grubenv": %q, "attempts": 2}
}`, filepath.Join(dir, "state"), cmdline, filepath.Join(dir, "a"), filepath.Join(dir, "b"), g))

	// The image and a bundle of full layers (from an empty image).
	layers := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 2, Files: 10})
	newImg, err := ocitest.Write(filepath.Join(dir, "img", "new"), "v2", layers)
	if err != nil {
		t.Fatal(err)
	}
	empty, err := ocitest.Write(filepath.Join(dir, "img", "empty"), "e", nil)
	if err != nil {
		t.Fatal(err)
	}
	to, err := oci.Open(newImg.Ref)
	if err != nil {
		t.Fatal(err)
	}
	from, err := oci.Open(empty.Ref)
	if err != nil {
		t.Fatal(err)
	}
	bpath := filepath.Join(dir, "img", "bundle")
	if _, err := delta.ComputeFile(context.Background(), from, to, bpath, delta.Options{TempDir: dir}); err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(bpath)
	if err != nil {
		t.Fatal(err)
	}
	ground := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	release := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
	file := func(id uint64, hw string) string {
		rs, err := update.SignRelease(release, 5, update.Release{Manifest: to.ManifestDigest, Version: 2, HardwareID: hw})
		if err != nil {
			t.Fatal(err)
		}
		p := &update.Plan{ID: id, Vehicle: 42, Release: rs, Manifest: to.ManifestBytes, Config: to.ConfigBytes,
			BundleSize: uint64(len(bundle)), BundleDigest: digest.FromBytes(bundle), Staging: uint64(len(bundle))}
		if err := update.SignPlan(ground, 1, p); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := update.WriteFile(&b, p, bytes.NewReader(bundle)); err != nil {
			t.Fatal(err)
		}
		return bootWrite(t, filepath.Join(dir, fmt.Sprintf("update-%d.bou", id)), b.String())
	}
	keys := []string{"--config", cfg, "--vehicle", "42", "--hardware-id", "obc-rev-c",
		"--ground-key", "1:" + hex.EncodeToString(ground.Public().(ed25519.PublicKey)),
		"--release-key", "5:" + hex.EncodeToString(release.Public().(ed25519.PublicKey))}

	code, out, errOut := bootExec(t, append([]string{"install", file(3, "obc-rev-b")}, keys...)...)
	if code != 1 || !strings.Contains(out, "plan_refused") || !strings.Contains(errOut, "wrong_hardware") {
		t.Fatalf("install for other hardware: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = bootExec(t, append([]string{"install", file(4, "obc-rev-c"), "--json"}, keys...)...)
	var doc installOut
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.Plan != 4 || doc.Slot != "B" || doc.Version != 2 || doc.Slots.Slots[1].State != "written" {
		t.Fatalf("install: %d\n%s%s", code, out, errOut)
	}
	checkUplink(t, filepath.Join(dir, "state", "uplink"), 0)
	// The same file again: a replay.
	code, _, errOut = bootExec(t, append([]string{"install", filepath.Join(dir, "update-4.bou")}, keys...)...)
	if code != 1 || !strings.Contains(errOut, "replayed") {
		t.Fatalf("install again: %d\n%s", code, errOut)
	}
	// A stray file in the staging is reported.
	bootWrite(t, filepath.Join(dir, "state", "uplink", "staging", "00000000000000ff"), "x")
	if ps := checkUplink(t, filepath.Join(dir, "state", "uplink"), 1); !strings.Contains(ps[0].What, "no transfer record") {
		t.Fatalf("check with a stray file: %v", ps)
	}
	code, _, errOut = bootExec(t, "install", file(5, "obc-rev-c"), "--config", cfg)
	if code != 2 || !strings.Contains(errOut, "required") {
		t.Fatalf("install without keys: %d %s", code, errOut)
	}
}
