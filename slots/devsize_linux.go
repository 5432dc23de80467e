package slots

import (
	"io"
	"os"
)

// deviceSize returns the size of a block device (lseek to the end works
// for block devices, where stat reports 0), or 0.
func deviceSize(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0
	}
	return n
}
