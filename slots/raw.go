package slots

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/bootorbit/bootorbit/internal/vfs"
)

// rawChunk is the write size of a raw slot: large enough for sequential
// device throughput, a multiple of every sector and page size.
var rawChunk = 1 << 20

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
// capacity bytes, then syncs it. It returns the number of bytes written and
// their sha256, hashed on the way in a second goroutine so that hashing
// overlaps the writes.
func WriteRaw(ctx context.Context, fsys vfs.FS, path string, src io.Reader, capacity int64) (int64, [32]byte, error) {
	var sum [32]byte
	f, err := fsys.OpenRW(path)
	if err != nil {
		return 0, sum, fmt.Errorf("slots: open raw slot: %w", err)
	}
	defer f.Close()

	// Three buffers rotate: one being read into, one being written, one
	// being hashed; free returns a buffer once both are done with it.
	h := sha256.New()
	toHash := make(chan []byte, 3)
	hashed := make(chan []byte, 3)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := range toHash {
			h.Write(b)
			hashed <- b[:cap(b)]
		}
	}()
	free := make(chan []byte, 3)
	for i := 0; i < 3; i++ {
		free <- make([]byte, rawChunk)
	}
	go func() {
		for b := range hashed {
			free <- b
		}
	}()
	stop := sync.OnceFunc(func() {
		close(toHash)
		wg.Wait()
		close(hashed)
	})
	defer stop()

	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return off, sum, err
		}
		buf := <-free
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			if off+int64(n) > capacity {
				return off, sum, fmt.Errorf("%w: image larger than the slot (%d bytes)", ErrTooLarge, capacity)
			}
			toHash <- buf[:n]
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				return off, sum, fmt.Errorf("slots: write raw slot at %d: %w", off, err)
			}
			off += int64(n)
		} else {
			free <- buf
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return off, sum, fmt.Errorf("slots: read image: %w", rerr)
		}
	}
	if err := f.Sync(); err != nil {
		return off, sum, fmt.Errorf("slots: sync raw slot: %w", err)
	}
	stop()
	copy(sum[:], h.Sum(nil))
	return off, sum, f.Close()
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
