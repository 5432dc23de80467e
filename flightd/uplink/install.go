package uplink

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/opencontainers/go-digest"
)

// bundleRef is a bundle to install from and the plan that vouches for it.
type bundleRef struct {
	plan *update.Plan
	r    io.ReaderAt
	size int64
}

// outcome is what an install came to.
type outcome struct {
	slot     slots.SlotID
	res      *slots.InstallResult
	mismatch []layerParts // unresolved base mismatches: nothing was written
	code     protocol.Code
	err      error
}

// RunInstall installs the plan whose bundle is complete and verified, if
// one waits: it returns the plan's id (0: none waited) and the error of a
// failed install (also counted, reported as an event and kept in Status).
// It takes long (it writes a slot) and may run in its own goroutine while
// Step and Tick go on; a second call while one runs returns ErrBusy. When
// ctx ends, the plan stays installing and the next RunInstall starts it
// again.
func (e *Engine) RunInstall(ctx context.Context) (uint64, error) {
	if !e.installing.TryLock() {
		return 0, ErrBusy
	}
	defer e.installing.Unlock()
	e.mu.Lock()
	id, p := e.nextInstall()
	if p == nil || e.inst == nil {
		e.mu.Unlock()
		return 0, nil
	}
	plan, err := p.decoded()
	var primary bundleRef
	var supp *bundleRef
	if err == nil {
		primary, supp, err = e.bundles(plan, p)
	}
	e.mu.Unlock()
	var o outcome
	if err != nil {
		o = outcome{code: dict.CodeStorage, err: err}
	} else {
		o = e.install(ctx, plan, primary, supp)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inFlight = nil
	if ctx.Err() != nil && o.err != nil {
		return id, o.err // not a failure of the plan: retried at the next start
	}
	return id, e.record(id, p, plan, o)
}

// nextInstall returns the plan waiting for its install (received over the
// link; an offline install runs in InstallFile).
func (e *Engine) nextInstall() (uint64, *planRec) {
	for id, p := range e.plans {
		if p.State == stInstalling && !p.File {
			return id, p
		}
	}
	return 0, nil
}

// bundles returns the staged bundle to install plan from and, for a
// supplement, the supplement's bundle of substitutes.
func (e *Engine) bundles(plan *update.Plan, p *planRec) (bundleRef, *bundleRef, error) {
	ref := func(pl *update.Plan, xid uint64) (bundleRef, error) {
		r, n, err := e.st.Reader(xid)
		if err != nil {
			return bundleRef{}, err
		}
		return bundleRef{plan: pl, r: r, size: n}, nil
	}
	if plan.Supplement == 0 {
		b, err := ref(plan, p.Bundle)
		return b, nil, err
	}
	orig := e.plans[plan.Supplement]
	if orig == nil {
		return bundleRef{}, nil, fmt.Errorf("%w: plan %d supplements plan %d", ErrUnknownPlan, plan.ID, plan.Supplement)
	}
	op, err := orig.decoded()
	if err != nil {
		return bundleRef{}, nil, err
	}
	b, err := ref(op, orig.Bundle)
	if err != nil {
		return bundleRef{}, nil, err
	}
	s, err := ref(plan, p.Bundle)
	if err != nil {
		return bundleRef{}, nil, err
	}
	return b, &s, nil
}

// record journals an install's outcome and reports it.
func (e *Engine) record(id uint64, p *planRec, plan *update.Plan, o outcome) error {
	slot := strings.ToLower(string(o.slot))
	if slot == "" {
		slot = "none"
	}
	target := p // the plan whose state says what happened to the image
	var orig *planRec
	if plan.Supplement != 0 {
		orig = e.plans[plan.Supplement]
	}
	freeBundles := func() {
		for xid, x := range e.xfers {
			if x.Plan == id || (orig != nil && x.Plan == plan.Supplement) {
				e.dropXfer(xid)
			}
		}
	}
	switch {
	case o.err == nil && o.mismatch == nil:
		rec := slotRec{Manifest: string(plan.Release.Release.Manifest), Version: plan.Release.Release.Version, Plan: id}
		if o.res != nil {
			rec.Digest = o.res.Digest
		}
		e.slotRecs[o.slot] = rec
		e.pendUp = append(e.pendUp, putSlotRec(o.slot, rec))
		p.State, p.Slot, p.Code = stInstalled, string(o.slot), 0
		if orig != nil {
			orig.State, orig.Slot, orig.Supplemented, orig.Mismatch = stInstalled, string(o.slot), id, nil
			e.pendUp = append(e.pendUp, putPlan(plan.Supplement, orig))
		}
		freeBundles()
		e.pendUp = append(e.pendUp, putPlan(id, p))
		e.event(dict.EvInstallDone, fmt.Sprintf("plan %d: release %d installed into slot %s", id, plan.Release.Release.Version, o.slot),
			dict.Values{"plan": id, "slot": slot, "version": plan.Release.Release.Version})
		return e.process(e.now)
	case o.mismatch != nil:
		if orig != nil {
			// The supplement did not resolve everything: it is spent; the
			// original waits for another one.
			p.State, p.Code = stFailed, uint16(dict.CodeBaseMismatch)
			e.pendUp = append(e.pendUp, putPlan(id, p))
			for xid, x := range e.xfers {
				if x.Plan == id {
					e.dropXfer(xid)
				}
			}
			target, id = orig, plan.Supplement
		}
		target.State, target.Mismatch = stBaseMismatch, o.mismatch
		e.pendUp = append(e.pendUp, putPlan(id, target))
		e.fail(dict.CodeBaseMismatch, fmt.Sprintf("plan %d: %d layers do not match the booted slot", id, len(o.mismatch)))
		e.mismatchEvents(id, plan, o.mismatch)
		return e.process(e.now)
	default:
		p.State, p.Code = stFailed, uint16(o.code)
		e.pendUp = append(e.pendUp, putPlan(id, p))
		if orig != nil {
			orig.State, orig.Code = stFailed, uint16(o.code)
			e.pendUp = append(e.pendUp, putPlan(plan.Supplement, orig))
		}
		freeBundles()
		e.fail(o.code, fmt.Sprintf("plan %d: %v", id, o.err))
		e.event(dict.EvInstallFailed, fmt.Sprintf("plan %d: %v", id, o.err), dict.Values{"plan": id, "slot": slot, "code": uint64(o.code)})
		if err := e.process(e.now); err != nil {
			return errors.Join(o.err, err)
		}
		return o.err
	}
}

func putSlotRec(id slots.SlotID, r slotRec) transfer.Record {
	return transfer.Record{Op: transfer.OpPut, Key: keySlot(id), Value: mustEncode(r)}
}

// mismatchEvents reports each layer's mismatching parts, at most
// dict.MaxPartsPerEvent per event.
func (e *Engine) mismatchEvents(id uint64, plan *update.Plan, ms []layerParts) {
	diffIDs, _ := update.DiffIDs(plan.Config)
	for _, m := range ms {
		var short []byte
		if m.Layer < len(diffIDs) {
			short = shortDigest(diffIDs[m.Layer])
		}
		parts := m.Parts
		for first := true; first || len(parts) > 0; first = false {
			n := min(len(parts), dict.MaxPartsPerEvent)
			b := []byte{} // never nil: a nil byte string encodes as null, which the ground refuses
			for _, pi := range parts[:n] {
				b = binary.BigEndian.AppendUint32(b, uint32(pi))
			}
			parts = parts[n:]
			text := fmt.Sprintf("plan %d layer %d: %d parts do not match the booted slot", id, m.Layer, n)
			if m.Whole {
				text = fmt.Sprintf("plan %d layer %d: the booted slot does not hold the reused layer", id, m.Layer)
			}
			e.event(dict.EvBaseMismatch, text, dict.Values{"plan": id, "layer": uint64(m.Layer), "diff_id": short, "parts": b, "more": len(parts) > 0})
		}
	}
}

func shortDigest(d digest.Digest) []byte {
	h := d.Encoded()
	var b []byte
	for i := 0; i+1 < len(h) && len(b) < dict.ShortDigestLen; i += 2 {
		var v byte
		if _, err := fmt.Sscanf(h[i:i+2], "%02x", &v); err != nil {
			break
		}
		b = append(b, v)
	}
	return b
}

// install checks the bundle(s) against their plans and the base, rebuilds
// every layer once without writing, and then streams the layers into the
// inactive slot. The slot is touched only after every check passed.
func (e *Engine) install(ctx context.Context, plan *update.Plan, primary bundleRef, supp *bundleRef) outcome {
	st := e.inst.Status()
	o := outcome{slot: st.Booted.Other()}
	if st.Booted != slots.A && st.Booted != slots.B {
		return outcome{code: dict.CodeBadState, err: fmt.Errorf("uplink: booted slot unknown (%q)", st.Booted)}
	}
	e.mu.Lock()
	e.inFlight, e.inSlot = &slotRec{Manifest: string(plan.Release.Release.Manifest), Version: plan.Release.Release.Version, Plan: plan.ID}, o.slot
	e.event(dict.EvInstallStarted, fmt.Sprintf("plan %d: installing into slot %s", plan.ID, o.slot), dict.Values{"plan": plan.ID, "slot": strings.ToLower(string(o.slot))})
	e.mu.Unlock()
	// A cut after the slot was recorded written but before the journal
	// said so: the slot holds this image, verified; record it.
	for _, s := range st.Slots {
		if s.ID == o.slot && s.State == slots.Written && s.Image == string(plan.Release.Release.Manifest) {
			o.res = &slots.InstallResult{Digest: s.Digest}
			return o
		}
	}
	layers, mism, code, err := e.prepare(ctx, plan, primary, supp)
	if err != nil {
		o.code, o.err = code, err
		return o
	}
	if mism != nil {
		o.mismatch = mism
		return o
	}
	// Dry run: every layer rebuilt and checked against its diff_id before
	// the slot is touched.
	for _, l := range layers {
		if l.checked {
			continue
		}
		if err := l.check(ctx); err != nil {
			o.code, o.err = dict.CodeInstallFailed, err
			return o
		}
	}
	img := slots.Image{Label: string(plan.Release.Release.Manifest), RawStream: e.cfg.RawImage}
	if e.cfg.RawImage && len(layers) == 1 {
		img.Digest = string(layers[0].diffID)
	}
	feed := newFeeder(ctx, layers)
	img.Layers = feed.readers()
	o.res, err = e.inst.Install(ctx, img)
	if ferr := feed.close(); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		o.code, o.err = dict.CodeInstallFailed, err
	}
	return o
}

