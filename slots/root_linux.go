package slots

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// root is a directory that entries are created in by file descriptor, so
// that no path ever leaves it: every parent is resolved beneath the root
// with symlinks refused (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or, on
// kernels without openat2, a walk that opens one component at a time with
// O_NOFOLLOW). Names given to root are already cleaned by cleanName: no
// absolute paths, no "." or ".." components.
type root struct {
	fd       int
	path     string
	noOA2    bool // openat2 unavailable
	cache    string
	cacheRef *dirRef // nil when nothing is cached
	// onImplicitDir is called for every directory root creates because an
	// entry needed a parent that the archive did not list.
	onImplicitDir func(rel string)
}

// forceWalk makes tests exercise the fallback that kernels without openat2
// take.
var forceWalk = false

func openRoot(path string) (*root, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("slots: open slot directory %s: %w", path, err)
	}
	return &root{fd: fd, path: path, noOA2: forceWalk}, nil
}

func (r *root) close() {
	r.invalidate()
	unix.Close(r.fd)
}

// invalidate drops the cached parent: called whenever anything is removed,
// since a removal may change what a path names.
func (r *root) invalidate() {
	if r.cacheRef != nil {
		r.cacheRef.release()
	}
	r.cache, r.cacheRef = "", nil
}

// dirRef is a directory descriptor shared by the parent cache and the file
// workers still writing into that directory: the last release closes it.
type dirRef struct {
	fd   int
	refs atomic.Int32
}

func (d *dirRef) release() {
	if d.refs.Add(-1) == 0 {
		unix.Close(d.fd)
	}
}

// retain keeps pfd (the root or the cached parent, as parent returned it)
// open until the returned function is called, whatever the cache does
// meanwhile.
func (r *root) retain(pfd int) func() {
	if r.cacheRef != nil && pfd == r.cacheRef.fd {
		ref := r.cacheRef
		ref.refs.Add(1)
		return ref.release
	}
	return func() {} // the root: closed only after the workers stopped
}

func splitRel(rel string) (dir, base string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// parent returns a descriptor of rel's parent directory (owned by r: do not
// close it) and rel's last component. With create, missing parents are made
// (mode 0755).
func (r *root) parent(rel string, create bool) (int, string, error) {
	dir, base := splitRel(rel)
	if dir == "" {
		return r.fd, base, nil
	}
	if dir == r.cache {
		return r.cacheRef.fd, base, nil
	}
	fd, err := r.openDir(dir, create)
	if err != nil {
		return -1, "", err
	}
	r.invalidate()
	r.cache, r.cacheRef = dir, &dirRef{fd: fd}
	r.cacheRef.refs.Store(1)
	return fd, base, nil
}

func (r *root) openDir(dir string, create bool) (int, error) {
	if !r.noOA2 {
		fd, err := unix.Openat2(r.fd, dir, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.E2BIG):
			r.noOA2 = true // seccomp or an old kernel: walk instead
		case errors.Is(err, unix.ENOENT) && create:
			// walk and create below
		case errors.Is(err, unix.ENOENT):
			return -1, fmt.Errorf("%s: %w", dir, os.ErrNotExist)
		default:
			// ELOOP, ENOTDIR, EXDEV: let the walk name the culprit.
		}
	}
	return r.walk(dir, create)
}

