package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"

	"github.com/bootorbit/bootorbit/delta/bsdiff"
	"github.com/opencontainers/go-digest"
)

// Options tune Compute.
type Options struct {
	// TempDir holds the uncompressed layers while the delta is computed
	// ("" means os.TempDir()).
	TempDir string
	// PartSize is the output bytes a part rebuilds, at most (0 means
	// DefaultPartSize). Smaller parts are finer units of transfer and of
	// base-mismatch recovery; larger ones give literal data more context.
	PartSize int64
	// Tag is recorded in the bundle as the target image's name.
	Tag string
	// Log receives progress (nil: silent).
	Log *slog.Logger

	// fastZstd selects a fast zstd level: fuzz tests run thousands of
	// tiny bundles, for which the best level's table setup dominates.
	fastZstd bool
}

// DefaultPartSize is the default output size of a part.
const DefaultPartSize = 32 << 20

// Stats describe a computed bundle.
type Stats struct {
	Layers     []LayerStats
	BundleSize int64
}

// LayerStats describe the plan for one target layer.
type LayerStats struct {
	DiffID   digest.Digest
	Size     int64 // uncompressed tar
	Decision string
	Parts    int
	Payload  int64 // compressed bytes in the bundle
	// Files by how their content was coded.
	Copied, Diffed, Literal int
	// Opaque counts the stretches coded as opaque byte streams against a
	// base stretch (opaque.go): a layer that is not a tar, a large
	// trailer, a very large file.
	Opaque int
	// Streams totals the parts' streams (ops, zero-runs, nonzero-runs,
	// diff, lit).
	Streams [numStreams]Stream
}

// LayerSource is a layer by its diff_id and a way to read its uncompressed
// tar (verified against the diff_id by whoever provides it).
type LayerSource struct {
	DiffID digest.Digest
	Open   func() (io.ReadCloser, error)
}

// Target describes the image a bundle rebuilds.
type Target struct {
	Config      []byte // the image config, verbatim
	Annotations map[string]string
	Layers      []LayerSource // in config order
}

// spooled is a layer's uncompressed tar on disk with its entry list.
type spooled struct {
	idx     int
	diffID  digest.Digest
	f       *os.File
	size    int64
	entries []entry
	trailer int64
	// holes are the content extents of the files the vehicle does not
	// hold as this layer has them (shadow.go), in order.
	holes [][2]int64
}

func (s *spooled) unheld(off, end int64) bool {
	i := sort.Search(len(s.holes), func(i int) bool { return s.holes[i][1] > off })
	return i < len(s.holes) && s.holes[i][0] < end
}

func (s *spooled) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

func (s *spooled) pathAt(off int64) string {
	if len(s.entries) == 0 {
		return "" // not a tar: a range is named by its offsets
	}
	i := sort.Search(len(s.entries), func(i int) bool { return s.entries[i].end() > off })
	if i < len(s.entries) {
		return s.entries[i].Path
	}
	return "(end of archive)"
}

func (s *spooled) filesIn(off, n int64) int {
	a := sort.Search(len(s.entries), func(i int) bool { return s.entries[i].HdrOff >= off })
	b := sort.Search(len(s.entries), func(i int) bool { return s.entries[i].HdrOff >= off+n })
	return b - a
}

func (s *spooled) read(off, n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := s.f.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("delta: read spooled layer %s: %w", s.diffID, err)
	}
	return b, nil
}

func (s *spooled) close() {
	name := s.f.Name()
	s.f.Close()
	os.Remove(name)
}

