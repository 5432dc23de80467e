package groundd

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/update"
	digest "github.com/opencontainers/go-digest"
)

// imageRec records an image groundd has resolved, so that a vehicle's slot,
// known from telemetry by the first bytes of its manifest digest, can be
// found again as a delta base.
type imageRec struct {
	Ref      string `json:"ref"`
	Manifest string `json:"manifest"`
	Version  uint64 `json:"version"`
}

func keyImage(m digest.Digest) string { return "image/" + m.String() }

// RegisterImage resolves ref and records it in the image store: what a
// vehicle holds must be there for the planner to compute deltas against it.
func (d *Daemon) RegisterImage(ctx context.Context, ref string) (*Image, error) {
	im, err := d.images.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := d.checkRelease(im); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(imageRec{Ref: ref, Manifest: im.OCI.ManifestDigest.String(), Version: im.Release.Release.Version})
	if err := store.Put(ctx, d.st, keyImage(im.OCI.ManifestDigest), b); err != nil {
		return nil, err
	}
	return im, nil
}

// findImage returns the registered image whose manifest digest is m, or
// starts with the hex prefix short (telemetry's short digest): from the
// image store by digest when the source has one (Lookup), else by its
// reference again.
func (d *Daemon) findImage(ctx context.Context, m string) (*Image, error) {
	kvs, err := d.st.List(ctx, "image/sha256:"+strings.TrimPrefix(m, "sha256:"))
	if err != nil {
		return nil, err
	}
	if len(kvs) != 1 {
		return nil, fmt.Errorf("%w: image %s in the image store (%d matches)", ErrNotFound, m, len(kvs))
	}
	var r imageRec
	if err := json.Unmarshal(kvs[0].Value, &r); err != nil {
		return nil, fmt.Errorf("groundd: record %s: %w", kvs[0].Key, err)
	}
	if l, ok := d.images.(Lookuper); ok {
		dg, err := digest.Parse(r.Manifest)
		if err != nil {
			return nil, fmt.Errorf("groundd: record %s: %w", kvs[0].Key, err)
		}
		return l.Lookup(ctx, dg)
	}
	return d.images.Resolve(ctx, r.Ref)
}

// transferRec is a transfer of an uplink, persisted: enough to rebuild its
// sender after a restart (same id, same data, same chunk size, so the same
// hash tree and root), and its last known progress.
type transferRec struct {
	ID      uint64 `json:"id"`
	Uplink  uint64 `json:"uplink"`
	Vehicle uint32 `json:"vehicle"`
	Plan    uint64 `json:"plan"`
	Kind    string `json:"kind"` // "plan", "bundle"
	// Blob is the content address of the data in the bundle directory.
	Blob  string `json:"blob"`
	Size  uint64 `json:"size"`
	Chunk int    `json:"chunk"`
	// Artifact is the registry artifact that holds the blob
	// (docker://HOST/REPO@sha256:..., see regbundle.go): a station
	// without the blob fetches it from there.
	Artifact string `json:"artifact,omitempty"`
	// Started: a frame of it may have been sent, so a new sender resumes
	// (sends nothing until the vehicle reports what it lacks).
	Started   bool   `json:"started,omitempty"`
	Done      bool   `json:"done,omitempty"`
	Abandoned bool   `json:"abandoned,omitempty"`
	Error     string `json:"error,omitempty"`
	Held      int    `json:"held"`
	Total     int    `json:"total"`
	Sent      int64  `json:"sent"`
	Resent    int64  `json:"resent"`
	Presumed  int64  `json:"presumed,omitempty"`
}

// blobPath is the content-addressed file of a blob in the bundle directory.
func (d *Daemon) blobPath(blob string) (string, error) {
	dg, err := digest.Parse(blob)
	if err != nil || dg.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("groundd: bad blob address %q", blob)
	}
	return filepath.Join(d.bundleDir, "sha256-"+dg.Encoded()), nil
}

