package groundd_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "groundd.json")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := groundd.LoadConfig(write(`{"state_dir": "state", "ground_key": "g.key", "ground_key_id": 3, "release_keys": "rel",
	  "platform": "linux/arm64/v8", "schedule": "passes.csv",
	  "vehicles": [{"id": 7, "link": {"kind": "udp", "peer": "127.0.0.1:7000"}, "mac_key": {"id": 1, "file": "m.key"},
	    "seal_key": {"id": 2, "file": "/abs/s.key"}, "rtt": "1500ms", "rate": 9600}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != filepath.Join(dir, "state") || c.Vehicles[0].MACKey.File != filepath.Join(dir, "m.key") ||
		c.Vehicles[0].SealKey.File != "/abs/s.key" || c.Schedule != filepath.Join(dir, "passes.csv") ||
		time.Duration(c.Vehicles[0].RTT) != 1500*time.Millisecond {
		t.Fatalf("config %+v", c)
	}
	for name, c := range map[string]struct{ json, want string }{
		"unknown field": {`{"state_dir": "s", "ground_key": "g", "bogus": 1}`, "unknown field"},
		"no state":      {`{"ground_key": "g"}`, "state_dir is required"},
		"no key":        {`{"state_dir": "s"}`, "ground_key is required"},
		"frame":         {`{"state_dir": "s", "ground_key": "g", "max_frame": 100}`, "max_frame"},
		"store":         {`{"state_dir": "s", "ground_key": "g", "store": "zookeeper"}`, "bolt or etcd"},
		"etcd":          {`{"state_dir": "s", "ground_key": "g", "store": "etcd"}`, "endpoints are required"},
		"platform":      {`{"state_dir": "s", "ground_key": "g", "platform": "arm64"}`, "platform"},
		"twice":         {`{"state_dir": "s", "ground_key": "g", "vehicles": [{"id": 1, "mac_key": {"id": 1, "file": "m"}}, {"id": 1, "mac_key": {"id": 1, "file": "m"}}]}`, "twice"},
		"mac":           {`{"state_dir": "s", "ground_key": "g", "vehicles": [{"id": 1}]}`, "mac_key"},
		"link":          {`{"state_dir": "s", "ground_key": "g", "vehicles": [{"id": 1, "mac_key": {"id": 1, "file": "m"}, "link": {"kind": "carrier-pigeon"}}]}`, "link kind"},
		"serial":        {`{"state_dir": "s", "ground_key": "g", "vehicles": [{"id": 1, "mac_key": {"id": 1, "file": "m"}, "link": {"kind": "serial"}}]}`, "device"},
		"duration":      {`{"state_dir": "s", "ground_key": "g", "vehicles": [{"id": 1, "mac_key": {"id": 1, "file": "m"}, "rtt": 90}]}`, "duration"},
	} {
		_, err := groundd.LoadConfig(write(c.json))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// TestKeyFilesRefused: a key file of the wrong length or not hex is
// refused, and the error does not echo its content.
func TestKeyFilesRefused(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ground.key")
	secret := strings.Repeat("ab", 31) // 31 bytes: one short
	os.WriteFile(p, []byte(secret), 0o600)
	_, err := groundd.LoadGroundKey(p)
	if err == nil || strings.Contains(err.Error(), secret[:16]) {
		t.Fatalf("short key: %v", err)
	}
	os.WriteFile(p, []byte(strings.Repeat("zz", 32)), 0o600)
	if _, err := groundd.LoadGroundKey(p); err == nil {
		t.Fatal("non-hex key accepted")
	}
}
