package delta

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Operations of a part's ops stream. Each is an opcode byte followed by
// varints. COPY and ADD first move the cursor in the part's virtual base
// (the concatenation of its ranges) by a signed delta, then use n bytes
// from there; the cursor ends after them. In-place upgrades read the base
// almost sequentially, so the deltas are mostly zero and the stream nearly
// vanishes under zstd.
const (
	opCopy = 1 // delta, n: output n base bytes
	opAdd  = 2 // delta, n: output n base bytes plus n bytes of the diff stream
	opLit  = 3 // n: output n bytes of the lit stream
	opZero = 4 // n: output n zero bytes
)

// Stream indexes within a part. The difference bytes of ADD operations
// are mostly zero; they are stored as runs: the lengths of alternating zero
// and non-zero runs in two streams, the non-zero bytes in a third. That
// compresses a tenth better than the plain bytes.
const (
	streamOps      = iota
	streamZeros    // uvarint lengths of zero runs of the difference bytes
	streamNonZeros // uvarint lengths of the non-zero runs that follow them
	streamDiff     // the non-zero difference bytes
	streamLit
	numStreams
)

var streamNames = [numStreams]string{"ops", "zero-runs", "nonzero-runs", "diff", "lit"}

// splitDiff turns difference bytes into the three run streams.
func splitDiff(d []byte) (zeros, nonzeros, bytes []byte) {
	for i := 0; i < len(d); {
		j := i
		for j < len(d) && d[j] == 0 {
			j++
		}
		k := j
		for k < len(d) && d[k] != 0 {
			k++
		}
		zeros = binary.AppendUvarint(zeros, uint64(j-i))
		nonzeros = binary.AppendUvarint(nonzeros, uint64(k-j))
		bytes = append(bytes, d[j:k]...)
		i = k
	}
	return zeros, nonzeros, bytes
}

// mergeGap is how far apart two base stretches may be and still be covered
// by one range (and one digest). Larger means fewer digests in the header and
// more base bytes read to verify.
const mergeGap = 256 << 10

// op is a part operation as the encoder builds it, with base positions
// still absolute (layer, offset).
type op struct {
	kind  byte
	n     int64
	layer int
	off   int64
}

// baseFile gives the encoder access to the base layers.
type baseFile interface {
	io.ReaderAt
	pathAt(off int64) string  // the first file at or after off, for messages
	filesIn(off, n int64) int // how many files start in [off, off+n)
	// unheld says whether [off, end) overlaps content the vehicle does not
	// hold (shadow.go): no range spans it.
	unheld(off, end int64) bool
}

// partBuilder accumulates the operations and streams of one part.
type partBuilder struct {
	ops       []op
	diff, lit bytes.Buffer
	out       int64
	sum       hash.Hash
}

func newPartBuilder() *partBuilder { return &partBuilder{sum: sha256.New()} }

func (b *partBuilder) push(o op) {
	if n := len(b.ops); n > 0 {
		last := &b.ops[n-1]
		if last.kind == o.kind {
			switch o.kind {
			case opLit, opZero:
				last.n += o.n
				return
			case opCopy, opAdd:
				if last.layer == o.layer && last.off+last.n == o.off {
					last.n += o.n
					return
				}
			}
		}
	}
	b.ops = append(b.ops, o)
}

// partEncoder turns ops into finished parts of bounded output size.
type partEncoder struct {
	base     []baseFile
	partSize int64
	cur      *partBuilder
	payload  io.Writer
	poff     int64
	parts    []Part
	layerOut int64
	encOps   *zstd.Encoder
	encData  *zstd.Encoder
}

// encoders are the zstd encoders for part streams; building one allocates
// its match tables, so they are pooled.
type encoders struct {
	ops, data *zstd.Encoder
	fast      bool
}

var encoderPools [2]sync.Pool // best, fast

func getEncoders(fast bool) (encoders, error) {
	i := 0
	if fast {
		i = 1
	}
	if e, ok := encoderPools[i].Get().(encoders); ok {
		return e, nil
	}
	level := zstd.SpeedBestCompression
	if fast {
		level = zstd.SpeedFastest
	}
	// No frame checksums: every part's payload and output carry a sha256.
	encOps, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false),
		zstd.WithWindowSize(MaxSmallWindow), zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true))
	if err != nil {
		return encoders{}, err
	}
	encData, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false),
		zstd.WithWindowSize(MaxWindow), zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true))
	if err != nil {
		return encoders{}, err
	}
	return encoders{encOps, encData, fast}, nil
}

func putEncoders(e encoders) {
	i := 0
	if e.fast {
		i = 1
	}
	encoderPools[i].Put(e)
}

func newPartEncoder(base []baseFile, partSize int64, payload io.Writer, poff int64, enc encoders) *partEncoder {
	return &partEncoder{base: base, partSize: partSize, payload: payload, poff: poff, encOps: enc.ops, encData: enc.data}
}

func (e *partEncoder) room() int64 {
	if e.cur == nil {
		e.cur = newPartBuilder()
	}
	return e.partSize - e.cur.out
}

