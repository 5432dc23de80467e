package slots

// The slot-backed delta base: the layer tars installed into a slot, given
// back from the slot's own content and its layer index, so that a vehicle
// keeps no second copy of its image.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"sync"

	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// maxOpenFiles is how many slot files a LayerBase keeps open: a delta
// reads the base almost in layer order, so a few suffice.
const maxOpenFiles = 16

// LayerBase gives random access to the uncompressed layer tars installed
// into a slot, rebuilt from the slot's content and the layer index
// recorded at install: tar headers, padding and the like from the index;
// a regular file's content from the file in the slot (a directory slot,
// opened beneath the slot root without following symlinks) or from the
// device (a raw slot). It holds no copy of the layers.
//
// Its Layer method makes it a delta.Base. The bytes are whatever the slot
// holds now: a file changed after install (a local /etc edit), replaced or
// removed by a later layer of the image, or a bit flip reads as different
// bytes, which the delta engine's per-range digests report as a mismatch
// (delta.MismatchError) before anything is rebuilt from them.
//
// A LayerBase is safe for concurrent use. Its memory is the index's table
// (about a hundred bytes per file of the image), two decompressed chunks
// of 64 KiB and up to 16 open files, whatever the layers' size.
type LayerBase struct {
	slot   SlotID
	layers map[digest.Digest]*layerIndex
	order  []digest.Digest
	index  vfs.File
	dec    *zstd.Decoder

	root  *root    // directory slot
	dev   vfs.File // raw slot
	files fileCache

	mu     sync.Mutex // the chunk cache
	cached [2]cachedChunk
	tick   uint64
}

type cachedChunk struct {
	l    *layerIndex
	i    int
	data []byte
	used uint64
}

// Base opens slot id as a delta base: the layers installed into it, read
// from the slot and its layer index. The slot must hold a verified image
// (written, pending or good: usually the booted slot) installed with an
// index (ErrNoIndex otherwise); a damaged index gives ErrIndex. Open it
// before writing the other slot, whose layers are rebuilt from it; Close
// it when done. It reads the state under the state lock only: it does not
// wait for an install in progress.
func (m *Manager) Base(id SlotID) (*LayerBase, error) {
	if id != A && id != B {
		return nil, fmt.Errorf("%w: %q", ErrUnknownSlot, id)
	}
	m.mu.Lock()
	info, sl := m.st.Slots[id], m.slot(id)
	m.mu.Unlock()
	switch info.State {
	case Written, Pending, Good:
	default:
		return nil, fmt.Errorf("%w: slot %s is %s", ErrNoIndex, id, info.State)
	}
	f, err := m.o.FS.Open(indexPath(m.o.StateDir, id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: slot %s", ErrNoIndex, id)
	}
	if err != nil {
		return nil, fmt.Errorf("slots: layer index: %w", err)
	}
	b := &LayerBase{slot: id, index: f, layers: map[digest.Digest]*layerIndex{}}
	b.files.b = b
	if err := b.open(m, sl, f); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *LayerBase) open(m *Manager, sl Slot, f vfs.File) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("slots: layer index: %w", err)
	}
	tdec, err := newIndexDecoder(maxIndexTable)
	if err != nil {
		return err
	}
	layers, err := decodeIndex(f, fi.Size(), tdec)
	tdec.Close()
	if err != nil {
		return fmt.Errorf("slot %s: %w", b.slot, err)
	}
	if b.dec, err = newIndexDecoder(maxIndexChunk); err != nil {
		return err
	}
	var files, device bool
	for _, l := range layers {
		b.layers[l.diffID] = l
		b.order = append(b.order, l.diffID)
		files = files || (l.kind == segFile && len(l.segs) > 0)
		device = device || (l.kind == segDevice && len(l.segs) > 0)
	}
	if device && sl.Backend != BackendRaw || files && sl.Backend != BackendDir {
		return fmt.Errorf("%w: slot %s: index of another kind of slot", ErrIndex, b.slot)
	}
	switch {
	case files:
		if b.root, err = openRoot(sl.Path); err != nil {
			return err
		}
	case device:
		if b.dev, err = m.o.FS.Open(sl.Path); err != nil {
			return fmt.Errorf("slots: raw slot: %w", err)
		}
	}
	return nil
}

// Slot is the slot the base reads.
func (b *LayerBase) Slot() SlotID { return b.slot }

// Layers lists the diff_ids of the layers the base gives back, in install
// order: what the ground may reference (or reuse) in a delta.
func (b *LayerBase) Layers() []digest.Digest { return append([]digest.Digest(nil), b.order...) }

// Size returns the size of layer d's tar, and whether the base has it.
func (b *LayerBase) Size(d digest.Digest) (int64, bool) {
	l := b.layers[d]
	if l == nil {
		return 0, false
	}
	return l.size, true
}

// Layer returns random access to layer d's uncompressed tar, or nil when
// the slot does not hold it (delta.Base). ReadAt returns io.EOF only
// beyond the layer's end; a part of the layer that cannot be read from the
// slot (a file removed or no longer regular) is an error naming the file.
func (b *LayerBase) Layer(d digest.Digest) io.ReaderAt {
	l := b.layers[d]
	if l == nil {
		return nil
	}
	return &layerReader{b: b, l: l}
}

