package slots

// Recording the layer index while a slot is written: the layer streams
// pass through a recorder on their way to the extractor (or the raw
// writer), which keeps the bytes that are not file content and is told,
// by the writer, where each file's content starts and where it is put.

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

func indexPath(stateDir string, id SlotID) string {
	return filepath.Join(stateDir, "layers-"+string(id)+".idx")
}

// indexWriter records the layer index of one install into a temporary
// file in the state directory; commit makes it the slot's index. An index
// that cannot be recorded within the limits (or whose layer does not read
// as the writer said) is abandoned: the install goes on without one, and
// the slot's layers are simply not a delta base. Errors of the state
// directory itself fail the install.
type indexWriter struct {
	fsys    vfs.FS
	path    string
	f       vfs.File
	off     int64
	enc     *zstd.Encoder
	diffIDs []digest.Digest
	layers  []*layerIndex
	segs    int
	chunks  int
	paths   int64
	// limits, which tests lower
	maxSegs, maxChunks int
	skip               string // why the index is abandoned ("": it is not)
	err                error  // sticky write error
}

// recordLimits are the recorder's limits; tests lower them.
var recordLimits = struct{ segs, chunks int }{maxIndexSegments, maxIndexChunks}

// newIndexWriter starts the index of slot id; diffIDs, when given, name
// the layers (otherwise each layer is hashed as it passes).
func newIndexWriter(fsys vfs.FS, stateDir string, id SlotID, diffIDs []digest.Digest) (*indexWriter, error) {
	path := indexPath(stateDir, id)
	f, err := fsys.Create(path+".tmp", 0o644)
	if err != nil {
		return nil, fmt.Errorf("slots: layer index: %w", err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithWindowSize(indexChunk))
	if err != nil {
		f.Close()
		return nil, err
	}
	return &indexWriter{fsys: fsys, path: path, f: f, enc: enc, diffIDs: diffIDs,
		maxSegs: recordLimits.segs, maxChunks: recordLimits.chunks}, nil
}

func (w *indexWriter) abandon(format string, args ...any) {
	if w.skip == "" {
		w.skip = fmt.Sprintf(format, args...)
	}
}

// write appends a compressed chunk to the temporary file.
func (w *indexWriter) write(b []byte) {
	if w.err != nil || w.skip != "" {
		return
	}
	if w.off+int64(len(b)) > MaxIndexSize-footerSize {
		w.abandon("index over %d bytes", MaxIndexSize)
		return
	}
	if _, err := w.f.Write(b); err != nil {
		w.err = fmt.Errorf("slots: layer index: %w", err)
		return
	}
	w.off += int64(len(b))
}

// begin starts layer i, read through the returned recorder.
func (w *indexWriter) begin(i int, r io.Reader) *layerRec {
	l := &layerIndex{kind: segFile}
	rec := &layerRec{w: w, r: r, l: l, buf: make([]byte, 0, indexChunk)}
	if i < len(w.diffIDs) {
		l.diffID = w.diffIDs[i]
	} else {
		rec.h = sha256.New()
	}
	return rec
}

// addWhole records a layer that is all device content: a raw slot written
// from the filesystem image itself.
func (w *indexWriter) addWhole(d digest.Digest, n int64) {
	l := &layerIndex{diffID: d, size: n, kind: segDevice}
	if n > 0 {
		l.segs = []segment{{off: 0, n: n, dev: 0}}
	}
	w.layers = append(w.layers, l)
}

// commit writes the table and the footer, syncs the file and renames it
// over the slot's index, then syncs the directory. It returns the index's
// size, 0 and the reason when it was abandoned.
func (w *indexWriter) commit() (int64, string, error) {
	if w.err != nil {
		return 0, "", errors.Join(w.err, w.discard())
	}
	if w.skip != "" {
		return 0, w.skip, w.discard()
	}
	seen := map[digest.Digest]bool{}
	for _, l := range w.layers {
		if seen[l.diffID] {
			// The same layer twice in one image: the later one is what
			// the slot shows; the earlier is dropped from the index.
			w.abandon("layer %s listed twice", l.diffID)
			return 0, w.skip, w.discard()
		}
		seen[l.diffID] = true
	}
	tableOff := w.off
	table := w.enc.EncodeAll(encodeTable(w.layers), nil)
	if len(table) > 1<<31 {
		w.abandon("index table too large")
		return 0, w.skip, w.discard()
	}
	w.write(table)
	w.write(appendFooter(nil, tableOff, len(table)))
	if w.err != nil || w.skip != "" {
		return w.commit()
	}
	if err := w.f.Sync(); err != nil {
		return 0, "", errors.Join(fmt.Errorf("slots: layer index: %w", err), w.discard())
	}
	if err := w.f.Close(); err != nil {
		w.f = nil
		return 0, "", errors.Join(fmt.Errorf("slots: layer index: %w", err), w.discard())
	}
	w.f = nil
	if err := w.fsys.Rename(w.path+".tmp", w.path); err != nil {
		return 0, "", fmt.Errorf("slots: layer index: %w", err)
	}
	if err := vfs.SyncDir(w.fsys, filepath.Dir(w.path)); err != nil {
		return 0, "", fmt.Errorf("slots: layer index: %w", err)
	}
	return w.off, "", nil
}

// discard removes the temporary file (after a failed install, or an
// abandoned index). It is a no-op after commit.
func (w *indexWriter) discard() error {
	if w == nil || w.fsys == nil {
		return nil
	}
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	err := w.fsys.Remove(w.path + ".tmp")
	w.fsys = nil
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// layerRec is one layer stream on its way to the writer: it keeps what is
// not file content and counts what is.
type layerRec struct {
	w          *indexWriter
	r          io.Reader
	l          *layerIndex
	h          hash.Hash // nil when the diff_id is given
	pos        int64
	contentEnd int64 // the current content segment's end (<= pos: none)
	content    int64 // content bytes so far
	inline     int64 // inline bytes so far
	buf        []byte
}

func (r *layerRec) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.consume(p[:n])
	}
	return n, err
}

