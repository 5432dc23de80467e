//go:build !linux

package watchdog

// dropCache does nothing where posix_fadvise is not used: the read-back
// then checks the page cache.
func dropCache(File, int64, int64) {}
