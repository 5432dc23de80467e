package watchdog

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGRUBBlockFormat(t *testing.T) {
	b, err := NewGRUBBlock(GRUBEnvSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Replace(Vars{"b": `x\y`, "a": "1\n2"}); err != nil {
		t.Fatal(err)
	}
	raw, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	want := grubHeader + "a=1\\\n2\nb=x\\\\y\n"
	if len(raw) != GRUBEnvSize || !strings.HasPrefix(string(raw), want) || strings.Trim(string(raw[len(want):]), "#") != "" {
		t.Fatalf("block = %q", raw[:len(want)+4])
	}
	p, err := ParseGRUBEnv(raw)
	if err != nil || !p.Vars().Equal(Vars{"b": `x\y`, "a": "1\n2"}) {
		t.Fatalf("parse: %v %v", p.Vars(), err)
	}
}

func TestGRUBParseErrors(t *testing.T) {
	pad := func(s string) []byte { return []byte(s + strings.Repeat("#", GRUBEnvSize-len(s))) }
	for name, in := range map[string][]byte{
		"no header":      pad("# GRUB Env\nx=1\n"),
		"no equals":      pad(grubHeader + "justaname\n"),
		"empty name":     pad(grubHeader + "=x\n"),
		"junk padding":   []byte(grubHeader + "x=1\nabc"),
		"dangling esc":   pad(grubHeader + "x=ab\\"),
		"nul":            pad(grubHeader + "x=a\x00b\n"),
		"too big":        make([]byte, MaxGRUBEnvSize+1),
		"backslash name": pad(grubHeader + "a\\b=1\n"),
	} {
		if _, err := ParseGRUBEnv(in); !errors.Is(err, ErrEnvFormat) {
			t.Errorf("%s: %v, want ErrEnvFormat", name, err)
		}
	}
}

func TestGRUBEnvFileChecks(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte(grubHeader), 0o644)
	if _, err := (&GRUBEnv{Path: short}).Load(); err == nil || !strings.Contains(err.Error(), "grub-editenv FILE create") {
		t.Fatalf("short file: %v", err)
	}
	long := filepath.Join(dir, "long")
	os.WriteFile(long, []byte(grubHeader+strings.Repeat("#", 2000)), 0o644)
	if _, err := (&GRUBEnv{Path: long}).Load(); !errors.Is(err, ErrEnvFormat) {
		t.Fatalf("2 KiB file with default size: %v", err)
	}
	if v, err := (&GRUBEnv{Path: long, Size: len(grubHeader) + 2000}).Load(); err != nil || len(v) != 0 {
		t.Fatalf("2 KiB file with its size: %v %v", v, err)
	}
	if err := (&GRUBEnv{Path: filepath.Join(dir, "missing")}).Save(Vars{"a": "1"}); err == nil {
		t.Fatal("save created a missing grubenv")
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Fatal("missing grubenv was created")
	}
	if err := (&GRUBEnv{Path: long, Size: len(grubHeader) + 2000}).Save(Vars{"#x": "1"}); !errors.Is(err, ErrBadVar) {
		t.Fatalf("name starting with #: %v", err)
	}
}
