package groundd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/protocol/update"
	digest "github.com/opencontainers/go-digest"
)

// Bundles in the registry (issue 14, docs/stations.md). With a bundle
// registry configured, every plan is pushed, with its bundle, as an OCI
// artifact whose subject is the target image (images.PushBundle) before
// anything of it is sent, and its reference by digest is stored with the
// plan's transfers (transferRec.Artifact) and the uplink (Uplink.Bundles).
// A station that must send a transfer whose blob it lacks (it took the
// vehicle over from the station that planned it) fetches the artifact by
// digest (images.FetchBundle, every blob verified as it is read) into its
// bundle directory, in the background: the uplink waits, its vehicle's
// session goes on. A station that does not hold the vehicle fetches the
// blobs of the vehicle's active uplink ahead of its pass. A failed fetch
// is logged as an error naming the artifact and the registry, written into
// the uplink's Waiting, and retried with a growing delay; after
// fetchAttempts failures the holder plans the uplink again (replan). Fetches are
// counted by result in the vehicle's counters (VehicleCounters, the metric
// groundd_vehicle_bundle_fetches_total).
const (
	// bundleTimeout bounds one push or one fetch of a bundle artifact.
	bundleTimeout = 10 * time.Minute
	// fetchRetryMin and fetchRetryMax bound the delay before a failed
	// fetch is tried again (doubling from the one to the other).
	fetchRetryMin = 5 * time.Second
	fetchRetryMax = 2 * time.Minute
	// prefetchEvery is how often a station that does not hold a vehicle
	// looks for blobs of its active uplink to fetch, at the least: it
	// also looks when the vehicle's open uplinks change in the store (one
	// is planned) and when its link to the vehicle comes up.
	prefetchEvery = 10 * time.Second
	// pushAttempts bounds the attempts to push a planned bundle: after
	// that many failures (the waits between them doubling from
	// fetchRetryMin: 5, 10, 20 and 40 s), the uplink fails.
	pushAttempts = 5
	// fetchAttempts bounds the failed fetches of an artifact the holder
	// must send from (gone from the registry, garbage-collected, or in
	// another one): after that many, it abandons the plan on the vehicle
	// and plans the uplink again from the images, which it has.
	fetchAttempts = 5
)

// registryOptions are the settings bundle artifacts are pushed and
// fetched with: the config's registry settings.
func (d *Daemon) registryOptions() images.Options {
	r := d.cfg.Registry
	return images.Options{Registry: images.RegistryOptions{AuthFile: r.AuthFile, CAFile: r.CAFile, PlainHTTP: r.PlainHTTP}}
}

// pushBundle pushes plan p of uplink u (its encoded form is blob planBlob,
// planSize bytes) and p's bundle to the bundle registry, and returns the
// artifact's reference by digest; "" when no bundle registry is
// configured, or for an offline update file (WriteBundle: no uplink, id
// 0), which no other station sends.
func (d *Daemon) pushBundle(ctx context.Context, u *Uplink, p *update.Plan, planBlob digest.Digest, planSize uint64) (string, error) {
	b := d.cfg.Bundles
	if b == nil || u.ID == 0 {
		return "", nil
	}
	repo, err := b.repo(u.Image)
	if err != nil {
		return "", err
	}
	a := &images.BundleArtifact{
		Subject: oci.Descriptor{MediaType: manifestMediaType(p.Manifest), Digest: digest.FromBytes(p.Manifest), Size: int64(len(p.Manifest))},
		Vehicle: u.Vehicle, Plan: p.ID, Base: p.Base,
		Blobs: []oci.Descriptor{
			{MediaType: update.MediaTypePlan, Digest: planBlob, Size: int64(planSize)},
			{MediaType: update.MediaTypeBundle, Digest: p.BundleDigest, Size: int64(p.BundleSize)},
		},
	}
	pctx, cancel := context.WithTimeout(ctx, bundleTimeout)
	defer cancel()
	start := time.Now()
	ref, err := images.PushBundle(pctx, repo, d.registryOptions(), a, func(desc oci.Descriptor) (io.ReadCloser, error) {
		path, err := d.blobPath(desc.Digest.String())
		if err != nil {
			return nil, err
		}
		return os.Open(path)
	})
	if err != nil {
		return "", fmt.Errorf("groundd: push plan %d to the bundle registry %s: %w", p.ID, b.Registry, err)
	}
	d.log.Info("groundd: bundle pushed", "uplink", u.ID, "vehicle", u.Vehicle, "plan", p.ID, "artifact", ref.String(),
		"bytes", planSize+p.BundleSize, "took", time.Since(start).Round(time.Millisecond))
	return ref.String(), nil
}

