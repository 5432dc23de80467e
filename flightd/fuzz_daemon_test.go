package flightd

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/flightd/flightdtest"
	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
)

// fuzzDaemon is a started daemon (no main loop: frames are handed to
// onFrame directly) on a MemFS slot pair, for FuzzDaemonFrame.
func fuzzDaemon(f *testing.F) (*daemon, ed25519.PrivateKey) {
	dir, err := os.MkdirTemp("", "flightd-fuzz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	must := func(err error) {
		if err != nil {
			f.Fatal(err)
		}
	}
	pub, priv, err := ed25519.GenerateKey(nil)
	must(err)
	must(os.WriteFile(filepath.Join(dir, "ground.pub"), []byte(hex.EncodeToString(pub)), 0o644))
	must(os.WriteFile(filepath.Join(dir, "vehicle.key"), []byte(hex.EncodeToString(make([]byte, 32))), 0o600))
	m := vfs.NewMem()
	must(m.MkdirAll("state", 0o755))
	must(m.MkdirAll("dev", 0o755))
	for _, n := range []string{"dev/a", "dev/b"} {
		must(vfs.WriteFileAtomic(m, n, make([]byte, tableSlot), 0o644))
	}
	sm, err := slots.Open(slots.Options{FS: m, StateDir: "state", Booted: slots.A, Now: fixedNow, Log: discard,
		A: slots.Slot{Backend: slots.BackendRaw, Path: "dev/a", Size: tableSlot},
		B: slots.Slot{Backend: slots.BackendRaw, Path: "dev/b", Size: tableSlot}})
	must(err)
	env := &watchdog.MemEnv{Vars: vars("A", "3", "0", "-")}
	up := &Updater{Slots: sm, Boot: &watchdog.BootControl{Env: env, Attempts: attempts}, Booted: slots.A, Log: discard}
	cfg := &Config{
		Vehicle: VehicleConfig{ID: testVehicle, HardwareID: "obc-rev-c"},
		Links:   []LinkConfig{{Name: "uhf", Kind: "udp", Listen: "127.0.0.1:0", MaxFrame: 1024}},
		Keys: KeysConfig{Release: []KeyFile{{ID: 1, File: filepath.Join(dir, "ground.pub")}},
			Ground:  []KeyFile{{ID: 1, File: filepath.Join(dir, "ground.pub")}},
			Vehicle: &KeyFile{ID: 1, File: filepath.Join(dir, "vehicle.key")}},
		Slots: SlotsConfig{StateDir: filepath.Join(dir, "state"), A: SlotConfig{Backend: "raw", Path: "/dev/a"}, B: SlotConfig{Backend: "raw", Path: "/dev/b"}},
		Boot:  BootConfig{GRUBEnv: filepath.Join(dir, "grubenv")},
	}
	veh, _ := flightdtest.Pipe("uhf", 1024)
	d, err := start(context.Background(), cfg, Options{Log: discard, Clock: flightdtest.NewClock(fixedNow()), Links: []Link{veh}, Updater: up, BootID: "fuzz"})
	must(err)
	f.Cleanup(d.close)
	return d, priv
}

// FuzzDaemonFrame: any frame from a link, handed to the daemon, never
// panics it, and without the ground's key never gets a command accepted,
// moves a replay window, or changes a slot or the boot environment.
func FuzzDaemonFrame(f *testing.F) {
	d, priv := fuzzDaemon(f)
	codec, err := protocol.NewCodec(1024)
	if err != nil {
		f.Fatal(err)
	}
	// Seeds: genuine commands (run once here, so the fuzzer's copies are
	// replays), and a forged one.
	for i, name := range []string{"noop", "status", "activate", "reset_counters"} {
		def, _ := dict.CommandByName(name)
		args := dict.Values{}
		if name == "activate" {
			args = dict.Values{"slot": "b", "attempts": uint64(2)}
		}
		c, err := def.NewCommand(testVehicle, uint64(i+1), args)
		if err != nil {
			f.Fatal(err)
		}
		if err := protocol.SignCommand(c, 1, priv); err != nil {
			f.Fatal(err)
		}
		b, err := codec.Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		d.onFrame(context.Background(), fixedNow(), inFrame{link: 0, frame: b})
		f.Add(b)
		c.Seq += 100
		c.Auth.Sig[0] ^= 1
		if b, err = codec.Encode(c); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{0x00})
	accepted := d.st.Counters.CmdsAccepted
	top := d.windows[1].Highest()
	slotsBefore := d.up.Slots.Status()
	envBefore, _ := d.up.Boot.Env.Load()
	f.Fuzz(func(t *testing.T, b []byte) {
		d.onFrame(context.Background(), fixedNow().Add(time.Second), inFrame{link: 0, frame: b})
		if d.st.Counters.CmdsAccepted != accepted || d.windows[1].Highest() != top {
			t.Fatalf("a command was accepted without the ground's key: accepted %d (was %d), window top %d (was %d)",
				d.st.Counters.CmdsAccepted, accepted, d.windows[1].Highest(), top)
		}
		for i, s := range d.up.Slots.Status().Slots {
			if s.State != slotsBefore.Slots[i].State {
				t.Fatalf("slot %s went %s -> %s", s.ID, slotsBefore.Slots[i].State, s.State)
			}
		}
		if env, _ := d.up.Boot.Env.Load(); !env.Equal(envBefore) {
			t.Fatalf("boot environment changed: %v -> %v", envBefore, env)
		}
	})
}
