package slots

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"
)

// tb builds tar archives in tests.
type tb struct {
	buf bytes.Buffer
	w   *tar.Writer
}

func newTB() *tb {
	t := &tb{}
	t.w = tar.NewWriter(&t.buf)
	return t
}

var testTime = time.Unix(1700000000, 123456789)

func (t *tb) hdr(h *tar.Header, body string) *tb {
	if h.Format == tar.FormatUnknown {
		h.Format = tar.FormatPAX // keeps nanosecond mtimes
	}
	if h.ModTime.IsZero() {
		h.ModTime = testTime
	}
	if h.Typeflag == tar.TypeReg {
		h.Size = int64(len(body))
	}
	if h.Mode == 0 {
		h.Mode = 0o644
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o755
		}
	}
	if err := t.w.WriteHeader(h); err != nil {
		panic(err)
	}
	if body != "" {
		if _, err := io.WriteString(t.w, body); err != nil {
			panic(err)
		}
	}
	return t
}

func (t *tb) dir(name string) *tb { return t.hdr(&tar.Header{Name: name, Typeflag: tar.TypeDir}, "") }
func (t *tb) file(name, body string) *tb {
	return t.hdr(&tar.Header{Name: name, Typeflag: tar.TypeReg}, body)
}
func (t *tb) symlink(name, target string) *tb {
	return t.hdr(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}, "")
}
func (t *tb) link(name, target string) *tb {
	return t.hdr(&tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}, "")
}

func (t *tb) bytes() []byte {
	if err := t.w.Close(); err != nil {
		panic(err)
	}
	return t.buf.Bytes()
}

func readers(layers ...[]byte) []io.Reader {
	var rs []io.Reader
	for _, l := range layers {
		rs = append(rs, bytes.NewReader(l))
	}
	return rs
}

func entryMap(t *testing.T, es []Entry) map[string]Entry {
	t.Helper()
	m := map[string]Entry{}
	for _, e := range es {
		m[e.Path] = e
	}
	return m
}

// rawEntry returns a tar header block of type typ with the given size
// followed by body padded to a block: for headers tar.Writer refuses to
// write (huge PAX records, GNU long names).
func rawEntry(name string, typ byte, body []byte) []byte {
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	if err := w.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: int64(len(body)), Mode: 0o644, Format: tar.FormatUSTAR}); err != nil {
		panic(err)
	}
	blk := append([]byte(nil), b.Bytes()[:512]...)
	blk[156] = typ
	copy(blk[148:156], "        ")
	sum := 0
	for _, c := range blk {
		sum += int(c)
	}
	copy(blk[148:156], []byte(fmt.Sprintf("%06o\x00 ", sum)))
	out := append(blk, body...)
	if pad := len(body) % 512; pad != 0 {
		out = append(out, make([]byte, 512-pad)...)
	}
	return out
}

func TestMain(m *testing.M) {
	// State-change logs are for operators; keep test output readable.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
