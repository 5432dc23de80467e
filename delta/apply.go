package delta

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// Bundle is an opened bundle: its validated header and its payload.
type Bundle struct {
	Header     *Header
	r          io.ReaderAt
	payloadOff int64
}

// OpenBundle reads and validates the header of the bundle held by r (size
// bytes). The payload is read only by Apply.
func OpenBundle(r io.ReaderAt, size int64) (*Bundle, error) {
	h, off, err := ReadHeader(r, size)
	if err != nil {
		return nil, err
	}
	return &Bundle{Header: h, r: r, payloadOff: off}, nil
}

// Base gives random access to the base layers' uncompressed tars. Layer
// returns nil when the layer is not held.
type Base interface {
	Layer(d digest.Digest) io.ReaderAt
}

// MapBase is a Base over readers keyed by diff_id.
type MapBase map[digest.Digest]io.ReaderAt

// Layer implements Base.
func (m MapBase) Layer(d digest.Digest) io.ReaderAt { return m[d] }

// MismatchError reports a base range whose bytes are not what a part
// expects. It wraps ErrBaseMismatch (or ErrBaseMissing).
type MismatchError struct {
	Layer, Part int    // target layer and part
	Path        string // first file in the range
	Files       int    // files starting in the range
	Base        digest.Digest
	Off, Len    int64
	Want, Have  string // digests ("" Have when unreadable)
	Err         error
}

func (e *MismatchError) Error() string {
	what := "file " + e.Path
	switch {
	case e.Path == "":
		// A base layer that is not a tar (a raw slot's image).
		what = fmt.Sprintf("bytes [%d,+%d)", e.Off, e.Len)
	case e.Files > 1:
		what = fmt.Sprintf("file %s (and %d more in the range)", e.Path, e.Files-1)
	}
	if errors.Is(e.Err, ErrBaseMissing) {
		return fmt.Sprintf("%v: layer %d part %d: %s: base layer %s not held", ErrBaseMissing, e.Layer, e.Part, what, e.Base)
	}
	if e.Have == "" {
		if e.Path == "" {
			return fmt.Sprintf("%v: layer %d part %d: base layer %s bytes [%d,+%d): %v", ErrBaseMismatch, e.Layer, e.Part, e.Base, e.Off, e.Len, e.Err)
		}
		return fmt.Sprintf("%v: layer %d part %d: %s: base layer %s bytes [%d,+%d): %v", ErrBaseMismatch, e.Layer, e.Part, what, e.Base, e.Off, e.Len, e.Err)
	}
	return fmt.Sprintf("%v: layer %d part %d: %s: want %s, have %s", ErrBaseMismatch, e.Layer, e.Part, what, e.Want, e.Have)
}

func (e *MismatchError) Unwrap() error {
	if e.Err != nil {
		return e.Err
	}
	return ErrBaseMismatch
}

// VerifyBase checks the base ranges of every part of target layer li and
// returns one error per range that does not match (nil when all do).
func (b *Bundle) VerifyBase(ctx context.Context, li int, base Base) []error {
	if li < 0 || li >= len(b.Header.Layers) {
		return []error{fmt.Errorf("delta: layer %d out of range", li)}
	}
	var errs []error
	buf := make([]byte, 256<<10)
	for pi := range b.Header.Layers[li].Parts {
		errs = append(errs, b.verifyPart(ctx, li, pi, base, buf)...)
	}
	return errs
}

// verifyPart checks the base ranges of one part.
func (b *Bundle) verifyPart(ctx context.Context, li, pi int, base Base, buf []byte) []error {
	var errs []error
	for _, r := range b.Header.Layers[li].Parts[pi].Ranges {
		if ctx.Err() != nil {
			return append(errs, ctx.Err())
		}
		bd := b.Header.Base[r.Layer]
		me := &MismatchError{Layer: li, Part: pi, Path: r.Path, Files: r.Files, Base: bd, Off: r.Off, Len: r.Len,
			Want: "sha256:" + hex.EncodeToString(r.Digest)}
		ra := base.Layer(bd)
		if ra == nil {
			me.Err = ErrBaseMissing
			errs = append(errs, me)
			continue
		}
		h := sha256.New()
		n, err := io.CopyBuffer(h, io.NewSectionReader(ra, r.Off, r.Len), buf)
		if err == nil && n != r.Len {
			err = fmt.Errorf("base layer has only %d of the bytes", n)
		}
		if err != nil {
			me.Err = fmt.Errorf("%w: %v", ErrBaseMismatch, err)
			errs = append(errs, me)
			continue
		}
		if have := h.Sum(nil); !bytes.Equal(have, r.Digest) {
			me.Have = "sha256:" + hex.EncodeToString(have)
			errs = append(errs, me)
		}
	}
	return errs
}

