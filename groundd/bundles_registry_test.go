package groundd_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/groundd/images/imagestest"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/groundd/store/etcdtest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
)

// lineLog is a test log that keeps its lines, for the test to look for
// what the daemon said it did (the fetches run in the background).
type lineLog struct {
	t     testing.TB
	name  string
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) Write(p []byte) (int, error) {
	s := strings.TrimRight(string(p), "\n")
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
	l.t.Log(l.name + ": " + s)
	return len(p), nil
}

// find returns the first line with every one of subs.
func (l *lineLog) find(subs ...string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		ok := true
		for _, sub := range subs {
			ok = ok && strings.Contains(s, sub)
		}
		if ok {
			return s, true
		}
	}
	return "", false
}

// regStation is a ground station of the bundle registry test: a groundd
// with a state directory (and so a bundle directory) of its own, on the
// shared etcd store.
type regStation struct {
	name string
	d    *groundd.Daemon
	st   *store.Etcd
	log  *lineLog
	dir  string
	in   [][]byte
	// chunks counts the chunk frames it sent; resent those the vehicle
	// had reported journaled in a report that reached the ground.
	chunks, resent int
}

// TestBundlesRegistry: bundles in the registry (issue 14, part 3), on the
// real docker-registry and a real etcd. Station A plans the uplink, pushes
// the plan and bundle to the registry as an artifact and sends part of it
// in its pass; station B, whose bundle directory is empty, takes the
// vehicle over at the next pass. First B cannot reach the registry (it
// refuses plain HTTP): the fetch fails with an error naming the artifact
// and the registry, is retried, and the uplink waits, active, B sending no
// chunk. Station C, whose link is never up, fetches the plan and bundle
// ahead of a pass while it stands by. Restarted with the right settings, and with a copy of the bundle
// altered on its disk, B refuses its copy, fetches the artifact by digest
// and completes the uplink; no chunk the vehicle reported journaled is
// sent again.
func TestBundlesRegistry(t *testing.T) {
	const (
		lease = 2 * time.Second
		tick  = 50 * time.Millisecond
	)
	ctx := context.Background()
	reg := imagestest.StartRegistry(t, imagestest.RegistryConfig{})
	cluster := etcdtest.Start(t, 1)
	w := newWorld(t, testrand.New(t), 0, nil)
	w.cfg.Vehicles[0].Rate = 8000 // slow: several passes
	w.cfg.Bundles = &groundd.BundlesConfig{Registry: reg.Host, Repository: "flight/bundles"}
	w.cfg.Registry.PlainHTTP = true
	w.opts.Schedule = nil // links follow the test's signals

	reported := map[chunkKey]bool{}
	open := func(s *regStation, plainHTTP bool) {
		var err error
		if s.st, err = store.OpenEtcd(store.EtcdConfig{Endpoints: cluster.Endpoints(), RequestTimeout: time.Second}); err != nil {
			t.Fatal(err)
		}
		cfg, opts := w.cfg, w.opts
		cfg.Station, cfg.Lease, cfg.StateDir = s.name, groundd.Duration(lease), s.dir
		cfg.Registry.PlainHTTP = plainHTTP
		opts.Store = s.st
		s.log = &lineLog{t: t, name: s.name}
		opts.Log = slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelInfo}))
		if s.d, err = groundd.Open(cfg, opts); err != nil {
			t.Fatal(err)
		}
	}
	closeStation := func(s *regStation) {
		if s.d != nil {
			s.d.Close()
			s.st.Close()
			s.d = nil
		}
	}
	a := &regStation{name: "station-a", dir: filepath.Join(w.dir, "a")}
	b := &regStation{name: "station-b", dir: filepath.Join(w.dir, "b")}
	// C never sees the vehicle: it stands by, and fetches ahead.
	c := &regStation{name: "station-c", dir: filepath.Join(w.dir, "c")}
	open(a, true)
	open(c, true)
	t.Cleanup(func() { closeStation(a); closeStation(b); closeStation(c) })

	stations := []*regStation{a, b, c}
	// step polls every open station (link up or not: up[i]) and the
	// vehicle once.
	step := func(up []bool) {
		var toVehicle [][]byte
		anyUp := false
		for i, s := range stations {
			if s.d == nil {
				continue
			}
			s.d.SetLink(vehicleID, up[i])
			anyUp = anyUp || up[i]
			for _, f := range s.in {
				if m, err := w.codec.Decode(f); err == nil {
					if r, ok := m.(*protocol.Report); ok {
						for c := range held(r) {
							reported[chunkKey{r.ID, c}] = true
						}
					}
				}
			}
			out, _, err := s.d.Poll(ctx, vehicleID, w.now, s.in)
			s.in = nil
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			for _, f := range out {
				if !up[i] {
					t.Fatalf("%s sent with its link down", s.name)
				}
				m, err := w.codec.Decode(f)
				if err != nil {
					t.Fatalf("%s sent an undecodable frame: %v", s.name, err)
				}
				if c, ok := m.(*protocol.Chunk); ok {
					s.chunks++
					if reported[chunkKey{c.ID, c.Index}] {
						s.resent++
					}
				}
			}
			toVehicle = append(toVehicle, out...)
		}
		w.veh.SetLink(w.now, anyUp)
		back, err := w.veh.Step(w.now, toVehicle)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range stations {
			if s.d != nil && up[i] {
				s.in = append(s.in, back...)
			}
		}
		w.now = w.now.Add(tick)
	}
	between := func() {
		step([]bool{false, false, false})
		w.now = w.now.Add(90 * time.Minute)
	}

	if _, err := a.d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := a.d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	// Pass 1, over station A: until part of the bundle is sent.
	bundleStarted := func() bool {
		ts, err := a.d.UplinkTransfers(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, tr := range ts {
			if tr.Kind == "bundle" && tr.Chunks > 0 && tr.Chunks < tr.Total {
				return true
			}
		}
		return false
	}
	for p := 0; !bundleStarted(); p++ {
		if p > 2000 {
			t.Fatal("station A never sent part of the bundle")
		}
		step([]bool{true, false, false})
	}
	between()
	x, err := a.d.QueueShow(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if x.State != groundd.UplinkActive || len(x.Bundles) != 1 {
		t.Fatalf("after pass 1: uplink %s, bundles %v", x.State, x.Bundles)
	}
	art, err := images.ParseRef(x.Bundles[0])
	if err != nil || art.Repo != reg.Host+"/flight/bundles" || art.Digest == "" {
		t.Fatalf("bundle artifact %q: %v", x.Bundles[0], err)
	}
	t.Logf("pass 1: station A sent %d chunks; the uplink's bundle artifact is %s", a.chunks, art)
	// Station C, standing by (its link never up), fetched the plan and
	// bundle ahead of a pass it may take over.
	for start := time.Now(); ; {
		if _, ok := c.log.find("bundle fetched", string(art.Digest)); ok {
			break
		}
		if time.Since(start) > time.Minute {
			t.Fatal("station C did not fetch the bundle ahead of its pass")
		}
		step([]bool{false, false, false})
	}
	if _, held := c.log.find("station holds the vehicle"); held || c.chunks != 0 {
		t.Fatalf("station C held the vehicle (%v) or sent %d chunks", held, c.chunks)
	}
	if ents, _ := os.ReadDir(filepath.Join(c.dir, "bundles")); len(ents) != 2 {
		t.Errorf("station C's bundle directory holds %d entries, want the plan and the bundle", len(ents))
	}
	if n := fetchCount(t, c.d, "ok"); n != 1 {
		t.Errorf("station C counted %d fetches ok, want 1", n)
	}
	closeStation(c)
	closeStation(a) // A is gone; B never saw its bundle directory

	// Pass 2, over station B, which cannot reach the registry.
	open(b, false)
	if ents, _ := os.ReadDir(filepath.Join(b.dir, "bundles")); len(ents) != 0 {
		t.Fatalf("station B's bundle directory holds %d entries", len(ents))
	}
	var failed string
	start := time.Now()
	for p := 0; ; p++ {
		step([]bool{false, true, false})
		var ok bool
		failed, ok = b.log.find("bundle fetch failed")
		// Tried again after 5 s of the clock (100 polls), and failed
		// again.
		if _, again := b.log.find("bundle fetch failed", "failures=2"); ok && again {
			break
		}
		if time.Since(start) > time.Minute || p > 2000 {
			t.Fatalf("no failed fetch reported, then retried (%d polls): %q", p, failed)
		}
	}
	if !strings.Contains(failed, string(art.Digest)) || !strings.Contains(failed, "registry="+reg.Host) {
		t.Errorf("the failure does not name the artifact and the registry: %s", failed)
	}
	if x, _ := b.d.QueueShow(ctx, u.ID); x.State != groundd.UplinkActive || b.chunks != 0 {
		t.Fatalf("while the fetch fails: uplink %s %q, station B sent %d chunks", x.State, x.Error, b.chunks)
	}
	if n, ok := fetchCount(t, b.d, "failed"), fetchCount(t, b.d, "ok"); n < 2 || ok != 0 {
		t.Errorf("station B counted %d failed fetches and %d ok, want 2 or more and 0", n, ok)
	}
	between()
	closeStation(b)

	// The artifact, as any registry client reads it: the plan and the
	// bundle, for this vehicle and plan.
	var bundleBlob []byte
	var bundleDesc oci.Descriptor
	a2, err := images.FetchBundle(ctx, art, images.Options{Registry: images.RegistryOptions{PlainHTTP: true}},
		func(d oci.Descriptor, open func() (io.Reader, error)) error {
			r, err := open()
			if err != nil {
				return err
			}
			b, err := io.ReadAll(r)
			if d.MediaType == update.MediaTypeBundle {
				bundleBlob, bundleDesc = b, d
			}
			return err
		})
	if err != nil || a2.Vehicle != vehicleID || len(x.Plans) != 1 || a2.Plan != x.Plans[0] || a2.Subject.Digest != w.v2.ManifestDigest || bundleBlob == nil {
		t.Fatalf("the artifact in the registry: %+v %v", a2, err)
	}
	// A copy of the bundle altered on B's disk (same size, one bit
	// flipped) is never sent: B fetches it again from the registry.
	bundleBlob[len(bundleBlob)/2] ^= 0x10
	if err := os.WriteFile(filepath.Join(b.dir, "bundles", "sha256-"+bundleDesc.Digest.Encoded()), bundleBlob, 0o600); err != nil {
		t.Fatal(err)
	}

	// Passes 3 and on, over station B restarted with the right settings.
	open(b, true)
	done := func() bool {
		v, err := b.d.VehicleShow(ctx, vehicleID)
		if err != nil || len(v.Slots) != 2 || v.Slots[1].Manifest != w.v2.ManifestDigest.String() || v.Slots[1].State != "written" {
			return false
		}
		x, err := b.d.QueueShow(ctx, u.ID)
		return err == nil && x.State == groundd.UplinkDone
	}
	for pass := 0; pass < 40 && !done(); pass++ {
		for p := 0; p < 120 && !done(); p++ {
			step([]bool{false, true, false})
		}
		between()
	}
	if !done() {
		x, _ := b.d.QueueShow(ctx, u.ID)
		t.Fatalf("the uplink did not complete at station B: %s %s", x.State, x.Error)
	}
	if _, ok := b.log.find("bundle fetched", string(art.Digest)); !ok {
		t.Error("station B did not log fetching the artifact")
	}
	if n := fetchCount(t, b.d, "ok"); n < 1 {
		t.Errorf("station B counted %d fetches ok", n)
	}
	if _, ok := b.log.find("altered on disk", string(bundleDesc.Digest)); !ok {
		t.Error("station B did not report its altered copy of the bundle")
	}
	if b.chunks == 0 {
		t.Error("station B sent no chunk: it did not finish the uplink")
	}
	if b.resent+a.resent != 0 {
		t.Errorf("%d chunks the vehicle had reported journaled were sent again", a.resent+b.resent)
	}
	ents, _ := os.ReadDir(filepath.Join(b.dir, "bundles"))
	var blobs []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "sha256-") {
			blobs = append(blobs, e.Name())
		}
	}
	if len(blobs) != 2 {
		t.Errorf("station B's bundle directory: %v, want the plan and the bundle", blobs)
	}
	t.Log(fmt.Sprintf("station A sent %d chunks, station B %d (after fetching %s)", a.chunks, b.chunks, art))
}

