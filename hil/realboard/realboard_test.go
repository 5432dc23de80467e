//go:build linux

package realboard

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/hil/realboard/realboardtest"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sys/unix"
)

func TestShellQuote(t *testing.T) {
	args := []string{"plain", "", "two words", "it's", `back\slash`, "$HOME", "`id`", "a;b|c&d", "new\nline", "'", "--flag=x"}
	script := "set -- " + Command(args...) + `; for a in "$@"; do printf '[%s]' "$a"; done`
	out, err := exec.Command("sh", "-c", script).Output()
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for _, a := range args {
		want.WriteString("[" + a + "]")
	}
	if string(out) != want.String() {
		t.Fatalf("the shell read %q, want %q", out, want.String())
	}
}

func TestInstallCommandQuotes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub dir", "it's flightd")
	cmd := exec.Command("sh", "-c", installCommand(path, 0o755))
	cmd.Stdin = strings.NewReader("payload")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	b, err := os.ReadFile(path)
	st, _ := os.Stat(path)
	if err != nil || string(b) != "payload" || st.Mode().Perm() != 0o755 {
		t.Fatalf("installed %q (%v), mode %v", b, err, st.Mode())
	}
	if _, err := os.Stat(path + ".bootorbit-new"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the temporary file is left: %v", err)
	}
}

func TestConfigCheck(t *testing.T) {
	if err := (Config{}).Check(); err == nil || !strings.Contains(err.Error(), "known_hosts") {
		t.Fatalf("empty config: %v", err)
	}
	c := Config{Host: "h", KeyFile: "k", KnownHosts: "kh", PowerOn: []string{"on"}, PowerOff: []string{"off"}, FlightdPath: "relative/flightd"}
	if err := c.Check(); err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Fatalf("relative path: %v", err)
	}
}

// bench makes a client key, a server that takes it, a known_hosts
// holding the server's key, and a power switch that logs to a file.
func bench(t *testing.T) (Config, string) {
	t.Helper()
	dir := t.TempDir()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	os.WriteFile(keyFile, pem.EncodeToMemory(blk), 0o600)
	clientPub, _ := ssh.NewPublicKey(pub)
	addr, hostKey := realboardtest.StartSSH(t, clientPub)
	kh := filepath.Join(dir, "known_hosts")
	os.WriteFile(kh, []byte(knownhosts.Line([]string{knownhosts.Normalize(addr)}, hostKey)+"\n"), 0o644)
	powerLog := filepath.Join(dir, "power.log")
	return Config{
		Host: addr, User: "root", KeyFile: keyFile, KnownHosts: kh,
		PowerOn:     []string{"sh", "-c", "echo on >> " + ShellQuote(powerLog)},
		PowerOff:    []string{"sh", "-c", "echo off >> " + ShellQuote(powerLog)},
		FlightdPath: filepath.Join(dir, "board", "usr", "bin", "flightd"),
		ConfigPath:  filepath.Join(dir, "board", "etc", "bootorbit", "flightd.json"),
		Restart:     []string{"true"},
		TimeoutS:    30,
	}, powerLog
}

// The driver against a local SSH server: describe, deploy (binary and
// config installed, restart run), status (the deployed flightd's), a
// command, power switched by the configured commands.
func TestSSHBoard(t *testing.T) {
	cfg, powerLog := bench(t)
	ctx := context.Background()
	b, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	desc, err := b.Describe(ctx)
	if err != nil || !strings.HasPrefix(desc, "ssh root@127.0.0.1:") {
		t.Fatalf("describe: %q, %v", desc, err)
	}
	t.Log(desc)
	// A stand-in flightd: prints its arguments as JSON for status.
	fake := []byte("#!/bin/sh\nprintf '{\"args\":\"%s\"}\\n' \"$*\"\n")
	if err := b.Deploy(ctx, fake, []byte(`{"vehicle":{"id":42}}`)); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(cfg.ConfigPath); string(got) != `{"vehicle":{"id":42}}` {
		t.Fatalf("config deployed: %q", got)
	}
	st, err := b.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"args":"status --config ` + cfg.ConfigPath + ` --json"}`; strings.TrimSpace(string(st)) != want {
		t.Fatalf("status %q, want %q", st, want)
	}
	out, err := b.Run(ctx, "printf", "%s|", "a b", "it's")
	if err != nil || string(out) != "a b|it's|" {
		t.Fatalf("run: %q, %v", out, err)
	}
	if _, err := b.Run(ctx, "false"); err == nil {
		t.Fatal("a failing command succeeded")
	}
	if err := b.Power(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := b.Power(ctx, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(powerLog); string(got) != "off\non\n" {
		t.Fatalf("power log %q", got)
	}
}

// A board whose host key is not the known one is refused.
func TestSSHBoardUnknownHostKey(t *testing.T) {
	cfg, _ := bench(t)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	s, _ := ssh.NewSignerFromKey(other)
	os.WriteFile(cfg.KnownHosts, []byte(knownhosts.Line([]string{knownhosts.Normalize(cfg.Host)}, s.PublicKey())+"\n"), 0o644)
	if _, err := Dial(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "key") {
		t.Fatalf("dial with a changed host key: %v", err)
	}
}

// The console reader on a pseudo-terminal standing in for a USB-serial
// adapter.
func TestReadConsole(t *testing.T) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines, err := ReadConsole(ctx, fmt.Sprintf("/dev/pts/%d", n), 115200)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(master, "U-Boot 2023.01\r\nbootorbit: booting slot B\r\n")
	for _, want := range []string{"U-Boot 2023.01", "bootorbit: booting slot B"} {
		select {
		case got := <-lines:
			if got != want {
				t.Fatalf("line %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no line %q", want)
		}
	}
	cancel()
	for range lines { // closed once ctx ends
	}
}

// DialWait retries a board that does not answer (it boots) until
// timeout_s, then says so; a refused host key ends it at once.
func TestDialWait(t *testing.T) {
	cfg, _ := bench(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	down := cfg
	down.Host, down.TimeoutS = closed, 1
	if _, err := DialWait(context.Background(), down); err == nil || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("a board that never answers: %v", err)
	}
	b, err := DialWait(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	s, _ := ssh.NewSignerFromKey(other)
	os.WriteFile(cfg.KnownHosts, []byte(knownhosts.Line([]string{knownhosts.Normalize(cfg.Host)}, s.PublicKey())+"\n"), 0o644)
	start := time.Now()
	if _, err := DialWait(context.Background(), cfg); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("a changed host key: %v after %v", err, time.Since(start))
	}
}
