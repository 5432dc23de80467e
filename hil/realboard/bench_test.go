//go:build linux

package realboard

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/hil/board"
	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/bootorbit/bootorbit/hil/realboard/realboardtest"
)

func TestCheckRun(t *testing.T) {
	c := Config{Host: "h", KeyFile: "k", KnownHosts: "kh", PowerOn: []string{"on"}, PowerOff: []string{"off"}, KeyDir: "keys",
		ConsoleEvents: map[string]string{"watchdog_reset": "("}}
	err := c.CheckRun()
	for _, want := range []string{"flightd", "link_addr", "factory", `key_dir "keys"`, "console_events watchdog_reset"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckRun: %v lacks %q", err, want)
		}
	}
	c = Config{Host: "h", KeyFile: "k", KnownHosts: "kh", PowerOn: []string{"on"}, PowerOff: []string{"off"},
		Flightd: json.RawMessage(`{"links": []}`), LinkAddr: "10.0.0.2:7000", Factory: []string{"/usr/local/sbin/factory-reset"}}
	if err := c.CheckRun(); err != nil {
		t.Fatal(err)
	}
	if l := c.Limits(); l.SlotWrite == "" || l.ImageBehaviour == "" || l.LinkListen != "127.0.0.1:0" {
		t.Fatalf("limits %+v", l)
	}
	if GOARCH("aarch64\n") != "arm64" || GOARCH("x86_64") != "amd64" || GOARCH("pdp11") != "" {
		t.Fatal("GOARCH")
	}
}

// The scenario's flightd configuration: the board's template with the
// scenario's vehicle, keys on the board, radio peer and frame size, boot
// attempts; a template without a link or a boot section is refused.
func TestScenarioConfig(t *testing.T) {
	cfg := Config{Flightd: json.RawMessage(`{"links": [{"name": "eth", "kind": "udp", "listen": "0.0.0.0:1"}, {"name": "radio", "kind": "udp", "listen": "0.0.0.0:7000"}],
		"boot": {"reboot": ["systemctl", "reboot"]}, "slots": {"state_dir": "/var/lib/flightd"}}`)}
	cfg.defaults()
	b := &ScenarioBoard{cfg: cfg, bc: board.Config{Vehicle: 42, Hardware: "obc-hil", MaxFrame: 256, Attempts: 3, GroundKeyID: 1, ReleaseKeyID: 5}}
	b.SetPeer("10.0.0.1:40000")
	data, err := b.Config()
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Vehicle struct {
			ID         uint32 `json:"id"`
			HardwareID string `json:"hardware_id"`
		} `json:"vehicle"`
		Links []map[string]any `json:"links"`
		Keys  struct {
			Release []struct {
				ID   uint32 `json:"id"`
				File string `json:"file"`
			} `json:"release"`
		} `json:"keys"`
		Boot  map[string]any `json:"boot"`
		Slots map[string]any `json:"slots"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if c.Vehicle.ID != 42 || c.Vehicle.HardwareID != "obc-hil" || c.Links[1]["peer"] != "10.0.0.1:40000" || c.Links[1]["max_frame"] != float64(256) ||
		c.Links[0]["peer"] != nil || c.Keys.Release[0].ID != 5 || c.Keys.Release[0].File != "/etc/bootorbit/hil/release.pub" ||
		c.Boot["attempts"] != float64(3) || c.Slots["state_dir"] != "/var/lib/flightd" {
		t.Fatalf("%s", data)
	}
	for _, tmpl := range []string{`{"boot": {}}`, `{"links": [{"name": "radio"}]}`, `[]`} {
		b.cfg.Flightd = json.RawMessage(tmpl)
		if _, err := b.Config(); err == nil {
			t.Errorf("template %s taken", tmpl)
		}
	}
}

// The scenario board on the bench double: prepared (factory reset, keys
// and flightd deployed over SSH), powered on (the scenario's
// configuration written, a clean boot of slot A), read (slots, the
// environment through fw_printenv), reset by "the watchdog" (the cause
// read from the console), and cut.
func TestScenarioBoardOnDouble(t *testing.T) {
	if testing.Short() {
		t.Skip("builds flightd")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	set, err := images.Generate(ctx, images.Options{Dir: filepath.Join(dir, "images"), Seed: 1, Hardware: "obc-hil", Size: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	bin, _, err := board.Build(ctx, dir, runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	double := realboardtest.New(t, dir, set.Base, nil)
	raw, _ := json.Marshal(double.Config)
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckRun(); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys")
	os.MkdirAll(keys, 0o700)
	gpub, _, _ := ed25519.GenerateKey(nil)
	os.WriteFile(filepath.Join(keys, "ground.pub"), []byte(hex.EncodeToString(gpub)), 0o600)
	os.WriteFile(filepath.Join(keys, "vehicle.key"), []byte(strings.Repeat("ab", 32)), 0o600)
	bc := board.Config{Flightd: bin, Vehicle: 42, Hardware: "obc-hil", MaxFrame: 1024, Attempts: 3,
		GroundPub: filepath.Join(keys, "ground.pub"), GroundKeyID: 1, ReleasePub: set.ReleasePub, ReleaseKeyID: set.KeyID,
		VehicleKey: filepath.Join(keys, "vehicle.key"), Factory: set.Base}
	brd, err := NewBoards(cfg, nil)(ctx, bc)
	if err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(double.Log(), "\n"))
	}
	b := brd.(*ScenarioBoard)
	b.SetPeer("127.0.0.1:9")
	runDone := make(chan error, 1)
	go func() { runDone <- b.Run(ctx) }()
	if err := b.PowerOn(); err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(double.Log(), "\n"))
	}
	st, err := b.State()
	if err != nil || st.Booted != "A" || st.Slots["A"] != "good" || st.Images["A"] != set.Base.Manifest.String() || !b.Petted() {
		t.Fatalf("state %+v, %v", st, err)
	}
	if _, err := exec.LookPath("fw_printenv"); err == nil && st.Env["BOOT_ORDER"] != "A" {
		t.Errorf("environment %v, want BOOT_ORDER=A", st.Env)
	}
	deployed, err := os.ReadFile(cfg.ConfigPath)
	if err != nil || !strings.Contains(string(deployed), `"peer": "127.0.0.1:9"`) {
		t.Fatalf("deployed configuration %s, %v", deployed, err)
	}
	if err := double.Reset("U-Boot SPL: reset cause: WDOG"); err != nil {
		t.Fatal(err)
	}
	if err := b.await(ctx, "the reset", func() (bool, error) { return b.Count("boot") == 2 && b.Petted(), nil }); err != nil {
		t.Fatalf("%v: events %+v", err, b.Events())
	}
	for _, e := range b.Events() {
		t.Logf("%s %s %s", e.Kind, e.Slot, e.Text)
	}
	if n := b.Count("watchdog_reset"); n != 1 {
		t.Fatalf("%d watchdog resets, want 1: %+v", n, b.Events())
	}
	b.PowerCut()
	if b.Count("power_cut") != 1 || b.Petted() {
		t.Fatalf("events %+v", b.Events())
	}
	cancel()
	select {
	case <-runDone:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not end")
	}
	b.Close()
	if log := strings.Join(double.Log(), "\n"); !strings.Contains(log, "reset: U-Boot SPL") || !strings.Contains(log, "factory reset") {
		t.Fatalf("double's log:\n%s", log)
	}
}