// pushes are the plans of this station being pushed to the bundle
// registry, or whose push failed and waits to be tried again, by uplink.
// They are the station's own: a station that takes the vehicle over plans
// afresh. A push runs in the background (runPush), as a fetch does: a
// registry that takes the connection and then stalls holds the uplink,
// never the vehicle's session (commands, housekeeping, other transfers).
type pushes struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	m      map[uint64]*pendingPush
}

type pendingPush struct {
	pl       *planned
	vehicle  uint32
	failures int
	retry    time.Time // no new attempt before (Poll's clock)
	running  bool      // a push runs in the background
	// done: a push ended, its result (art or err) not yet taken by the
	// session.
	done bool
	art  string
	err  error
}

func (p *pushes) init() {
	if p.m == nil {
		p.ctx, p.cancel = context.WithCancel(context.Background())
		p.m = map[uint64]*pendingPush{}
	}
}

// close stops the pushes under way and waits for them.
func (p *pushes) close() {
	p.mu.Lock()
	if p.cancel != nil {
		p.cancel()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// pending returns uplink's plan being pushed or waiting for its push
// (first: its first plan, else a supplement), and whether there is one.
func (p *pushes) pending(uplink uint64, first bool) (*planned, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := p.m[uplink]
	if pp == nil || pp.pl.first != first {
		return nil, false
	}
	return pp.pl, true
}

// wake is the earliest retry of a push for vehicle (zero: none). A push
// that ends pokes the vehicle's loop.
func (p *pushes) wake(vehicle uint32) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var t time.Time
	for _, pp := range p.m {
		if pp.vehicle == vehicle && !pp.running {
			t = sooner(t, pp.retry)
		}
	}
	return t
}

// drop forgets vehicle's plans being pushed or waiting for their push (a
// push under way ends in the background; its result is not used).
func (p *pushes) drop(vehicle uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, pp := range p.m {
		if pp.vehicle == vehicle {
			delete(p.m, id)
		}
	}
}

// forget drops vehicle's pushes whose uplink is not among us (the
// vehicle's open uplinks) or has ended: cancelled or expired while its
// push waited. A push under way ends in the background.
func (p *pushes) forget(vehicle uint32, us []Uplink) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, pp := range p.m {
		if pp.vehicle != vehicle || pp.running {
			continue
		}
		open := false
		for _, u := range us {
			open = open || (u.ID == id && !u.State.Final())
		}
		if !open {
			delete(p.m, id)
		}
	}
}

