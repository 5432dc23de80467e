package slots

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/bootorbit/bootorbit/internal/vfs"
)

// rawChunk is the write size of a raw slot: large enough for sequential
// device throughput, a multiple of every sector and page size.
var rawChunk = 1 << 20

// rawWriters is how many chunk writes of a raw slot are in flight at once.
const rawWriters = 2

// ErrRawLayer says a layer meant for a raw slot is not a tar holding exactly
// one regular file (the filesystem image).
var ErrRawLayer = errors.New("slots: raw slot layer must hold exactly one regular file")

// RawImage returns the filesystem image inside a single-file layer tar and
// its size. After the image has been read, the returned check function
// verifies that the archive ends there.
func RawImage(layer io.Reader) (io.Reader, int64, func() error, error) {
	tr := tar.NewReader(layer)
	hdr, err := tr.Next()
	if err != nil {
		if err == io.EOF {
			return nil, 0, nil, fmt.Errorf("%w: empty archive", ErrRawLayer)
		}
		return nil, 0, nil, tarError(err)
	}
	if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA {
		return nil, 0, nil, fmt.Errorf("%w: first entry %q is of type %q", ErrRawLayer, truncName(hdr.Name), hdr.Typeflag)
	}
	if hdr.Size < 0 {
		return nil, 0, nil, fmt.Errorf("%w: size %d", ErrBadArchive, hdr.Size)
	}
	check := func() error {
		if _, err := tr.Next(); err != io.EOF {
			if err == nil {
				return fmt.Errorf("%w: more than one entry", ErrRawLayer)
			}
			return tarError(err)
		}
		return nil
	}
	return tr, hdr.Size, check, nil
}

// WriteRaw streams src into the raw slot at path (a block device or a
// preallocated file, opened through fsys) from offset 0, refusing more than
// capacity bytes, then syncs it. It returns the number of bytes written and,
// with hash, their sha256 (zero without: a caller that knows the expected
// digest leaves hashing to the read-back, off the write path). Reading,
// hashing and writing run as a pipeline over a few aligned buffers, so
// that the read (a copy) overlaps the write; when fsys supports it the writes use O_DIRECT
// (no page cache copy, and no flood of dirty pages for fsync to wait on),
// padding the last block with zeros, which is why capacity must be a
// multiple of vfs.DirectAlign for direct I/O to be used.
func WriteRaw(ctx context.Context, fsys vfs.FS, path string, src io.Reader, capacity int64, hash bool) (int64, [32]byte, error) {
	var sum [32]byte
	var f vfs.File
	var err error
	direct := false
	if d, ok := fsys.(vfs.DirectOpener); ok && capacity%vfs.DirectAlign == 0 {
		if f, err = d.OpenDirect(path); err == nil {
			direct = true
		}
	}
	if !direct {
		if f, err = fsys.OpenRW(path); err != nil {
			return 0, sum, fmt.Errorf("slots: open raw slot: %w", err)
		}
	}
	defer f.Close()

	type chunk struct {
		buf []byte // aligned, cap rawChunk
		n   int
		off int64
	}
	const nbuf = 4
	free := make(chan []byte, nbuf)
	for i := 0; i < nbuf; i++ {
		free <- alignedBuf(rawChunk)
	}
	toHash, toWrite := make(chan chunk, nbuf), make(chan chunk, nbuf)
	h := sha256.New()
	if hash {
		go func() {
			for c := range toHash {
				h.Write(c.buf[:c.n])
				toWrite <- c
			}
			close(toWrite)
		}()
	} else {
		toWrite = toHash
	}
	// rawWriters writes are in flight at once, each at its own offset
	// (pwrite): the device's queue never runs dry while the host turns one
	// write around, which with O_DIRECT it otherwise would after every
	// chunk.
	writeErr := make(chan error, 1)
	var failed atomic.Bool
	var firstMu sync.Mutex
	var first error
	var writers sync.WaitGroup
	for range rawWriters {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for c := range toWrite {
				if !failed.Load() {
					b := c.buf[:c.n]
					if direct && c.n%vfs.DirectAlign != 0 {
						// The tail: pad to a whole block (inside capacity).
						padded := (c.n + vfs.DirectAlign - 1) &^ (vfs.DirectAlign - 1)
						clear(c.buf[c.n:padded])
						b = c.buf[:padded]
					}
					if _, err := f.WriteAt(b, c.off); err != nil {
						firstMu.Lock()
						if first == nil {
							first = fmt.Errorf("slots: write raw slot at %d: %w", c.off, err)
						}
						firstMu.Unlock()
						failed.Store(true)
					}
				}
				free <- c.buf
			}
		}()
	}
	go func() {
		writers.Wait()
		writeErr <- first
	}()
	finish := func() error {
		close(toHash)
		return <-writeErr
	}

	var off int64
	for {
		if err := ctx.Err(); err != nil {
			finish()
			return off, sum, err
		}
		if failed.Load() {
			return off, sum, finish()
		}
		buf := <-free
		n, rerr := io.ReadFull(src, buf[:rawChunk])
		if n > 0 {
			if off+int64(n) > capacity {
				finish()
				return off, sum, fmt.Errorf("%w: image larger than the slot (%d bytes)", ErrTooLarge, capacity)
			}
			toHash <- chunk{buf: buf, n: n, off: off}
			off += int64(n)
		} else {
			free <- buf
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			finish()
			return off, sum, fmt.Errorf("slots: read image: %w", rerr)
		}
	}
	if err := finish(); err != nil {
		return off, sum, err
	}
	if err := f.Sync(); err != nil {
		return off, sum, fmt.Errorf("slots: sync raw slot: %w", err)
	}
	if hash {
		copy(sum[:], h.Sum(nil))
	}
	return off, sum, f.Close()
}

// alignedBuf returns a buffer of n bytes whose start is aligned for direct
// I/O.
func alignedBuf(n int) []byte {
	b := make([]byte, n+vfs.DirectAlign)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % vfs.DirectAlign); r != 0 {
		skip = vfs.DirectAlign - r
	}
	return b[skip : skip+n : skip+n]
}

// fadviser is implemented by *os.File; the raw read-back uses it to drop
// the cached pages so that the hash reflects the medium.
type fadviser interface{ Fd() uintptr }

// HashRaw returns the sha256 of the first n bytes of the raw slot at path.
func HashRaw(ctx context.Context, fsys vfs.FS, path string, n int64) ([32]byte, error) {
	var sum [32]byte
	f, err := fsys.Open(path)
	if err != nil {
		return sum, fmt.Errorf("slots: open raw slot: %w", err)
	}
	defer f.Close()
	if fa, ok := f.(fadviser); ok {
		dropCache(fa.Fd())
	}
	h := sha256.New()
	buf := make([]byte, rawChunk)
	var off int64
	for off < n {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		b := buf[:min(int64(len(buf)), n-off)]
		k, err := f.ReadAt(b, off)
		h.Write(b[:k])
		off += int64(k)
		if err != nil && !(err == io.EOF && off == n) {
			if err == io.EOF {
				return sum, fmt.Errorf("%w: raw slot shorter (%d bytes) than its image (%d)", ErrVerify, off, n)
			}
			return sum, fmt.Errorf("slots: read raw slot: %w", err)
		}
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