// Close releases the index, the slot's open files and the device.
func (b *LayerBase) Close() error {
	b.files.closeAll()
	var errs []error
	if b.index != nil {
		errs = append(errs, b.index.Close())
	}
	if b.dev != nil {
		errs = append(errs, b.dev.Close())
	}
	if b.root != nil {
		b.root.close()
	}
	if b.dec != nil {
		b.dec.Close()
	}
	return errors.Join(errs...)
}

type layerReader struct {
	b *LayerBase
	l *layerIndex
}

// Size is the layer's size.
func (r *layerReader) Size() int64 { return r.l.size }

func (r *layerReader) ReadAt(p []byte, off int64) (int, error) {
	l := r.l
	if off < 0 {
		return 0, fmt.Errorf("slots: layer %s: negative offset", l.diffID)
	}
	n := 0
	for n < len(p) && off < l.size {
		i := l.find(off)
		var k int
		var err error
		if i < len(l.segs) && l.segs[i].off <= off {
			s := &l.segs[i]
			want := min(int64(len(p)-n), s.off+s.n-off)
			k, err = r.b.content(s, off-s.off, p[n:n+int(want)])
		} else {
			next := l.size
			if i < len(l.segs) {
				next = l.segs[i].off
			}
			want := min(int64(len(p)-n), next-off)
			k, err = r.b.inline(l, l.inlineAt(off, i), p[n:n+int(want)])
		}
		n += k
		off += int64(k)
		if err != nil {
			return n, fmt.Errorf("slots: layer %s of slot %s: %w", l.diffID, r.b.slot, err)
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// content reads len(p) bytes of content segment s from within (fills p or
// fails).
func (b *LayerBase) content(s *segment, within int64, p []byte) (int, error) {
	if s.path == "" {
		k, err := b.dev.ReadAt(p, s.dev+within)
		if k < len(p) {
			return k, fmt.Errorf("device bytes [%d,+%d): %v", s.dev+within, len(p), orShort(err))
		}
		return k, nil
	}
	of, err := b.files.get(s.path)
	if err != nil {
		return 0, err
	}
	k, err := of.f.ReadAt(p, within)
	b.files.put(of)
	if k < len(p) {
		return k, fmt.Errorf("file %s: %d of %d bytes at %d: %v", s.path, k, len(p), within, orShort(err))
	}
	return k, nil
}

func orShort(err error) error {
	if err == nil || err == io.EOF {
		return errors.New("shorter than in the layer")
	}
	return err
}

// inline reads len(p) bytes of l's inline stream from off.
func (b *LayerBase) inline(l *layerIndex, off int64, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		i := sort.Search(len(l.chunks), func(i int) bool { return l.chunks[i].rawOff+l.chunks[i].raw > off })
		if i == len(l.chunks) {
			return n, fmt.Errorf("%w: inline byte %d beyond the chunks", ErrIndex, off)
		}
		k, err := b.chunkCopy(l, i, off-l.chunks[i].rawOff, p[n:])
		n += k
		off += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// chunkCopy copies from chunk i of l, decoded (or cached), from within.
func (b *LayerBase) chunkCopy(l *layerIndex, i int, within int64, p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tick++
	var c *cachedChunk
	for j := range b.cached {
		if b.cached[j].l == l && b.cached[j].i == i && b.cached[j].data != nil {
			c = &b.cached[j]
		}
	}
	if c == nil {
		c = &b.cached[0]
		if b.cached[1].used < c.used {
			c = &b.cached[1]
		}
		ch := l.chunks[i]
		comp := make([]byte, ch.clen)
		if _, err := b.index.ReadAt(comp, ch.fileOff); err != nil {
			return 0, fmt.Errorf("%w: read chunk: %v", ErrIndex, err)
		}
		data, err := b.dec.DecodeAll(comp, c.data[:0])
		if err != nil || int64(len(data)) != ch.raw {
			c.data = nil
			return 0, fmt.Errorf("%w: chunk %d of layer %s: %d bytes, want %d: %v", ErrIndex, i, l.diffID, len(data), ch.raw, err)
		}
		c.l, c.i, c.data = l, i, data
	}
	c.used = b.tick
	return copy(p, c.data[within:]), nil
}

// fileCache keeps a few of the slot's files open, since a delta reads the
// same file in several pieces.
type fileCache struct {
	b    *LayerBase
	mu   sync.Mutex
	m    map[string]*openFile
	tick uint64
}

type openFile struct {
	f    *os.File
	path string
	refs int
	used uint64
	dead bool // evicted while in use: closed by the last put
}

func (c *fileCache) get(path string) (*openFile, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tick++
	if of := c.m[path]; of != nil {
		of.refs++
		of.used = c.tick
		return of, nil
	}
	// The root's parent lookup is not safe for concurrent use: opening
	// happens under the lock.
	f, err := c.b.root.openFile(path)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = map[string]*openFile{}
	}
	of := &openFile{f: f, path: path, refs: 1, used: c.tick}
	c.m[path] = of
	if len(c.m) > maxOpenFiles {
		var lru *openFile
		for _, o := range c.m {
			if o != of && (lru == nil || o.used < lru.used) {
				lru = o
			}
		}
		delete(c.m, lru.path)
		if lru.refs == 0 {
			lru.f.Close()
		} else {
			lru.dead = true
		}
	}
	return of, nil
}

func (c *fileCache) put(of *openFile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	of.refs--
	if of.dead && of.refs == 0 {
		of.f.Close()
	}
}

func (c *fileCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, of := range c.m {
		if of.refs == 0 {
			of.f.Close()
		} else {
			of.dead = true
		}
		delete(c.m, p)
	}
}