// spool copies a layer to a temporary file, checks its digest, lists its
// entries and digests their contents.
func spool(ctx context.Context, dir string, idx int, src LayerSource) (*spooled, error) {
	rc, err := src.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	f, err := os.CreateTemp(dir, "delta-layer-*")
	if err != nil {
		return nil, fmt.Errorf("delta: spool: %w", err)
	}
	s := &spooled{idx: idx, diffID: src.DiffID, f: f}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(f, h), ctxReader{ctx, rc}, make([]byte, 1<<20))
	if err != nil {
		s.close()
		return nil, fmt.Errorf("delta: read layer %s: %w", src.DiffID, err)
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != src.DiffID {
		s.close()
		return nil, fmt.Errorf("%w: layer %s reads as %s", ErrOutput, src.DiffID, got)
	}
	s.size = n
	s.entries, s.trailer, err = scanTar(f, n)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("delta: scan layer %s: %w", src.DiffID, err)
	}
	buf := make([]byte, 1<<20)
	for i := range s.entries {
		e := &s.entries[i]
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(f, e.DataOff, e.DataLen), buf); err != nil {
			s.close()
			return nil, err
		}
		copy(e.Sum[:], h.Sum(nil))
		pad := buf[:e.PadLen]
		if _, err := f.ReadAt(pad, e.DataOff+e.DataLen); err != nil {
			s.close()
			return nil, err
		}
		e.PadZero = isZero(pad)
	}
	return s, nil
}

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

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func isRegular(t byte) bool { return t == '0' || t == 0 || t == '7' }

type ref struct{ layer, entry int }

// index finds old entries by path, content, versionless path and basename.
type index struct {
	old     []*spooled
	byPath  map[string]ref
	bySum   map[[32]byte]ref
	byFuzzy map[string]ref
	byBase  map[string]ref
	// The suffix array of the old file last coded against: several new
	// files often find the same old one (by basename, say).
	lastRef ref
	lastIdx *bsdiff.Index
	// shadow: base files the vehicle's slot does not hold as their layer
	// has them (shadow.go); nothing is copied from them.
	shadow map[ref]bool
	// partial: base layers with such files, which are not reused.
	partial map[int]int
}

// diffIndex returns the alignment index of old file r.
func (x *index) diffIndex(r ref, old []byte) *bsdiff.Index {
	if x.lastIdx == nil || x.lastRef != r {
		x.lastRef, x.lastIdx = r, bsdiff.NewIndex(old)
	}
	return x.lastIdx
}

func newIndex(old []*spooled) *index {
	x := &index{old: old, byPath: map[string]ref{}, bySum: map[[32]byte]ref{}, byFuzzy: map[string]ref{}, byBase: map[string]ref{},
		shadow: shadowedFiles(old), partial: map[int]int{}}
	for r := range x.shadow {
		x.partial[r.layer]++
	}
	// Later layers win: they hold what the old image shows at that path.
	for li, l := range old {
		for ei := range l.entries {
			e := &l.entries[ei]
			r := ref{li, ei}
			x.byPath[e.Path] = r
			if isRegular(e.Type) && e.DataLen > 0 && !x.shadow[r] {
				x.bySum[e.Sum] = r
				x.byFuzzy[fuzzyKey(e.Path)] = r
				x.byBase[baseName(e.Path)] = r
			}
		}
	}
	return x
}

func (x *index) entry(r ref) *entry { return &x.old[r.layer].entries[r.entry] }

// similar finds an old file to code a changed file against.
func (x *index) similar(e *entry) (ref, bool) {
	if r, ok := x.byPath[e.Path]; ok && x.entry(r).DataLen > 0 && isRegular(x.entry(r).Type) && !x.shadow[r] {
		return r, true
	}
	if r, ok := x.byFuzzy[fuzzyKey(e.Path)]; ok {
		return r, true
	}
	if r, ok := x.byBase[baseName(e.Path)]; ok {
		return r, true
	}
	return ref{}, false
}

