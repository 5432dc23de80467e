package slots

import "golang.org/x/sys/unix"

// dropCache asks the kernel to forget the cached pages of a file whose data
// is synced, so that the next read comes from the medium.
func dropCache(fd uintptr) { unix.Fadvise(int(fd), 0, 0, unix.FADV_DONTNEED) }