// walk opens dir one component at a time, never following a symlink.
func (r *root) walk(dir string, create bool) (int, error) {
	cur := r.fd
	closeCur := func() {
		if cur != r.fd {
			unix.Close(cur)
		}
	}
	parts := strings.Split(dir, "/")
	for i, p := range parts {
		next, err := unix.Openat(cur, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(cur, p, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				if err == nil {
					err = unix.Fchmodat(cur, p, 0o755, 0) // whatever the umask
				}
				if err == nil && r.onImplicitDir != nil {
					r.onImplicitDir(strings.Join(parts[:i+1], "/"))
				}
				next, err = unix.Openat(cur, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		if err != nil {
			sofar := strings.Join(parts[:i+1], "/")
			var st unix.Stat_t
			if unix.Fstatat(cur, p, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
				if st.Mode&unix.S_IFMT == unix.S_IFLNK {
					closeCur()
					return -1, fmt.Errorf("%w: parent %s is a symlink", ErrEscape, sofar)
				}
				if st.Mode&unix.S_IFMT != unix.S_IFDIR {
					closeCur()
					return -1, fmt.Errorf("%w: parent %s is not a directory", ErrBadEntry, sofar)
				}
			}
			closeCur()
			if errors.Is(err, unix.ENOENT) {
				return -1, fmt.Errorf("%s: %w", sofar, os.ErrNotExist)
			}
			return -1, fmt.Errorf("slots: open %s: %w", sofar, err)
		}
		closeCur()
		cur = next
	}
	return cur, nil
}

// lstat stats rel without following a final symlink; ok is false when it
// does not exist.
func (r *root) lstat(pfd int, base string) (unix.Stat_t, bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return st, false, nil
	}
	return st, err == nil, err
}

// removeAt removes name in directory pfd, recursively, never following a
// symlink.
func (r *root) removeAt(pfd int, name string) error {
	err := removeAll(pfd, name)
	r.invalidate() // pfd may be the cached descriptor: invalid from here
	return err
}

func removeAll(pfd int, name string) error {
	err := unix.Unlinkat(pfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	if err := removeChildren(pfd, name, nil); err != nil {
		return err
	}
	if err := unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// removeChildren empties directory name in pfd ("." for pfd itself), except
// the names for which keep returns true.
func removeChildren(pfd int, name string, keep func(string) bool) error {
	fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(fd), name)
	defer d.Close()
	for {
		names, err := d.Readdirnames(1024)
		for _, n := range names {
			if keep != nil && keep(n) {
				continue
			}
			if err := removeAll(fd, n); err != nil {
				return err
			}
		}
		if err != nil || len(names) == 0 {
			break
		}
	}
	return nil
}

// procPath names base in directory pfd for the syscalls that have no *at
// form (the xattr calls); /proc/self/fd/N resolves to the directory itself,
// and the final component is not followed by the l* variants.
func procPath(pfd int, base string) string {
	return "/proc/self/fd/" + strconv.Itoa(pfd) + "/" + base
}

// openSubdir opens the directory name in the directory dirfd for reading,
// never following a symlink: name is one component that an image wrote
// (a slot's etc or var), so it must be a real directory of the slot, not a
// link to the host's /etc or to another slot. With create a missing
// directory is made (mode 0755). Errors wrap ErrEscape (a symlink),
// ErrBadEntry (anything else that is not a directory) or os.ErrNotExist,
// and name what was refused as label.
func openSubdir(dirfd int, name, label string, create bool) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		if errors.Is(err, unix.ENOENT) && create {
			if err := unix.Mkdirat(dirfd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				return -1, fmt.Errorf("slots: create %s: %w", label, err)
			}
			create = false
			continue
		}
		var st unix.Stat_t
		if serr := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil {
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFLNK:
				return -1, fmt.Errorf("%w: %s is a symlink, not a directory", ErrEscape, label)
			case unix.S_IFDIR:
			default:
				return -1, fmt.Errorf("%w: %s is not a directory (mode %o)", ErrBadEntry, label, st.Mode&unix.S_IFMT)
			}
		}
		if errors.Is(err, unix.ENOENT) {
			return -1, fmt.Errorf("%s: %w", label, os.ErrNotExist)
		}
		return -1, fmt.Errorf("slots: open %s: %w", label, err)
	}
}

// openDirPath opens the directory at path, the last component without
// following a symlink (the parents are the caller's: a configured slot or
// state path). With create, a missing last component is made.
func openDirPath(path string, create bool) (int, error) {
	parent, name := filepath.Split(filepath.Clean(path))
	if parent == "" {
		parent = "."
	}
	if name == "" { // "/"
		return unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	pfd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("slots: open %s: %w", parent, err)
	}
	defer unix.Close(pfd)
	return openSubdir(pfd, name, path, create)
}

// rootAt makes a root of the directory descriptor fd, which it takes over
// (closed by r.close).
func rootAt(fd int, path string) *root {
	return &root{fd: fd, path: path, noOA2: forceWalk}
}

// openFile opens the regular file rel beneath the root for reading,
// without following a symlink anywhere on the way; anything else than a
// regular file is refused (a FIFO would block the reader).
func (r *root) openFile(rel string) (*os.File, error) {
	pfd, base, err := r.parent(rel, false)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("slots: open %s: %w", rel, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %s changed: no longer a regular file", ErrBadEntry, rel)
	}
	return os.NewFile(uintptr(fd), rel), nil
}