// layer is one target layer and how to rebuild it.
type layer struct {
	index  int
	diffID digest.Digest
	write  func(ctx context.Context, w io.Writer) error
	// checked: prepare already rebuilt it and found its diff_id (a reused
	// layer), so the dry run does not read it again.
	checked bool
}

// reusable says whether the base layer ra, read for size bytes, is the
// layer d: false on a read error (a file of the layer removed from the
// slot) or another digest (a file replaced). Only ctx's end is an error.
func reusable(ctx context.Context, ra io.ReaderAt, size int64, d digest.Digest) (bool, error) {
	if d.Algorithm() != digest.SHA256 {
		return false, nil
	}
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(ra, 0, size))
	if cerr := ctx.Err(); cerr != nil {
		return false, cerr
	}
	if err != nil || n != size {
		return false, nil
	}
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)) == d, nil
}

// check rebuilds the layer into a hash and compares it with its diff_id.
func (l *layer) check(ctx context.Context) error {
	h := sha256.New()
	if err := l.write(ctx, h); err != nil {
		return fmt.Errorf("uplink: layer %d: %w", l.index, err)
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != l.diffID {
		return fmt.Errorf("uplink: layer %d rebuilt as %s, the signed config says %s", l.index, got, l.diffID)
	}
	return nil
}

// prepare verifies the bundles (sha256, config, layers) and the base
// ranges, and says how each layer is rebuilt; or which parts no bundle can
// rebuild from what the vehicle holds.
func (e *Engine) prepare(ctx context.Context, plan *update.Plan, primary bundleRef, supp *bundleRef) ([]*layer, []layerParts, protocol.Code, error) {
	diffIDs, err := update.DiffIDs(plan.Config)
	if err != nil {
		return nil, nil, dict.CodeBadPlan, err
	}
	b, code, err := openBundle(ctx, primary, diffIDs)
	if err != nil {
		return nil, nil, code, err
	}
	var sb *delta.Bundle
	if supp != nil {
		if sb, code, err = openBundle(ctx, *supp, diffIDs); err != nil {
			return nil, nil, code, err
		}
	}
	var base delta.Base = delta.MapBase{}
	if bb := e.inst.Base(); bb != nil {
		base = bb
	}
	var layers []*layer
	var mism []layerParts
	for li, d := range diffIDs {
		if ctx.Err() != nil {
			return nil, nil, dict.CodeInstallFailed, ctx.Err()
		}
		lp := &b.Header.Layers[li]
		l := &layer{index: li, diffID: d}
		layers = append(layers, l)
		if lp.Decision == delta.Reuse {
			// A reused layer is given back from the booted slot, which
			// holds it only as far as no later layer of the booted image
			// removed or replaced its files (nor a local edit, nor bit
			// rot): it is hashed here, before anything is written, and a
			// layer that does not come back as its diff_id is a whole-layer
			// base mismatch the ground answers with the layer's data.
			ra := base.Layer(d)
			if ra != nil {
				ok, err := reusable(ctx, ra, lp.Size, d)
				if err != nil {
					return nil, nil, dict.CodeInstallFailed, err
				}
				if !ok {
					ra = nil
				}
				l.checked = ok
			}
			if ra == nil {
				if sb != nil && wholeLayer(ctx, sb, li, base) {
					l.write = func(ctx context.Context, w io.Writer) error { return sb.ApplyLayer(ctx, li, base, w) }
					continue
				}
				mism = append(mism, layerParts{Layer: li, Whole: true})
				continue
			}
			size := lp.Size
			l.write = func(ctx context.Context, w io.Writer) error {
				n, err := io.Copy(w, io.NewSectionReader(ra, 0, size))
				if err == nil && n != size {
					err = fmt.Errorf("base layer %s: %d of %d bytes", d, n, size)
				}
				return err
			}
			continue
		}
		bad, err := mismatchedParts(ctx, b, li, base)
		if err != nil {
			return nil, nil, dict.CodeInstallFailed, err
		}
		if len(bad) == 0 {
			l.write = func(ctx context.Context, w io.Writer) error { return b.ApplyLayer(ctx, li, base, w) }
			continue
		}
		if sb == nil {
			mism = append(mism, layerParts{Layer: li, Parts: bad})
			continue
		}
		// Substitutes: a supplement part rebuilding exactly the same bytes
		// (same range and digest) replaces a part that does not match; a
		// supplement layer that rebuilds from what the vehicle holds
		// replaces the whole layer.
		subst := map[int]int{}
		for _, pi := range bad {
			if q, ok := samePart(sb, li, &lp.Parts[pi]); ok {
				subst[pi] = q
			}
		}
		if len(subst) < len(bad) {
			if wholeLayer(ctx, sb, li, base) {
				l.write = func(ctx context.Context, w io.Writer) error { return sb.ApplyLayer(ctx, li, base, w) }
				continue
			}
			var left []int
			for _, pi := range bad {
				if _, ok := subst[pi]; !ok {
					left = append(left, pi)
				}
			}
			mism = append(mism, layerParts{Layer: li, Parts: left})
			continue
		}
		nparts := len(lp.Parts)
		l.write = func(ctx context.Context, w io.Writer) error {
			for pi := 0; pi < nparts; pi++ {
				var err error
				if q, ok := subst[pi]; ok {
					err = sb.ApplyPart(ctx, li, q, base, w)
				} else {
					err = b.ApplyPart(ctx, li, pi, base, w)
				}
				if err != nil {
					return err
				}
			}
			return nil
		}
	}
	return layers, mism, 0, nil
}

// openBundle checks a staged bundle against its plan (size, sha256) and
// the signed config (the layers it rebuilds are the diff_ids), and opens it.
func openBundle(ctx context.Context, ref bundleRef, diffIDs []digest.Digest) (*delta.Bundle, protocol.Code, error) {
	if uint64(ref.size) != ref.plan.BundleSize {
		return nil, dict.CodeBundleMismatch, fmt.Errorf("uplink: bundle of plan %d: %d bytes, the plan says %d", ref.plan.ID, ref.size, ref.plan.BundleSize)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(ref.r, 0, ref.size)); err != nil {
		return nil, dict.CodeStorage, fmt.Errorf("uplink: read bundle of plan %d: %w", ref.plan.ID, err)
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != ref.plan.BundleDigest {
		return nil, dict.CodeBundleMismatch, fmt.Errorf("uplink: bundle of plan %d is %s, the plan says %s", ref.plan.ID, got, ref.plan.BundleDigest)
	}
	b, err := delta.OpenBundle(ref.r, ref.size)
	if err != nil {
		return nil, dict.CodeBundleMismatch, fmt.Errorf("uplink: bundle of plan %d: %w", ref.plan.ID, err)
	}
	if string(b.Header.Config) != string(ref.plan.Config) {
		return nil, dict.CodeConfigMismatch, fmt.Errorf("uplink: bundle of plan %d is for another image config", ref.plan.ID)
	}
	if len(b.Header.Layers) != len(diffIDs) {
		return nil, dict.CodeBundleMismatch, fmt.Errorf("uplink: bundle of plan %d rebuilds %d layers, the config has %d", ref.plan.ID, len(b.Header.Layers), len(diffIDs))
	}
	for i, d := range diffIDs {
		if b.Header.Layers[i].DiffID != d {
			return nil, dict.CodeBundleMismatch, fmt.Errorf("uplink: bundle of plan %d: layer %d is %s, the config says %s", ref.plan.ID, i, b.Header.Layers[i].DiffID, d)
		}
	}
	return b, 0, ctx.Err()
}

// mismatchedParts returns the parts of layer li whose base ranges do not
// match what the vehicle holds.
func mismatchedParts(ctx context.Context, b *delta.Bundle, li int, base delta.Base) ([]int, error) {
	seen := map[int]bool{}
	var parts []int
	for _, err := range b.VerifyBase(ctx, li, base) {
		var me *delta.MismatchError
		if !errors.As(err, &me) {
			return nil, err
		}
		if !seen[me.Part] {
			seen[me.Part] = true
			parts = append(parts, me.Part)
		}
	}
	return parts, nil
}

// samePart finds the part of layer li of sb that rebuilds the same bytes
// as p, with base ranges that match.
func samePart(sb *delta.Bundle, li int, p *delta.Part) (int, bool) {
	if li >= len(sb.Header.Layers) {
		return 0, false
	}
	for q, sp := range sb.Header.Layers[li].Parts {
		if sp.OutOff == p.OutOff && sp.OutSize == p.OutSize && string(sp.OutDigest) == string(p.OutDigest) && len(sp.Ranges) == 0 {
			return q, true
		}
	}
	return 0, false
}

// wholeLayer says whether sb rebuilds layer li from what the vehicle holds.
func wholeLayer(ctx context.Context, sb *delta.Bundle, li int, base delta.Base) bool {
	if li >= len(sb.Header.Layers) || sb.Header.Layers[li].Decision == delta.Reuse {
		return false
	}
	return len(sb.VerifyBase(ctx, li, base)) == 0
}

// feeder streams rebuilt layers to the slot writer, one at a time: a layer
// is rebuilt into a pipe when the writer first reads it, checked against
// its diff_id at its end (a mismatch is the reader's error, so the slot is
// never recorded written), and the previous layer's producer is stopped
// then, so at most one rebuild runs.
type feeder struct {
	ctx    context.Context
	layers []*layer
	cur    int
	pr     *io.PipeReader
	wg     sync.WaitGroup
	errs   []error
	mu     sync.Mutex
}

var errLayerDone = errors.New("uplink: layer reader moved on")

func newFeeder(ctx context.Context, layers []*layer) *feeder {
	return &feeder{ctx: ctx, layers: layers, cur: -1}
}

func (f *feeder) readers() []io.Reader {
	rs := make([]io.Reader, len(f.layers))
	for i := range f.layers {
		rs[i] = &feedReader{f: f, i: i}
	}
	return rs
}

type feedReader struct {
	f *feeder
	i int
}

func (r *feedReader) Read(p []byte) (int, error) {
	f := r.f
	if f.cur != r.i {
		if r.i < f.cur {
			return 0, fmt.Errorf("uplink: layer %d read after layer %d", r.i, f.cur)
		}
		f.stop()
		f.cur = r.i
		pr, pw := io.Pipe()
		f.pr = pr
		l := f.layers[r.i]
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			h := sha256.New()
			err := l.write(f.ctx, io.MultiWriter(pw, h))
			if err == nil {
				if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != l.diffID {
					err = fmt.Errorf("uplink: layer %d rebuilt as %s, want %s", l.index, got, l.diffID)
				}
			}
			if err != nil && !errors.Is(err, errLayerDone) && !errors.Is(err, io.ErrClosedPipe) {
				f.mu.Lock()
				f.errs = append(f.errs, err)
				f.mu.Unlock()
			}
			pw.CloseWithError(err)
		}()
	}
	return f.pr.Read(p)
}

// stop ends the current layer's producer and waits for it.
func (f *feeder) stop() {
	if f.pr != nil {
		f.pr.CloseWithError(errLayerDone)
		f.wg.Wait()
		f.pr = nil
	}
}

// close stops the producers and returns what they failed with.
func (f *feeder) close() error {
	f.stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.errs...)
}

