package watchdog

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/watchdog/bootscripts"
)

// Cross-checks against the real tools: libubootenv's fw_printenv/fw_setenv
// (Debian libubootenv-tool), mkenvimage and mkimage (u-boot-tools), and
// grub-editenv (grub-common). Each test gets its own fw_env.config in a
// temporary directory.

// crossVars are values that exercise the format: '=' in values, spaces,
// long values, an empty value, punctuation.
func crossVars() Vars {
	return Vars{
		"BOOT_ORDER":  "B A",
		"BOOT_A_LEFT": "3",
		"BOOT_B_LEFT": "0",
		"bootargs":    "console=ttyS0,115200 root=/dev/mmcblk0p2 rauc.slot=A panic=5 a=b=c",
		"long":        strings.Repeat("0123456789abcdef", 250), // 4000 bytes
		"empty":       "",
		"punct":       `!"#$%&'()*+,-./:;<>?@[\]^_{|}~`,
		"bootcmd":     "run distro_bootcmd; reset",
	}
}

type ubootLayout struct {
	name string
	locs func(dir string) []UBootLocation
}

func ubootLayouts() []ubootLayout {
	return []ubootLayout{
		{"single", func(d string) []UBootLocation {
			return []UBootLocation{{filepath.Join(d, "env.bin"), 0, 0x2000}}
		}},
		{"single-offset", func(d string) []UBootLocation {
			return []UBootLocation{{filepath.Join(d, "disk.img"), 0x3000, 0x2000}}
		}},
		{"redundant-one-file", func(d string) []UBootLocation {
			p := filepath.Join(d, "disk.img")
			return []UBootLocation{{p, 0x1000, 0x2000}, {p, 0x3000, 0x2000}}
		}},
		{"redundant-two-files", func(d string) []UBootLocation {
			return []UBootLocation{{filepath.Join(d, "env1.bin"), 0, 0x2000}, {filepath.Join(d, "env2.bin"), 0, 0x2000}}
		}},
	}
}

// prepare creates the backing files (zero-filled, big enough) for locs.
func prepare(t *testing.T, locs []UBootLocation) {
	size := map[string]int64{}
	for _, l := range locs {
		if end := l.Offset + int64(l.Size) + 0x1000; end > size[l.Path] {
			size[l.Path] = end
		}
	}
	for p, n := range size {
		zeroFile(t, p, int(n), 0)
	}
}

func TestCrossUBootOursToFWPrintenv(t *testing.T) {
	needTool(t, "fw_printenv")
	for _, lay := range ubootLayouts() {
		t.Run(lay.name, func(t *testing.T) {
			dir := t.TempDir()
			locs := lay.locs(dir)
			prepare(t, locs)
			cfg := writeFWConfig(t, dir, locs)
			e, err := NewUBootEnv(locs...)
			if err != nil {
				t.Fatal(err)
			}
			want := crossVars()
			// Several saves, so that redundant copies alternate and both
			// hold valid environments with different flags.
			for i := 0; i < 5; i++ {
				want["round"] = string(rune('0' + i))
				if err := e.Save(want); err != nil {
					t.Fatal(err)
				}
				got := parsePrintenv(t, run(t, "fw_printenv", "-c", cfg))
				if !got.Equal(want) {
					t.Fatalf("round %d: fw_printenv read: %s", i, diffVars(got, want))
				}
			}
			// A value with a newline: compare it alone with -n.
			want["nl"] = "line1\nline2"
			if err := e.Save(want); err != nil {
				t.Fatal(err)
			}
			if got := run(t, "fw_printenv", "-c", cfg, "-n", "nl"); got != "line1\nline2\n" {
				t.Fatalf("fw_printenv -n nl = %q", got)
			}
		})
	}
}

