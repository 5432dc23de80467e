package flightd

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// TestShippedExampleConfig loads dist/flightd.json, the example the docs
// point to, as `flightd run` would (its key files aside: they live on the
// board).
func TestShippedExampleConfig(t *testing.T) {
	c, err := LoadConfig(filepath.Join("dist", "flightd.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateRun(); err != nil {
		t.Fatal(err)
	}
	if c.Vehicle.ID != 42 || len(c.Links) != 2 || c.SmallestFrame() != 256 || c.QuotaOrDefault() != 2<<30 {
		t.Errorf("decoded %+v", c)
	}
	if time.Duration(c.Health.Checks[0].Timeout) != 2*time.Minute || time.Duration(c.Health.GroundWithin) != 6*time.Hour {
		t.Errorf("health %+v", c.Health)
	}
	if _, err := os.Stat(filepath.Join("dist", "flightd.service")); err != nil {
		t.Error(err)
	}
}

// TestConfigReportsEveryProblem: a configuration with several mistakes is
// refused with one error per mistake, all at once.
func TestConfigReportsEveryProblem(t *testing.T) {
	doc := `{
  "vehicle": {"hardware_id": "obc rev c"},
  "links": [{"name": "uhf", "kind": "radio"}, {"name": "uhf", "kind": "udp", "max_frame": 100}],
  "keys": {"release": [{"id": 1, "file": "a"}, {"id": 1, "file": "b"}]},
  "slots": {"state_dir": "/s", "a": {"backend": "dir", "path": "/a"}, "b": {"backend": "dir", "path": "/b"}},
  "health": {"checks": [{"name": "x", "command": ["true"]}]},
  "telemetry": {"period": "10ms"},
  "memory_limit": "1MiB"
}`
	var c Config
	mustT(t, json.Unmarshal([]byte(doc), &c))
	err := c.ValidateRun()
	if err == nil {
		t.Fatal("accepted")
	}
	want := []string{
		"vehicle.id is required", `vehicle.hardware_id "obc rev c"`, `links[0].kind "radio"`,
		`links[1].name "uhf" is used twice`, "links[1]: a udp link needs listen or peer", "links[1].max_frame 100",
		"keys.release[1].id 1 is used twice", "keys.ground: at least one key", "keys.vehicle is required",
		`health.checks[0].command[0] "true" is not an absolute path`, "telemetry.period 10ms", "boot: flightd run needs",
		"memory_limit 1048576 bytes: want at least",
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(want) {
		t.Errorf("%d problems reported, want %d:\n%v", n, len(want), err)
	}
	if !errors.Is(err, ErrConfig) {
		t.Error("not ErrConfig")
	}
}

func TestConfigValuesWithUnits(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`{"storage": {"quota": "2 parsecs"}}`, `field "storage.quota": "2 parsecs" (want a number and an optional unit`},
		{`{"storage": {"quota": -1}}`, `field "storage.quota": -1 (negative)`},
		{`{"telemetry": {"period": 30}}`, `field "telemetry.period": 30 (want a duration string`},
		{`{"telemetry": {"period": "-5s"}}`, "negative"},
		{`{"storage": {"quota": "99999999999TiB"}}`, "too large"},
		{`{"memory_limit": "lots"}`, `field "memory_limit": "lots"`},
		{`{"health": {"checks": [{"name": "x", "command": ["/bin/true"], "timeout": "soon"}]}}`, `field "health.checks.timeout": "soon"`},
	} {
		_, err := ParseConfig([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want an error about %q", tc.doc, err, tc.want)
		}
	}
}

func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	pem := "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"
	mustT(t, os.WriteFile(filepath.Join(dir, "r.pub"), []byte(pem), 0o644))
	mustT(t, os.WriteFile(filepath.Join(dir, "g.pub"), []byte(strings.Repeat("ab", 32)), 0o644))
	mustT(t, os.WriteFile(filepath.Join(dir, "open.key"), []byte(strings.Repeat("01", 32)), 0o644))
	c := &Config{Keys: KeysConfig{
		Release: []KeyFile{{ID: 1, File: filepath.Join(dir, "r.pub")}},
		Ground:  []KeyFile{{ID: 1, File: filepath.Join(dir, "g.pub")}, {ID: 2, File: filepath.Join(dir, "missing.pub")}},
		Vehicle: &KeyFile{ID: 1, File: filepath.Join(dir, "open.key")},
	}}
	_, err := c.LoadKeys()
	if err == nil || !strings.Contains(err.Error(), "keys.ground[1]") || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("LoadKeys: %v", err)
	}
	key := filepath.Join(dir, "vehicle.key")
	mustT(t, WriteVehicleKey(key))
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("vehicle key %v %v", fi.Mode(), err)
	}
	if err := WriteVehicleKey(key); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("second keygen: %v", err)
	}
	c.Keys.Ground = c.Keys.Ground[:1]
	c.Keys.Vehicle.File = key
	k, err := c.LoadKeys()
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Vehicle.Key) != 32 || k.GroundPub[1] == nil {
		t.Errorf("keys %+v", k)
	}
}

// TestLoadRunConfigReportsEverything: flightd run's loading reports the
// missing sections, the malformed values and the unreadable key files in
// one error.
func TestLoadRunConfigReportsEverything(t *testing.T) {
	p := filepath.Join(t.TempDir(), "flightd.json")
	mustT(t, os.WriteFile(p, []byte(`{
  "vehicle": {"id": 1, "hardware_id": "obc"},
  "links": [{"name": "uhf", "kind": "udp", "listen": "127.0.0.1:0", "max_frame": 64}],
  "keys": {"release": [{"id": 1, "file": "/nonexistent/r.pub"}], "ground": [{"id": 1, "file": "/nonexistent/g.pub"}]},
  "slots": {"state_dir": "/s", "a": {"backend": "dir", "path": "/a"}, "b": {"backend": "dir", "path": "/b"}}
}`), 0o644))
	_, err := LoadRunConfig(p)
	for _, want := range []string{"links[0].max_frame 64", "keys.vehicle is required", "boot: flightd run needs", "keys.release[0] (id 1)", "keys.ground[0] (id 1)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

// TestApplyMemoryLimit: memory_limit (default 24MiB) becomes the runtime's
// soft limit, unless GOMEMLIMIT is set.
func TestApplyMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(prev)
	t.Setenv("GOMEMLIMIT", "")
	c := &Config{}
	if got := c.ApplyMemoryLimit(); got != DefaultMemoryLimit || debug.SetMemoryLimit(-1) != DefaultMemoryLimit {
		t.Fatalf("default: applied %d, runtime %d", got, debug.SetMemoryLimit(-1))
	}
	c.MemoryLimit = 48 << 20
	if got := c.ApplyMemoryLimit(); got != 48<<20 || debug.SetMemoryLimit(-1) != 48<<20 {
		t.Fatalf("48MiB: applied %d", got)
	}
	debug.SetMemoryLimit(prev)
	t.Setenv("GOMEMLIMIT", "off")
	if got := c.ApplyMemoryLimit(); got != prev {
		t.Fatalf("with GOMEMLIMIT set: %d, want the runtime's %d", got, prev)
	}
}
