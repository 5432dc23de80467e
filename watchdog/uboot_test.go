package watchdog

import (
	"bytes"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUBootEncodeLayout(t *testing.T) {
	v := Vars{"foo": "bar", "baz": "a=b"}
	buf, err := EncodeUBootEnv(v, 64, false, 0, 0xff)
	if err != nil {
		t.Fatal(err)
	}
	want := "baz=a=b\x00foo=bar\x00\x00"
	if got := string(buf[4 : 4+len(want)]); got != want {
		t.Fatalf("data = %q, want %q", got, want)
	}
	for i := 4 + len(want); i < 64; i++ {
		if buf[i] != 0xff {
			t.Fatalf("pad byte %d = %#x", i, buf[i])
		}
	}
	if crc := crc32.ChecksumIEEE(buf[4:]); buf[0] != byte(crc) || buf[3] != byte(crc>>24) {
		t.Fatalf("crc not little-endian IEEE over data")
	}
	r, err := EncodeUBootEnv(v, 64, true, 7, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r[4] != 7 || string(r[5:5+len(want)]) != want {
		t.Fatalf("redundant layout wrong: % x", r[:16])
	}
	got, flags, err := DecodeUBootEnv(r, true)
	if err != nil || flags != 7 || !got.Equal(v) {
		t.Fatalf("decode = %v %d %v", got, flags, err)
	}
}

func TestUBootDecodeErrors(t *testing.T) {
	buf, _ := EncodeUBootEnv(Vars{"a": "1"}, 32, false, 0, 0)
	buf[10] ^= 1
	if _, _, err := DecodeUBootEnv(buf, false); !errors.Is(err, ErrBadCRC) {
		t.Fatalf("flipped bit: %v, want ErrBadCRC", err)
	}
	// A data area with no NUL at all, but a valid CRC.
	raw := make([]byte, 32)
	for i := 4; i < 32; i++ {
		raw[i] = 'x'
	}
	c := crc32.ChecksumIEEE(raw[4:])
	raw[0], raw[1], raw[2], raw[3] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
	if _, _, err := DecodeUBootEnv(raw, false); !errors.Is(err, ErrEnvFormat) {
		t.Fatalf("unterminated: %v, want ErrEnvFormat", err)
	}
	if _, err := EncodeUBootEnv(Vars{"a": strings.Repeat("x", 100)}, 64, false, 0, 0); !errors.Is(err, ErrEnvFull) {
		t.Fatalf("too big: %v", err)
	}
	for _, bad := range []Vars{{"": "x"}, {"a=b": "x"}, {"a": "x\x00y"}} {
		if _, err := EncodeUBootEnv(bad, 64, false, 0, 0); !errors.Is(err, ErrBadVar) {
			t.Fatalf("%q: %v, want ErrBadVar", bad, err)
		}
	}
	if _, err := EncodeUBootEnv(Vars{}, MaxUBootEnvSize+1, false, 0, 0); !errors.Is(err, ErrEnvConfig) {
		t.Fatalf("huge size: %v", err)
	}
}

// The data area must hold the entries and the terminating empty entry:
// exactly full fits, one byte more is ErrEnvFull (never a panic or an
// image without its terminator).
func TestUBootEncodeExactFit(t *testing.T) {
	for _, redundant := range []bool{false, true} {
		const size = 64
		data := size - ubootHeader(redundant)
		// "a=" + value + NUL, then the final NUL: data bytes in all.
		value := strings.Repeat("v", data-4)
		buf, err := EncodeUBootEnv(Vars{"a": value}, size, redundant, 1, 0xff)
		if err != nil {
			t.Fatalf("redundant=%v: exact fit: %v", redundant, err)
		}
		if buf[size-1] != 0 || buf[size-2] != 0 {
			t.Fatalf("redundant=%v: no terminating empty entry: % x", redundant, buf[size-4:])
		}
		if v, _, err := DecodeUBootEnv(buf, redundant); err != nil || v["a"] != value {
			t.Fatalf("redundant=%v: decode: %v", redundant, err)
		}
		if _, err := EncodeUBootEnv(Vars{"a": value + "v"}, size, redundant, 1, 0xff); !errors.Is(err, ErrEnvFull) {
			t.Fatalf("redundant=%v: one byte over: %v, want ErrEnvFull", redundant, err)
		}
	}
}

func TestUBootDecodeLikeLibubootenv(t *testing.T) {
	// Entries without '=' and with an empty name are skipped; a later
	// duplicate wins; the list may end exactly at the end of the area.
	data := []byte("noeq\x00=x\x00a=1\x00a=2\x00b=\x00")
	buf := make([]byte, 4+len(data))
	copy(buf[4:], data)
	c := crc32.ChecksumIEEE(buf[4:])
	buf[0], buf[1], buf[2], buf[3] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
	v, _, err := DecodeUBootEnv(buf, false)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Equal(Vars{"a": "2", "b": ""}) {
		t.Fatalf("got %v", v)
	}
}

func TestNewerFlag(t *testing.T) {
	for _, c := range []struct {
		a, b byte
		want bool
	}{{2, 1, true}, {1, 2, false}, {0, 255, true}, {255, 0, false}, {5, 5, false}, {254, 255, false}} {
		if got := newerFlag(c.a, c.b); got != c.want {
			t.Errorf("newerFlag(%d,%d) = %v", c.a, c.b, got)
		}
	}
}

func TestParseFWEnvConfig(t *testing.T) {
	locs, err := ParseFWEnvConfig("# comment\n\n/dev/mmcblk0 0x3e0000 0x20000 0x20000 1\n/dev/mmcblk0   4194304 20000\n/dev/ignored 0 100\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []UBootLocation{{"/dev/mmcblk0", 0x3e0000, 0x20000}, {"/dev/mmcblk0", 4194304, 0x20000}}
	if len(locs) != 2 || locs[0] != want[0] || locs[1] != want[1] {
		t.Fatalf("got %+v", locs)
	}
	// A leading 0 is octal, as in C.
	if locs, err := ParseFWEnvConfig("/dev/x 010 100\n"); err != nil || locs[0].Offset != 8 {
		t.Fatalf("octal offset: %+v %v", locs, err)
	}
	for _, bad := range []string{"", "# only\n", "/dev/x zz 0x100\n", "/dev/x 0 0x0\n", "/dev/x 0 ffffffff\n",
		"/dev/x 0 0x100\n/dev/x 0x80 0x100\n", "/dev/x 0 0x100\n/dev/y 0 0x200\n", "/dev/mtd1 0 0x10000 0x10000\n",
		// Not C notation: fw_printenv reads these differently, so refuse.
		"/dev/x 1_000 0x100\n", "/dev/x 0b10 0x100\n", "/dev/x 0o10 0x100\n", "/dev/x 0x 0x100\n", "/dev/x 08 0x100\n"} {
		if _, err := ParseFWEnvConfig(bad); !errors.Is(err, ErrEnvConfig) {
			t.Errorf("%q: %v, want ErrEnvConfig", bad, err)
		}
	}
}

func TestUBootEnvRedundantAlternates(t *testing.T) {
	// A memory disk: 300 fsyncs on a busy machine take seconds.
	p := "env.bin"
	disk := newMemDisk(map[string][]byte{p: make([]byte, 0x4000)})
	e := &UBootEnv{Copies: []UBootLocation{{p, 0, 0x2000}, {p, 0x2000, 0x2000}}, FS: disk}
	if _, err := e.Load(); !errors.Is(err, ErrBadCRC) || !strings.Contains(err.Error(), "bad crc in both copies") {
		t.Fatalf("blank env: %v", err)
	}
	for i := 1; i <= 300; i++ {
		want := Vars{"n": strings.Repeat("x", i%50), "i": string(rune('a' + i%26))}
		if err := e.Save(want); err != nil {
			t.Fatal(err)
		}
		st, err := e.State()
		if err != nil {
			t.Fatal(err)
		}
		// The first save goes to copy 0 (none valid), then they alternate.
		if wantCur := (i - 1) % 2; st.Current != wantCur {
			t.Fatalf("save %d: current copy %d, want %d (flags %v)", i, st.Current, wantCur, st.Flags)
		}
		if st.Flags[st.Current] != byte(i) {
			t.Fatalf("save %d: flags %d", i, st.Flags[st.Current])
		}
		if !st.Vars.Equal(want) {
			t.Fatalf("save %d: read %v", i, st.Vars)
		}
	}
	// Corrupt the current copy: the other (older) one wins.
	st, _ := e.State()
	disk.files[p][int(e.Copies[st.Current].Offset)+10] ^= 0xff
	st2, err := e.State()
	if err != nil || st2.Current == st.Current {
		t.Fatalf("after corrupting copy %d: current %d, %v", st.Current, st2.Current, err)
	}
	// The next save overwrites the corrupt copy, never the only valid one.
	if err := e.Save(Vars{"x": "y"}); err != nil {
		t.Fatal(err)
	}
	st3, _ := e.State()
	if st3.Current != st.Current || !st3.Valid[0] || !st3.Valid[1] {
		t.Fatalf("save after corruption went to copy %d; valid %v", st3.Current, st3.Valid)
	}
}

func TestUBootEnvShortFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "env")
	zeroFile(t, p, 100, 0)
	e, _ := NewUBootEnv(UBootLocation{p, 0, 0x100})
	if _, err := e.Load(); err == nil || !strings.Contains(err.Error(), "read") {
		t.Fatalf("short file: %v", err)
	}
	if err := e.Save(Vars{"a": "b"}); err == nil {
		t.Fatal("save into a short file succeeded")
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, make([]byte, 100)) {
		t.Fatal("failed save changed the file")
	}
}

// A redundant environment that lost one copy still loads (as U-Boot boots
// it), and State says so: which copy is active and what became of the
// other (finding 13: status hid the lost redundancy).
func TestUBootEnvRedundancyLost(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := filepath.Join(dir, "env1"), filepath.Join(dir, "env2")
	zeroFile(t, p1, 0x1000, 0)
	zeroFile(t, p2, 0x1000, 0)
	e, err := NewUBootEnv(UBootLocation{p1, 0, 0x1000}, UBootLocation{p2, 0, 0x1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1", "2"} { // copy 1 then copy 2: both valid, 2 active
		if err := e.Save(Vars{"v": v}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := e.State()
	if err != nil || st.Redundancy == nil || st.Redundancy.Active != 2 || st.Redundancy.Other != CopyOK || st.Redundancy.Lost() || st.Redundancy.Warning() != "" {
		t.Fatalf("both copies good: %+v %v", st.Redundancy, err)
	}

	// Copy 1 (the older one) rots: copy 2 stays active, the loss is reported.
	b, _ := os.ReadFile(p1)
	b[100] ^= 0xff
	os.WriteFile(p1, b, 0o644)
	st, err = e.State()
	if err != nil || st.Vars["v"] != "2" || !st.Redundancy.Lost() || st.Redundancy.Other != CopyBadCRC || st.Redundancy.Active != 2 ||
		!strings.Contains(st.Redundancy.Warning(), p1+"@0x0 fails its CRC") {
		t.Fatalf("copy 1 corrupt: %+v %v", st.Redundancy, err)
	}

	// Copy 1 becomes unreadable (a short device): Load still reads copy 2.
	os.Truncate(p1, 10)
	st, err = e.State()
	if err != nil || st.Vars["v"] != "2" || st.Redundancy.Other != CopyUnreadable || !strings.Contains(st.Redundancy.Warning(), "is unreadable") {
		t.Fatalf("copy 1 unreadable: %+v %v", st.Redundancy, err)
	}
	// ... and with copy 2 corrupt too, nothing is valid: an error.
	b, _ = os.ReadFile(p2)
	b[100] ^= 0xff
	os.WriteFile(p2, b, 0o644)
	if _, err := e.Load(); !errors.Is(err, ErrBadCRC) || !strings.Contains(err.Error(), "read "+p1) {
		t.Fatalf("one unreadable, one corrupt: %v", err)
	}
	// A single copy that cannot be read is still an error.
	single, _ := NewUBootEnv(UBootLocation{p1, 0, 0x1000})
	if st, err := single.State(); err == nil || st.Redundancy != nil {
		t.Fatalf("single unreadable copy: %+v %v", st, err)
	}
}
