package update

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
)

// FileMagic opens every update file.
const FileMagic = "BOUPDATE\n"

// An update file (`groundd bundle --out F`, `flightd install F`) is
//
//	"BOUPDATE\n"   9 bytes
//	plan length    4 bytes, big endian, 1..MaxPlanSize
//	plan           the encoded Plan
//	bundle         Plan.BundleSize bytes of delta bundle, then end of file

// WriteFile writes the update file of p, whose bundle bytes are read from
// bundle (exactly p.BundleSize of them, else ErrTruncated). It does not
// check the bundle digest: the reader does.
func WriteFile(w io.Writer, p *Plan, bundle io.Reader) error {
	b, err := EncodePlan(p)
	if err != nil {
		return err
	}
	hdr := make([]byte, 0, len(FileMagic)+4)
	hdr = append(hdr, FileMagic...)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(b)))
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("update: write file: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("update: write file: %w", err)
	}
	n, err := io.Copy(w, io.LimitReader(bundle, int64(p.BundleSize)))
	if err != nil {
		return fmt.Errorf("update: write file: %w", err)
	}
	if uint64(n) != p.BundleSize {
		return fmt.Errorf("%w: bundle has %d bytes, plan %d says %d", ErrTruncated, n, p.ID, p.BundleSize)
	}
	return nil
}

// ReadFile reads the header and plan of an update file from r. It decodes
// and validates the plan but does not verify it: call VerifyPlan and
// VerifyRelease before reading the bundle. The bundle reader yields exactly
// Plan.BundleSize bytes; at their end it checks their sha256 against
// Plan.BundleDigest (ErrBundleDigest) and that the file ends there
// (ErrMalformed), and a file cut short gives ErrTruncated. A consumer must
// therefore read it to io.EOF before it trusts what it read.
func ReadFile(r io.Reader) (*Plan, io.Reader, error) {
	var hdr [len(FileMagic) + 4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, nil, fileErr(err, "header")
	}
	if string(hdr[:len(FileMagic)]) != FileMagic {
		return nil, nil, fmt.Errorf("%w: not an update file (bad magic)", ErrMalformed)
	}
	n := binary.BigEndian.Uint32(hdr[len(FileMagic):])
	if n == 0 || n > MaxPlanSize {
		return nil, nil, fmt.Errorf("%w: plan length %d, want 1..%d", ErrTooLarge, n, MaxPlanSize)
	}
	// Allocate as the plan's bytes arrive, not as the header claims: a
	// few bytes of file must not cost MaxPlanSize of memory.
	b, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, nil, fileErr(err, "plan")
	}
	if len(b) != int(n) {
		return nil, nil, fileErr(io.ErrUnexpectedEOF, "plan")
	}
	p, err := DecodePlan(b)
	if err != nil {
		return nil, nil, err
	}
	return p, &bundleReader{r: r, left: p.BundleSize, want: p.BundleDigest, h: sha256.New(), plan: p.ID}, nil
}

func fileErr(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: update file ends in its %s", ErrTruncated, what)
	}
	return fmt.Errorf("update: read file %s: %w", what, err)
}

// bundleReader is a verifying reader: size and digest are checked at the end
// of the stream, and the error is sticky.
type bundleReader struct {
	r    io.Reader
	left uint64
	want digest.Digest
	h    hash.Hash
	plan uint64
	err  error
}

func (b *bundleReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		b.err = b.finish()
		return 0, b.err
	}
	if uint64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.h.Write(p[:n])
	b.left -= uint64(n)
	switch {
	case errors.Is(err, io.EOF) && b.left > 0:
		b.err = fmt.Errorf("%w: bundle of plan %d misses %d bytes", ErrTruncated, b.plan, b.left)
		return n, b.err
	case err != nil && !errors.Is(err, io.EOF):
		b.err = fmt.Errorf("update: read bundle: %w", err)
		return n, b.err
	}
	return n, nil
}

// finish checks the digest and that nothing follows the bundle.
func (b *bundleReader) finish() error {
	if got := digest.NewDigest(digest.SHA256, b.h); got != b.want {
		return fmt.Errorf("%w: bundle of plan %d is %s, plan says %s", ErrBundleDigest, b.plan, got, b.want)
	}
	var one [1]byte
	for {
		n, err := b.r.Read(one[:])
		if n > 0 {
			return fmt.Errorf("%w: bytes after the bundle of plan %d", ErrMalformed, b.plan)
		}
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
		if err != nil {
			return fmt.Errorf("update: read bundle: %w", err)
		}
	}
}
