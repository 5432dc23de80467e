package oci

import (
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
)

// verifyReader passes through the bytes of r, counting and hashing them, and
// at end of stream returns a *BlobError in place of io.EOF unless exactly
// size bytes (when size >= 0) with digest want were read. It also fails as
// soon as more than size bytes arrive, so a blob longer than its descriptor
// says is never read beyond one extra byte. Errors are sticky.
type verifyReader struct {
	r    io.Reader
	want digest.Digest
	what string
	size int64 // -1: unknown
	n    int64
	h    hash.Hash
	err  error
	done bool // reached EOF and verified
	// blob, when set, is the digest errors name instead of want: the
	// stored blob whose uncompressed content want (a diff_id) describes.
	blob digest.Digest
}

func newVerifyReader(r io.Reader, want digest.Digest, size int64, what string) (*verifyReader, error) {
	if err := want.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s digest %q: %v", ErrInvalid, what, want, err)
	}
	return &verifyReader{r: r, want: want, size: size, what: what, h: want.Algorithm().Hash()}, nil
}

func (v *verifyReader) fail(err error) error {
	if v.blob != "" {
		v.err = &BlobError{Digest: v.blob, What: v.what, Err: fmt.Errorf("diff_id %s: %w", v.want, err)}
		return v.err
	}
	v.err = &BlobError{Digest: v.want, What: v.what, Err: err}
	return v.err
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if v.size >= 0 && int64(len(p)) > v.size-v.n+1 {
		p = p[:v.size-v.n+1] // read at most one byte past the end
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if v.size >= 0 && v.n > v.size {
		return 0, v.fail(fmt.Errorf("%w: longer than the %d bytes its descriptor says", ErrSizeMismatch, v.size))
	}
	if err == io.EOF {
		if v.size >= 0 && v.n != v.size {
			return n, v.fail(fmt.Errorf("%w: %d bytes, descriptor says %d", ErrSizeMismatch, v.n, v.size))
		}
		got := digest.NewDigest(v.want.Algorithm(), v.h)
		if got != v.want {
			return n, v.fail(fmt.Errorf("%w: content hashes to %s", ErrDigestMismatch, got))
		}
		v.done = true
		v.err = io.EOF
		return n, io.EOF
	}
	if err != nil {
		v.err = err
	}
	return n, err
}
