//go:build linux

package watchdog

import "golang.org/x/sys/unix"

// dropCache asks the kernel to drop the cached pages of f's range
// [off, off+n), clean after Sync, so that the read-back that follows comes
// from the device rather than from the page cache it was just written to.
// Storage that is not an OS file (the tests' memory disks) is left alone,
// and an error only means the read-back checks the cache, as it would
// without this.
func dropCache(f File, off, n int64) {
	if h, ok := f.(interface{ Fd() uintptr }); ok {
		_ = unix.Fadvise(int(h.Fd()), off, n, unix.FADV_DONTNEED)
	}
}