// ComputeLayers writes to w a bundle that rebuilds target from base (the
// layers the vehicle holds).
func ComputeLayers(ctx context.Context, base []LayerSource, target Target, w io.Writer, opts Options) (Stats, error) {
	if opts.PartSize <= 0 {
		opts.PartSize = DefaultPartSize
	}
	if opts.PartSize > MaxPartOut {
		opts.PartSize = MaxPartOut
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var old []*spooled
	defer func() {
		for _, s := range old {
			s.close()
		}
	}()
	have := map[digest.Digest]int{}
	h := &Header{Version: Version, Config: target.Config, Annotations: target.Annotations, Tag: opts.Tag}
	for i, src := range base {
		s, err := spool(ctx, opts.TempDir, i, src)
		if err != nil {
			return Stats{}, err
		}
		old = append(old, s)
		have[src.DiffID] = i
		h.Base = append(h.Base, src.DiffID)
		log.Info("delta: base layer indexed", "layer", i, "diff_id", src.DiffID, "size", s.size, "entries", len(s.entries))
	}
	x := newIndex(old)
	for r := range x.shadow {
		e := x.entry(r)
		x.old[r.layer].holes = append(x.old[r.layer].holes, [2]int64{e.DataOff, e.DataOff + e.DataLen})
	}
	for _, s := range old {
		sort.Slice(s.holes, func(i, j int) bool { return s.holes[i][0] < s.holes[j][0] })
	}
	for li, n := range x.partial {
		log.Info("delta: base layer not whole in the tree (later layers remove or replace its files): not reused, those files not read",
			"layer", li, "diff_id", old[li].diffID, "files", n)
	}
	bases := make([]baseFile, len(old))
	for i, s := range old {
		bases[i] = s
	}

	payload, err := os.CreateTemp(opts.TempDir, "delta-payload-*")
	if err != nil {
		return Stats{}, fmt.Errorf("delta: %w", err)
	}
	defer func() {
		payload.Close()
		os.Remove(payload.Name())
	}()
	enc, err := getEncoders(opts.fastZstd)
	if err != nil {
		return Stats{}, err
	}
	defer putEncoders(enc)
	var st Stats
	var poff int64
	for li, src := range target.Layers {
		ls := LayerStats{DiffID: src.DiffID}
		if bi, ok := have[src.DiffID]; ok && x.partial[bi] == 0 {
			// The size of a reused layer is the base layer's.
			ls.Decision, ls.Size = Reuse, old[bi].size
			h.Layers = append(h.Layers, LayerPlan{DiffID: src.DiffID, Size: ls.Size, Decision: Reuse})
			st.Layers = append(st.Layers, ls)
			log.Info("delta: layer reused", "layer", li, "diff_id", src.DiffID)
			continue
		}
		nl, err := spool(ctx, opts.TempDir, li, src)
		if err != nil {
			return Stats{}, err
		}
		pe := newPartEncoder(bases, opts.PartSize, payload, poff, enc)
		err = encodeLayer(ctx, x, nl, pe, &ls)
		nl.close()
		if err != nil {
			return Stats{}, err
		}
		if err := pe.flush(); err != nil {
			return Stats{}, err
		}
		lp := LayerPlan{DiffID: src.DiffID, Size: nl.size, Decision: Full, Parts: pe.parts}
		for _, p := range pe.parts {
			if len(p.Ranges) > 0 {
				lp.Decision = Delta
			}
			for i, s := range p.Streams {
				ls.Streams[i].Len += s.Len
				ls.Streams[i].Raw += s.Raw
			}
		}
		ls.Size, ls.Decision, ls.Parts, ls.Payload = nl.size, lp.Decision, len(pe.parts), pe.poff-poff
		poff = pe.poff
		h.Layers = append(h.Layers, lp)
		st.Layers = append(st.Layers, ls)
		log.Info("delta: layer coded", "layer", li, "diff_id", src.DiffID, "decision", lp.Decision,
			"size", nl.size, "payload", ls.Payload, "parts", ls.Parts, "copied", ls.Copied, "diffed", ls.Diffed, "literal", ls.Literal,
			"ops", ls.Streams[streamOps], "runs", ls.Streams[streamZeros].Len+ls.Streams[streamNonZeros].Len,
			"diff", ls.Streams[streamDiff], "lit", ls.Streams[streamLit])
	}
	h.PayloadSize = poff
	n, err := writeHeader(w, h)
	if err != nil {
		return Stats{}, err
	}
	if _, err := payload.Seek(0, io.SeekStart); err != nil {
		return Stats{}, err
	}
	m, err := io.Copy(w, payload)
	if err != nil {
		return Stats{}, fmt.Errorf("delta: write bundle: %w", err)
	}
	if m != poff {
		return Stats{}, fmt.Errorf("delta: payload spool holds %d bytes, want %d", m, poff)
	}
	st.BundleSize = n + m
	return st, nil
}

// encodeLayer codes every byte of nl as part operations.
func encodeLayer(ctx context.Context, x *index, nl *spooled, pe *partEncoder, ls *LayerStats) error {
	var pos int64
	for i := range nl.entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := &nl.entries[i]
		if e.HdrOff != pos {
			return fmt.Errorf("delta: internal: entry %q at %d, expected %d", e.Path, e.HdrOff, pos)
		}
		pos = e.end()
		hb, err := nl.read(e.HdrOff, e.DataOff-e.HdrOff)
		if err != nil {
			return err
		}
		// The old entry whose header this one most likely edits.
		m, hasM := x.byPath[e.Path]
		if !hasM && isRegular(e.Type) && e.DataLen > 0 {
			m, hasM = x.bySum[e.Sum]
		}
		if !hasM {
			m, hasM = x.similar(e)
		}
		if hasM {
			ol := x.old[m.layer]
			me := x.entry(m)
			ohb, err := ol.read(me.HdrOff, me.DataOff-me.HdrOff)
			if err != nil {
				return err
			}
			if !x.shadow[m] && bytes.Equal(hb, ohb) && me.DataLen == e.DataLen && me.Sum == e.Sum && me.PadLen == e.PadLen && me.PadZero && e.PadZero {
				// The whole entry is unchanged: one copy, which merges
				// with its neighbours when they are unchanged too.
				if err := copyRange(pe, nl, e.HdrOff, e.end()-e.HdrOff, m.layer, me.HdrOff); err != nil {
					return err
				}
				if e.DataLen > 0 {
					ls.Copied++
				}
				continue
			}
			if err := encodeAgainst(pe, m.layer, me.HdrOff, ohb, hb); err != nil {
				return err
			}
		} else if err := pe.emit(opLit, 0, 0, hb, nil); err != nil {
			return err
		}
		if e.DataLen > 0 {
			if err := encodeContent(ctx, x, nl, e, pe, ls); err != nil {
				return err
			}
		}
		if e.PadZero {
			if err := pe.emitZero(e.PadLen); err != nil {
				return err
			}
		} else if err := literal(pe, nl, e.DataOff+e.DataLen, e.PadLen); err != nil {
			return err
		}
	}
	if pos != nl.trailer {
		return fmt.Errorf("delta: internal: trailer at %d, entries end at %d", nl.trailer, pos)
	}
	n := nl.size - nl.trailer
	zero, err := zeroStretch(nl, nl.trailer, n)
	if err != nil {
		return err
	}
	switch {
	case zero:
		return pe.emitZero(n)
	case n >= opaqueTrailer:
		// Not tar structure (a layer that is not a tar at all: a raw
		// slot's filesystem image): one opaque stretch against the base
		// layer at the same index.
		old, oOff, oLen := x.sameIndex(nl.idx)
		return encodeOpaque(ctx, pe, nl, nl.trailer, n, old, nl.idx, oOff, oLen, ls)
	}
	return literal(pe, nl, nl.trailer, n)
}