// pushAndCommit pushes pl's bundle to the bundle registry, if it has one
// to push, then commits it as u's plan. The push runs in the background:
// meanwhile the uplink stays as it is (queued, or active for a
// supplement), its Waiting saying so, and each Poll returns at once; the
// push's end pokes the vehicle's loop and the next Poll takes its result.
// A push that fails leaves the uplink waiting, its Waiting naming the
// registry and the error, logged as an error: it is tried again after 5 s,
// doubling, and the uplink fails after pushAttempts failures. An uplink
// other stations could not resume is never started.
func (d *Daemon) pushAndCommit(ctx context.Context, s *session, u *Uplink, pl *planned, now time.Time) error {
	if pl.push != nil {
		p := &d.pushes
		p.mu.Lock()
		p.init()
		pp := p.m[u.ID]
		if pp == nil || pp.pl != pl {
			pp = &pendingPush{pl: pl, vehicle: u.Vehicle}
			p.m[u.ID] = pp
		}
		switch {
		case pp.running || (!pp.done && now.Before(pp.retry)) || p.ctx.Err() != nil:
			p.mu.Unlock()
			return nil
		case !pp.done:
			pp.running = true
			first := pp.failures == 0
			p.wg.Add(1)
			go d.runPush(p.ctx, pp, *u)
			p.mu.Unlock()
			if !first {
				return nil // Waiting keeps the last failure
			}
			note := fmt.Sprintf("pushing plan %d to the bundle registry %s", pl.plan.ID, d.cfg.Bundles.Registry)
			return d.updateUplink(ctx, u.ID, func(x *Uplink, found bool) error {
				if !found || x.State.Final() {
					return store.ErrSkip
				}
				x.Waiting, x.Updated = note, now.UTC()
				return nil
			})
		}
		pp.done = false
		art, err := pp.art, pp.err
		p.mu.Unlock()
		if err != nil {
			return d.pushFailed(ctx, u, pl, now, err)
		}
		pl.artifact, pl.push = art, nil
		for i := range pl.transfers {
			pl.transfers[i].Artifact = art
		}
		p.mu.Lock()
		if p.m[u.ID] == pp {
			delete(p.m, u.ID)
		}
		p.mu.Unlock()
	}
	return d.commitPlan(ctx, s, u.ID, pl, now, pl.first)
}

// runPush pushes pp's plan of uplink u, in the background, and pokes the
// vehicle's loop with the result.
func (d *Daemon) runPush(ctx context.Context, pp *pendingPush, u Uplink) {
	defer d.pushes.wg.Done()
	push := pp.pl.push
	art, err := d.pushBundle(ctx, &u, push.plan, push.planBlob, push.planSize)
	p := &d.pushes
	p.mu.Lock()
	pp.running, pp.done, pp.art, pp.err = false, true, art, err
	p.mu.Unlock()
	d.poke(u.Vehicle)
}

func (d *Daemon) pushFailed(ctx context.Context, u *Uplink, pl *planned, now time.Time, err error) error {
	p := &d.pushes
	p.mu.Lock()
	p.init()
	pp := p.m[u.ID]
	if pp == nil || pp.pl != pl {
		pp = &pendingPush{pl: pl, vehicle: u.Vehicle}
		p.m[u.ID] = pp
	}
	pp.failures++
	failures := pp.failures
	wait := min(fetchRetryMin<<min(failures-1, 16), fetchRetryMax)
	pp.retry = now.Add(wait)
	if failures >= pushAttempts {
		delete(p.m, u.ID)
	}
	p.mu.Unlock()
	reg := d.cfg.Bundles.Registry
	if failures >= pushAttempts {
		d.log.Error("groundd: bundle push failed", "uplink", u.ID, "vehicle", u.Vehicle, "plan", pl.plan.ID, "registry", reg,
			"failures", failures, "err", err)
		why := fmt.Sprintf("planning: %v (%d attempts)", err, failures)
		if !pl.first {
			why = fmt.Sprintf("supplement: %v (%d attempts)", err, failures)
		}
		return d.endUplink(ctx, u.ID, UplinkFailed, why, now)
	}
	d.log.Error("groundd: bundle push failed", "uplink", u.ID, "vehicle", u.Vehicle, "plan", pl.plan.ID, "registry", reg,
		"failures", failures, "retry_in", wait, "err", err)
	note := fmt.Sprintf("bundle push to %s failed (attempt %d of %d, again at %s): %v", reg, failures, pushAttempts,
		pp.retry.UTC().Format(time.RFC3339), err)
	return d.updateUplink(ctx, u.ID, func(x *Uplink, found bool) error {
		if !found || x.State.Final() {
			return store.ErrSkip
		}
		x.Waiting, x.Updated = note, now.UTC()
		return nil
	})
}

