package flightd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodConfig = `{
  "slots": {
    "state_dir": "/var/lib/bootorbit",
    "var_dir": "/data/var",
    "a": {"backend": "dir", "path": "/slots/a"},
    "b": {"backend": "raw", "path": "/dev/mmcblk0p3", "size": 1073741824}
  },
  "boot": {}
}`

func TestLoadConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "flightd.json")
	if err := os.WriteFile(p, []byte(goodConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Slots.A.Backend != "dir" || c.Slots.B.Size != 1<<30 || c.Slots.StateDir != "/var/lib/bootorbit" {
		t.Fatalf("decoded %+v", c.Slots)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"unknown field", `{"slots": {"stat_dir": "/x"}}`, `unknown field "stat_dir"`},
		{"wrong type", `{"slots": {"state_dir": 3}}`, `field "slots.state_dir"`},
		{"syntax", "{\n\"slots\": {,}}", "line 2"},
		{"empty", ``, "empty document"},
		{"trailing", goodConfig + `{}`, "trailing data"},
		{"no state dir", `{"slots": {"a": {"backend":"dir","path":"/a"}, "b": {"backend":"dir","path":"/b"}}}`, "slots.state_dir is required"},
		{"bad backend", `{"slots": {"state_dir":"/s","a": {"backend":"ext4","path":"/a"}, "b": {"backend":"dir","path":"/b"}}}`, `slots.a.backend "ext4"`},
		{"no path", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a"}, "b": {"backend":"dir"}}}`, "slots.b.path is required"},
		{"same path", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a"}, "b": {"backend":"dir","path":"/a/"}}}`, "are the same"},
		{"nested", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a"}, "b": {"backend":"dir","path":"/a/b"}}}`, "nest"},
		{"state inside slot", `{"slots": {"state_dir":"/a/state","a": {"backend":"dir","path":"/a"}, "b": {"backend":"dir","path":"/b"}}}`, "state_dir /a/state is inside"},
		{"var inside slot", `{"slots": {"state_dir":"/s","var_dir":"/b/var","a": {"backend":"dir","path":"/a"}, "b": {"backend":"dir","path":"/b"}}}`, "var_dir /b/var is inside"},
		{"dir size", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a","size":4096}, "b": {"backend":"dir","path":"/b"}}}`, "slots.a.size is only for raw"},
		{"unaligned size", `{"slots": {"state_dir":"/s","a": {"backend":"raw","path":"/a","size":1000}, "b": {"backend":"dir","path":"/b"}}}`, "not a multiple of 4096"},
		{"negative size", `{"slots": {"state_dir":"/s","a": {"backend":"raw","path":"/a","size":-4096}, "b": {"backend":"dir","path":"/b"}}}`, "negative"},
		{"format on raw", `{"slots": {"state_dir":"/s","a": {"backend":"raw","path":"/dev/x","device":"/dev/x","format":"ext4"}, "b": {"backend":"dir","path":"/b"}}}`, "slots.a.format is only for dir"},
		{"format without device", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a"}, "b": {"backend":"dir","path":"/b","format":"ext4"}}}`, "slots.b.format needs slots.b.device"},
		{"unsupported format", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a"}, "b": {"backend":"dir","path":"/b","device":"/dev/sdb2","format":"btrfs"}}}`, `slots.b.format "btrfs"`},
		{"device without format", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a","device":"/dev/sdb1"}, "b": {"backend":"dir","path":"/b"}}}`, "slots.a.device without slots.a.format"},
		{"mount options without format", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a","mount_options":"noatime"}, "b": {"backend":"dir","path":"/b"}}}`, "need slots.a.format"},
		{"relative device", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a","device":"sdb1","format":"ext4"}, "b": {"backend":"dir","path":"/b"}}}`, `slots.a.device "sdb1"`},
		{"same device", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a","device":"/dev/sdb1","format":"ext4"}, "b": {"backend":"dir","path":"/b","device":"/dev/sdb1","format":"ext4"}}}`, "slots.a.device and slots.b.device are the same"},
		{"read-only mount", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a","device":"/dev/sdb1","format":"ext4","mount_options":"ro"}, "b": {"backend":"dir","path":"/b"}}}`, "slots.a.mount_options"},
		{"empty mkfs option", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a","device":"/dev/sdb1","format":"ext4","mkfs_options":["-m",""]}, "b": {"backend":"dir","path":"/b"}}}`, "slots.a.mkfs_options[1] is empty"},
		{"mkfs options not strings", `{"slots": {"state_dir":"/s","a": {"backend":"dir","path":"/a","device":"/dev/sdb1","format":"ext4","mkfs_options":"-m 0"}, "b": {"backend":"dir","path":"/b"}}}`, `field "slots.a.mkfs_options"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

const formatConfig = `{
  "slots": {
    "state_dir": "/var/lib/bootorbit",
    "a": {"backend": "dir", "path": "/slots/a", "device": "/dev/mmcblk0p2", "format": "ext4"},
    "b": {"backend": "dir", "path": "/slots/b", "device": "/dev/mmcblk0p3", "format": "ext4",
          "mkfs_options": ["-E", "nodiscard", "-L", "slot-b"], "mount_options": "noatime,commit=30"}
  }
}`

func TestFormatConfig(t *testing.T) {
	c, err := ParseConfig([]byte(formatConfig))
	if err != nil {
		t.Fatal(err)
	}
	c.Slots.Cmdline = filepath.Join(t.TempDir(), "cmdline")
	if err := os.WriteFile(c.Slots.Cmdline, []byte("root=/dev/mmcblk0p2 rauc.slot=A\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := c.Slots.SlotOptions(false)
	if err != nil {
		t.Fatal(err)
	}
	b := o.B
	if b.Device != "/dev/mmcblk0p3" || b.Format != "ext4" || strings.Join(b.MkfsOptions, " ") != "-E nodiscard -L slot-b" || b.MountOptions != "noatime,commit=30" {
		t.Errorf("slot B options %+v", b)
	}
	if o.A.Device != "/dev/mmcblk0p2" || o.A.Format != "ext4" || o.A.MkfsOptions != nil || o.Booted != "A" {
		t.Errorf("slot A options %+v, booted %q", o.A, o.Booted)
	}
	// The options are a copy: the config stays as it was.
	b.MkfsOptions[0] = "x"
	if c.Slots.B.MkfsOptions[0] != "-E" {
		t.Error("SlotOptions shares mkfs_options with the config")
	}
}

func TestLoadConfigTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(p, []byte(strings.Repeat(" ", MaxConfigSize+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); !errors.Is(err, ErrConfig) {
		t.Fatalf("got %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte(`{"slots":{}}`))
	f.Add([]byte(formatConfig))
	if b, err := os.ReadFile(filepath.Join("dist", "flightd.json")); err == nil {
		f.Add(b) // the daemon's sections
	}
	f.Add([]byte(`{"storage": {"quota": "2GiB"}, "telemetry": {"period": "30s"}, "links": [{"name": "uhf", "kind": "serial", "device": "/dev/ttyS1"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err == nil && c.Validate() != nil {
			t.Fatal("ParseConfig returned an invalid config")
		}
	})
}