// sameIndex returns the base stretch an opaque trailer of target layer li
// is coded against: the whole base layer at index li when it is not a tar
// either (no member found); the content of its file when it is a tar
// holding one regular file (the other form of a raw slot's layer: the
// filesystem image in a tar); else its own trailer. Nil when the base has
// no layer li.
func (x *index) sameIndex(li int) (io.ReaderAt, int64, int64) {
	if li >= len(x.old) {
		return nil, 0, 0
	}
	o := x.old[li]
	if len(o.entries) == 0 {
		return o, 0, o.size
	}
	if len(o.entries) == 1 && isRegular(o.entries[0].Type) {
		e := &o.entries[0]
		return o, e.DataOff, e.DataLen
	}
	return o, o.trailer, o.size - o.trailer
}

// zeroStretch reports whether n bytes of nl at off are all zero, reading
// them in pieces.
func zeroStretch(nl *spooled, off, n int64) (bool, error) {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := nl.f.ReadAt(buf[:k], off); err != nil {
			return false, fmt.Errorf("delta: read spooled layer %s: %w", nl.diffID, err)
		}
		if !isZero(buf[:k]) {
			return false, nil
		}
		off, n = off+k, n-k
	}
	return true, nil
}

func encodeContent(ctx context.Context, x *index, nl *spooled, e *entry, pe *partEncoder, ls *LayerStats) error {
	if r, ok := x.bySum[e.Sum]; ok && x.entry(r).DataLen == e.DataLen {
		ls.Copied++
		return copyRange(pe, nl, e.DataOff, e.DataLen, r.layer, x.entry(r).DataOff)
	}
	r, ok := x.similar(e)
	if !ok {
		if nl.idx < len(x.old) && len(x.old[nl.idx].entries) == 0 && e.DataLen >= opaqueTrailer {
			// The base layer at this index is not a tar (a raw slot's
			// image) and this one holds a large file (the image in its
			// tar form): coded against it.
			ls.Diffed++
			o := x.old[nl.idx]
			return encodeOpaque(ctx, pe, nl, e.DataOff, e.DataLen, o, nl.idx, 0, o.size, ls)
		}
		ls.Literal++
		return literal(pe, nl, e.DataOff, e.DataLen)
	}
	ls.Diffed++
	oe := x.entry(r)
	if oe.DataLen > opaqueFile || e.DataLen > opaqueFile {
		// Too large to align whole in bounded memory (a filesystem image
		// in a tar, say): coded block-wise against the old version, as
		// a layer that is not a tar is.
		return encodeOpaque(ctx, pe, nl, e.DataOff, e.DataLen, x.old[r.layer], r.layer, oe.DataOff, oe.DataLen, ls)
	}
	old, err := x.old[r.layer].read(oe.DataOff, oe.DataLen)
	if err != nil {
		return err
	}
	nw, err := nl.read(e.DataOff, e.DataLen)
	if err != nil {
		return err
	}
	if len(old) == len(nw) && mostlyEqual(old, nw) {
		return pe.emit(opAdd, r.layer, oe.DataOff, nw, old)
	}
	return encodeAligned(pe, x.diffIndex(r, old), r.layer, oe.DataOff, old, nw)
}