// ApplyLayer rebuilds target layer li into w. It first checks every base
// range the layer's parts read, and returns the mismatches (joined) without
// writing anything if there are any; then it streams the parts, checking
// each part's digest and, at the end, the layer's diff_id. Memory use is
// bounded by the zstd windows and fixed buffers, whatever the layer size.
// A reused layer has nothing to apply: ApplyLayer returns an error for it.
func (b *Bundle) ApplyLayer(ctx context.Context, li int, base Base, w io.Writer) error {
	if li < 0 || li >= len(b.Header.Layers) {
		return fmt.Errorf("delta: layer %d out of range", li)
	}
	lp := &b.Header.Layers[li]
	if lp.Decision == Reuse {
		return fmt.Errorf("delta: layer %d (%s) is reused, not rebuilt", li, lp.DiffID)
	}
	if errs := b.VerifyBase(ctx, li, base); len(errs) > 0 {
		return errors.Join(errs...)
	}
	lh := sha256.New()
	if err := b.applyParts(ctx, li, 0, len(lp.Parts), base, io.MultiWriter(w, lh)); err != nil {
		return err
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, lh.Sum(nil)); got != lp.DiffID {
		return fmt.Errorf("%w: layer %d rebuilt as %s, want %s", ErrOutput, li, got, lp.DiffID)
	}
	return nil
}

// ApplyPart rebuilds one part of target layer li into w, after checking its
// base ranges. Its output is checked against the part's digest; whoever
// assembles parts checks the layer's diff_id.
func (b *Bundle) ApplyPart(ctx context.Context, li, pi int, base Base, w io.Writer) error {
	if li < 0 || li >= len(b.Header.Layers) || pi < 0 || pi >= len(b.Header.Layers[li].Parts) {
		return fmt.Errorf("delta: part %d of layer %d out of range", pi, li)
	}
	if errs := b.verifyPart(ctx, li, pi, base, make([]byte, 256<<10)); len(errs) > 0 {
		return errors.Join(errs...)
	}
	return b.applyParts(ctx, li, pi, pi+1, base, w)
}

// applyParts writes parts [from, to) of target layer li to w; the caller
// has verified their base ranges.
func (b *Bundle) applyParts(ctx context.Context, li, from, to int, base Base, w io.Writer) error {
	bases := make([]io.ReaderAt, len(b.Header.Base))
	for i, d := range b.Header.Base {
		bases[i] = base.Layer(d)
	}
	a, err := newApplier()
	if err != nil {
		return err
	}
	defer a.close()
	bw := bufio.NewWriterSize(w, 64<<10)
	for pi := from; pi < to; pi++ {
		if err := a.part(ctx, b, &b.Header.Layers[li].Parts[pi], bases, bw); err != nil {
			return fmt.Errorf("delta: layer %d part %d: %w", li, pi, err)
		}
	}
	return bw.Flush()
}

// applier holds the decoders and buffers reused across parts.
type applier struct {
	dec [numStreams]*zstd.Decoder
	buf []byte
	old []byte
}

// appliers keeps appliers for reuse: a zstd decoder is costly to set up.
var appliers sync.Pool

func newApplier() (*applier, error) {
	if a, ok := appliers.Get().(*applier); ok {
		return a, nil
	}
	a := &applier{buf: make([]byte, 64<<10), old: make([]byte, 64<<10)}
	for i := range a.dec {
		window := uint64(MaxSmallWindow)
		if i == streamDiff || i == streamLit {
			window = MaxWindow
		}
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(window),
			zstd.WithDecoderMaxMemory(maxDecoderMem))
		if err != nil {
			a.free()
			return nil, err
		}
		a.dec[i] = d
	}
	return a, nil
}

// close returns a to the pool.
func (a *applier) close() {
	for _, d := range a.dec {
		if d == nil {
			a.free()
			return
		}
		d.Reset(nil)
	}
	appliers.Put(a)
}

func (a *applier) free() {
	for _, d := range a.dec {
		if d != nil {
			d.Close()
		}
	}
}