func TestCrossUBootFWSetenvToOurs(t *testing.T) {
	needTool(t, "fw_setenv")
	for _, lay := range ubootLayouts() {
		t.Run(lay.name, func(t *testing.T) {
			dir := t.TempDir()
			locs := lay.locs(dir)
			prepare(t, locs)
			cfg := writeFWConfig(t, dir, locs)
			e, _ := NewUBootEnv(locs...)
			// fw_setenv refuses to start from a blank device (no default
			// environment), so seed with ours, then let it write.
			if err := e.Save(Vars{"seed": "1"}); err != nil {
				t.Fatal(err)
			}
			want := Vars{"seed": "1"}
			script := filepath.Join(dir, "script")
			for i, kv := range [][2]string{
				{"bootargs", "console=ttyS0 a=b=c rauc.slot=B"},
				{"BOOT_ORDER", "B A"},
				{"BOOT_B_LEFT", "3"},
				{"long", strings.Repeat("x", 1500)},
				{"seed", ""}, // unset
				{"BOOT_B_LEFT", "2"},
			} {
				if kv[1] == "" {
					run(t, "fw_setenv", "-c", cfg, kv[0])
					delete(want, kv[0])
				} else {
					run(t, "fw_setenv", "-c", cfg, kv[0], kv[1])
					want[kv[0]] = kv[1]
				}
				got, err := e.Load()
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if !got.Equal(want) {
					t.Fatalf("step %d: ours read: %s", i, diffVars(got, want))
				}
				// Interleave our writes with fw_setenv's: the flags and
				// copies must stay in step in both directions.
				want["ours"] = string(rune('a' + i))
				if err := e.Save(want); err != nil {
					t.Fatal(err)
				}
				if got := parsePrintenv(t, run(t, "fw_printenv", "-c", cfg)); !got.Equal(want) {
					t.Fatalf("step %d: fw_printenv after our save: %s", i, diffVars(got, want))
				}
			}
			// fw_setenv -s script: several variables in one write
			// (libubootenv's script format is name=value per line).
			os.WriteFile(script, []byte("a=1\nb=two words\n"), 0o644)
			run(t, "fw_setenv", "-c", cfg, "-s", script)
			want["a"], want["b"] = "1", "two words"
			if got, err := e.Load(); err != nil || !got.Equal(want) {
				t.Fatalf("after fw_setenv -s: %v: %s", err, diffVars(got, want))
			}
		})
	}
}

func TestCrossUBootMkenvimage(t *testing.T) {
	needTool(t, "mkenvimage")
	want := crossVars()
	dir := t.TempDir()
	in := filepath.Join(dir, "env.txt")
	os.WriteFile(in, []byte(want.String()), 0o644)
	for _, c := range []struct {
		name      string
		args      []string
		redundant bool
		pad       byte
	}{
		{"single-ff", nil, false, 0xff},
		{"single-p0", []string{"-p", "0"}, false, 0},
		{"redundant", []string{"-r"}, true, 0xff},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, c.name+".bin")
			args := append(append([]string{"-s", "0x2000"}, c.args...), "-o", out, in)
			run(t, "mkenvimage", args...)
			img, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			got, flags, err := DecodeUBootEnv(img, c.redundant)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(want) {
				t.Fatalf("ours read mkenvimage output: %s", diffVars(got, want))
			}
			// With the same order (ours is sorted, so is the input) the
			// images are byte-identical.
			ours, err := EncodeUBootEnv(want, 0x2000, c.redundant, flags, c.pad)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ours, img) {
				t.Fatalf("our image differs from mkenvimage's (flags %d)", flags)
			}
			// And through a store: a redundant image as copy 1, with a
			// blank copy 2, reads the same and takes our next save.
			if c.redundant {
				p2 := filepath.Join(dir, "copy2.bin")
				zeroFile(t, p2, 0x2000, 0xff)
				e, _ := NewUBootEnv(UBootLocation{out, 0, 0x2000}, UBootLocation{p2, 0, 0x2000})
				if v, err := e.Load(); err != nil || !v.Equal(want) {
					t.Fatalf("store read: %v", err)
				}
				if err := e.Save(Vars{"x": "1"}); err != nil {
					t.Fatal(err)
				}
				cfg := writeFWConfig(t, dir, e.Copies)
				if got := parsePrintenv(t, run(t, "fw_printenv", "-c", cfg)); !got.Equal(Vars{"x": "1"}) {
					t.Fatalf("fw_printenv after save over mkenvimage image: %v", got)
				}
			}
		})
	}
}