// manifestMediaType is the media type an image manifest names (OCI when
// it names none).
func manifestMediaType(b []byte) string {
	var m struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(b, &m) == nil && m.MediaType == oci.MediaTypeDockerManifest {
		return m.MediaType
	}
	return oci.MediaTypeOCIManifest
}

// haveBlob says whether the bundle directory holds blob, of size bytes
// (its content is checked when it is opened to be sent).
func (d *Daemon) haveBlob(blob string, size uint64) bool {
	p, err := d.blobPath(blob)
	if err != nil {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && uint64(fi.Size()) == size
}

// fetches are the bundle artifacts being fetched, or waiting to be tried
// again, by reference.
type fetches struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	state  map[string]*fetchState
	// prefetched is each vehicle's last look by prefetch.
	prefetched map[uint32]prefetchLook
}

// prefetchLook is a look of prefetch at a vehicle's uplinks: when (Poll's
// clock), whether the station's link was up, and the vehicle's open
// uplinks as the store had them (their index's entries and revisions).
type prefetchLook struct {
	at   time.Time
	up   bool
	open uplinksMark
}

// uplinksMark sums up a vehicle's open uplink index (open/VEHICLE/): every
// write of an open uplink (planned, a supplement, a state change) writes
// its entry, so a change of count or of highest revision is a change of
// the uplinks.
type uplinksMark struct {
	n      int
	maxRev int64
}

type fetchState struct {
	vehicle  uint32
	running  bool
	err      error // the last failure, not yet reported
	failures int
	retry    time.Time // no new attempt before (Poll's clock)
}

func (f *fetches) init() {
	if f.state == nil {
		f.ctx, f.cancel = context.WithCancel(context.Background())
		f.state = map[string]*fetchState{}
		f.prefetched = map[uint32]prefetchLook{}
	}
}

