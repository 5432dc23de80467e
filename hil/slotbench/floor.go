package slotbench

import (
	"fmt"
	"io"
	"sync/atomic"
	"unsafe"

	"github.com/bootorbit/bootorbit/internal/vfs"
	"golang.org/x/sys/unix"
)

// defaultFlushEvery is the extractor's early writeback step when
// slots.ExtractOptions.FlushEvery is 0; the files floor uses the same.
const defaultFlushEvery = 8 << 20

// flusher is the files floor's early writeback, done as the extractor
// does it: a goroutine runs syncfs(2) on the slot's filesystem every
// `every` bytes of content written, while the writes go on. It is a copy
// of the extractor's own, so that the floor costs what the extractor's
// writeback costs.
type flusher struct {
	fd    int
	every int64
	since atomic.Int64
	kick  chan struct{}
	quit  chan struct{}
	done  chan struct{}
	err   error // first syncfs error; read after done
}

func startFlusher(dirfd int, every int64) (*flusher, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("slotbench: open floor for writeback: %w", err)
	}
	f := &flusher{fd: fd, every: every, kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for {
			select {
			case <-f.quit:
				select {
				case <-f.kick:
					f.sync()
				default:
				}
				return
			case <-f.kick:
				f.sync()
			}
		}
	}()
	return f, nil
}

func (f *flusher) sync() {
	if err := unix.Syncfs(f.fd); err != nil && f.err == nil {
		f.err = err
	}
}

// wrote counts n bytes written and wakes the flusher every `every` bytes;
// a no-op on a nil flusher.
func (f *flusher) wrote(n int64) {
	if f == nil || f.since.Add(n) < f.every {
		return
	}
	f.since.Store(0)
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// stop ends the goroutine and returns the first syncfs error; idempotent,
// a no-op on a nil flusher.
func (f *flusher) stop() error {
	if f == nil {
		return nil
	}
	if f.fd >= 0 {
		close(f.quit)
		<-f.done
		unix.Close(f.fd)
		f.fd = -1
	}
	return f.err
}

// copyContent copies size bytes of r to sink through buf.
func copyContent(r io.Reader, size int64, buf []byte, sink func([]byte) error) error {
	for n := int64(0); n < size; {
		k, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-n)])
		if k > 0 {
			if err := sink(buf[:k]); err != nil {
				return err
			}
			n += int64(k)
		}
		if err != nil {
			return fmt.Errorf("slotbench: floor: %d of %d bytes: %w", n, size, err)
		}
	}
	return nil
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

// alignedBuf returns n bytes whose start is aligned for direct I/O.
func alignedBuf(n int) []byte {
	b := make([]byte, n+vfs.DirectAlign)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % vfs.DirectAlign); r != 0 {
		skip = vfs.DirectAlign - r
	}
	return b[skip : skip+n : skip+n]
}
