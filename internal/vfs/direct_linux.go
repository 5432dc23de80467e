package vfs

import (
	"os"
	"syscall"
)

// DirectOpener is implemented by filesystems that can open a file for
// direct I/O (O_DIRECT: no page cache; buffers, offsets and lengths aligned
// to DirectAlign). Writers find it by type assertion and fall back to
// buffered I/O when it is absent or fails.
type DirectOpener interface {
	OpenDirect(name string) (File, error)
}

// DirectAlign is the alignment direct I/O needs: the largest logical block
// size in use (4096 covers 512e and 4Kn devices and page-aligned buffers).
const DirectAlign = 4096

// OpenDirect opens an existing file or device for reading and writing with
// O_DIRECT.
func (osFS) OpenDirect(name string) (File, error) {
	return os.OpenFile(name, os.O_RDWR|syscall.O_DIRECT, 0)
}