// emit adds an operation producing nw (for ADD, old holds the base bytes
// the difference is taken against), splitting it across parts as needed.
func (e *partEncoder) emit(kind byte, layer int, off int64, nw, old []byte) error {
	for len(nw) > 0 {
		r := e.room()
		if r <= 0 {
			if err := e.flush(); err != nil {
				return err
			}
			continue
		}
		k := int64(len(nw))
		if k > r {
			k = r
		}
		b := e.cur
		chunk := nw[:k]
		b.sum.Write(chunk)
		b.out += k
		switch kind {
		case opAdd:
			for i, c := range chunk {
				b.diff.WriteByte(c - old[i])
			}
			old = old[k:]
		case opLit:
			b.lit.Write(chunk)
		}
		b.push(op{kind: kind, n: k, layer: layer, off: off})
		off += k
		nw = nw[k:]
	}
	return nil
}

// emitZero adds n zero bytes.
func (e *partEncoder) emitZero(n int64) error {
	var zeros [4096]byte
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if err := e.emit(opZero, 0, 0, zeros[:k], nil); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// flush finishes the current part: it gathers the base ranges, digests
// them, writes the five compressed streams to the payload and records
// the part.
func (e *partEncoder) flush() error {
	b := e.cur
	if b == nil || b.out == 0 {
		return nil
	}
	e.cur = nil
	ranges, err := e.ranges(b.ops)
	if err != nil {
		return err
	}
	// Virtual base position of (layer, off).
	starts := make([]int64, len(ranges))
	var v int64
	for i, r := range ranges {
		starts[i] = v
		v += r.Len
	}
	vpos := func(layer int, off int64) int64 {
		i := sort.Search(len(ranges), func(i int) bool {
			r := ranges[i]
			return r.Layer > layer || (r.Layer == layer && r.Off+r.Len > off)
		})
		return starts[i] + off - ranges[i].Off
	}
	var ops bytes.Buffer
	var tmp [2 * binary.MaxVarintLen64]byte
	var cur int64
	for _, o := range b.ops {
		ops.WriteByte(o.kind)
		switch o.kind {
		case opCopy, opAdd:
			p := vpos(o.layer, o.off)
			n := binary.PutVarint(tmp[:], p-cur)
			n += binary.PutUvarint(tmp[n:], uint64(o.n))
			ops.Write(tmp[:n])
			cur = p + o.n
		default:
			n := binary.PutUvarint(tmp[:], uint64(o.n))
			ops.Write(tmp[:n])
		}
	}
	part := Part{OutOff: e.layerOut, OutSize: b.out, OutDigest: b.sum.Sum(nil), PayloadOff: e.poff, Ranges: ranges}
	ph := sha256.New()
	zeros, nonzeros, diffBytes := splitDiff(b.diff.Bytes())
	for i, raw := range [numStreams][]byte{ops.Bytes(), zeros, nonzeros, diffBytes, b.lit.Bytes()} {
		enc := e.encData
		if i != streamDiff && i != streamLit {
			enc = e.encOps
		}
		z := enc.EncodeAll(raw, nil)
		if _, err := e.payload.Write(z); err != nil {
			return err
		}
		ph.Write(z)
		part.Streams[i] = Stream{Len: int64(len(z)), Raw: int64(len(raw))}
		part.PayloadSize += int64(len(z))
	}
	part.PayloadDigest = ph.Sum(nil)
	e.poff += part.PayloadSize
	e.layerOut += b.out
	e.parts = append(e.parts, part)
	return nil
}

// ranges merges the base stretches ops read into ranges and digests them.
func (e *partEncoder) ranges(ops []op) ([]Range, error) {
	type span struct {
		layer    int
		off, end int64
	}
	var spans []span
	for _, o := range ops {
		if o.kind == opCopy || o.kind == opAdd {
			spans = append(spans, span{o.layer, o.off, o.off + o.n})
		}
	}
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].layer != spans[j].layer {
			return spans[i].layer < spans[j].layer
		}
		return spans[i].off < spans[j].off
	})
	var merged []span
	for _, s := range spans {
		if n := len(merged); n > 0 && merged[n-1].layer == s.layer && s.off <= merged[n-1].end+mergeGap &&
			!e.base[s.layer].unheld(merged[n-1].end, s.off) {
			merged[n-1].end = max(merged[n-1].end, s.end)
			continue
		}
		merged = append(merged, s)
	}
	out := make([]Range, 0, len(merged))
	buf := make([]byte, 256<<10)
	for _, s := range merged {
		f := e.base[s.layer]
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(f, s.off, s.end-s.off), buf); err != nil {
			return nil, fmt.Errorf("delta: digest base layer %d: %w", s.layer, err)
		}
		p := f.pathAt(s.off)
		out = append(out, Range{Layer: s.layer, Off: s.off, Len: s.end - s.off, Digest: h.Sum(nil), Path: p, Files: f.filesIn(s.off, s.end-s.off)})
	}
	return out, nil
}
