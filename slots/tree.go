package slots

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// Entry is one file of a root filesystem as the tree digest sees it. Hard
// links are not distinguished from copies: each path is a regular file with
// its own record.
type Entry struct {
	Path   string // slash-separated, relative to the slot root, no leading "./"
	Type   byte   // 'd' dir, 'f' regular, 'l' symlink, 'c' char dev, 'b' block dev, 'p' fifo
	Mode   uint32 // permission bits and setuid/setgid/sticky (mode & 07777)
	UID    int
	GID    int
	Size   int64    // regular files only
	SHA256 [32]byte // regular files only
	Link   string   // symlinks only
	Major  uint32   // devices only
	Minor  uint32
	Xattrs []Xattr // sorted by name
	Mtime  int64   // nanoseconds since the epoch
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value string
}

// DigestOptions selects what a tree digest covers.
type DigestOptions struct {
	// Mtimes includes modification times (of everything but symlinks'
	// targets); off by default since a rebuild that changes nothing else
	// should not change the digest.
	Mtimes bool
	// Exclude lists top-level names (such as "etc", "var") whose whole
	// subtree is left out.
	Exclude []string
}

// MutableTrees are the top-level trees that hold local state and are left
// out of the static digest that re-verification of an installed slot checks.
var MutableTrees = []string{"etc", "var"}

// excluded reports whether path p is left out by o. The top-level
// lost+found of a mounted filesystem is never part of an image.
func (o DigestOptions) excluded(p string) bool {
	top, _, _ := strings.Cut(p, "/")
	if top == "lost+found" {
		return true
	}
	for _, e := range o.Exclude {
		if top == e {
			return true
		}
	}
	return false
}

// TreeDigest is the canonical digest of a root filesystem tree: sha256 over
// the records of all entries sorted by path (bytewise), each record being
// the fields below as netstrings ("LEN:BYTES,"), then a newline:
//
//	path, type, mode (octal), uid, gid, size, content sha256 (hex, or
//	empty), link target, major, minor, xattrs (name=hex(value) joined by
//	";"), and, with Mtimes, mtime in nanoseconds.
//
// The result is "sha256:" and the hex digest.
func TreeDigest(entries []Entry, o DigestOptions) string {
	sorted := make([]*Entry, 0, len(entries))
	for i := range entries {
		if !o.excluded(entries[i].Path) {
			sorted = append(sorted, &entries[i])
		}
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	h := sha256.New()
	for _, e := range sorted {
		writeRecord(h, e, o)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func writeRecord(w io.Writer, e *Entry, o DigestOptions) {
	var b strings.Builder
	field := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
		b.WriteByte(',')
	}
	field(e.Path)
	field(string(e.Type))
	field(strconv.FormatUint(uint64(e.Mode&0o7777), 8))
	field(strconv.Itoa(e.UID))
	field(strconv.Itoa(e.GID))
	var sum string
	size := int64(0)
	if e.Type == 'f' {
		sum = hex.EncodeToString(e.SHA256[:])
		size = e.Size
	}
	field(strconv.FormatInt(size, 10))
	field(sum)
	field(e.Link)
	field(strconv.FormatUint(uint64(e.Major), 10))
	field(strconv.FormatUint(uint64(e.Minor), 10))
	var xs []string
	for _, x := range e.Xattrs {
		xs = append(xs, x.Name+"="+hex.EncodeToString([]byte(x.Value)))
	}
	field(strings.Join(xs, ";"))
	if o.Mtimes {
		field(strconv.FormatInt(e.Mtime, 10))
	}
	b.WriteByte('\n')
	io.WriteString(w, b.String())
}

// DiffEntries returns a description of the first difference between two
// entry sets (as a verification error detail), or "" if they are equal under
// o.
func DiffEntries(want, got []Entry, o DigestOptions) string {
	index := func(es []Entry) map[string]*Entry {
		m := make(map[string]*Entry, len(es))
		for i := range es {
			if !o.excluded(es[i].Path) {
				m[es[i].Path] = &es[i]
			}
		}
		return m
	}
	w, g := index(want), index(got)
	var paths []string
	for p := range w {
		paths = append(paths, p)
	}
	for p := range g {
		if _, ok := w[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		a, b := w[p], g[p]
		switch {
		case b == nil:
			return fmt.Sprintf("%s: missing", p)
		case a == nil:
			return fmt.Sprintf("%s: unexpected", p)
		}
		var ra, rb strings.Builder
		writeRecord(&ra, a, o)
		writeRecord(&rb, b, o)
		if ra.String() != rb.String() {
			return fmt.Sprintf("%s: want %q, got %q", p, strings.TrimSpace(ra.String()), strings.TrimSpace(rb.String()))
		}
	}
	return ""
}