// putBlob writes a blob durably under its sha256: a temporary file synced,
// renamed, and the directory synced. A blob already there is kept: content
// addressing makes writing it again pointless.
func (d *Daemon) putBlob(write func(w io.Writer) error) (digest.Digest, uint64, error) {
	f, err := os.CreateTemp(d.bundleDir, ".blob-*")
	if err != nil {
		return "", 0, fmt.Errorf("groundd: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("groundd: blob: %w", err)
	}
	dg := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	dst, _ := d.blobPath(dg.String())
	if err := os.Rename(tmp, dst); err != nil {
		return "", 0, fmt.Errorf("groundd: blob: %w", err)
	}
	if err := syncDir(d.bundleDir); err != nil {
		return "", 0, err
	}
	return dg, cw.n, nil
}

type countWriter struct {
	w io.Writer
	n uint64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	return n, err
}

// openBlob opens a blob and checks its size and digest before anything is
// sent from it: a bundle altered on disk is never sent.
func (d *Daemon) openBlob(blob string, size uint64) (*os.File, error) {
	p, err := d.blobPath(blob)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("groundd: blob %s: %w", blob, err)
	}
	var h hash.Hash = sha256.New()
	n, err := io.Copy(h, f)
	if err == nil && (uint64(n) != size || digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)).String() != blob) {
		err = fmt.Errorf("groundd: blob %s: %w (%d bytes)", blob, errAltered, n)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// errNoKnowledge: the vehicle has not yet said what its slots hold
// (hk.slots and hk.boot): planning waits for it rather than send full
// layers the vehicle may hold.
var errNoKnowledge = errors.New("groundd: waiting for the vehicle's hk.slots and hk.boot")

// planned is what planning an uplink produced.
type planned struct {
	// clearMismatch: this supplement answers the mismatches gathered.
	clearMismatch bool
	plan          *update.Plan
	transfers     []transferRec
	layers        []LayerDecision
	// artifact is the plan's bundle artifact in the registry ("": none).
	artifact string
	// push is what is left to push to the bundle registry before the
	// plan may be committed (nil: nothing, or pushed).
	push *bundlePush
	// first: the uplink's first plan (not a supplement).
	first bool
}

// bundlePush is a planned bundle to push: the plan and its encoded blob.
type bundlePush struct {
	plan     *update.Plan
	planBlob digest.Digest
	planSize uint64
}

// planUplink plans u for the vehicle: per layer, reuse, delta against the
// image its booted slot holds, or full; signs the plan; keeps plan and
// bundle as blobs; and allocates the plan id and the two transfer ids.
func (d *Daemon) planUplink(ctx context.Context, u *Uplink, s *session) (*planned, error) {
	v, err := d.slotsKnown(ctx, u.Vehicle)
	if err != nil {
		return nil, err
	}
	var base *Image
	if bs := bootedSlot(&v.Vehicle); bs != nil && bs.Digest != "" && strings.Trim(bs.Digest, "0") != "" {
		key := bs.Manifest
		if key == "" {
			key = bs.Digest
		}
		if base, err = d.findImage(ctx, key); err != nil {
			return nil, fmt.Errorf("groundd: the booted slot %s holds image %s, which must be in the image store to plan against: %w", bs.Name, key, err)
		}
	}
	return d.planAgainst(ctx, u, base)
}

// slotsKnown returns what groundd knows of vehicle, errNoKnowledge when
// that does not say what its slots hold.
func (d *Daemon) slotsKnown(ctx context.Context, vehicle uint32) (vehicleRec, error) {
	v, _, err := getJSON[vehicleRec](ctx, d.st, keyVehicle(vehicle))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return v, err
	}
	if len(v.Slots) == 0 || v.BootedSlot == "" {
		return v, errNoKnowledge
	}
	return v, nil
}

