package delta

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"io"

	"github.com/bootorbit/bootorbit/delta/bsdiff"
)

// An opaque stretch is a run of bytes with no tar structure to go by: the
// whole of a layer that is not a tar (a raw slot's layer, a filesystem
// image), a large non-zero trailer, or the content of a very large file.
// It is coded against a stretch of a base layer (the layer at the same
// index, or the old version of the file) as one byte stream, in the manner
// of a block device: a filesystem's next version mostly keeps its blocks
// where they were, moves some whole blocks, and edits a few in place.
//
// The new stretch is read in blocks of opaqueBlock bytes, each classified
// against the base:
//
//   - same: equal to the base block at the same offset (COPY);
//   - zero: all zeros (ZERO);
//   - moved: equal to some other base block, found by a hash of every
//     base block (COPY from there; the block after a moved one is first
//     tried at the next base block);
//   - changed: none of these.
//
// Changed blocks within opaqueMargin of each other form a job, at most
// opaqueJob bytes long. A changed run that is mostly equal to the base at
// the same offset (an inode, a bitmap, a file edited in place) is one ADD;
// any other is aligned with bsdiff against the base window from
// opaqueMargin before the job to opaqueMargin after it, whose suffix array
// is built only when needed. So compute memory is bounded by the window
// (about five bytes per byte of it), the hash table (one entry per base
// block) and fixed buffers, whatever the stretch's size; apply memory is
// the engine's usual bound, since the result is ordinary parts.
const (
	opaqueBlock = 1024 // the granularity of block matching: ext4's smallest block
	// opaqueTrailer is the smallest non-zero trailer coded as an opaque
	// stretch rather than literally.
	opaqueTrailer = 64 << 10
)

// Variables for tests, which shrink them to reach their edges with small
// inputs.
var (
	opaqueMargin int64 = 2 << 20 // how far around changed blocks bsdiff looks in the base
	opaqueJob    int64 = 8 << 20 // the longest stretch of new bytes in one bsdiff window
	// opaqueFile is the content size above which a changed file is coded
	// as an opaque stretch against its old version (bounded memory)
	// rather than aligned whole.
	opaqueFile int64 = 64 << 20
)

// segment kinds of an opaque stretch.
const (
	segSame = iota
	segZero
	segMoved
	segChanged
)

// oseg is a run of blocks of one kind; off and old are relative to the
// starts of the new and base stretches.
type oseg struct {
	kind int
	off  int64
	n    int64
	old  int64 // segSame, segMoved: where the bytes lie in the base stretch
}

// opaqueCoder codes a new stretch against a base stretch.
type opaqueCoder struct {
	pe *partEncoder
	nw io.ReaderAt
	// The new stretch: [nOff, nOff+nLen) of nw.
	nOff, nLen int64
	// The base stretch: [oOff, oOff+oLen) of base layer layer (oLen 0:
	// none).
	old        io.ReaderAt
	layer      int
	oOff, oLen int64

	seed   maphash.Seed
	hashes map[uint64]int64 // base block hash -> relative offset; built on first need
	job    []oseg           // segments of the open job, from its first changed one
	prev   oseg             // the last segment added, in a job or not
	buf    []byte           // for copies
}

// encodeOpaque codes new bytes [nOff, nOff+nLen) of nw against base bytes
// [oOff, oOff+oLen) of base layer layer (old nil or oLen 0: no base).
func encodeOpaque(ctx context.Context, pe *partEncoder, nw io.ReaderAt, nOff, nLen int64, old io.ReaderAt, layer int, oOff, oLen int64, ls *LayerStats) error {
	if old == nil {
		oLen = 0
	}
	ls.Opaque++
	c := &opaqueCoder{pe: pe, nw: nw, nOff: nOff, nLen: nLen, old: old, layer: layer, oOff: oOff, oLen: oLen, seed: maphash.MakeSeed()}
	return c.run(ctx)
}

