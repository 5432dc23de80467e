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
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err == nil && c.Validate() != nil {
			t.Fatal("ParseConfig returned an invalid config")
		}
	})
}
