package slots

// The layer index: what a slot needs, beside its content, to give back the
// exact bytes of every layer tar installed into it (the delta engine's
// base, see base_linux.go), without a copy of the layers.
//
// A layer tar is a sequence of segments: file content (a regular file's
// data, which the slot holds at a path, or a raw slot's device range) and
// everything else (tar headers, PAX records, padding, end blocks, trailing
// bytes), which the index holds itself, zstd-compressed. The content
// segments are listed in layer order; the bytes between them, concatenated,
// are the layer's inline stream, cut into chunks that are compressed one
// by one so that a read decompresses one chunk, not the layer's.
//
// File format, version 1 (all integers big-endian; the table's numbers are
// unsigned varints):
//
//	file   = chunks table footer
//	chunks = the inline chunks of every layer, one zstd frame each, in
//	         table order, from offset 0
//	table  = one zstd frame holding:
//	         nlayers, then per layer:
//	           len(diff_id) diff_id size kind nsegs
//	           nsegs x (gap n kind-specific)   gap: bytes since the previous
//	                                           segment's end (inline)
//	             kind 1 (files):  shared suffix-len suffix (the path in the
//	                              slot, prefix-coded against the previous one)
//	             kind 2 (device): device offset
//	           nchunks  nchunks x (compressed-len raw-len)
//	footer = table-offset uint64, table-length uint32, version uint32,
//	         magic "BOLAYIDX"

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// ErrIndex says a layer index file is not one this release wrote: damaged,
// truncated, of another version, or beyond the limits. The slot's layers
// are then not available as a delta base; nothing else depends on it.
var ErrIndex = errors.New("slots: bad layer index")

// ErrNoIndex says a slot has no layer index: it was installed by a release
// that did not record one, its index could not be recorded (see
// InstallResult.IndexBytes), or it holds no installed image.
var ErrNoIndex = errors.New("slots: slot has no layer index")

const (
	indexMagic   = "BOLAYIDX"
	indexVersion = 1
	footerSize   = 24

	// MaxIndexSize bounds a layer index file, written or read. The index
	// of a Debian root filesystem of 10k files is about 1 MB.
	MaxIndexSize = 64 << 20
	// maxIndexTable bounds the decompressed table.
	maxIndexTable = 64 << 20
	// maxIndexLayers bounds the layers of one slot.
	maxIndexLayers = 4096
	// maxIndexSegments bounds the content segments of one slot's layers:
	// each costs memory while the base is open.
	maxIndexSegments = 1 << 20
	// indexChunk is the raw size of an inline chunk as written; a read
	// decompresses one whole chunk. maxIndexChunk bounds it when read.
	indexChunk    = 64 << 10
	maxIndexChunk = 1 << 20
	// maxIndexChunks bounds the inline chunks of one slot's layers (16
	// GiB of headers and padding), and so the memory their table takes.
	maxIndexChunks = 1 << 18

	segFile   = 1
	segDevice = 2
)

// layerIndex is one layer of an index, decoded.
type layerIndex struct {
	diffID digest.Digest
	size   int64
	kind   byte
	segs   []segment // content segments, in layer order, disjoint
	chunks []chunk   // the inline stream's chunks
}

// segment is one content segment of a layer.
type segment struct {
	off, n int64
	// inline is the inline stream's length before off.
	inline int64
	path   string // segFile: the file in the slot, relative to its root
	dev    int64  // segDevice: where the bytes are on the device
}

// chunk is one compressed piece of a layer's inline stream.
type chunk struct {
	fileOff, clen int64 // where its zstd frame lies in the index file
	rawOff, raw   int64 // which bytes of the inline stream it holds
}

