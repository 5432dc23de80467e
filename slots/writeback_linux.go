package slots

import "io"

// DefaultFlushEvery is ExtractOptions.FlushEvery when it is 0: the early
// writeback step of a SyncFS extraction.
const DefaultFlushEvery = 8 << 20

// Writeback is the extractor's early writeback (syncfs(2) on a goroutine
// of its own every `every` bytes of content written), exported so that a
// bench's reference loop (hil/slotbench's files floor) pays exactly what
// the extractor pays, with no copy of it to drift.
type Writeback struct{ f *flusher }

// StartWriteback starts the early writeback of the filesystem of the
// directory dirfd, on a descriptor of its own.
func StartWriteback(dirfd int, every int64) (*Writeback, error) {
	f, err := startFlusher(dirfd, every)
	if err != nil {
		return nil, err
	}
	return &Writeback{f: f}, nil
}

// Wrote counts n bytes of content written, waking the writeback every
// `every` bytes. A no-op on a nil Writeback.
func (w *Writeback) Wrote(n int64) {
	if w != nil {
		w.f.wrote(n)
	}
}

// Stop waits for a running flush, ends the goroutine and returns the first
// error a flush saw. Idempotent; a no-op on a nil Writeback.
func (w *Writeback) Stop() error {
	if w == nil {
		return nil
	}
	return w.f.stop()
}

// WriteContent writes the next size bytes of r to fd through buf, as the
// extractor writes a regular file's content when it does not hash it:
// resuming after short writes and EINTR, ErrTruncated if r ends early.
func WriteContent(fd int, r io.Reader, size int64, buf []byte) error {
	return copyContent(r, size, buf, func(b []byte) error { return writeAll(fd, b) })
}
