package board_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/hil/board"
	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/watchdog"
)

// waitFor polls cond (a real process runs: there is no clock to move)
// until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	end := time.After(timeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-end:
			t.Fatalf("%s: not within %v", what, timeout)
		}
	}
}

// TestBoardBootsPetsAndResets: the board boots slot A through the
// bootloader model, flightd (a real process) pets the FIFO watchdog; a
// flightd that stops petting (SIGSTOP) gets the board reset by the
// watchdog, and it boots again; a power cut and power-on restart it.
func TestBoardBootsPetsAndResets(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs flightd")
	}
	rng := testrand.New(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	set, err := images.Generate(ctx, images.Options{Dir: filepath.Join(dir, "images"), Seed: rng.Uint64(), Hardware: "obc", Size: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	bin, emu, err := board.Build(ctx, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	ground := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	b, err := board.New(board.Config{Dir: filepath.Join(dir, "board"), Flightd: bin, Emulator: emu, Vehicle: 7, Hardware: "obc",
		GroundPub: write("ground.pub", hex.EncodeToString(ground.Public().(ed25519.PublicKey))), GroundKeyID: 1,
		ReleasePub: set.ReleasePub, ReleaseKeyID: set.KeyID, VehicleKey: write("vehicle.key", hex.EncodeToString(bytes.Repeat([]byte{9}, 32))),
		Factory: set.Base, WatchdogTimeout: 3 * time.Second, OpenTimeout: 8 * time.Second, Output: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	if err := b.PowerOn(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "flightd pets", 20*time.Second, b.Petted)
	st, err := b.State()
	if err != nil || st.Booted != "A" || st.Slots["A"] != "good" {
		t.Fatalf("state %+v: %v", st, err)
	}
	// A loaded machine may reset the board on its own (a start slower
	// than the open timeout): count from here, and wait for a new flightd.
	resets, pid := b.Count("watchdog_reset"), b.Pid()
	syscall.Kill(pid, syscall.SIGSTOP)
	waitFor(t, "watchdog reset", 15*time.Second, func() bool { return b.Count("watchdog_reset") > resets })
	waitFor(t, "a new flightd pets", 30*time.Second, func() bool { return b.Petted() && b.Pid() != pid })
	b.PowerCut()
	if b.Pid() != 0 {
		t.Fatal("flightd runs after a power cut")
	}
	if err := b.PowerOn(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "flightd pets after power-on", 20*time.Second, b.Petted)
	if n, r := b.Count("boot"), b.Count("watchdog_reset"); n != 2+r {
		t.Fatalf("%d boots, want 2 and one per watchdog reset (%d): %+v", n, r, b.Events())
	}
	// Every boot has its own boot id, so flightd records each boot (its
	// reset record counts them) instead of taking every start for a
	// restart within the first boot.
	rec, err := watchdog.ReadResetRecord(filepath.Join(dir, "board", "state"))
	if err != nil {
		t.Fatal(err)
	}
	if n := b.Count("boot"); rec.Count != uint64(n) {
		t.Fatalf("flightd recorded %d boots (boot id %q), the board made %d", rec.Count, rec.BootID, n)
	}
	cancel()
	<-done
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("flightd: %s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}