// encodeTable returns the table of layers, uncompressed.
func encodeTable(layers []*layerIndex) []byte {
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(layers)))
	for _, l := range layers {
		b = binary.AppendUvarint(b, uint64(len(l.diffID)))
		b = append(b, l.diffID...)
		b = binary.AppendUvarint(b, uint64(l.size))
		b = append(b, l.kind)
		b = binary.AppendUvarint(b, uint64(len(l.segs)))
		var end int64
		prev := ""
		for _, s := range l.segs {
			b = binary.AppendUvarint(b, uint64(s.off-end))
			b = binary.AppendUvarint(b, uint64(s.n))
			if l.kind == segFile {
				k := sharedPrefix(prev, s.path)
				b = binary.AppendUvarint(b, uint64(k))
				b = binary.AppendUvarint(b, uint64(len(s.path)-k))
				b = append(b, s.path[k:]...)
				prev = s.path
			} else {
				b = binary.AppendUvarint(b, uint64(s.dev))
			}
			end = s.off + s.n
		}
		b = binary.AppendUvarint(b, uint64(len(l.chunks)))
		for _, c := range l.chunks {
			b = binary.AppendUvarint(b, uint64(c.clen))
			b = binary.AppendUvarint(b, uint64(c.raw))
		}
	}
	return b
}

func sharedPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

func appendFooter(b []byte, tableOff int64, tableLen int) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(tableOff))
	b = binary.BigEndian.AppendUint32(b, uint32(tableLen))
	b = binary.BigEndian.AppendUint32(b, indexVersion)
	return append(b, indexMagic...)
}

// tableReader reads the table's fields, refusing anything out of bounds.
type tableReader struct {
	b   []byte
	err error
}

func (r *tableReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrIndex, fmt.Sprintf(format, args...))
	}
}

// num reads a varint of at most limit.
func (r *tableReader) num(what string, limit int64) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("%s: truncated table", what)
		return 0
	}
	r.b = r.b[n:]
	if v > uint64(max(limit, 0)) {
		r.fail("%s %d over %d", what, v, limit)
		return 0
	}
	return int64(v)
}

func (r *tableReader) bytes(what string, n int64) []byte {
	if r.err != nil {
		return nil
	}
	if n > int64(len(r.b)) {
		r.fail("%s: truncated table", what)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// decodeIndex decodes an index file of size bytes read through ra. It
// reads the footer and the table only; chunks are read on demand. Every
// count, length and offset is checked before it is used, and the decoded
// layers are consistent: segments in order inside their layer, chunks
// inside the chunk area and exactly covering each inline stream.
func decodeIndex(ra io.ReaderAt, size int64, dec *zstd.Decoder) ([]*layerIndex, error) {
	if size < footerSize || size > MaxIndexSize {
		return nil, fmt.Errorf("%w: file of %d bytes", ErrIndex, size)
	}
	var f [footerSize]byte
	if _, err := ra.ReadAt(f[:], size-footerSize); err != nil {
		return nil, fmt.Errorf("%w: read footer: %v", ErrIndex, err)
	}
	if string(f[16:]) != indexMagic {
		return nil, fmt.Errorf("%w: not a layer index", ErrIndex)
	}
	if v := binary.BigEndian.Uint32(f[12:16]); v != indexVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrIndex, v, indexVersion)
	}
	tableOff := binary.BigEndian.Uint64(f[0:8])
	tableLen := uint64(binary.BigEndian.Uint32(f[8:12]))
	if tableOff > uint64(size) || tableOff+tableLen != uint64(size-footerSize) {
		return nil, fmt.Errorf("%w: table at %d+%d in a file of %d bytes", ErrIndex, tableOff, tableLen, size)
	}
	comp := make([]byte, tableLen)
	if _, err := ra.ReadAt(comp, int64(tableOff)); err != nil {
		return nil, fmt.Errorf("%w: read table: %v", ErrIndex, err)
	}
	raw, err := dec.DecodeAll(comp, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: table: %v", ErrIndex, err)
	}
	return parseTable(raw, int64(tableOff))
}