// InstallFile installs an update file (update.File: `groundd bundle
// --out`) into the inactive slot, through the same acceptance checks as a
// plan received over the link and the same install. The bundle is read in
// place, not copied into the staging.
func (e *Engine) InstallFile(ctx context.Context, path string) (uint64, error) {
	if e.inst == nil {
		return 0, errors.New("uplink: no installer")
	}
	if !e.installing.TryLock() {
		return 0, ErrBusy
	}
	defer e.installing.Unlock()
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("uplink: %w", err)
	}
	defer f.Close()
	var hdr [len(update.FileMagic) + 4]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return 0, fmt.Errorf("uplink: %s: %w", path, update.ErrTruncated)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	p, _, err := update.ReadFile(f)
	if err != nil {
		return 0, fmt.Errorf("uplink: %s: %w", path, err)
	}
	planBytes, err := update.EncodePlan(p)
	if err != nil {
		return 0, err
	}
	off := int64(len(hdr)) + int64(binary.BigEndian.Uint32(hdr[len(update.FileMagic):]))
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Size() != off+int64(p.BundleSize) {
		return p.ID, fmt.Errorf("uplink: %s: %d bytes, the plan says %d: %w", path, fi.Size(), off+int64(p.BundleSize), update.ErrTruncated)
	}
	e.mu.Lock()
	plan, code := e.takePlan(planBytes, 0, true)
	var rec *planRec
	if code == 0 {
		rec = e.plans[plan.ID]
	}
	err = e.flushUp()
	e.mu.Unlock()
	if code != 0 {
		return p.ID, fmt.Errorf("uplink: %s: plan %d refused: %s (%s)", path, p.ID, dict.EnumReason.NameOf(uint64(code)), e.Status().LastErrorText)
	}
	if err != nil {
		return p.ID, err
	}
	o := e.install(ctx, plan, bundleRef{plan: plan, r: io.NewSectionReader(f, off, int64(p.BundleSize)), size: int64(p.BundleSize)}, nil)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inFlight = nil
	if o.mismatch != nil {
		// Offline, no supplement can come: a failure.
		o.code, o.err = dict.CodeBaseMismatch, fmt.Errorf("uplink: %d layers do not match the booted slot", len(o.mismatch))
		e.mismatchEvents(plan.ID, plan, o.mismatch)
		o.mismatch = nil
	}
	return plan.ID, e.record(plan.ID, rec, plan, o)
}