// TestBundlesConfig: the bundle registry is off by default, and a config
// that names one names a registry host and a valid repository.
func TestBundlesConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "groundd.json")
	load := func(s string) (groundd.Config, error) {
		if err := os.WriteFile(p, []byte(`{"state_dir": "s", "ground_key": "g"`+s+`}`), 0o644); err != nil {
			t.Fatal(err)
		}
		return groundd.LoadConfig(p)
	}
	if c, err := load(``); err != nil || c.Bundles != nil {
		t.Fatalf("default: %+v %v", c.Bundles, err)
	}
	c, err := load(`, "bundles": {"registry": "registry.example:5000", "repository": "ops/bundles"}`)
	if err != nil || c.Bundles.Registry != "registry.example:5000" || c.Bundles.Repository != "ops/bundles" {
		t.Fatalf("bundles: %+v %v", c.Bundles, err)
	}
	for _, bad := range []string{
		`{}`,
		`{"registry": "registry.example/ops"}`,
		`{"registry": "nohost"}`,
		`{"registry": "registry.example", "repository": "Upper/Case"}`,
		`{"registry": "registry.example", "repository": "a//b"}`,
	} {
		if _, err := load(`, "bundles": ` + bad); err == nil || !strings.Contains(err.Error(), "bundles") {
			t.Errorf("bundles %s: %v, want an error about bundles", bad, err)
		}
	}
}

