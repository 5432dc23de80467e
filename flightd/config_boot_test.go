package flightd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/watchdog"
)

const slotsSection = `"slots": {"state_dir": "/s", "a": {"backend": "dir", "path": "/a"}, "b": {"backend": "dir", "path": "/b"}}`

func TestBootConfigErrors(t *testing.T) {
	for _, tc := range []struct{ boot, want string }{
		{`{"uboot_env": [{"path": "/dev/mmcblk0", "offset": 0, "size": 8192}], "grubenv": "/g"}`, "name one of"},
		{`{"uboot_env": [{"path": "/d", "offset": 0, "size": 8}]}`, "boot.uboot_env"},
		{`{"uboot_env": [{"path": "/d", "offset": 0, "size": 8192}, {"path": "/d", "offset": 4096, "size": 8192}]}`, "overlap"},
		{`{"uboot_env": [{"path": "/d", "offset": 0, "size": 8192}, {"path": "/e", "offset": 0, "size": 4096}]}`, "differ in size"},
		{`{"uboot_env": [{"path": "/d", "ofset": 0, "size": 8192}]}`, `unknown field "ofset"`},
		{`{"grubenv": "/g", "attempts": 10}`, "boot.attempts"},
		{`{"grubenv_size": 2048}`, "without boot.grubenv"},
		{`{"grubenv": "/g", "uboot_lock_file": "/var/lock/fw_printenv.lock"}`, "uboot_lock_file without"},
		{`{"watchdog_timeout_s": 30}`, "without boot.watchdog"},
		{`{"watchdog": "/dev/watchdog0", "watchdog_timeout_s": 100000}`, "boot.watchdog_timeout_s"},
	} {
		_, err := ParseConfig([]byte(`{` + slotsSection + `, "boot": ` + tc.boot + `}`))
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.boot, err, tc.want)
		}
	}
}

func TestBootConfigOpenEnv(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "env.img")
	os.WriteFile(img, make([]byte, 0x8000), 0o644)
	fw := filepath.Join(dir, "fw_env.config")
	os.WriteFile(fw, []byte(img+" 0x0 0x4000\n"+img+" 0x4000 0x4000\n"), 0o644)

	c, err := ParseConfig([]byte(`{` + slotsSection + `, "boot": {"fw_env_config": "` + fw + `", "uboot_lock_file": "` + filepath.Join(dir, "lock") + `", "attempts": 5, "watchdog": "/dev/watchdog0"}}`))
	if err != nil {
		t.Fatal(err)
	}
	env, desc, err := c.Boot.OpenEnv()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(desc, "redundant") || c.Boot.AttemptsOrDefault() != 5 {
		t.Fatalf("desc %q attempts %d", desc, c.Boot.AttemptsOrDefault())
	}
	if err := env.Save(watchdog.Vars{"a": "1"}); err != nil {
		t.Fatal(err)
	}
	if v, err := env.Load(); err != nil || v["a"] != "1" {
		t.Fatalf("load %v %v", v, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "lock")); err != nil {
		t.Fatalf("lock file not used: %v", err)
	}

	var empty BootConfig
	if err := empty.Validate(); err != nil || empty.Configured() {
		t.Fatalf("empty section: %v", err)
	}
	if _, _, err := empty.OpenEnv(); !errors.Is(err, ErrConfig) {
		t.Fatalf("open unconfigured: %v", err)
	}
	missing := BootConfig{FWEnvConfig: filepath.Join(dir, "nope")}
	if _, _, err := missing.OpenEnv(); !errors.Is(err, ErrConfig) {
		t.Fatalf("missing fw_env.config: %v", err)
	}
	huge := filepath.Join(dir, "huge.config")
	os.WriteFile(huge, []byte(strings.Repeat("# comment\n", 10000)+img+" 0 0x4000\n"), 0o644)
	if _, _, err := (BootConfig{FWEnvConfig: huge}).OpenEnv(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("100 KB fw_env.config: %v", err)
	}
}