// planAgainst plans u as a delta against base (nil: full layers).
func (d *Daemon) planAgainst(ctx context.Context, u *Uplink, base *Image) (*planned, error) {
	im, err := d.RegisterImage(ctx, u.Image)
	if err != nil {
		return nil, err
	}
	rel, err := d.releaseFor(u, im)
	if err != nil {
		return nil, err
	}
	var bases []delta.LayerSource
	if base != nil {
		for i, l := range base.OCI.Layers() {
			bases = append(bases, delta.LayerSource{DiffID: l.DiffID, Open: func() (io.ReadCloser, error) { return base.OCI.OpenLayer(i) }})
		}
	}
	tgt := delta.Target{Config: im.OCI.ConfigBytes, Annotations: im.OCI.Manifest.Annotations}
	for i, l := range im.OCI.Layers() {
		tgt.Layers = append(tgt.Layers, delta.LayerSource{DiffID: l.DiffID, Open: func() (io.ReadCloser, error) { return im.OCI.OpenLayer(i) }})
	}
	p := &update.Plan{Vehicle: u.Vehicle, Release: rel, Manifest: im.OCI.ManifestBytes, Config: im.OCI.ConfigBytes, AllowDowngrade: u.AllowDowngrade}
	if base != nil {
		p.Base = base.OCI.ManifestDigest
	}
	return d.signAndKeep(ctx, u, p, bases, tgt, 0, nil)
}

// releaseFor returns the release of im a plan for u's vehicle carries:
// the one for the vehicle's hardware when groundd knows it (ErrHardware
// when there is none), else the highest version.
func (d *Daemon) releaseFor(u *Uplink, im *Image) (update.ReleaseSignature, error) {
	s, ok := d.sessionOf(u.Vehicle)
	if !ok || s.cfg.HardwareID == "" {
		return im.Release, nil
	}
	rel, ok := im.ReleaseFor(s.cfg.HardwareID)
	if !ok {
		return update.ReleaseSignature{}, fmt.Errorf("%w: %s is for %q, vehicle %d is %q", ErrHardware, u.Image, im.Release.Release.HardwareID, u.Vehicle, s.cfg.HardwareID)
	}
	return rel, nil
}

// planSupplement plans the supplement of plan orig for the layers the
// vehicle reported a base mismatch in: those layers as full data, the
// others reused (the vehicle rebuilt them from orig's bundle, or holds
// them). Nothing in the supplement references base data.
func (d *Daemon) planSupplement(ctx context.Context, u *Uplink, orig uint64, layers map[int]bool) (*planned, error) {
	im, err := d.images.Resolve(ctx, u.Image)
	if err != nil {
		return nil, err
	}
	if im.OCI.ManifestDigest.String() != u.Manifest {
		return nil, fmt.Errorf("groundd: %s now names %s, not the %s planned", u.Image, im.OCI.ManifestDigest, u.Manifest)
	}
	for l := range layers {
		if l < 0 || l >= len(im.OCI.Layers()) {
			return nil, fmt.Errorf("groundd: the vehicle reports a mismatch in layer %d of %d", l, len(im.OCI.Layers()))
		}
	}
	tgt := delta.Target{Config: im.OCI.ConfigBytes, Annotations: im.OCI.Manifest.Annotations}
	for i, l := range im.OCI.Layers() {
		tgt.Layers = append(tgt.Layers, delta.LayerSource{DiffID: l.DiffID, Open: func() (io.ReadCloser, error) { return im.OCI.OpenLayer(i) }})
	}
	var baseDigest digest.Digest
	if u.Base != "" {
		baseDigest = digest.Digest(u.Base)
	}
	rel, err := d.releaseFor(u, im)
	if err != nil {
		return nil, err
	}
	p := &update.Plan{Vehicle: u.Vehicle, Release: rel, Manifest: im.OCI.ManifestBytes, Config: im.OCI.ConfigBytes,
		AllowDowngrade: u.AllowDowngrade, Base: baseDigest}
	return d.signAndKeep(ctx, u, p, nil, tgt, orig, layers)
}

