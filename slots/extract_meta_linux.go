package slots

// Metadata of the entries: owner, mode, xattrs and times, by descriptor
// for regular files, beneath the parent without following for the rest.

import (
	"archive/tar"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setMeta gives the new entry base in pfd its owner, mode, xattrs and (but
// for directories, done last) times.
func setMeta(pfd int, base string, e *Entry) error {
	if err := unix.Fchownat(pfd, base, e.UID, e.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%w: chown %d:%d: %v", ErrNotPermitted, e.UID, e.GID, err)
		}
		return err
	}
	if e.Type != 'l' {
		if err := unix.Fchmodat(pfd, base, e.Mode, 0); err != nil {
			return err
		}
	}
	for _, xa := range e.Xattrs {
		if err := unix.Lsetxattr(procPath(pfd, base), xa.Name, []byte(xa.Value), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", xa.Name, err)
		}
	}
	if e.Type != 'd' {
		ts := unix.NsecToTimespec(e.Mtime)
		if err := unix.UtimesNanoAt(pfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	return nil
}

// setMetaFd gives the open regular file fd e's owner, mode, xattrs and
// times: by descriptor, with no path resolution.
// chown and chmod are false when the file already has e's owner and
// mode.
func setMetaFd(fd int, e *Entry, chown, chmod bool) error {
	if chown {
		if err := unix.Fchown(fd, e.UID, e.GID); err != nil {
			if errors.Is(err, unix.EPERM) {
				return fmt.Errorf("%w: chown %d:%d: %v", ErrNotPermitted, e.UID, e.GID, err)
			}
			return err
		}
	}
	if chown || chmod {
		if err := unix.Fchmod(fd, e.Mode); err != nil {
			return err
		}
	}
	for _, xa := range e.Xattrs {
		if err := unix.Fsetxattr(fd, xa.Name, []byte(xa.Value), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", xa.Name, err)
		}
	}
	ts := [2]unix.Timespec{unix.NsecToTimespec(e.Mtime), unix.NsecToTimespec(e.Mtime)}
	// utimensat(fd, NULL, ...) is futimens(3): the file itself, with
	// nanoseconds (unix.Futimes has only microseconds).
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); errno != 0 {
		return errno
	}
	return nil
}

// readUmask returns the process's umask from /proc/self/status (Linux
// 4.7+), or -1. umask(2) itself cannot be read without setting it, which
// would race with other goroutines creating files.
func readUmask() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil && m <= 0o777 {
				return int(m)
			}
		}
	}
	return -1
}

func xattrsOf(hdr *tar.Header) ([]Xattr, error) {
	var xs []Xattr
	size := 0
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		size += len(name) + len(v)
		if len(xs) >= maxXattrs || size > maxXattrSize || name == "" {
			return nil, fmt.Errorf("%w: xattrs (%d, %d bytes)", ErrTooLarge, len(xs)+1, size)
		}
		xs = append(xs, Xattr{Name: name, Value: v})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	return xs, nil
}