func TestCrossGRUBEditenv(t *testing.T) {
	needTool(t, "grub-editenv")
	dir := t.TempDir()
	theirs := filepath.Join(dir, "theirs")
	run(t, "grub-editenv", theirs, "create")
	g := &GRUBEnv{Path: theirs}
	if v, err := g.Load(); err != nil || len(v) != 0 {
		t.Fatalf("fresh grubenv: %v %v", v, err)
	}
	ours := filepath.Join(dir, "ours")
	raw, _ := os.ReadFile(theirs)
	os.WriteFile(ours, raw, 0o644)
	o := &GRUBEnv{Path: ours}

	// Apply the same edits with grub-editenv and with ours: the blocks
	// must be byte-identical and each must read the other's identically.
	want := Vars{}
	steps := []struct {
		set   map[string]string
		unset []string
	}{
		{set: map[string]string{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}},
		{set: map[string]string{"BOOT_A_LEFT": "2"}},
		{set: map[string]string{"BOOT_ORDER": "B A", "esc": `back\slash`, "eq": "a=b=c", "nl": "line1\nline2"}},
		{unset: []string{"BOOT_A_LEFT"}},
		{set: map[string]string{"esc": `two\\ and \n`, "BOOT_A_LEFT": "0", "long": strings.Repeat("y", 600)}},
		{set: map[string]string{"long": "short"}},
	}
	for i, s := range steps {
		// grub-editenv takes one name=value per argument; apply in name
		// order, which is also the order ours appends new names in.
		args := []string{theirs, "set"}
		for _, k := range (Vars(s.set)).Keys() {
			args = append(args, k+"="+s.set[k])
			want[k] = s.set[k]
		}
		if len(s.set) > 0 {
			run(t, "grub-editenv", args...)
		}
		if len(s.unset) > 0 {
			run(t, "grub-editenv", append([]string{theirs, "unset"}, s.unset...)...)
			for _, k := range s.unset {
				delete(want, k)
			}
		}
		if err := o.Save(want); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		a, _ := os.ReadFile(theirs)
		b, _ := os.ReadFile(ours)
		if !bytes.Equal(a, b) {
			t.Fatalf("step %d: blocks differ\ntheirs %q\nours   %q", i, a, b)
		}
		if got, err := g.Load(); err != nil || !got.Equal(want) {
			t.Fatalf("step %d: ours read grub-editenv's block: %v %v", i, got, err)
		}
		// grub-editenv list on our block (values without newlines only).
		listed := run(t, "grub-editenv", ours, "list")
		if _, hasNL := want["nl"]; !hasNL {
			if got := parsePrintenv(t, listed); !got.Equal(want) {
				t.Fatalf("step %d: grub-editenv list of ours: %v", i, got)
			}
		} else if !strings.Contains(listed, "nl=line1\nline2\n") {
			t.Fatalf("step %d: grub-editenv list lost the newline value: %q", i, listed)
		}
	}
	// A full block: ours refuses with ErrEnvFull and leaves the file as is.
	before, _ := os.ReadFile(ours)
	want["huge"] = strings.Repeat("z", 2000)
	if err := o.Save(want); err == nil {
		t.Fatal("oversized save succeeded")
	}
	if after, _ := os.ReadFile(ours); !bytes.Equal(before, after) {
		t.Fatal("failed save changed the block")
	}
}

func TestCrossMkimageBootScript(t *testing.T) {
	needTool(t, "mkimage")
	dir := t.TempDir()
	src := filepath.Join(dir, "boot.cmd")
	os.WriteFile(src, []byte(bootscripts.UBootScript), 0o644)
	scr := filepath.Join(dir, "boot.scr")
	run(t, "mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-d", src, scr)
	img, err := os.ReadFile(scr)
	if err != nil {
		t.Fatal(err)
	}
	// Legacy image header magic, then the script verbatim.
	if len(img) < 64 || !bytes.Equal(img[:4], []byte{0x27, 0x05, 0x19, 0x56}) {
		t.Fatalf("boot.scr has no uImage header: % x", img[:min(len(img), 8)])
	}
	if !bytes.Contains(img, []byte("setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1")) {
		t.Fatal("boot.scr does not carry the script")
	}
	listing := run(t, "mkimage", "-l", scr)
	if !strings.Contains(listing, "Script") {
		t.Fatalf("mkimage -l: %s", listing)
	}
}

// TestCrossUBootCopySelection pins which redundant copy wins against
// fw_printenv: the flags wrap from 255 to 0, equal flags pick the first
// copy, and a corrupt copy loses whatever its flags say.
func TestCrossUBootCopySelection(t *testing.T) {
	needTool(t, "fw_printenv")
	first, second := Vars{"which": "first"}, Vars{"which": "second"}
	for _, c := range []struct {
		name         string
		f1, f2       byte
		bad1, bad2   bool
		wantSelected string
	}{
		{"higher wins", 7, 8, false, false, "second"},
		{"higher wins reversed", 9, 8, false, false, "first"},
		{"0 after 255", 255, 0, false, false, "second"},
		{"0 after 255 reversed", 0, 255, false, false, "first"},
		{"equal flags", 5, 5, false, false, "first"},
		{"corrupt newer", 1, 2, false, true, "first"},
		{"corrupt first", 9, 2, true, false, "second"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "env")
			a, _ := EncodeUBootEnv(first, 0x1000, true, c.f1, 0)
			b, _ := EncodeUBootEnv(second, 0x1000, true, c.f2, 0)
			if c.bad1 {
				a[100] ^= 1
			}
			if c.bad2 {
				b[100] ^= 1
			}
			os.WriteFile(p, append(a, b...), 0o644)
			locs := []UBootLocation{{p, 0, 0x1000}, {p, 0x1000, 0x1000}}
			cfg := writeFWConfig(t, dir, locs)
			theirs := parsePrintenv(t, run(t, "fw_printenv", "-c", cfg))
			e, _ := NewUBootEnv(locs...)
			ours, err := e.Load()
			if err != nil {
				t.Fatal(err)
			}
			if theirs["which"] != c.wantSelected || ours["which"] != c.wantSelected {
				t.Fatalf("fw_printenv chose %q, ours %q, want %q", theirs["which"], ours["which"], c.wantSelected)
			}
		})
	}
}
