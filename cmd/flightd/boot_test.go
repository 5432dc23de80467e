//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/watchdog"
)

func bootExec(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := commands.Execute(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func bootWrite(t *testing.T, p, s string) string {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBootCommandsUBoot(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "env.img")
	env := &watchdog.UBootEnv{Copies: []watchdog.UBootLocation{{Path: img, Offset: 0, Size: 0x2000}, {Path: img, Offset: 0x2000, Size: 0x2000}}}
	bootWrite(t, img, string(make([]byte, 0x4000)))
	if err := env.Save(watchdog.Vars{"bootcmd": "run bootorbit"}); err != nil {
		t.Fatal(err)
	}
	cmdline := bootWrite(t, filepath.Join(dir, "cmdline"), "console=ttyS0 rauc.slot=A panic=5\n")
	flags := []string{"--uboot-env", img + "," + img, "--env-size", "0x2000", "--env-offset", "0,8192", "--cmdline", cmdline}

	code, out, errOut := bootExec(t, append([]string{"boot", "status"}, flags...)...)
	if code != 0 || !strings.Contains(out, "booted         A") || !strings.Contains(out, "trial          none") {
		t.Fatalf("status: %d\n%s%s", code, out, errOut)
	}
	// Flags after the positional SLOT are parsed too.
	code, out, errOut = bootExec(t, append([]string{"boot", "arm", "B"}, append(flags, "--attempts", "2")...)...)
	if code != 0 || !strings.Contains(out, "armed B with 2 attempts") {
		t.Fatalf("arm: %d\n%s%s", code, out, errOut)
	}
	v, err := env.Load()
	if err != nil || v["BOOT_ORDER"] != "B A" || v["BOOT_B_LEFT"] != "2" || v["BOOTORBIT_TRIAL"] != "B" || v["bootcmd"] != "run bootorbit" {
		t.Fatalf("env after arm: %v %v", v, err)
	}
	// The bootloader boots B; on B, status says trial, mark-good ends it.
	if d, err := (watchdog.BootloaderModel{Attempts: 2}).Boot(env); err != nil || d.Slot != "B" {
		t.Fatalf("model boot: %+v %v", d, err)
	}
	bootWrite(t, cmdline, "rauc.slot=B")
	code, out, _ = bootExec(t, append([]string{"boot", "status", "--json", "--attempts", "2"}, flags...)...)
	var st struct {
		watchdog.Status
		Env string `json:"env"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || !st.Trial || st.Booted != "B" || st.Left["B"] != 1 || !strings.Contains(st.Env, "redundant") {
		t.Fatalf("json status: %d %s", code, out)
	}
	code, out, errOut = bootExec(t, append([]string{"boot", "mark-good", "--attempts", "2"}, flags...)...)
	if code != 0 || !strings.Contains(out, "marked B good") || !strings.Contains(out, "trial          none") {
		t.Fatalf("mark-good: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = bootExec(t, append([]string{"boot", "mark-bad", "A"}, flags...)...)
	if code != 0 || !strings.Contains(out, "boot order     B (primary B)") {
		t.Fatalf("mark-bad: %d\n%s%s", code, out, errOut)
	}
	// Refusals: the last slot, the booted slot.
	if code, _, errOut = bootExec(t, append([]string{"boot", "mark-bad", "B"}, flags...)...); code != 1 || !strings.Contains(errOut, "last slot") || !strings.Contains(errOut, "fall back to") {
		t.Fatalf("mark-bad last: %d %s", code, errOut)
	}
	if code, _, errOut = bootExec(t, append([]string{"boot", "arm", "B"}, flags...)...); code != 1 || !strings.Contains(errOut, "booted slot") {
		t.Fatalf("arm booted: %d %s", code, errOut)
	}
}

func TestBootCommandsUsage(t *testing.T) {
	dir := t.TempDir()
	g := filepath.Join(dir, "grubenv")
	for _, args := range [][]string{
		{"boot", "status", "--cmdline", "/nonexistent"},
		{"boot", "status", "--uboot-env", "x"},
		{"boot", "status", "--uboot-env", "x", "--env-size", "zz"},
		{"boot", "status", "--uboot-env", "x", "--env-size", "010"},
		{"boot", "status", "--uboot-env", "x", "--env-size", "8_192"},
		{"boot", "status", "--uboot-env", "x", "--env-size", "0b10"},
		{"boot", "status", "--uboot-env", "x", "--env-size", "0x2000", "--env-offset", "-1"},
		{"boot", "status", "--uboot-env", "x", "--env-size", "8192", "--grubenv", g},
		{"boot", "arm", "C", "--grubenv", g},
		{"boot", "arm", "--grubenv", g},
		{"boot", "mark-bad", "A", "B", "--grubenv", g},
		{"boot", "mark-good", "--slot", "Z", "--grubenv", g},
		{"boot", "status", "extra", "--grubenv", g},
	} {
		if code, _, errOut := bootExec(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut)
		}
	}
	// A missing grubenv is an error (1), not created.
	if code, _, errOut := bootExec(t, "boot", "status", "--grubenv", g, "--cmdline", bootWrite(t, filepath.Join(dir, "c"), "")); code != 1 || !strings.Contains(errOut, "grubenv") {
		t.Fatalf("missing grubenv: %d %s", code, errOut)
	}
	if _, err := os.Stat(g); !os.IsNotExist(err) {
		t.Fatal("grubenv created")
	}
}

func TestBootCommandsConfigGRUB(t *testing.T) {
	dir := t.TempDir()
	g := filepath.Join(dir, "grubenv")
	blk, _ := watchdog.NewGRUBBlock(watchdog.GRUBEnvSize)
	raw, _ := blk.Bytes()
	bootWrite(t, g, string(raw))
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o755)
	cmdline := bootWrite(t, filepath.Join(dir, "cmdline"), "rauc.slot=A")
	if _, err := watchdog.RecordReset(state, watchdog.WDIOFCardReset, "A", time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	cfg := bootWrite(t, filepath.Join(dir, "flightd.json"), `{
  "slots": {"state_dir": "`+state+`", "cmdline": "`+cmdline+`",
            "a": {"backend": "dir", "path": "`+dir+`/a"}, "b": {"backend": "dir", "path": "`+dir+`/b"}},
  "boot": {"grubenv": "`+g+`", "attempts": 4}
}`)
	code, out, errOut := bootExec(t, "boot", "arm", "B", "--config", cfg)
	if code != 0 || !strings.Contains(out, "armed B with 4 attempts") || !strings.Contains(out, "last reset     watchdog (slot A, 2030-01-02 03:04:05Z; 1 watchdog resets in 1 boots)") {
		t.Fatalf("arm via config: %d\n%s%s", code, out, errOut)
	}
	v, err := (&watchdog.GRUBEnv{Path: g}).Load()
	if err != nil || v["BOOT_ORDER"] != "B A" || v["BOOT_B_LEFT"] != "4" {
		t.Fatalf("grubenv after arm: %v %v", v, err)
	}
}

// boot status names the U-Boot copy in use and warns when the other one is
// corrupt: the environment has lost its redundancy (finding 13).
func TestBootStatusRedundancyLost(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "env.img")
	env := &watchdog.UBootEnv{Copies: []watchdog.UBootLocation{{Path: img, Offset: 0, Size: 0x2000}, {Path: img, Offset: 0x2000, Size: 0x2000}}}
	bootWrite(t, img, string(make([]byte, 0x4000)))
	for _, v := range []string{"1", "2"} {
		if err := env.Save(watchdog.Vars{"BOOT_ORDER": "A B", "n": v}); err != nil {
			t.Fatal(err)
		}
	}
	cmdline := bootWrite(t, filepath.Join(dir, "cmdline"), "rauc.slot=A\n")
	flags := []string{"--uboot-env", img + "," + img, "--env-size", "0x2000", "--env-offset", "0,0x2000", "--cmdline", cmdline}
	code, out, errOut := bootExec(t, append([]string{"boot", "status"}, flags...)...)
	if code != 0 || !strings.Contains(out, "env copy       2 of 2 ("+img+"@0x2000, flags 2); other copy ok") || strings.Contains(out, "WARNING") {
		t.Fatalf("status, both copies good: %d\n%s%s", code, out, errOut)
	}
	b, _ := os.ReadFile(img)
	b[0x100] ^= 0xff // copy 1's data
	bootWrite(t, img, string(b))
	code, out, errOut = bootExec(t, append([]string{"boot", "status"}, flags...)...)
	if code != 0 || !strings.Contains(out, "env copy       2 of 2") || !strings.Contains(out, "WARNING: U-Boot environment copy "+img+"@0x0 fails its CRC: the environment has lost its redundancy") {
		t.Fatalf("status, copy 1 corrupt: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = bootExec(t, append([]string{"boot", "status", "--json"}, flags...)...)
	var doc struct {
		EnvCopies *watchdog.UBootRedundancy `json:"env_copies"`
		Warnings  []string                  `json:"warnings"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.EnvCopies == nil || doc.EnvCopies.Active != 2 || doc.EnvCopies.Other != watchdog.CopyBadCRC || len(doc.Warnings) != 1 {
		t.Fatalf("status --json, copy 1 corrupt: %d\n%s%s", code, out, errOut)
	}
}