// parseTable decodes the uncompressed table; chunkArea is the size of the
// chunk area that precedes it.
func parseTable(raw []byte, chunkArea int64) ([]*layerIndex, error) {
	r := &tableReader{b: raw}
	n := r.num("layers", maxIndexLayers)
	var layers []*layerIndex
	var fileOff, segs, chunks int64
	seen := map[digest.Digest]bool{}
	for i := int64(0); i < n && r.err == nil; i++ {
		l := &layerIndex{}
		d := r.bytes("diff_id", r.num("diff_id length", 256))
		if r.err != nil {
			break
		}
		l.diffID = digest.Digest(d)
		if err := l.diffID.Validate(); err != nil {
			r.fail("layer %d: diff_id: %v", i, err)
			break
		}
		if seen[l.diffID] {
			r.fail("layer %d: diff_id %s listed twice", i, l.diffID)
			break
		}
		seen[l.diffID] = true
		l.size = r.num("layer size", 1<<62)
		if k := r.bytes("kind", 1); r.err == nil {
			l.kind = k[0]
		}
		if r.err == nil && l.kind != segFile && l.kind != segDevice {
			r.fail("layer %d: segment kind %d", i, l.kind)
		}
		// Every segment takes at least three bytes of the table: the
		// count is bounded by what is left before anything is allocated.
		ns := r.num("segments", int64(len(r.b)/3))
		segs += ns
		if segs > maxIndexSegments {
			r.fail("more than %d segments", maxIndexSegments)
		}
		if r.err != nil {
			break
		}
		l.segs = make([]segment, 0, ns)
		var end, content int64
		prev := ""
		for j := int64(0); j < ns && r.err == nil; j++ {
			gap := r.num("gap", l.size-end)
			s := segment{off: end + gap}
			s.n = r.num("segment length", l.size-s.off)
			if r.err == nil && s.n == 0 {
				r.fail("layer %d: empty segment", i)
			}
			s.inline = s.off - content
			if l.kind == segFile {
				k := r.num("shared prefix", int64(len(prev)))
				suf := r.bytes("path", r.num("path length", maxPathLen-k))
				if r.err != nil {
					break
				}
				s.path = prev[:k] + string(suf)
				if _, err := cleanName(s.path); err != nil || s.path == "" || strings.HasPrefix(s.path, "/") {
					r.fail("layer %d: path %q", i, truncName(s.path))
				}
				prev = s.path
			} else {
				s.dev = r.num("device offset", 1<<62)
			}
			end, content = s.off+s.n, content+s.n
			l.segs = append(l.segs, s)
		}
		inline := l.size - content
		// Every chunk takes two bytes of the table and one of the chunk
		// area at least.
		nc := r.num("chunks", min(int64(len(r.b)/2), chunkArea-fileOff))
		chunks += nc
		if chunks > maxIndexChunks {
			r.fail("more than %d chunks", maxIndexChunks)
		}
		if r.err != nil {
			break
		}
		l.chunks = make([]chunk, 0, nc)
		var rawOff int64
		for j := int64(0); j < nc && r.err == nil; j++ {
			c := chunk{fileOff: fileOff, rawOff: rawOff}
			c.clen = r.num("chunk length", chunkArea-fileOff)
			c.raw = r.num("chunk size", min(maxIndexChunk, inline-rawOff))
			if r.err == nil && (c.raw == 0 || c.clen == 0) {
				r.fail("layer %d: empty chunk", i)
			}
			fileOff, rawOff = fileOff+c.clen, rawOff+c.raw
			l.chunks = append(l.chunks, c)
		}
		if r.err == nil && rawOff != inline {
			r.fail("layer %d: chunks hold %d inline bytes, the layer has %d", i, rawOff, inline)
		}
		layers = append(layers, l)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d bytes after the table", len(r.b))
	}
	if r.err == nil && fileOff != chunkArea {
		r.fail("chunks end at %d, the table starts at %d", fileOff, chunkArea)
	}
	if r.err != nil {
		return nil, r.err
	}
	return layers, nil
}

// find returns the index of the content segment holding layer offset off,
// or of the first one after it (len(segs) if none).
func (l *layerIndex) find(off int64) int {
	return sort.Search(len(l.segs), func(i int) bool { return l.segs[i].off+l.segs[i].n > off })
}

// inlineAt maps layer offset off, which lies in no content segment, to its
// offset in the inline stream; i is l.find(off).
func (l *layerIndex) inlineAt(off int64, i int) int64 {
	if i < len(l.segs) {
		return l.segs[i].inline - (l.segs[i].off - off)
	}
	var content int64
	if len(l.segs) > 0 {
		last := l.segs[len(l.segs)-1]
		content = last.off + last.n - last.inline
	}
	return off - content
}

// newIndexDecoder returns a zstd decoder whose DecodeAll output is bounded
// by limit (the table's, or a chunk's); DecodeAll on it is safe for
// concurrent use.
func newIndexDecoder(limit uint64) (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxMemory(limit),
		zstd.WithDecoderMaxWindow(8<<20))
}