// TestBundlesPushFails: when the bundle registry cannot take the plan, the
// push is tried again (logged as an error naming the registry, with the
// wait), and after the bound the uplink fails at planning with the
// registry's error; nothing of it is sent: an uplink other stations could
// not resume is not started.
func TestBundlesPushFails(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	// Nothing listens on port 1.
	w.cfg.Bundles = &groundd.BundlesConfig{Registry: "127.0.0.1:1", Repository: "flight/bundles"}
	w.cfg.Registry.PlainHTTP = true
	log := &lineLog{t: t, name: "groundd"}
	w.opts.Log = slog.New(slog.NewTextHandler(log, nil))
	d := w.open()
	defer func() { d.Close() }()
	ctx := context.Background()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	d, st := w.run(d, u.ID, 0, nil)
	x, err := d.QueueShow(ctx, u.ID)
	if err != nil || x.State != groundd.UplinkFailed || !strings.Contains(x.Error, "bundle registry 127.0.0.1:1") {
		t.Fatalf("uplink %s %q %v, want failed naming the bundle registry", x.State, x.Error, err)
	}
	if !strings.Contains(x.Error, "(5 attempts)") {
		t.Errorf("uplink error %q does not say how many attempts", x.Error)
	}
	for i := 1; i < 5; i++ {
		if _, ok := log.find("bundle push failed", "registry=127.0.0.1:1", fmt.Sprintf("failures=%d ", i), "retry_in="); !ok {
			t.Errorf("no log of failed push %d with its retry", i)
		}
	}
	if len(st.passesUsed) != 0 || len(x.Transfers) != 0 {
		t.Fatalf("sent chunks in passes %v, transfers %v", st.passesUsed, x.Transfers)
	}
}

