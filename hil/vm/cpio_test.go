package vm

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// cpioEntry is one entry read back by readNewc, the test's own reader,
// written from the format description (and checked against the kernel by
// the boot tests, which unpack our archives).
type cpioEntry struct {
	name         string
	mode, nlink  uint32
	major, minor uint32
	data         []byte
}

func readNewc(b []byte) ([]cpioEntry, error) {
	var out []cpioEntry
	off := 0
	for {
		if len(b)-off < 110 {
			return nil, fmt.Errorf("truncated header at %d", off)
		}
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			return nil, fmt.Errorf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32)
			if err != nil {
				panic(err)
			}
			return uint32(v)
		}
		size, nameSize := int(field(6)), int(field(11))
		if nameSize == 0 {
			return nil, fmt.Errorf("empty name at %d", off)
		}
		nameEnd := off + 110 + nameSize
		if nameEnd > len(b) || b[nameEnd-1] != 0 {
			return nil, fmt.Errorf("name at %d not NUL-terminated", off)
		}
		e := cpioEntry{name: string(b[off+110 : nameEnd-1]), mode: field(1), nlink: field(4), major: field(9), minor: field(10)}
		dataOff := nameEnd + pad4(nameEnd)
		for _, p := range b[nameEnd:dataOff] {
			if p != 0 {
				return nil, fmt.Errorf("non-zero name padding in %s", e.name)
			}
		}
		if dataOff%4 != 0 || dataOff+size > len(b) {
			return nil, fmt.Errorf("bad data offset %d for %s", dataOff, e.name)
		}
		e.data = b[dataOff : dataOff+size]
		off = dataOff + size + pad4(dataOff+size)
		if e.name == "TRAILER!!!" {
			if off != len(b) {
				return nil, fmt.Errorf("%d bytes after the trailer", len(b)-off)
			}
			return out, nil
		}
		out = append(out, e)
	}
}

func TestCPIOWriterRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewCPIOWriter(&buf)
	// Names and sizes chosen to hit every padding length.
	files := map[string][]byte{"a": nil, "ab": []byte("x"), "abc": []byte("xy"), "abcd": []byte("xyz"), "dir/abcde": bytes.Repeat([]byte{7}, 1029)}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Dir("dir", 0o755))
	must(w.CharDev("/dev/console", 0o600, 5, 1))
	must(w.Symlink("link", "dir/abcde"))
	for _, n := range []string{"a", "ab", "abc", "abcd", "dir/abcde"} {
		must(w.File(n, 0o644, files[n]))
	}
	must(w.Close())
	if buf.Len()%4 != 0 {
		t.Errorf("archive of %d bytes is not 4-byte aligned", buf.Len())
	}
	got, err := readNewc(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 8 {
		t.Fatalf("read %d entries, want 8", len(got))
	}
	if e := got[0]; e.name != "dir" || e.mode != ModeDir|0o755 || e.nlink != 2 {
		t.Errorf("dir entry %+v", e)
	}
	if e := got[1]; e.name != "dev/console" || e.mode != ModeCharDev|0o600 || e.major != 5 || e.minor != 1 {
		t.Errorf("console entry %+v", e)
	}
	if e := got[2]; e.name != "link" || e.mode != ModeSymlink|0o777 || string(e.data) != "dir/abcde" {
		t.Errorf("symlink entry %+v", e)
	}
	for _, e := range got[3:] {
		if e.mode != ModeRegular|0o644 || !bytes.Equal(e.data, files[e.name]) {
			t.Errorf("file %s: mode %o, %d bytes; want %d bytes", e.name, e.mode, len(e.data), len(files[e.name]))
		}
	}

	// The same entries give the same bytes (no timestamps).
	var again bytes.Buffer
	w2 := NewCPIOWriter(&again)
	w2.Dir("dir", 0o755)
	w2.CharDev("/dev/console", 0o600, 5, 1)
	w2.Symlink("link", "dir/abcde")
	for _, n := range []string{"a", "ab", "abc", "abcd", "dir/abcde"} {
		w2.File(n, 0o644, files[n])
	}
	must(w2.Close())
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("same entries, different archive")
	}
}

func TestCPIOWriterRefusesBadNames(t *testing.T) {
	for _, name := range []string{"", "/", "TRAILER!!!", "a/../b", "./a", "a//b", "a/", "..", "a\x00b", strings.Repeat("n", maxCPIOName+1)} {
		w := NewCPIOWriter(&bytes.Buffer{})
		if err := w.File(name, 0o644, nil); !errors.Is(err, ErrCPIO) {
			t.Errorf("File(%q) = %v, want ErrCPIO", name, err)
		}
	}
	w := NewCPIOWriter(&bytes.Buffer{})
	w.File("init", 0o755, nil)
	if err := w.File("/init", 0o755, nil); !errors.Is(err, ErrCPIO) {
		t.Errorf("duplicate entry: %v, want ErrCPIO", err)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(p), nil
}

func TestCPIOWriterErrorsAreSticky(t *testing.T) {
	w := NewCPIOWriter(&failWriter{n: 1})
	if err := w.File("a", 0o644, []byte("data")); err == nil {
		t.Fatal("write error not reported")
	}
	if err := w.Dir("b", 0o755); !errors.Is(err, ErrCPIO) {
		t.Errorf("after a failed write: %v, want the sticky ErrCPIO", err)
	}
	if err := w.Close(); !errors.Is(err, ErrCPIO) {
		t.Errorf("Close after a failed write: %v, want ErrCPIO", err)
	}
}
