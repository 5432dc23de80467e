//go:build linux

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
)

// TestUpdateCommands drives a whole update by hand, as a bench engineer
// would: reconcile on the factory environment, install a raw image into B,
// boot it (the bootloader model), reconcile on B (a trial), commit.
func TestUpdateCommands(t *testing.T) {
	dir := t.TempDir()
	const size = 64 << 10
	a := bootWrite(t, filepath.Join(dir, "a.img"), strings.Repeat("A", size))
	b := bootWrite(t, filepath.Join(dir, "b.img"), string(make([]byte, size)))
	g := filepath.Join(dir, "grubenv")
	blk, _ := watchdog.NewGRUBBlock(watchdog.GRUBEnvSize)
	raw, _ := blk.Bytes()
	bootWrite(t, g, string(raw))
	cmdline := bootWrite(t, filepath.Join(dir, "cmdline"), "rauc.slot=A")
	cfg := bootWrite(t, filepath.Join(dir, "flightd.json"), fmt.Sprintf(`{
  "slots": {"state_dir": %q, "cmdline": %q,
            "a": {"backend": "raw", "path": %q, "size": %d}, "b": {"backend": "raw", "path": %q, "size": %d}},
  "boot": {"grubenv": %q, "attempts": 2}
}`, filepath.Join(dir, "state"), cmdline, a, size, b, size, g))
	image := bytes.Repeat([]byte("root filesystem "), 2000)
	imgFile := bootWrite(t, filepath.Join(dir, "rootfs.img"), string(image))
	digest := fmt.Sprintf("sha256:%x", sha256.Sum256(image))

	code, out, errOut := bootExec(t, "update", "reconcile", "--config", cfg)
	if code != 0 || !strings.Contains(out, "reconciled: 1 changes") || !strings.Contains(out, "dropped from the boot order") || !strings.Contains(out, "boot order     A (primary A)") {
		t.Fatalf("reconcile: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = bootExec(t, "update", "install", "B", imgFile, "--raw", "--digest", digest, "--label", "v2", "--config", cfg)
	if code != 0 || !strings.Contains(out, "armed it with 2 attempts") || !strings.Contains(out, "slot B           pending  v2") || !strings.Contains(out, "B armed, not booted yet") {
		t.Fatalf("install: %d\n%s%s", code, out, errOut)
	}
	// Disarm and install again (the disarmed slot is bad: written again).
	code, out, errOut = bootExec(t, "update", "disarm", "B", "--config", cfg)
	if code != 0 || !strings.Contains(out, "slot B           bad      v2 (disarmed: by command)") || !strings.Contains(out, "boot order     A (primary A)") {
		t.Fatalf("disarm: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = bootExec(t, "update", "install", "B", imgFile, "--raw", "--digest", digest, "--label", "v2", "--config", cfg)
	if code != 0 || !strings.Contains(out, "slot B           pending  v2") {
		t.Fatalf("install again: %d\n%s%s", code, out, errOut)
	}
	if d, err := (watchdog.BootloaderModel{Attempts: 2}).Boot(&watchdog.GRUBEnv{Path: g}); err != nil || d.Slot != "B" {
		t.Fatalf("boot: %+v %v", d, err)
	}
	bootWrite(t, cmdline, "rauc.slot=B")
	code, out, errOut = bootExec(t, "update", "reconcile", "--config", cfg)
	if code != 0 || !strings.Contains(out, "already agreed") || !strings.Contains(out, "slot B is on trial") {
		t.Fatalf("reconcile on B: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = bootExec(t, "update", "commit", "--config", cfg, "--json")
	var doc struct {
		Action string          `json:"action"`
		Slots  slots.Status    `json:"slots"`
		Boot   watchdog.Status `json:"boot"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.Action != "committed slot B" || doc.Slots.Slots[1].State != slots.Good || doc.Boot.TrialSlot != "" || doc.Boot.Left["B"] != 2 {
		t.Fatalf("commit: %d\n%s%s", code, out, errOut)
	}
	if got, _ := os.ReadFile(a); string(got) != strings.Repeat("A", size) {
		t.Fatal("slot A changed")
	}

	// Refusals and usage errors.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"update", "install", "B", imgFile, "--raw", "--config", cfg}, 1, "booted slot"},
		{[]string{"update", "arm", "B", "--config", cfg}, 1, "booted slot"},
		{[]string{"update", "disarm", "B", "--config", cfg}, 1, "booted slot"},
		{[]string{"update", "disarm", "--config", cfg}, 2, "exactly one SLOT"},
		{[]string{"update", "install", "A", "--config", cfg}, 2, "at least one FILE"},
		{[]string{"update", "install", "C", imgFile, "--config", cfg}, 2, "unknown slot"},
		{[]string{"update", "install", "A", imgFile, imgFile, "--raw", "--config", cfg}, 2, "exactly one FILE"},
		{[]string{"update", "commit", "B", "--config", cfg}, 2, "unexpected argument"},
		{[]string{"update", "reconcile", "--state-dir", dir}, 2, "--slot-a"},
		{[]string{"update", "install", "A", imgFile, "--raw", "--digest", "nothex", "--config", cfg}, 2, `--digest: flightd: bad image digest "nothex"`},
		{[]string{"update", "install", "A", dir, "--raw", "--config", cfg}, 2, "is a directory"},
		{[]string{"update", "install", "A", filepath.Join(dir, "missing.tar"), "--config", cfg}, 1, "image FILE: open"},
		{[]string{"update", "reconcile", "--attempts", "0", "--config", cfg}, 2, "--attempts: watchdog: attempts out of range: 0"},
		{[]string{"update", "arm", "A", "--attempts", "12", "--config", cfg}, 2, "--attempts: watchdog: attempts out of range: 12"},
	} {
		code, _, errOut := bootExec(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, want %d; stderr %q, want %q", tc.args, code, tc.code, errOut, tc.want)
		}
	}
	// None of the refusals wrote anything: A (not booted now) is still good
	// and bootable.
	code, out, errOut = bootExec(t, "update", "reconcile", "--config", cfg, "--json")
	doc.Slots, doc.Boot = slots.Status{}, watchdog.Status{}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.Slots.Slots[0].State != slots.Good || !slices.Contains(doc.Boot.Order, "A") {
		t.Fatalf("after the refusals: %d\n%s%s", code, out, errOut)
	}
	bootWrite(t, cmdline, "quiet")
	if code, _, errOut := bootExec(t, "update", "reconcile", "--config", cfg); code != 1 || !strings.Contains(errOut, "booted slot unknown") {
		t.Errorf("no rauc.slot: exit %d %q", code, errOut)
	}
}

// The update commands' report carries the boot commands' warning when a
// redundant U-Boot environment has lost a copy (finding 13).
func TestUpdateReportRedundancyLost(t *testing.T) {
	dir := t.TempDir()
	const size = 64 << 10
	a := bootWrite(t, filepath.Join(dir, "a.img"), strings.Repeat("A", size))
	b := bootWrite(t, filepath.Join(dir, "b.img"), string(make([]byte, size)))
	img := bootWrite(t, filepath.Join(dir, "env.img"), string(make([]byte, 0x4000)))
	env := &watchdog.UBootEnv{Copies: []watchdog.UBootLocation{{Path: img, Offset: 0, Size: 0x2000}, {Path: img, Offset: 0x2000, Size: 0x2000}}}
	for range 2 {
		if err := env.Save(watchdog.Vars{"BOOT_ORDER": "A B"}); err != nil {
			t.Fatal(err)
		}
	}
	cmdline := bootWrite(t, filepath.Join(dir, "cmdline"), "rauc.slot=A")
	flags := []string{"--state-dir", filepath.Join(dir, "state"), "--slot-a", "raw:" + a + ":64KiB", "--slot-b", "raw:" + b + ":64KiB",
		"--uboot-env", img + "," + img, "--env-size", "8KiB", "--env-offset", "0,8KiB", "--cmdline", cmdline}
	if code, out, errOut := bootExec(t, append([]string{"update", "reconcile"}, flags...)...); code != 0 || strings.Contains(out, "WARNING: U-Boot") {
		t.Fatalf("reconcile, both copies good: %d\n%s%s", code, out, errOut)
	}
	raw, _ := os.ReadFile(img)
	raw[0x2100] ^= 0xff // copy 2: whichever copy it is, active or not, the environment has one left
	bootWrite(t, img, string(raw))
	code, out, errOut := bootExec(t, append([]string{"update", "reconcile"}, flags...)...)
	if code != 0 || !strings.Contains(out, "WARNING: U-Boot environment copy") || !strings.Contains(out, "lost its redundancy") {
		t.Fatalf("reconcile, one copy corrupt: %d\n%s%s", code, out, errOut)
	}
}