// close stops the fetches under way and waits for them.
func (f *fetches) close() {
	f.mu.Lock()
	if f.cancel != nil {
		f.cancel()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// fetchFailure is a failed fetch of an artifact, as reported once to the
// session.
type fetchFailure struct {
	failures int
	retry    time.Time
	err      error
}

// bundleReady says whether r's blob is in the bundle directory, or cannot
// come from anywhere else (no artifact: sending it fails as before). If
// not, it has the artifact fetched (unless a fetch runs, or waits to be
// tried again) and the caller waits: the next Poll asks again. A fetch
// that failed since the last call is returned, once.
func (d *Daemon) bundleReady(r *transferRec, now time.Time) (bool, *fetchFailure) {
	if r.Artifact == "" || d.haveBlob(r.Blob, r.Size) {
		return true, nil
	}
	return false, d.fetchArtifact(r, now)
}

// fetchArtifact starts fetching r's artifact in the background, unless a
// fetch of it runs or a failed one waits for its retry time. A failure is
// reported here, on the session's path, once: logged and returned.
func (d *Daemon) fetchArtifact(r *transferRec, now time.Time) (failed *fetchFailure) {
	f := &d.fetch
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	if f.ctx.Err() != nil {
		return nil // closed
	}
	st := f.state[r.Artifact]
	if st == nil {
		st = &fetchState{vehicle: r.Vehicle}
		f.state[r.Artifact] = st
	}
	if st.running {
		return nil
	}
	if st.err != nil {
		wait := fetchRetryMax
		if st.failures < 6 {
			wait = min(fetchRetryMin<<(st.failures-1), fetchRetryMax)
		}
		st.retry = now.Add(wait)
		d.log.Error("groundd: bundle fetch failed", "vehicle", r.Vehicle, "uplink", r.Uplink, "transfer", r.ID,
			"artifact", r.Artifact, "registry", registryOf(r.Artifact), "blob", r.Blob, "failures", st.failures, "retry_in", wait, "err", st.err)
		failed = &fetchFailure{failures: st.failures, retry: st.retry, err: st.err}
		st.err = nil
	}
	if now.Before(st.retry) {
		return failed
	}
	st.running = true
	f.wg.Add(1)
	d.log.Info("groundd: fetching the bundle", "vehicle", r.Vehicle, "uplink", r.Uplink, "transfer", r.ID, "artifact", r.Artifact, "blob", r.Blob)
	go d.runFetch(f.ctx, st, *r)
	return failed
}

// forgetFetches drops the fetch states of vehicle's artifacts that no
// uplink of us (the vehicle's open uplinks) names any more: its uplink
// ended, or was planned again. A fetch under way ends by itself.
func (d *Daemon) forgetFetches(vehicle uint32, us []Uplink) {
	f := &d.fetch
	f.mu.Lock()
	defer f.mu.Unlock()
	for ref, st := range f.state {
		if st.vehicle != vehicle || st.running {
			continue
		}
		named := false
		for _, u := range us {
			named = named || (!u.State.Final() && slices.Contains(u.Bundles, ref))
		}
		if !named {
			delete(f.state, ref)
		}
	}
}

// fetchFailed handles a failed fetch of r's artifact, which the holder
// must send from, for active uplink u: the failure goes into u's Waiting,
// so an operator sees why it does not move; after fetchAttempts failures
// the artifact is taken as lost (garbage-collected, or in a registry this
// station does not use) and the uplink is planned again (replan).
func (d *Daemon) fetchFailed(ctx context.Context, s *session, u *Uplink, r *transferRec, ff *fetchFailure, now time.Time) error {
	reg := registryOf(r.Artifact)
	if ff.failures >= fetchAttempts {
		why := fmt.Sprintf("bundle artifact %s could not be fetched from %s (%d attempts): %v", r.Artifact, reg, ff.failures, ff.err)
		d.log.Warn("groundd: planning the uplink again", "vehicle", u.Vehicle, "uplink", u.ID, "plan", r.Plan,
			"artifact", r.Artifact, "registry", reg, "failures", ff.failures, "err", ff.err)
		return d.replan(ctx, s, u, why, now)
	}
	note := fmt.Sprintf("bundle fetch of %s from %s failed (attempt %d of %d, again at %s): %v", r.Artifact, reg,
		ff.failures, fetchAttempts, ff.retry.UTC().Format(time.RFC3339), ff.err)
	return d.updateUplink(ctx, u.ID, func(x *Uplink, found bool) error {
		if !found || x.State != UplinkActive {
			return store.ErrSkip
		}
		x.Waiting, x.Updated = note, now.UTC()
		return nil
	})
}

// replan abandons active uplink u's plans and queues it again, so that
// the next step plans it afresh (from the images: a new plan, pushed as a
// new artifact): its last plan is abandoned on the vehicle
// (transfer_abort, which frees its staging, as for a cancelled uplink),
// its unfinished transfers are abandoned, and its plans, transfers and
// artifacts are cleared; Waiting says why.
func (d *Daemon) replan(ctx context.Context, s *session, u *Uplink, why string, now time.Time) error {
	if len(u.Plans) > 0 {
		plan := u.Plans[len(u.Plans)-1]
		c, err := d.sendCommand(ctx, s, now, "transfer_abort", map[string]any{"id": plan, "kind": uint64(1)}, false)
		if err != nil {
			return err
		}
		d.log.Info("groundd: plan abandoned on the vehicle", "vehicle", u.Vehicle, "uplink", u.ID, "plan", plan, "command", c.ID)
	}
	for _, id := range u.Transfers {
		r, _, err := getJSON[transferRec](ctx, d.st, keyTransfer(id))
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return err
		}
		if !r.Done && !r.Abandoned {
			r.Abandoned, r.Error = true, "planned again: "+why
			if err := d.saveTransfer(ctx, &r); err != nil {
				return err
			}
		}
	}
	err := d.updateUplink(ctx, u.ID, func(x *Uplink, found bool) error {
		if !found || x.State != UplinkActive {
			return store.ErrSkip
		}
		x.State, x.Updated, x.Waiting = UplinkQueued, now.UTC(), "planned again: "+why
		x.Plans, x.Accepted, x.Transfers, x.Bundles = nil, nil, nil, nil
		x.Mismatch, x.MismatchAt = nil, time.Time{}
		return nil
	})
	if err != nil {
		return err
	}
	d.forgetFetches(u.Vehicle, nil)
	return nil
}

// runFetch fetches r's artifact into the bundle directory.
func (d *Daemon) runFetch(ctx context.Context, st *fetchState, r transferRec) {
	defer d.fetch.wg.Done()
	start := time.Now()
	n, err := d.fetchBlobs(ctx, r)
	f := &d.fetch
	f.mu.Lock()
	st.running = false
	if err != nil {
		st.err = err
		st.failures++
	} else {
		delete(f.state, r.Artifact)
	}
	closed := f.ctx.Err() != nil
	f.mu.Unlock()
	switch {
	case err == nil:
		d.countFetch(r.Vehicle, fetchOK)
	case !closed:
		d.countFetch(r.Vehicle, fetchFailed)
	}
	if err == nil {
		d.log.Info("groundd: bundle fetched", "vehicle", r.Vehicle, "artifact", r.Artifact, "bytes", n, "took", time.Since(start).Round(time.Millisecond))
	}
	d.poke(r.Vehicle)
}

// fetchBlobs fetches the blobs of r's artifact that the bundle directory
// lacks, and checks that r's blob was among them. Only the station's own
// bundle registry is asked: a reference read from the shared store does
// not send the station to any host it names.
func (d *Daemon) fetchBlobs(ctx context.Context, r transferRec) (uint64, error) {
	ref, err := images.ParseRef(r.Artifact)
	if err != nil {
		return 0, err
	}
	switch host := registryOf(r.Artifact); {
	case ref.Transport != images.TransportDocker:
		return 0, fmt.Errorf("groundd: artifact %s: not in a registry", r.Artifact)
	case d.cfg.Bundles == nil:
		return 0, fmt.Errorf("groundd: artifact %s: this station has no bundle registry configured (bundles.registry %s, as the other stations)", r.Artifact, host)
	case host != d.cfg.Bundles.Registry:
		return 0, fmt.Errorf("groundd: artifact %s: in registry %s, not this station's bundle registry %s", r.Artifact, host, d.cfg.Bundles.Registry)
	}
	ctx, cancel := context.WithTimeout(ctx, bundleTimeout)
	defer cancel()
	var n uint64
	a, err := images.FetchBundle(ctx, ref, d.registryOptions(), func(desc oci.Descriptor, open func() (io.Reader, error)) error {
		if d.haveBlob(desc.Digest.String(), uint64(desc.Size)) {
			return nil
		}
		rd, err := open()
		if err != nil {
			return err
		}
		// Verified as it is read: a bad blob fails the copy, and
		// putBlob keeps nothing of it.
		dg, size, err := d.putBlob(func(w io.Writer) error { _, err := io.Copy(w, rd); return err })
		if err != nil {
			return err
		}
		if dg != desc.Digest || size != uint64(desc.Size) {
			return fmt.Errorf("groundd: blob %s stored as %s of %d bytes", desc.Digest, dg, size)
		}
		n += size
		return nil
	})
	if err != nil {
		return n, err
	}
	if a.Vehicle != r.Vehicle {
		return n, fmt.Errorf("groundd: artifact %s is for vehicle %d, not %d", r.Artifact, a.Vehicle, r.Vehicle)
	}
	if !d.haveBlob(r.Blob, r.Size) {
		return n, fmt.Errorf("groundd: artifact %s does not hold blob %s of %d bytes", r.Artifact, r.Blob, r.Size)
	}
	return n, nil
}

// errAltered: a blob in the bundle directory no longer hashes to its
// name (openBlob).
var errAltered = errors.New("altered on disk")

// refetch says whether the error err of sending r is mended by fetching
// r's blob again: it was altered on disk, and the registry holds it. The
// altered copy is removed (it is never sent), and the next Poll fetches.
func (d *Daemon) refetch(r *transferRec, err error) bool {
	if r.Artifact == "" || !errors.Is(err, errAltered) {
		return false
	}
	d.log.Warn("groundd: the bundle directory's copy is altered on disk: fetching it again", "vehicle", r.Vehicle, "uplink", r.Uplink,
		"transfer", r.ID, "blob", r.Blob, "artifact", r.Artifact, "err", err)
	if p, perr := d.blobPath(r.Blob); perr == nil {
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			d.log.Error("groundd: remove the altered blob", "blob", r.Blob, "err", rerr)
			return false
		}
	}
	return true
}