func (c *opaqueCoder) run(ctx context.Context) error {
	const chunk = 1 << 20 // a multiple of opaqueBlock
	nbuf, obuf := make([]byte, chunk), make([]byte, chunk)
	cmp := make([]byte, opaqueBlock)
	for base := int64(0); base < c.nLen; base += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		nb := nbuf[:min(chunk, c.nLen-base)]
		if _, err := c.nw.ReadAt(nb, c.nOff+base); err != nil {
			return fmt.Errorf("delta: read new stretch at %d: %w", c.nOff+base, err)
		}
		ob := obuf[:max(0, min(int64(len(nb)), c.oLen-base))]
		if len(ob) > 0 {
			if _, err := c.old.ReadAt(ob, c.oOff+base); err != nil {
				return fmt.Errorf("delta: read base stretch at %d: %w", c.oOff+base, err)
			}
		}
		for i := 0; i < len(nb); i += opaqueBlock {
			blk := nb[i:min(len(nb), i+opaqueBlock)]
			rel := base + int64(i)
			s := oseg{kind: segChanged, off: rel, n: int64(len(blk))}
			switch {
			case i+len(blk) <= len(ob) && bytes.Equal(blk, ob[i:i+len(blk)]):
				s.kind, s.old = segSame, rel
			case isZero(blk):
				s.kind = segZero
			case len(blk) == opaqueBlock && c.oLen >= opaqueBlock:
				o, ok, err := c.moved(rel, blk, cmp)
				if err != nil {
					return err
				}
				if ok {
					s.kind, s.old = segMoved, o
				}
			}
			if err := c.add(s); err != nil {
				return err
			}
		}
	}
	return c.flushJob()
}

// moved finds a base block equal to blk: first the one after where the
// previous block was found, then by hash.
func (c *opaqueCoder) moved(rel int64, blk, cmp []byte) (int64, bool, error) {
	try := func(o int64) (bool, error) {
		if o < 0 || o+opaqueBlock > c.oLen {
			return false, nil
		}
		if _, err := c.old.ReadAt(cmp, c.oOff+o); err != nil {
			return false, fmt.Errorf("delta: read base stretch at %d: %w", c.oOff+o, err)
		}
		return bytes.Equal(cmp, blk), nil
	}
	if p := c.prev; p.kind == segMoved && p.n > 0 && p.off+p.n == rel {
		if ok, err := try(p.old + p.n); ok || err != nil {
			return p.old + p.n, ok, err
		}
	}
	if c.hashes == nil {
		if err := c.hashBase(); err != nil {
			return 0, false, err
		}
	}
	o, ok := c.hashes[maphash.Bytes(c.seed, blk)]
	if !ok {
		return 0, false, nil
	}
	ok, err := try(o)
	return o, ok, err
}

// hashBase indexes every whole non-zero block of the base stretch by its
// hash (the first block with a given hash wins).
func (c *opaqueCoder) hashBase() error {
	c.hashes = make(map[uint64]int64, c.oLen/opaqueBlock)
	buf := make([]byte, 1<<20)
	for base := int64(0); base+opaqueBlock <= c.oLen; base += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), c.oLen-base)]
		if _, err := c.old.ReadAt(b, c.oOff+base); err != nil {
			return fmt.Errorf("delta: read base stretch at %d: %w", c.oOff+base, err)
		}
		for i := 0; i+opaqueBlock <= len(b); i += opaqueBlock {
			blk := b[i : i+opaqueBlock]
			if isZero(blk) {
				continue
			}
			h := maphash.Bytes(c.seed, blk)
			if _, ok := c.hashes[h]; !ok {
				c.hashes[h] = base + int64(i)
			}
		}
	}
	return nil
}

// last is the last segment of the open job, or nil.
func (c *opaqueCoder) last() *oseg {
	if len(c.job) == 0 {
		return nil
	}
	return &c.job[len(c.job)-1]
}

// lastChangedEnd is where the open job's last changed segment ends.
func (c *opaqueCoder) lastChangedEnd() int64 {
	for i := len(c.job) - 1; i >= 0; i-- {
		if c.job[i].kind == segChanged {
			return c.job[i].off + c.job[i].n
		}
	}
	return -1
}

