//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/slots"
)

func TestSlotCommands(t *testing.T) {
	base := t.TempDir()
	state, a, b := filepath.Join(base, "state"), filepath.Join(base, "a.img"), filepath.Join(base, "b.img")
	os.WriteFile(a, make([]byte, 1<<16), 0o600)
	os.WriteFile(b, make([]byte, 1<<16), 0o600)
	cmdline := filepath.Join(base, "cmdline")
	os.WriteFile(cmdline, []byte("console=ttyS0 rauc.slot=A\n"), 0o644)
	m, err := slots.Open(slots.Options{StateDir: state, Booted: slots.A,
		A: slots.Slot{Backend: "raw", Path: a}, B: slots.Slot{Backend: "raw", Path: b}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Install(context.Background(), slots.B, slots.Image{Label: "img-1", Layers: []io.Reader{strings.NewReader("filesystem image")}, RawStream: true}); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--state-dir", state, "--slot-a", "raw:" + a, "--slot-b", "raw:" + b, "--cmdline", cmdline}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := commands.Execute(context.Background(), args, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := run(append([]string{"slot", "status"}, flags...)...)
	if code != 0 || !strings.Contains(out, "booted slot: A") || !strings.Contains(out, "slot B: written") || !strings.Contains(out, "img-1") {
		t.Fatalf("status: %d %q %q", code, out, errs)
	}
	code, out, _ = run(append([]string{"slot", "status", "--json"}, flags...)...)
	var st slots.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Booted != slots.A || st.Slots[1].State != slots.Written {
		t.Fatalf("status --json: %d %q", code, out)
	}
	code, out, _ = run(append([]string{"slot", "verify", "B"}, flags...)...)
	if code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("verify: %d %q", code, out)
	}
	f, _ := os.OpenFile(b, os.O_WRONLY, 0)
	f.WriteAt([]byte("X"), 3)
	f.Close()
	code, out, errs = run(append([]string{"slot", "verify", "--json", "B"}, flags...)...)
	if code != 1 || !strings.Contains(out, `"ok": false`) || !strings.Contains(errs, "verification failed") {
		t.Fatalf("verify of a corrupted slot: %d %q %q", code, out, errs)
	}
	if code, _, _ := run("slot", "verify"); code != 2 {
		t.Fatalf("verify without a slot: exit %d", code)
	}
	if code, _, _ := run(append([]string{"slot", "verify", "C"}, flags...)...); code != 2 {
		t.Fatalf("verify C: exit %d", code)
	}
	// --config
	cfg := filepath.Join(base, "flightd.json")
	os.WriteFile(cfg, []byte(`{"slots":{"state_dir":"`+state+`","cmdline":"`+cmdline+`","a":{"backend":"raw","path":"`+a+`"},"b":{"backend":"raw","path":"`+b+`"}}}`), 0o644)
	if code, out, errs := run("slot", "status", "--config", cfg); code != 0 || !strings.Contains(out, "slot B: written") {
		t.Fatalf("status --config: %d %q %q", code, out, errs)
	}
}

// A slot formatted at every install shows its device and format.
func TestSlotStatusFormatted(t *testing.T) {
	base := t.TempDir()
	cfg := filepath.Join(base, "flightd.json")
	os.WriteFile(cfg, []byte(`{"slots": {"state_dir": "`+filepath.Join(base, "state")+`",
		"a": {"backend": "dir", "path": "/slots/a"},
		"b": {"backend": "dir", "path": "/slots/b", "device": "/dev/mmcblk0p3", "format": "ext4", "mount_options": "noatime"}}}`), 0o644)
	cmdline := filepath.Join(base, "cmdline")
	os.WriteFile(cmdline, []byte("rauc.slot=A\n"), 0o644)
	var out, errb bytes.Buffer
	if code := commands.Execute(context.Background(), []string{"slot", "status", "--config", cfg, "--cmdline", cmdline}, &out, &errb); code != 0 {
		t.Fatalf("status: %d %q", code, errb.String())
	}
	if !strings.Contains(out.String(), "device:  /dev/mmcblk0p3 (new ext4 at every install)") || strings.Count(out.String(), "device:") != 1 {
		t.Errorf("status:\n%s", out.String())
	}
	out.Reset()
	if code := commands.Execute(context.Background(), []string{"slot", "status", "--json", "--config", cfg, "--cmdline", cmdline}, &out, &errb); code != 0 {
		t.Fatalf("status --json: %d %q", code, errb.String())
	}
	var st slots.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if a, b := st.Slots[0], st.Slots[1]; a.Device != "" || a.Format != "" || b.Device != "/dev/mmcblk0p3" || b.Format != "ext4" {
		t.Errorf("status --json: %s", out.String())
	}
}