// TestBundlesPushRetried: a bundle registry that is unreachable when the
// uplink is planned, and back a little later: the push is tried again, the
// uplink waits queued meanwhile (Waiting names the registry and the
// error), nothing is sent, and once the push goes through the uplink goes
// on with its artifact. Before, the first failure failed the uplink.
func TestBundlesPushRetried(t *testing.T) {
	const tick = 50 * time.Millisecond
	ctx := context.Background()
	reg := imagestest.StartRegistry(t, imagestest.RegistryConfig{})
	// In front of the registry, a proxy that refuses every request (403:
	// the client does not retry it by itself) until the test lets them
	// through.
	var back atomic.Bool
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: reg.Host})
	front := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !back.Load() {
			http.Error(rw, "registry away", http.StatusForbidden)
			return
		}
		rp.ServeHTTP(rw, r)
	}))
	defer front.Close()
	w := newWorld(t, testrand.New(t), 0, nil)
	host := strings.TrimPrefix(front.URL, "http://")
	w.cfg.Bundles = &groundd.BundlesConfig{Registry: host, Repository: "flight/bundles"}
	w.cfg.Registry.PlainHTTP = true
	w.opts.Schedule = nil
	log := &lineLog{t: t, name: "groundd"}
	w.opts.Log = slog.New(slog.NewTextHandler(log, nil))
	d := w.open()
	defer d.Close()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	d.SetLink(vehicleID, true)
	w.veh.SetLink(w.now, true)
	var in [][]byte
	sent := 0
	step := func() {
		out, _, err := d.Poll(ctx, vehicleID, w.now, in)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range out {
			if m, err := w.codec.Decode(f); err == nil {
				if _, ok := m.(*protocol.Chunk); ok {
					sent++
				}
			}
		}
		if in, err = w.veh.Step(w.now, out); err != nil {
			t.Fatal(err)
		}
		w.now = w.now.Add(tick)
	}
	for p := 0; ; p++ {
		if p > 4000 {
			t.Fatal("no second failed push")
		}
		step()
		if _, ok := log.find("bundle push failed", "failures=2 "); ok {
			break
		}
	}
	x, err := d.QueueShow(ctx, u.ID)
	if err != nil || x.State != groundd.UplinkQueued || !strings.Contains(x.Waiting, "bundle push to "+host+" failed (attempt 2 of 5") || sent != 0 {
		t.Fatalf("while the registry is away: uplink %s, waiting %q, %d chunks sent (%v)", x.State, x.Waiting, sent, err)
	}
	if line, _ := log.find("bundle push failed", "failures=1 "); !strings.Contains(line, "registry="+host) || !strings.Contains(line, "retry_in=5s") {
		t.Errorf("the first failure: %s", line)
	}
	back.Store(true)
	for p := 0; ; p++ {
		if p > 4000 {
			x, _ := d.QueueShow(ctx, u.ID)
			t.Fatalf("the uplink did not go on once the registry was back: %s %q %q", x.State, x.Error, x.Waiting)
		}
		step()
		if sent > 0 {
			break
		}
	}
	x, err = d.QueueShow(ctx, u.ID)
	if err != nil || x.State != groundd.UplinkActive || len(x.Bundles) != 1 || x.Waiting != "" || len(x.Plans) != 1 {
		t.Fatalf("after the registry came back: uplink %s, bundles %v, waiting %q, plans %v (%v)", x.State, x.Bundles, x.Waiting, x.Plans, err)
	}
	if _, ok := log.find("bundle pushed", x.Bundles[0]); !ok {
		t.Error("no log of the push")
	}
}