// stream is a decompressed part stream that must yield exactly want bytes.
type stream struct {
	name string
	r    io.Reader
	left int64
}

func (s *stream) Read(p []byte) (int, error) {
	if s.left <= 0 {
		// The declared length is used up: the frame must end here.
		var one [1]byte
		if n, _ := io.ReadFull(s.r, one[:]); n > 0 {
			return 0, formatf("%s stream longer than declared", s.name)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	if err == io.EOF && s.left > 0 {
		return n, formatf("%s stream shorter than declared (%d bytes missing)", s.name, s.left)
	}
	if err != nil && err != io.EOF {
		return n, fmt.Errorf("%w: %s stream: %v", ErrFormat, s.name, err)
	}
	return n, nil
}

func (s *stream) ReadByte() (byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(s, b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// part applies one part, writing its output to w.
func (a *applier) part(ctx context.Context, b *Bundle, p *Part, bases []io.ReaderAt, w io.Writer) error {
	// The payload is checked whole before any of it is decoded, so that
	// a damaged part is named as such rather than as a decoding error.
	ph := sha256.New()
	if _, err := io.CopyBuffer(ph, io.NewSectionReader(b.r, b.payloadOff+p.PayloadOff, p.PayloadSize), a.buf); err != nil {
		return fmt.Errorf("%w: reading part payload: %v", ErrFormat, err)
	}
	if !bytes.Equal(ph.Sum(nil), p.PayloadDigest) {
		return fmt.Errorf("%w: part payload does not match its sha256", ErrFormat)
	}
	var streams [numStreams]*stream
	off := b.payloadOff + p.PayloadOff
	for i, s := range p.Streams {
		if err := a.dec[i].Reset(io.NewSectionReader(b.r, off, s.Len)); err != nil {
			return fmt.Errorf("%w: %s stream: %v", ErrFormat, streamNames[i], err)
		}
		streams[i] = &stream{name: streamNames[i], r: a.dec[i], left: s.Raw}
		off += s.Len
	}
	ops := bufio.NewReaderSize(streams[streamOps], 16<<10)
	diff := &runReader{zeros: bufio.NewReaderSize(streams[streamZeros], 4<<10),
		nonzeros: bufio.NewReaderSize(streams[streamNonZeros], 4<<10), bytes: streams[streamDiff]}
	lit := streams[streamLit]

	starts := make([]int64, len(p.Ranges)+1)
	for i, r := range p.Ranges {
		starts[i+1] = starts[i] + r.Len
	}
	vlen := starts[len(p.Ranges)]
	readV := func(dst []byte, v int64) error {
		for len(dst) > 0 {
			i := sort.Search(len(p.Ranges), func(i int) bool { return starts[i+1] > v })
			r := p.Ranges[i]
			within := v - starts[i]
			k := min(int64(len(dst)), r.Len-within)
			if _, err := bases[r.Layer].ReadAt(dst[:k], r.Off+within); err != nil {
				return fmt.Errorf("delta: read base layer %s: %w", b.Header.Base[r.Layer], err)
			}
			dst, v = dst[k:], v+k
		}
		return nil
	}

	h := sha256.New()
	out := io.MultiWriter(w, h)
	var done, cur int64
	for done < p.OutSize {
		if err := ctx.Err(); err != nil {
			return err
		}
		kind, err := ops.ReadByte()
		if err != nil {
			return fmt.Errorf("%w: ops end at %d of %d output bytes: %v", ErrFormat, done, p.OutSize, err)
		}
		var delta int64
		if kind == opCopy || kind == opAdd {
			if delta, err = binary.ReadVarint(ops); err != nil {
				return fmt.Errorf("%w: op operand: %v", ErrFormat, err)
			}
		}
		un, err := binary.ReadUvarint(ops)
		if err != nil {
			return fmt.Errorf("%w: op length: %v", ErrFormat, err)
		}
		if un == 0 || un > uint64(p.OutSize-done) {
			return formatf("op length %d with %d output bytes left", un, p.OutSize-done)
		}
		n := int64(un)
		switch kind {
		case opCopy, opAdd:
			if delta < -cur || delta > vlen-cur || n > vlen-(cur+delta) {
				return formatf("op reads base [%d%+d,+%d) outside %d bytes", cur, delta, n, vlen)
			}
			v := cur + delta
			for left := n; left > 0; {
				k := min(left, int64(len(a.buf)))
				chunk := a.buf[:k]
				if err := readV(chunk, v); err != nil {
					return err
				}
				if kind == opAdd {
					d := a.old[:k]
					if _, err := io.ReadFull(diff, d); err != nil {
						return streamErr("diff", err)
					}
					for i := range chunk {
						chunk[i] += d[i]
					}
				}
				if _, err := out.Write(chunk); err != nil {
					return err
				}
				v, left = v+k, left-k
			}
			cur = v
		case opLit:
			m, err := io.CopyBuffer(out, io.LimitReader(lit, n), a.buf)
			if err != nil {
				return streamErr("lit", err)
			}
			if m != n {
				return formatf("lit stream ends %d bytes short", n-m)
			}
		case opZero:
			clear(a.buf)
			for left := n; left > 0; {
				k := min(left, int64(len(a.buf)))
				if _, err := out.Write(a.buf[:k]); err != nil {
					return err
				}
				left -= k
			}
		default:
			return formatf("unknown op %d", kind)
		}
		done += n
	}
	// Every stream must be used up exactly.
	if _, err := ops.ReadByte(); err != io.EOF {
		return formatf("ops left over after %d output bytes", p.OutSize)
	}
	if diff.zeroLeft != 0 || diff.nonzeroLeft != 0 {
		return formatf("difference runs go on after the last ADD")
	}
	for _, r := range []io.ByteReader{diff.zeros, diff.nonzeros} {
		if _, err := r.ReadByte(); err != io.EOF {
			return formatf("difference runs left over after %d output bytes", p.OutSize)
		}
	}
	for _, s := range []*stream{streams[streamDiff], lit} {
		if s.left != 0 {
			return formatf("%s stream: %d bytes unused", s.name, s.left)
		}
		if _, err := s.ReadByte(); err != io.EOF {
			return formatf("%s stream longer than declared", s.name)
		}
	}
	if got := h.Sum(nil); !bytes.Equal(got, p.OutDigest) {
		return fmt.Errorf("%w: part output sha256:%x, want sha256:%x", ErrOutput, got, p.OutDigest)
	}
	return nil
}

// streamErr wraps a stream read error unless the stream already did.
func streamErr(name string, err error) error {
	if errors.Is(err, ErrFormat) {
		return err
	}
	return fmt.Errorf("%w: %s stream ends early: %v", ErrFormat, name, err)
}

// runReader yields the difference bytes from their run-length form.
type runReader struct {
	zeros, nonzeros       *bufio.Reader
	bytes                 *stream
	zeroLeft, nonzeroLeft int64
}

func (r *runReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		switch {
		case r.zeroLeft > 0:
			k := min(r.zeroLeft, int64(len(p)-n))
			clear(p[n : n+int(k)])
			n += int(k)
			r.zeroLeft -= k
		case r.nonzeroLeft > 0:
			k := min(r.nonzeroLeft, int64(len(p)-n))
			m, err := io.ReadFull(r.bytes, p[n:n+int(k)])
			n += m
			r.nonzeroLeft -= int64(m)
			if err != nil {
				return n, streamErr("diff", err)
			}
		default:
			z, err := binary.ReadUvarint(r.zeros)
			if err == io.EOF {
				return n, io.EOF
			}
			if err != nil {
				return n, streamErr("zero-runs", err)
			}
			nz, err := binary.ReadUvarint(r.nonzeros)
			if err != nil {
				return n, streamErr("nonzero-runs", err)
			}
			if (z == 0 && nz == 0) || z > MaxStreamRaw || nz > MaxStreamRaw {
				return n, formatf("difference run of %d zero and %d non-zero bytes", z, nz)
			}
			r.zeroLeft, r.nonzeroLeft = int64(z), int64(nz)
		}
	}
	return n, nil
}

// HeaderSize is the bytes before the payload: magic, length and header. A
// transfer carries these first (they describe everything else), then the
// parts, each at PartBytes.
func (b *Bundle) HeaderSize() int64 { return b.payloadOff }

// PartBytes returns where part pi of target layer li lies in the bundle
// file: the unit a transfer carries and a vehicle can apply on its own.
func (b *Bundle) PartBytes(li, pi int) (off, n int64) {
	p := &b.Header.Layers[li].Parts[pi]
	return b.payloadOff + p.PayloadOff, p.PayloadSize
}