// add appends a block's segment: merged with the previous one when they
// continue each other, emitted at once when no job is open, else kept in
// the job, which is flushed when it grows too long or ends.
func (c *opaqueCoder) add(s oseg) error {
	c.prev = s
	if len(c.job) == 0 && s.kind != segChanged {
		// Outside a job: the segment is coded as it comes (the part
		// encoder merges consecutive copies and zeros).
		return c.emitSimple(s)
	}
	if len(c.job) > 0 {
		first := c.job[0].off
		if s.off+s.n-first > opaqueJob || (s.kind != segChanged && s.off-c.lastChangedEnd() >= opaqueMargin) {
			// The job is as long as a window allows, or no changed block
			// came within the margin: code it, and start afresh.
			if err := c.flushJob(); err != nil {
				return err
			}
			return c.add(s)
		}
	}
	if l := c.last(); l != nil && l.kind == s.kind && l.off+l.n == s.off &&
		(s.kind == segZero || s.kind == segChanged || l.old+l.n == s.old) {
		l.n += s.n
		return nil
	}
	c.job = append(c.job, s)
	return nil
}

// flushJob codes the open job: its changed segments against the base
// window around them, the others as they are.
func (c *opaqueCoder) flushJob() error {
	job := c.job
	c.job = nil
	if len(job) == 0 {
		return nil
	}
	// The job's trailing simple segments lie outside its window.
	end := len(job)
	for end > 0 && job[end-1].kind != segChanged {
		end--
	}
	var w window
	if end > 0 && c.oLen > 0 {
		w.off = max(0, job[0].off-opaqueMargin)
		w.end = min(c.oLen, job[end-1].off+job[end-1].n+opaqueMargin)
	}
	for _, s := range job {
		if s.kind != segChanged {
			if err := c.emitSimple(s); err != nil {
				return err
			}
			continue
		}
		if err := c.emitChanged(s, &w); err != nil {
			return err
		}
	}
	return nil
}

// window is the base stretch a job's changed segments are aligned with,
// read and indexed on first need.
type window struct {
	off, end int64
	data     []byte
	idx      *bsdiff.Index
}

// emitSimple codes a same, zero or moved segment.
func (c *opaqueCoder) emitSimple(s oseg) error {
	if s.kind == segZero {
		return c.pe.emitZero(s.n)
	}
	if c.buf == nil {
		c.buf = make([]byte, 1<<20)
	}
	buf := c.buf
	for done := int64(0); done < s.n; {
		k := min(s.n-done, int64(len(buf)))
		if _, err := c.nw.ReadAt(buf[:k], c.nOff+s.off+done); err != nil {
			return fmt.Errorf("delta: read new stretch: %w", err)
		}
		if err := c.pe.emit(opCopy, c.layer, c.oOff+s.old+done, buf[:k], nil); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// emitChanged codes a changed segment: one ADD when it is mostly the base
// at the same offset, else its bsdiff alignment with the window (literal
// when there is no base).
func (c *opaqueCoder) emitChanged(s oseg, w *window) error {
	nw := make([]byte, s.n)
	if _, err := c.nw.ReadAt(nw, c.nOff+s.off); err != nil {
		return fmt.Errorf("delta: read new stretch: %w", err)
	}
	if w.end <= w.off {
		return c.pe.emit(opLit, 0, 0, nw, nil)
	}
	if s.off+s.n <= c.oLen {
		same := make([]byte, s.n)
		if _, err := c.old.ReadAt(same, c.oOff+s.off); err != nil {
			return fmt.Errorf("delta: read base stretch: %w", err)
		}
		if mostlyEqual(same, nw) {
			return c.pe.emit(opAdd, c.layer, c.oOff+s.off, nw, same)
		}
	}
	if w.idx == nil {
		w.data = make([]byte, w.end-w.off)
		if _, err := c.old.ReadAt(w.data, c.oOff+w.off); err != nil {
			return fmt.Errorf("delta: read base window: %w", err)
		}
		w.idx = bsdiff.NewIndex(w.data)
	}
	return encodeAligned(c.pe, w.idx, c.layer, c.oOff+w.off, w.data, nw)
}