// fullOnly writes the bundle of tgt with only the layers in keep rebuilt
// (as full data) and the others reused: it computes the bundle with no base
// (every layer full), then writes it again without the other layers'
// parts, their payload left out.
func (d *Daemon) fullOnly(ctx context.Context, tgt delta.Target, keep map[int]bool, w io.Writer, opts delta.Options) (delta.Stats, error) {
	tmp, err := os.CreateTemp(d.bundleDir, ".full-*")
	if err != nil {
		return delta.Stats{}, fmt.Errorf("groundd: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	bw := bufio.NewWriter(tmp)
	st, err := delta.ComputeLayers(ctx, nil, tgt, bw, opts)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return delta.Stats{}, err
	}
	fi, err := tmp.Stat()
	if err != nil {
		return delta.Stats{}, err
	}
	h, start, err := delta.ReadHeader(tmp, fi.Size())
	if err != nil {
		return delta.Stats{}, err
	}
	nh := *h
	nh.Base, nh.Layers = nil, nil
	type piece struct{ off, n int64 }
	var pieces []piece
	var poff int64
	for li, lp := range h.Layers {
		if !keep[li] {
			nh.Base = append(nh.Base, lp.DiffID)
			nh.Layers = append(nh.Layers, delta.LayerPlan{DiffID: lp.DiffID, Size: lp.Size, Decision: delta.Reuse})
			st.Layers[li].Decision, st.Layers[li].Parts, st.Layers[li].Payload = delta.Reuse, 0, 0
			continue
		}
		nl := lp
		nl.Parts = slices.Clone(lp.Parts)
		for pi := range nl.Parts {
			pieces = append(pieces, piece{start + nl.Parts[pi].PayloadOff, nl.Parts[pi].PayloadSize})
			nl.Parts[pi].PayloadOff = poff
			poff += nl.Parts[pi].PayloadSize
		}
		nh.Layers = append(nh.Layers, nl)
	}
	nh.PayloadSize = poff
	hb, err := nh.Encode()
	if err != nil {
		return delta.Stats{}, err
	}
	var pre [len(delta.Magic) + 4]byte
	copy(pre[:], delta.Magic)
	binary.BigEndian.PutUint32(pre[len(delta.Magic):], uint32(len(hb)))
	if _, err := w.Write(pre[:]); err != nil {
		return delta.Stats{}, err
	}
	if _, err := w.Write(hb); err != nil {
		return delta.Stats{}, err
	}
	for _, p := range pieces {
		if _, err := io.Copy(w, io.NewSectionReader(tmp, p.off, p.n)); err != nil {
			return delta.Stats{}, err
		}
	}
	st.BundleSize = int64(len(pre)+len(hb)) + poff
	return st, nil
}

func (d *Daemon) signAndKeep(ctx context.Context, u *Uplink, p *update.Plan, bases []delta.LayerSource, tgt delta.Target, supplement uint64, only map[int]bool) (*planned, error) {
	if d.planHook != nil {
		d.planHook(ctx)
	}
	var st delta.Stats
	opts := delta.Options{TempDir: d.bundleDir, PartSize: d.cfg.PartSize, Tag: u.Image}
	bundle, size, err := d.putBlob(func(w io.Writer) error {
		var err error
		if only != nil {
			st, err = d.fullOnly(ctx, tgt, only, w, opts)
		} else {
			st, err = delta.ComputeLayers(ctx, bases, tgt, w, opts)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	// Never sign a bundle this side cannot open: a check of the header and
	// its bounds, as the vehicle will make.
	if bp, err := d.blobPath(bundle.String()); err == nil {
		f, err := os.Open(bp)
		if err != nil {
			return nil, fmt.Errorf("groundd: %w", err)
		}
		_, err = delta.OpenBundle(f, int64(size))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("groundd: the bundle planned does not open: %w", err)
		}
	}
	keyID := d.cfg.GroundKeyID
	if p.ID, err = d.st.Next(ctx, fmt.Sprintf("plan/%d", keyID)); err != nil {
		return nil, err
	}
	p.BundleSize, p.BundleDigest, p.Supplement = size, bundle, supplement
	// The vehicle stages the plan and the bundle, nothing else (flightd
	// installs from the staged bundle with bounded memory): the plan's
	// bytes are bounded as update.MaxPlanSize bounds them.
	p.Staging = size + uint64(len(p.Manifest)+len(p.Config)) + 4096
	if err := update.SignPlan(d.groundKey, keyID, p); err != nil {
		return nil, err
	}
	enc, err := update.EncodePlan(p)
	if err != nil {
		return nil, err
	}
	planBlob, _, err := d.putBlob(func(w io.Writer) error { _, err := w.Write(enc); return err })
	if err != nil {
		return nil, err
	}
	// With a bundle registry, the plan and bundle go there before
	// anything is sent (pushPlanned, before the plan is committed): any
	// station can then send them.
	out := &planned{plan: p, first: supplement == 0}
	if d.cfg.Bundles != nil && u.ID != 0 {
		out.push = &bundlePush{plan: p, planBlob: planBlob, planSize: uint64(len(enc))}
	}
	for _, l := range st.Layers {
		out.layers = append(out.layers, LayerDecision{DiffID: l.DiffID.String(), Decision: l.Decision, Size: l.Size, Payload: l.Payload})
	}
	for _, t := range []struct {
		kind string
		blob digest.Digest
		size uint64
	}{{"plan", planBlob, uint64(len(enc))}, {"bundle", bundle, size}} {
		id, err := d.st.Next(ctx, "transfer")
		if err != nil {
			return nil, err
		}
		codec := d.codec
		if s, ok := d.sessionOf(u.Vehicle); ok {
			codec = s.codec
		}
		chunk, err := transfer.ChunkSizeFor(codec, id, t.size)
		if err != nil {
			return nil, err
		}
		out.transfers = append(out.transfers, transferRec{ID: id, Uplink: u.ID, Vehicle: u.Vehicle, Plan: p.ID, Kind: t.kind, Blob: t.blob.String(), Size: t.size, Chunk: chunk})
	}
	d.log.Info("groundd: planned", "uplink", u.ID, "vehicle", u.Vehicle, "plan", p.ID, "supplement", supplement,
		"bundle", bundle, "bundle_size", size, "plan_transfer", out.transfers[0].ID, "bundle_transfer", out.transfers[1].ID)
	return out, nil
}

// target returns the Offer.Target of a transfer.
func (t *transferRec) target() []byte {
	if t.Kind == "plan" {
		return update.TargetPlan(t.Plan)
	}
	return update.TargetBundle(t.Plan)
}

func bootedSlot(v *Vehicle) *Slot {
	for i := range v.Slots {
		if v.Slots[i].Booted {
			return &v.Slots[i]
		}
	}
	return nil
}

func shortHex(b []byte) string { return hex.EncodeToString(b) }

// Planning off the vehicle's loop. Planning an uplink or a supplement
// (the bundle computed, the blobs written: seconds to minutes for a large
// image on a loaded machine) runs in the background, as a push to the
// bundle registry does: meanwhile the uplink stays as it is (queued, or
// active for a supplement), its Waiting saying so, and every Poll of the
// vehicle returns at once, its commands, housekeeping and other traffic
// going on. The planning's end pokes the vehicle's loop, and the next
// Poll commits its result (pushAndCommit: the revision-guarded
// transaction) or fails the uplink with its error. One planning per
// vehicle at a time. A planning whose uplink ended meanwhile (cancelled,
// expired) or whose vehicle this station lost is cancelled and its result
// dropped; the blobs it wrote are content-addressed and harmless.
type plannings struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	m      map[uint32]*pendingPlan // by vehicle
}

// pendingPlan is a planning of a vehicle, under way or ended and not yet
// taken by its loop.
type pendingPlan struct {
	uplink  uint64
	first   bool // the uplink's first plan (not a supplement)
	cancel  context.CancelFunc
	running bool
	// stale: its uplink ended, or the station lost the vehicle: the
	// result is dropped.
	stale bool
	pl    *planned
	err   error
}

// planState is where a planning stands for the vehicle's loop.
type planState int

const (
	planNone    planState = iota // none: the caller may start one
	planRunning                  // one runs (this one or another): wait
	planEnded                    // this one ended: its result is taken
)

func (p *plannings) init() {
	if p.m == nil {
		p.ctx, p.cancel = context.WithCancel(context.Background())
		p.m = map[uint32]*pendingPlan{}
	}
}

// close cancels the plannings under way and waits for them.
func (p *plannings) close() {
	p.mu.Lock()
	if p.cancel != nil {
		p.cancel()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// result says where vehicle's planning of uplink (first: its first plan,
// else a supplement) stands, and takes its result when it ended. Any
// planning of the vehicle under way makes the caller wait (one at a
// time); an ended one of another uplink, or a stale one, is dropped.
func (p *plannings) result(vehicle uint32, uplink uint64, first bool) (planState, *planned, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.init()
	pp := p.m[vehicle]
	switch {
	case pp == nil:
		return planNone, nil, nil
	case pp.running || p.ctx.Err() != nil:
		return planRunning, nil, nil
	}
	delete(p.m, vehicle)
	if pp.stale || pp.uplink != uplink || pp.first != first {
		return planNone, nil, nil
	}
	return planEnded, pp.pl, pp.err
}

// drop makes vehicle's planning stale (cancelled, its result dropped).
func (p *plannings) drop(vehicle uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.staleLocked(vehicle)
}

func (p *plannings) staleLocked(vehicle uint32) {
	pp := p.m[vehicle]
	if pp == nil {
		return
	}
	pp.stale = true
	pp.cancel()
	if !pp.running {
		delete(p.m, vehicle)
	}
}

// forget makes vehicle's planning stale if its uplink is not among us
// (the vehicle's open uplinks) or has ended: cancelled or expired while
// it was planned.
func (p *plannings) forget(vehicle uint32, us []Uplink) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := p.m[vehicle]
	if pp == nil {
		return
	}
	for _, u := range us {
		if u.ID == pp.uplink && !u.State.Final() {
			return
		}
	}
	p.staleLocked(vehicle)
}

// startPlanning runs plan for uplink u of vehicle in the background (the
// caller saw planNone) and writes note into u's Waiting. The planning's
// end pokes the vehicle's loop.
func (d *Daemon) startPlanning(ctx context.Context, u *Uplink, first bool, note string, now time.Time, plan func(ctx context.Context) (*planned, error)) error {
	p := &d.plans
	p.mu.Lock()
	p.init()
	if p.ctx.Err() != nil || p.m[u.Vehicle] != nil {
		p.mu.Unlock()
		return nil // closed, or one runs
	}
	pctx, cancel := context.WithCancel(p.ctx)
	pp := &pendingPlan{uplink: u.ID, first: first, cancel: cancel, running: true}
	p.m[u.Vehicle] = pp
	p.wg.Add(1)
	go d.runPlanning(pctx, pp, u.Vehicle, plan)
	p.mu.Unlock()
	d.log.Info("groundd: planning", "uplink", u.ID, "vehicle", u.Vehicle, "first", first, "image", u.Image)
	return d.updateUplink(ctx, u.ID, func(x *Uplink, found bool) error {
		if !found || x.State.Final() {
			return store.ErrSkip
		}
		x.Waiting, x.Updated = note, now.UTC()
		return nil
	})
}

// runPlanning runs pp's planning and pokes the vehicle's loop with the
// result.
func (d *Daemon) runPlanning(ctx context.Context, pp *pendingPlan, vehicle uint32, plan func(ctx context.Context) (*planned, error)) {
	p := &d.plans
	defer p.wg.Done()
	start := time.Now()
	pl, err := plan(ctx)
	p.mu.Lock()
	pp.running, pp.pl, pp.err = false, pl, err
	stale := pp.stale
	if stale && p.m[vehicle] == pp {
		delete(p.m, vehicle)
	}
	closed := p.ctx.Err() != nil
	p.mu.Unlock()
	pp.cancel()
	took := time.Since(start).Round(time.Millisecond)
	if stale || closed {
		d.log.Info("groundd: planning dropped", "uplink", pp.uplink, "vehicle", vehicle, "took", took, "stale", stale, "closed", closed)
	} else {
		d.log.Info("groundd: planning ended", "uplink", pp.uplink, "vehicle", vehicle, "took", took, "err", err)
	}
	if !closed {
		d.poke(vehicle)
	}
}
