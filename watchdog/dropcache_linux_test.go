//go:build linux

package watchdog

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident counts the pages of path's first n bytes that are in the page
// cache (mincore on a mapping of the file).
func resident(t *testing.T, path string, n int) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (n+page-1)/page)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(n), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Skipf("mincore: %v", e)
	}
	c := 0
	for _, v := range vec {
		c += int(v & 1)
	}
	return c
}

// The read-back after a Save must not just re-read the page cache the
// write filled: writeVerified drops the synced range first, so the read
// goes to the storage.
func TestWriteVerifiedReadsPastTheCache(t *testing.T) {
	p := filepath.Join(t.TempDir(), "env")
	const n = 64 << 10
	zeroFile(t, p, n, 0)
	f, err := OSFS{}.Open(p, true)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = byte(i)
	}
	if err := writeFull(f, buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if r := resident(t, p, n); r == 0 {
		t.Skip("written pages are not cached here; nothing to drop")
	}
	dropCache(f, 0, n)
	f.Close()
	if r := resident(t, p, n); r != 0 {
		t.Fatalf("%d pages still cached after dropCache", r)
	}
}
