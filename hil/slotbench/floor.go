package slotbench

import (
	"unsafe"

	"github.com/bootorbit/bootorbit/internal/vfs"
)

// alignedBuf returns n bytes whose start is aligned for direct I/O.
func alignedBuf(n int) []byte {
	b := make([]byte, n+vfs.DirectAlign)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % vfs.DirectAlign); r != 0 {
		skip = vfs.DirectAlign - r
	}
	return b[skip : skip+n : skip+n]
}