func (r *layerRec) consume(b []byte) {
	if r.h != nil {
		r.h.Write(b)
	}
	for len(b) > 0 {
		if r.pos < r.contentEnd {
			k := min(int64(len(b)), r.contentEnd-r.pos)
			r.pos += k
			b = b[k:]
			continue
		}
		// Inline bytes, up to the end of b (a content segment starts only
		// when the writer says so, between reads).
		r.pos += int64(len(b))
		r.inline += int64(len(b))
		if r.w.skip != "" {
			return
		}
		for len(b) > 0 {
			k := min(len(b), indexChunk-len(r.buf))
			r.buf = append(r.buf, b[:k]...)
			b = b[k:]
			if len(r.buf) == indexChunk {
				r.flush()
			}
		}
	}
}

// flush compresses the pending inline bytes as one chunk.
func (r *layerRec) flush() {
	if len(r.buf) == 0 || r.w.skip != "" {
		r.buf = r.buf[:0]
		return
	}
	if r.w.chunks++; r.w.chunks > r.w.maxChunks {
		r.w.abandon("more than %d inline chunks (%d bytes of headers and padding)", r.w.maxChunks, r.w.maxChunks*indexChunk)
		r.buf = r.buf[:0]
		return
	}
	c := chunk{fileOff: r.w.off, rawOff: r.inline - int64(len(r.buf)), raw: int64(len(r.buf))}
	z := r.w.enc.EncodeAll(r.buf, nil)
	c.clen = int64(len(z))
	r.w.write(z)
	r.l.chunks = append(r.l.chunks, c)
	r.buf = r.buf[:0]
}

// file says that the next size bytes of the stream are the content of the
// regular file rel (slot-relative). Called after the tar reader returned
// the entry's header and before its content is read.
func (r *layerRec) file(rel string, size int64) { r.segment(segment{path: rel, n: size}, segFile) }

// device says that the next size bytes of the stream go to the device at
// offset dev.
func (r *layerRec) device(dev, size int64) { r.segment(segment{dev: dev, n: size}, segDevice) }

func (r *layerRec) segment(s segment, kind byte) {
	if r == nil || s.n <= 0 {
		return
	}
	w := r.w
	switch {
	case r.pos < r.contentEnd:
		// The previous content did not read as its size (a sparse file
		// the check below missed): the index would not give the layer
		// back.
		w.abandon("content at %d read short", r.pos)
	case len(r.l.segs) > 0 && r.l.kind != kind:
		w.abandon("a layer with both files and device content")
	case w.segs >= w.maxSegs:
		w.abandon("more than %d files", w.maxSegs)
	case w.paths+int64(len(s.path)) > maxIndexTable/2:
		w.abandon("paths over %d bytes", maxIndexTable/2)
	}
	r.l.kind = kind
	s.off, s.inline = r.pos, r.inline
	r.contentEnd = r.pos + s.n
	r.content += s.n
	if w.skip != "" {
		return
	}
	w.segs++
	w.paths += int64(len(s.path))
	r.l.segs = append(r.l.segs, s)
}

// end reads the rest of the stream (what follows the end of the archive is
// part of the layer and of its diff_id), and closes the layer. A read error
// is returned: the stream's producer may report a bad layer only at its
// end.
func (r *layerRec) end() error {
	if r == nil {
		return nil
	}
	buf := make([]byte, 32<<10)
	for {
		_, err := r.Read(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if r.pos < r.contentEnd {
		r.w.abandon("layer ends inside a file's content")
	}
	r.flush()
	r.l.size = r.pos
	if r.h != nil {
		r.l.diffID = digest.NewDigestFromBytes(digest.SHA256, r.h.Sum(nil))
	}
	r.w.layers = append(r.w.layers, r.l)
	return nil
}

// sparse reports whether a tar header describes a GNU sparse file, whose
// archived bytes are not the file's content.
func sparse(pax map[string]string) bool {
	for k := range pax {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// dropIndex removes slot id's layer index (and a temporary one a crash
// left), durably: called once the slot is recorded writing, before its
// content changes, so that an index never describes other content.
func (m *Manager) dropIndex(id SlotID) error {
	p := indexPath(m.o.StateDir, id)
	removed := false
	for _, name := range []string{p, p + ".tmp"} {
		err := m.o.FS.Remove(name)
		if err == nil {
			removed = true
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("slots: layer index: %w", err)
		}
	}
	if removed {
		if err := vfs.SyncDir(m.o.FS, m.o.StateDir); err != nil {
			return fmt.Errorf("slots: layer index: %w", err)
		}
	}
	return nil
}