// fetchCount is d's count of the vehicle's bundle fetches that ended with
// result (groundd_vehicle_bundle_fetches_total).
func fetchCount(t *testing.T, d *groundd.Daemon, result string) uint64 {
	t.Helper()
	cs, err := d.VehicleCounters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cs[vehicleID].BundleFetches[result]
}

// TestBundlesPushStalls: a bundle registry that takes the connection and
// then answers nothing does not freeze the vehicle's session: the push
// runs in the background, every Poll returns, a command goes out, the
// uplink waits queued (Waiting says it is being pushed, to which
// registry), nothing is sent; once the registry answers, the uplink goes
// on. Before, the push ran on
// the Poll (up to bundleTimeout, 10 min, per attempt): a pass lost.
func TestBundlesPushStalls(t *testing.T) {
	const tick = 50 * time.Millisecond
	ctx := context.Background()
	reg := imagestest.StartRegistry(t, imagestest.RegistryConfig{})
	var (
		stalled = make(chan struct{}, 1)
		release = make(chan struct{})
		once    sync.Once
	)
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: reg.Host})
	front := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case stalled <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		rp.ServeHTTP(rw, r)
	}))
	defer front.Close()
	unstall := func() { once.Do(func() { close(release) }) }
	defer unstall() // before front.Close, which waits for the handlers
	w := newWorld(t, testrand.New(t), 0, nil)
	host := strings.TrimPrefix(front.URL, "http://")
	w.cfg.Bundles = &groundd.BundlesConfig{Registry: host, Repository: "flight/bundles"}
	w.cfg.Registry.PlainHTTP = true
	w.opts.Schedule = nil
	log := &lineLog{t: t, name: "groundd"}
	w.opts.Log = slog.New(slog.NewTextHandler(log, nil))
	d := w.open()
	defer d.Close()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	d.SetLink(vehicleID, true)
	w.veh.SetLink(w.now, true)
	var in [][]byte
	sent := 0
	step := func() {
		type polled struct {
			out [][]byte
			err error
		}
		done := make(chan polled, 1)
		go func() {
			out, _, err := d.Poll(ctx, vehicleID, w.now, in)
			done <- polled{out, err}
		}()
		var p polled
		select {
		case p = <-done:
		case <-time.After(30 * time.Second): // a watchdog, not a wait: Poll returns at once
			unstall()
			t.Fatal("Poll blocked on the stalled bundle registry")
		}
		if p.err != nil {
			t.Fatal(p.err)
		}
		for _, f := range p.out {
			if m, err := w.codec.Decode(f); err == nil {
				if _, ok := m.(*protocol.Chunk); ok {
					sent++
				}
			}
		}
		if in, err = w.veh.Step(w.now, p.out); err != nil {
			t.Fatal(err)
		}
		w.now = w.now.Add(tick)
	}
	for p := 0; ; p++ {
		if p > 4000 {
			t.Fatal("the push never reached the registry")
		}
		step()
		if len(stalled) > 0 {
			break
		}
	}
	// The registry holds the push: the session goes on meanwhile, and a
	// command queued now reaches the vehicle.
	if _, err := d.SendCommand(ctx, vehicleID, "noop", nil); err != nil {
		t.Fatal(err)
	}
	cmds := len(w.veh.Commands)
	for range 40 {
		step()
	}
	if len(w.veh.Commands) <= cmds {
		t.Fatalf("no command reached the vehicle while the registry stalled (%d before, %d after)", cmds, len(w.veh.Commands))
	}
	x, err := d.QueueShow(ctx, u.ID)
	if err != nil || x.State != groundd.UplinkQueued || !strings.Contains(x.Waiting, "pushing") || !strings.Contains(x.Waiting, host) || sent != 0 {
		t.Fatalf("while the registry stalls: uplink %s, waiting %q, %d chunks sent (%v)", x.State, x.Waiting, sent, err)
	}
	unstall()
	for p := 0; ; p++ {
		if p > 4000 {
			x, _ := d.QueueShow(ctx, u.ID)
			t.Fatalf("the uplink did not go on once the registry answered: %s %q %q", x.State, x.Error, x.Waiting)
		}
		step()
		if sent > 0 {
			break
		}
	}
	x, err = d.QueueShow(ctx, u.ID)
	if err != nil || x.State != groundd.UplinkActive || len(x.Bundles) != 1 || x.Waiting != "" || len(x.Plans) != 1 {
		t.Fatalf("after the registry answered: uplink %s, bundles %v, waiting %q, plans %v (%v)", x.State, x.Bundles, x.Waiting, x.Plans, err)
	}
}