// registryOf is the registry host of an artifact reference.
func registryOf(ref string) string {
	host, _, _ := strings.Cut(strings.TrimPrefix(ref, "docker://"), "/")
	return host
}

// fetchWake is the earliest time a failed fetch for vehicle may be tried
// again (zero: none waits).
func (d *Daemon) fetchWake(vehicle uint32) time.Time {
	f := &d.fetch
	f.mu.Lock()
	defer f.mu.Unlock()
	var t time.Time
	for _, st := range f.state {
		if st.vehicle == vehicle && !st.running {
			t = sooner(t, st.retry)
		}
	}
	return t
}

// prefetch, on a station that does not hold s's vehicle, fetches the
// blobs of the vehicle's active uplink that it lacks, so that a takeover
// at its next pass sends at once. It looks when the vehicle's open
// uplinks changed in the store since its last look (another station
// planned one: one List of their index per standby step tells), when its
// link to the vehicle has come up (up: its pass begins while another
// station holds the vehicle), and every prefetchEvery; only on a station
// with a bundle registry.
func (d *Daemon) prefetch(ctx context.Context, s *session, now time.Time, up bool) {
	if d.cfg.Bundles == nil {
		return
	}
	mark, markErr := d.uplinksMark(ctx, s.cfg.ID)
	f := &d.fetch
	f.mu.Lock()
	f.init()
	last, ok := f.prefetched[s.cfg.ID]
	why := ""
	switch {
	case !ok:
		why = "first"
	case markErr == nil && mark != last.open:
		why = "uplinks changed"
	case up && !last.up:
		why = "link up"
	case now.Sub(last.at) >= prefetchEvery || now.Before(last.at):
		why = "timer"
	}
	next := prefetchLook{at: last.at, up: up, open: last.open}
	if markErr == nil {
		next.open = mark
	}
	if why != "" {
		next.at = now
	}
	f.prefetched[s.cfg.ID] = next
	f.mu.Unlock()
	if why == "" {
		return
	}
	d.log.Debug("groundd: prefetch look", "vehicle", s.cfg.ID, "why", why)
	us, err := d.openUplinks(ctx, s.cfg.ID)
	if err != nil {
		d.log.Debug("groundd: prefetch", "vehicle", s.cfg.ID, "err", err)
		return
	}
	d.forgetFetches(s.cfg.ID, us)
	for _, u := range us {
		if u.State != UplinkActive {
			continue
		}
		for _, id := range u.Transfers {
			r, _, err := getJSON[transferRec](ctx, d.st, keyTransfer(id))
			if err != nil {
				if !errors.Is(err, ErrNotFound) {
					d.log.Debug("groundd: prefetch", "vehicle", s.cfg.ID, "transfer", id, "err", err)
				}
				continue
			}
			if !r.Done && !r.Abandoned {
				d.bundleReady(&r, now) // a failure is the holder's to act on
			}
		}
	}
}

// uplinksMark reads the mark of vehicle's open uplinks.
func (d *Daemon) uplinksMark(ctx context.Context, vehicle uint32) (uplinksMark, error) {
	kvs, err := d.st.List(ctx, fmt.Sprintf("open/%010d/", vehicle))
	if err != nil {
		return uplinksMark{}, err
	}
	m := uplinksMark{n: len(kvs)}
	for _, kv := range kvs {
		m.maxRev = max(m.maxRev, kv.Rev)
	}
	return m, nil
}
