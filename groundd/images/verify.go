package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/opencontainers/go-digest"
)

// verifyReader passes a blob through and checks its digest and size at the
// end: a mismatch is returned by Read in place of io.EOF, as an
// *oci.BlobError naming the blob. size < 0 means unknown.
type verifyReader struct {
	r      io.Reader
	want   digest.Digest
	size   int64
	n      int64
	v      digest.Verifier
	what   string
	err    error
	closer io.Closer
}

func newVerifyReader(rc io.ReadCloser, d digest.Digest, size int64, what string) (*verifyReader, error) {
	if err := d.Validate(); err != nil {
		rc.Close()
		return nil, &oci.BlobError{Digest: d, What: what, Err: fmt.Errorf("%w: %v", oci.ErrInvalid, err)}
	}
	r := io.Reader(rc)
	if size >= 0 {
		r = io.LimitReader(rc, size+1)
	}
	return &verifyReader{r: r, want: d, size: size, v: d.Verifier(), what: what, closer: rc}, nil
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.v.Write(p[:n])
	if v.size >= 0 && v.n > v.size {
		v.err = &oci.BlobError{Digest: v.want, What: v.what, Err: fmt.Errorf("%w: more than %d bytes", oci.ErrSizeMismatch, v.size)}
		return n, v.err
	}
	if err == io.EOF {
		switch {
		case v.size >= 0 && v.n != v.size:
			v.err = &oci.BlobError{Digest: v.want, What: v.what, Err: fmt.Errorf("%w: %d bytes, want %d", oci.ErrSizeMismatch, v.n, v.size)}
		case !v.v.Verified():
			v.err = &oci.BlobError{Digest: v.want, What: v.what, Err: fmt.Errorf("%w: content does not hash to its digest", oci.ErrDigestMismatch)}
		default:
			v.err = io.EOF
		}
		return n, v.err
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

func (v *verifyReader) Close() error {
	err := v.closer.Close()
	if v.err != nil && v.err != io.EOF {
		return v.err
	}
	return err
}

// readVerified reads a whole blob of at most max bytes and checks it.
func readVerified(rc io.ReadCloser, d digest.Digest, size, max int64, what string) ([]byte, error) {
	if size > max {
		rc.Close()
		return nil, &oci.BlobError{Digest: d, What: what, Err: fmt.Errorf("%w: %d bytes, limit %d", oci.ErrTooLarge, size, max)}
	}
	vr, err := newVerifyReader(rc, d, size, what)
	if err != nil {
		return nil, err
	}
	defer vr.Close()
	b, err := io.ReadAll(io.LimitReader(vr, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, &oci.BlobError{Digest: d, What: what, Err: fmt.Errorf("%w: more than %d bytes", oci.ErrTooLarge, max)}
	}
	return b, nil
}

// checkBytes verifies b against d and, when size >= 0, size.
func checkBytes(b []byte, d digest.Digest, size int64, what string) error {
	if err := d.Validate(); err != nil {
		return &oci.BlobError{Digest: d, What: what, Err: fmt.Errorf("%w: %v", oci.ErrInvalid, err)}
	}
	if size >= 0 && int64(len(b)) != size {
		return &oci.BlobError{Digest: d, What: what, Err: fmt.Errorf("%w: %d bytes, want %d", oci.ErrSizeMismatch, len(b), size)}
	}
	if d.Algorithm().FromBytes(b) != d {
		return &oci.BlobError{Digest: d, What: what, Err: fmt.Errorf("%w: content does not hash to its digest", oci.ErrDigestMismatch)}
	}
	return nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// openLayoutBlob opens blob d of the layout at dir.
func openLayoutBlob(dir string, d digest.Digest, what string) (io.ReadCloser, error) {
	p, err := oci.BlobPath(dir, d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, &oci.BlobError{Digest: d, What: what, Err: oci.ErrBlobMissing}
	}
	if err != nil {
		return nil, &oci.BlobError{Digest: d, What: what, Err: err}
	}
	return f, nil
}

// writeFileAtomic writes b to path through a synced temporary file renamed
// over it, then syncs the directory.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	fail := func(err error) error {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return syncDir(dir)
}

// syncDir makes dir's entries durable. Windows cannot sync a directory
// handle; there a rename is as durable as NTFS makes it.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