// TestBundlesFetchGone: the artifact of a plan is gone from the bundle
// registry (garbage-collected) when the holder, lacking the bundle, must
// send it. Each failed fetch is written into the uplink's Waiting (the
// artifact, the registry, the attempt), so an operator sees why the active
// uplink does not move; after fetchAttempts failures the holder, which has
// the images, abandons the plan on the vehicle and plans the uplink again
// (pushing a new artifact), and the uplink completes. Before, the fetch was
// retried every 2 min forever with the uplink "active" and no reason
// shown.
func TestBundlesFetchGone(t *testing.T) {
	const tick = 50 * time.Millisecond
	ctx := context.Background()
	reg := imagestest.StartRegistry(t, imagestest.RegistryConfig{})
	var gone atomic.Value // the artifact's digest, once gone
	gone.Store("")
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: reg.Host})
	front := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if g := gone.Load().(string); g != "" && strings.Contains(r.URL.Path, g) {
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(http.StatusNotFound)
			io.WriteString(rw, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`)
			return
		}
		rp.ServeHTTP(rw, r)
	}))
	defer front.Close()
	w := newWorld(t, testrand.New(t), 0, nil)
	host := strings.TrimPrefix(front.URL, "http://")
	w.cfg.Bundles = &groundd.BundlesConfig{Registry: host, Repository: "flight/bundles"}
	w.cfg.Registry.PlainHTTP = true
	w.opts.Schedule = nil
	log := &lineLog{t: t, name: "groundd"}
	w.opts.Log = slog.New(slog.NewTextHandler(log, nil))
	d := w.open()
	defer d.Close()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	d.SetLink(vehicleID, true)
	w.veh.SetLink(w.now, true)
	var in [][]byte
	step := func() {
		out, _, err := d.Poll(ctx, vehicleID, w.now, in)
		if err != nil {
			t.Fatal(err)
		}
		if in, err = w.veh.Step(w.now, out); err != nil {
			t.Fatal(err)
		}
		w.now = w.now.Add(tick)
	}
	var x groundd.Uplink
	for p := 0; ; p++ {
		if p > 4000 {
			t.Fatal("the uplink never became active")
		}
		step()
		if x, err = d.QueueShow(ctx, u.ID); err == nil && x.State == groundd.UplinkActive {
			break
		}
	}
	// The station loses its copies (as one that took the vehicle over has
	// none) and the registry the artifact.
	old, oldPlan := x.Bundles[0], x.Plans[0]
	_, dg, _ := strings.Cut(old, "@")
	gone.Store(dg)
	bdir := filepath.Join(w.cfg.StateDir, "bundles")
	ents, err := os.ReadDir(bdir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(bdir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	sawWaiting := false
	for p := 0; ; p++ {
		if p > 20000 {
			t.Fatalf("the uplink did not complete: %s %q %q plans %v", x.State, x.Error, x.Waiting, x.Plans)
		}
		step()
		if x, err = d.QueueShow(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(x.Waiting, "bundle fetch of "+old) && strings.Contains(x.Waiting, "attempt 2 of") {
			sawWaiting = true
		}
		if x.State.Final() {
			break
		}
	}
	if !sawWaiting {
		t.Error("no fetch failure in the uplink's waiting")
	}
	if x.State != groundd.UplinkDone || len(x.Plans) != 1 || x.Plans[0] == oldPlan || len(x.Bundles) != 1 || x.Bundles[0] == old {
		t.Fatalf("uplink %s %q, plans %v (first %d), bundles %v", x.State, x.Error, x.Plans, oldPlan, x.Bundles)
	}
	if _, ok := log.find("planning the uplink again", "artifact="+old); !ok {
		t.Error("no log of the replan")
	}
}