// encodeAgainst codes nw as an edit of old, which lies at (layer, off).
func encodeAgainst(pe *partEncoder, layer int, off int64, old, nw []byte) error {
	if len(old) == 0 {
		return pe.emit(opLit, 0, 0, nw, nil)
	}
	if len(old) == len(nw) && mostlyEqual(old, nw) {
		return pe.emit(opAdd, layer, off, nw, old)
	}
	return encodeAligned(pe, bsdiff.NewIndex(old), layer, off, old, nw)
}

// mostlyEqual reports whether equal-length a and b agree in all but an
// eighth of their bytes (most headers, some rebuilt files), when a plain
// byte-wise difference is as good as an alignment.
func mostlyEqual(a, b []byte) bool {
	diff := 0
	for i := range a {
		if a[i] != b[i] {
			diff++
		}
	}
	return diff*8 <= len(a)
}

// encodeAligned codes nw by its bsdiff alignment against old.
func encodeAligned(pe *partEncoder, idx *bsdiff.Index, layer int, off int64, old, nw []byte) error {
	var err error
	idx.Diff(nw, func(c bsdiff.Control) {
		if err != nil {
			return
		}
		if c.Add > 0 {
			err = pe.emit(opAdd, layer, off+int64(c.OldPos), nw[c.NewPos:c.NewPos+c.Add], old[c.OldPos:c.OldPos+c.Add])
		}
		if err == nil && c.Extra > 0 {
			err = pe.emit(opLit, 0, 0, nw[c.NewPos+c.Add:c.NewPos+c.Add+c.Extra], nil)
		}
	})
	return err
}

// copyRange emits a copy of n base bytes at (layer, off) that equal the
// new layer's bytes at newOff.
func copyRange(pe *partEncoder, nl *spooled, newOff, n int64, layer int, off int64) error {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := nl.f.ReadAt(buf[:k], newOff); err != nil {
			return err
		}
		if err := pe.emit(opCopy, layer, off, buf[:k], nil); err != nil {
			return err
		}
		newOff, off, n = newOff+k, off+k, n-k
	}
	return nil
}

// literal emits n bytes of the new layer at off as literal data.
func literal(pe *partEncoder, nl *spooled, off, n int64) error {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := nl.f.ReadAt(buf[:k], off); err != nil {
			return err
		}
		if err := pe.emit(opLit, 0, 0, buf[:k], nil); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}
