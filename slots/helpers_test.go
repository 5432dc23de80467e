package slots

import (
	"archive/tar"
	"bytes"
	"io"
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
