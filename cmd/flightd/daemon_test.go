//go:build linux

package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bootorbit/bootorbit/flightd"
	"github.com/bootorbit/bootorbit/internal/cli/clitest"
	"github.com/bootorbit/bootorbit/watchdog"
)

// TestKeygenStatusCheck: keygen writes a 0600 key it does not print;
// status and check read a fresh vehicle's state from disk.
func TestKeygenStatusCheck(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "vehicle.key")
	code, out, errOut := clitest.Run(commands, "keygen", key)
	if code != 0 {
		t.Fatalf("keygen: %d %s", code, errOut)
	}
	data, err := os.ReadFile(key)
	if err != nil || strings.Contains(out, strings.TrimSpace(string(data))) {
		t.Fatalf("keygen printed the key or wrote none: %q %v", out, err)
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode())
	}
	if code, _, _ := clitest.Run(commands, "keygen", key); code != 1 {
		t.Errorf("keygen over an existing key: exit %d, want 1", code)
	}
	if code, _, _ := clitest.Run(commands, "keygen"); code != 2 {
		t.Errorf("keygen without FILE: exit %d, want 2", code)
	}

	pub := strings.Repeat("ab", 32)
	os.WriteFile(filepath.Join(dir, "ground.pub"), []byte(pub), 0o644)
	for _, d := range []string{"a", "b", "state"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "cmdline"), []byte("rauc.slot=A\n"), 0o644)
	cfg := map[string]any{
		"vehicle": map[string]any{"id": 7, "hardware_id": "obc-rev-c"},
		"links":   []any{map[string]any{"name": "uhf", "kind": "udp", "listen": "127.0.0.1:0"}},
		"keys": map[string]any{
			"release": []any{map[string]any{"id": 1, "file": filepath.Join(dir, "ground.pub")}},
			"ground":  []any{map[string]any{"id": 1, "file": filepath.Join(dir, "ground.pub")}},
			"vehicle": map[string]any{"id": 1, "file": key},
		},
		"slots": map[string]any{"state_dir": filepath.Join(dir, "state"), "cmdline": filepath.Join(dir, "cmdline"),
			"a": map[string]any{"backend": "dir", "path": filepath.Join(dir, "a")},
			"b": map[string]any{"backend": "dir", "path": filepath.Join(dir, "b")}},
		"boot": map[string]any{"grubenv": filepath.Join(dir, "grubenv")},
	}
	blk, _ := watchdog.NewGRUBBlock(1024)
	blk.Replace(watchdog.Vars{watchdog.VarBootOrder: "A", watchdog.LeftVar("A"): "3", watchdog.LeftVar("B"): "0"})
	env, _ := blk.Bytes()
	os.WriteFile(filepath.Join(dir, "grubenv"), env, 0o644)
	b, _ := json.Marshal(cfg)
	conf := filepath.Join(dir, "flightd.json")
	os.WriteFile(conf, b, 0o644)

	code, out, errOut = clitest.Run(commands, "status", "--config", conf)
	if code != 0 || !strings.Contains(out, "vehicle 7 (read from the disk)") || !strings.Contains(out, "slot B: empty") {
		t.Fatalf("status: %d\n%s%s", code, out, errOut)
	}
	code, out, _ = clitest.Run(commands, "status", "--config", conf, "--json")
	var st struct {
		Vehicle uint32
		Booted  string
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Vehicle != 7 || st.Booted != "A" {
		t.Fatalf("status --json: %d %s", code, out)
	}
	// A fresh vehicle: the booted slot, without a record, counts as good.
	code, out, _ = clitest.Run(commands, "check", "--config", conf)
	if code != 0 || !strings.Contains(out, "consistent") {
		t.Fatalf("check of a fresh vehicle: %d\n%s", code, out)
	}
	// An environment that boots the empty slot B next.
	blk.Replace(watchdog.Vars{watchdog.VarBootOrder: "B A", watchdog.LeftVar("A"): "3", watchdog.LeftVar("B"): "3"})
	env, _ = blk.Bytes()
	os.WriteFile(filepath.Join(dir, "grubenv"), env, 0o644)
	code, out, _ = clitest.Run(commands, "check", "--config", conf)
	if code != 1 || !strings.Contains(out, "slot B is empty, but the boot environment can boot it") || !strings.Contains(out, "the next boot boots slot B, which is empty") {
		t.Fatalf("check of a tampered environment: %d\n%s", code, out)
	}
}

// TestControlSocket: the running daemon's status, asked over its socket.
func TestControlSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flightd.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	want := flightd.Status{Vehicle: 9, Booted: "B", LastOutcome: "good"}
	if err := serveControl(ctx, path, func() flightd.Status { return want }); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v %v", fi, err)
	}
	got, err := askDaemon(path)
	if err != nil || got.Vehicle != 9 || got.Booted != "B" || got.LastOutcome != "good" {
		t.Fatalf("asked %+v %v", got, err)
	}
}

// TestControlSocketNoWindow: from the moment it is bound, the control
// socket is reachable by its owner only, whatever the umask: binding it
// where it is served and chmod'ing it after left a window in which
// another local user could connect.
func TestControlSocketNoWindow(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "flightd.sock")
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	checked := false
	listenHook = func(bound string) {
		checked = true
		sock, err := os.Lstat(bound)
		if err != nil {
			t.Errorf("bound socket %s: %v", bound, err)
			return
		}
		parent, err := os.Stat(filepath.Dir(bound))
		if err != nil {
			t.Errorf("directory of the bound socket: %v", err)
			return
		}
		if sock.Mode().Perm()&0o022 != 0 && parent.Mode().Perm()&0o077 != 0 {
			t.Errorf("bound socket %s mode %v in a directory of mode %v: other users can connect", bound, sock.Mode().Perm(), parent.Mode().Perm())
		}
	}
	defer func() { listenHook = nil }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	want := flightd.Status{Vehicle: 9}
	if err := serveControl(ctx, path, func() flightd.Status { return want }); err != nil {
		t.Fatal(err)
	}
	if !checked {
		t.Fatal("the listen hook was not called")
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v %v: want a socket of mode 0600", fi, err)
	}
	if got, err := askDaemon(path); err != nil || got.Vehicle != 9 {
		t.Fatalf("asked %+v %v", got, err)
	}
	if es, err := os.ReadDir(dir); err != nil || len(es) != 1 {
		t.Errorf("the socket's directory holds %v (%v), want the socket alone", es, err)
	}
}

// TestControlSocketStale: a socket a daemon left behind (killed) is
// replaced.
func TestControlSocketStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flightd.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := serveControl(ctx, path, func() flightd.Status { return flightd.Status{Vehicle: 3} }); err != nil {
		t.Fatal(err)
	}
	if got, err := askDaemon(path); err != nil || got.Vehicle != 3 {
		t.Fatalf("asked %+v %v", got, err)
	}
}

// TestControlSocketNotAFile: control.socket naming a file that is not a
// socket (a typo, or a config pointed at something precious) must not
// delete it: serveControl only replaces a stale socket.
func TestControlSocketNotAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(path, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := serveControl(ctx, path, func() flightd.Status { return flightd.Status{} }); err == nil {
		t.Error("serveControl on a regular file: no error")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me\n" {
		t.Fatalf("the file at control.socket was replaced: %q %v", b, err)
	}
}
