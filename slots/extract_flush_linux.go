package slots

// Early writeback: syncfs(2) on a goroutine of its own while the
// extraction goes on.

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// flusher starts the writeback of an extraction while it goes on: after
// every `every` bytes of file content it runs syncfs(2) on a goroutine of
// its own, so that the device (and, with a second CPU, the kernel's
// writeback work) runs in parallel with the creation of the next files and
// the final syncfs has little left to wait for. It uses a descriptor of its
// own: syncfs reports a writeback error once per open file, so the error
// seen here is kept and returned by stop, and the final syncfs on the
// extraction's descriptor still sees it too.
type flusher struct {
	fd    int
	every int64
	since atomic.Int64
	kick  chan struct{} // never closed: wrote may race with stop
	quit  chan struct{}
	done  chan struct{}
	err   error // first syncfs error; read after done
}

// flushSyncfs is the flusher's syncfs; tests replace it to count the
// flushes and inject writeback errors. finalSyncfs is the one at the end
// of a SyncFS extraction; tests replace it to check that everything is
// written by then, and that it runs whether or not the flusher did.
var (
	flushSyncfs = unix.Syncfs
	finalSyncfs = unix.Syncfs
)

func startFlusher(dirfd int, every int64) (*flusher, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("slots: open slot for writeback: %w", err)
	}
	f := &flusher{fd: fd, every: every, kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for {
			select {
			case <-f.quit:
				// A flush asked for and not yet run still runs, so that
				// every extraction that crossed the mark flushed early
				// at least once (deterministic for tests; cheap, as the
				// final syncfs then has less to do).
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
	if err := flushSyncfs(f.fd); err != nil && f.err == nil {
		f.err = err
	}
}

// wrote counts n bytes of content written and wakes the flusher when the
// next `every` bytes are complete. Safe from several goroutines, and a
// no-op on a nil flusher.
func (f *flusher) wrote(n int64) {
	if f == nil || f.since.Add(n) < f.every {
		return
	}
	f.since.Store(0)
	select {
	case f.kick <- struct{}{}:
	default: // a flush is pending already
	}
}

// stop waits for a running flush, ends the goroutine and returns the first
// error a flush saw. Idempotent; a no-op on a nil flusher.
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
