//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/bootorbit/bootorbit/slots"
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

// TestInstallDeltaFromConfig: an update file whose bundle is a delta
// against the booted slot installs from a command line with only --config:
// the vehicle, hardware id and keys come from the configuration, the delta
// base is the booted slot (slots.Manager.Base), the slot is written through
// Updater.Write (written, not armed).
func TestInstallDeltaFromConfig(t *testing.T) {
	rng := testrand.New(t)
	dir := t.TempDir()
	for _, d := range []string{"a", "b", "img", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	oldL := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 2, Files: 20})
	newL, _ := ocitest.Modify(rng, oldL, ocitest.ModifyOptions{Changes: []ocitest.Change{ocitest.Edit, ocitest.Add}})
	oldImg := ocitest.Build(t, filepath.Join(dir, "img", "old"), "v1", oldL)
	newImg := ocitest.Build(t, filepath.Join(dir, "img", "new"), "v2", newL)

	// The factory image in slot A (with its layer index), good; A boots.
	m, err := slots.Open(slots.Options{StateDir: filepath.Join(dir, "state"), Log: slog.New(slog.DiscardHandler),
		A: slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(dir, "a")}, B: slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(dir, "b")}})
	if err != nil {
		t.Fatal(err)
	}
	var layers []io.Reader
	for _, tb := range oldImg.Tars {
		layers = append(layers, bytes.NewReader(tb))
	}
	if _, err := m.Install(context.Background(), slots.A, slots.Image{Label: string(oldImg.ManifestDigest), Layers: layers}); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(m.MarkPending(slots.A), m.MarkGood(slots.A)); err != nil {
		t.Fatal(err)
	}
	g := filepath.Join(dir, "grubenv")
	blk, _ := watchdog.NewGRUBBlock(watchdog.GRUBEnvSize)
	blk.Replace(watchdog.Vars{watchdog.VarBootOrder: "A", watchdog.LeftVar("A"): "3", watchdog.LeftVar("B"): "0"})
	raw, _ := blk.Bytes()
	bootWrite(t, g, string(raw))
	cmdline := bootWrite(t, filepath.Join(dir, "cmdline"), "rauc.slot=A")

	from, err := oci.Open(oldImg.Ref)
	if err != nil {
		t.Fatal(err)
	}
	to, err := oci.Open(newImg.Ref)
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
	var newSize int
	for _, tb := range newImg.Tars {
		newSize += len(tb)
	}
	if len(bundle) >= newSize {
		t.Fatalf("bundle of %d bytes for %d bytes of layers: not a delta", len(bundle), newSize)
	}

	ground := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	release := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
	rs, err := update.SignRelease(release, 5, update.Release{Manifest: to.ManifestDigest, Version: 2, HardwareID: "obc-rev-c"})
	if err != nil {
		t.Fatal(err)
	}
	p := &update.Plan{ID: 7, Vehicle: 42, Release: rs, Manifest: to.ManifestBytes, Config: to.ConfigBytes,
		BundleSize: uint64(len(bundle)), BundleDigest: digest.FromBytes(bundle), Staging: uint64(len(bundle))}
	if err := update.SignPlan(ground, 1, p); err != nil {
		t.Fatal(err)
	}
	var fb bytes.Buffer
	if err := update.WriteFile(&fb, p, bytes.NewReader(bundle)); err != nil {
		t.Fatal(err)
	}
	file := bootWrite(t, filepath.Join(dir, "update.bou"), fb.String())

	keys := filepath.Join(dir, "keys")
	os.MkdirAll(keys, 0o755)
	bootWrite(t, filepath.Join(keys, "ground.pub"), hex.EncodeToString(ground.Public().(ed25519.PublicKey)))
	bootWrite(t, filepath.Join(keys, "release.pub"), hex.EncodeToString(release.Public().(ed25519.PublicKey)))
	if err := os.WriteFile(filepath.Join(keys, "vehicle.key"), []byte(hex.EncodeToString(bytes.Repeat([]byte{9}, 32))), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := bootWrite(t, filepath.Join(dir, "flightd.json"), fmt.Sprintf(`{
  "vehicle": {"id": 42, "hardware_id": "obc-rev-c"},
  "links": [{"name": "uhf", "kind": "udp", "listen": "127.0.0.1:0"}],
  "keys": {"release": [{"id": 5, "file": %q}], "ground": [{"id": 1, "file": %q}], "vehicle": {"id": 1, "file": %q}},
  "slots": {"state_dir": %q, "cmdline": %q, "a": {"backend": "dir", "path": %q}, "b": {"backend": "dir", "path": %q}},
  "boot": {"grubenv": %q, "attempts": 2}
}`, filepath.Join(keys, "release.pub"), filepath.Join(keys, "ground.pub"), filepath.Join(keys, "vehicle.key"),
		filepath.Join(dir, "state"), cmdline, filepath.Join(dir, "a"), filepath.Join(dir, "b"), g))

	code, out, errOut := bootExec(t, "install", file, "--config", cfg, "--json")
	var doc installOut
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.Plan != 7 || doc.Slot != "B" || doc.Version != 2 || doc.Slots.Slots[1].State != "written" {
		t.Fatalf("install from the config: %d\n%s%s", code, out, errOut)
	}
	checkUplink(t, filepath.Join(dir, "state", "uplink"), 0)
	// What slot B holds is the new image.
	want := ocitest.Flatten(newL)
	for _, name := range ocitest.Names(want) {
		e := want[name]
		if e.Type != ocitest.File {
			continue
		}
		got, err := os.ReadFile(filepath.Join(dir, "b", name))
		if err != nil || !bytes.Equal(got, e.Data) {
			t.Fatalf("slot B %s: %d bytes, %v; want %d bytes", name, len(got), err, len(e.Data))
		}
	}
	// A flag still overrides the configuration: under another hardware id
	// the next plan is refused.
	p.ID = 8
	if err := update.SignPlan(ground, 1, p); err != nil {
		t.Fatal(err)
	}
	fb.Reset()
	if err := update.WriteFile(&fb, p, bytes.NewReader(bundle)); err != nil {
		t.Fatal(err)
	}
	file = bootWrite(t, filepath.Join(dir, "update-8.bou"), fb.String())
	code, _, errOut = bootExec(t, "install", file, "--config", cfg, "--hardware-id", "obc-rev-x")
	if code != 1 || !strings.Contains(errOut, "wrong_hardware") {
		t.Fatalf("install with --hardware-id override: %d\n%s", code, errOut)
	}
}
