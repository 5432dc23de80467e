package slots

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// ReadTreeOptions tunes ReadTree.
type ReadTreeOptions struct {
	// DropCache asks the kernel to drop each file's cached pages before it
	// is read, so that the hash is computed from the medium rather than
	// from memory (bit-rot and just-written checks). It only works on data
	// already synced.
	DropCache bool
	// Skip lists top-level names not to read (their entries are left out).
	Skip []string
}

// ReadTree reads the tree under dir as Entries, never following symlinks.
// The directory itself is not an entry.
func ReadTree(ctx context.Context, dir string, o ReadTreeOptions) ([]Entry, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("slots: open %s: %w", dir, err)
	}
	return readTree(ctx, fd, o)
}

// readTreeAt is ReadTree of the directory dirfd (which stays open): for a
// directory opened beneath a slot without following symlinks.
func readTreeAt(ctx context.Context, dirfd int, o ReadTreeOptions) ([]Entry, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("slots: reopen directory: %w", err)
	}
	return readTree(ctx, fd, o)
}

// readTree reads the tree below the directory fd, which it closes.
func readTree(ctx context.Context, fd int, o ReadTreeOptions) ([]Entry, error) {
	w := &treeReader{ctx: ctx, o: o, buf: make([]byte, 1<<20)}
	if err := w.dir(fd, ""); err != nil {
		return nil, err
	}
	sort.Slice(w.out, func(i, j int) bool { return w.out[i].Path < w.out[j].Path })
	return w.out, nil
}

type treeReader struct {
	ctx context.Context
	o   ReadTreeOptions
	buf []byte
	out []Entry
}

// dir reads the entries of directory fd (which it closes), named rel.
func (w *treeReader) dir(fd int, rel string) error {
	d := os.NewFile(uintptr(fd), rel)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("slots: read dir %q: %w", rel, err)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		p := joinRel(rel, n)
		if rel == "" && skipped(n, w.o.Skip) {
			continue
		}
		if err := w.entry(fd, n, p); err != nil {
			return err
		}
	}
	return nil
}

func skipped(n string, skip []string) bool {
	for _, s := range skip {
		if n == s {
			return true
		}
	}
	return false
}

func (w *treeReader) entry(pfd int, name, p string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("slots: stat %q: %w", p, err)
	}
	e := Entry{Path: p, Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid), Mtime: st.Mtim.Nano()}
	// Directories and files are opened anyway: their xattrs are read by
	// descriptor; the others through /proc/self/fd, without following.
	xattrs := func(fd int) error {
		var err error
		if fd >= 0 {
			e.Xattrs, err = readXattrs(xattrFd(fd))
		} else {
			e.Xattrs, err = readXattrs(xattrPath(procPath(pfd, name)))
		}
		if err != nil {
			return fmt.Errorf("slots: xattrs of %q: %w", p, err)
		}
		return nil
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.Type = 'd'
		fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("slots: open dir %q: %w", p, err)
		}
		if err := xattrs(fd); err != nil {
			unix.Close(fd)
			return err
		}
		w.out = append(w.out, e)
		return w.dir(fd, p)
	case unix.S_IFREG:
		e.Type = 'f'
		fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("slots: open %q: %w", p, err)
		}
		if err := xattrs(fd); err != nil {
			unix.Close(fd)
			return err
		}
		if w.o.DropCache {
			unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
		}
		f := os.NewFile(uintptr(fd), p)
		h := sha256.New()
		n, err := io.CopyBuffer(h, f, w.buf)
		f.Close()
		if err != nil {
			return fmt.Errorf("slots: read %q: %w", p, err)
		}
		e.Size = n
		h.Sum(e.SHA256[:0])
	case unix.S_IFLNK:
		e.Type = 'l'
		buf := make([]byte, maxPathLen+1)
		n, err := unix.Readlinkat(pfd, name, buf)
		if err != nil {
			return fmt.Errorf("slots: readlink %q: %w", p, err)
		}
		e.Link = string(buf[:n])
	case unix.S_IFCHR, unix.S_IFBLK:
		e.Type = 'c'
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			e.Type = 'b'
		}
		e.Major, e.Minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	case unix.S_IFIFO:
		e.Type = 'p'
	default:
		e.Type = '?' // a socket: never part of an image, so it mismatches
	}
	if e.Type != 'f' {
		if err := xattrs(-1); err != nil {
			return err
		}
	}
	w.out = append(w.out, e)
	return nil
}

// xattrSource lists and gets extended attributes of one file.
type xattrSource interface {
	list(dest []byte) (int, error)
	get(name string, dest []byte) (int, error)
}

type xattrFd int

func (f xattrFd) list(d []byte) (int, error)          { return unix.Flistxattr(int(f), d) }
func (f xattrFd) get(n string, d []byte) (int, error) { return unix.Fgetxattr(int(f), n, d) }

type xattrPath string

func (p xattrPath) list(d []byte) (int, error)          { return unix.Llistxattr(string(p), d) }
func (p xattrPath) get(n string, d []byte) (int, error) { return unix.Lgetxattr(string(p), n, d) }

func readXattrs(src xattrSource) ([]Xattr, error) {
	sz, err := src.list(nil)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) || sz == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = src.list(buf)
	if err != nil {
		return nil, err
	}
	var xs []Xattr
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		vsz, err := src.get(name, nil)
		if err != nil {
			return nil, err
		}
		v := make([]byte, vsz)
		vsz, err = src.get(name, v)
		if err != nil {
			return nil, err
		}
		xs = append(xs, Xattr{Name: name, Value: string(v[:vsz])})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	return xs, nil
}
