package groundd_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/groundtest"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/groundd/passes"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
)

const (
	vehicleID  = 7
	groundKey  = 3
	releaseKey = 5
	macKeyID   = 1
	maxFrame   = 1024
)

var t0 = time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC)

// world is an end-to-end test's setting: images, keys, a config, a
// schedule, the relay and the vehicle stand-in.
type world struct {
	t        testing.TB
	dir      string
	cfg      groundd.Config
	opts     groundd.Options
	v1, v2   ocitest.Image
	relay    *groundtest.Relay
	veh      *groundtest.Vehicle
	codec    *protocol.Codec
	schedule *passes.Schedule
	now      time.Time
	vcfg     groundtest.VehicleConfig
	// restartEvery, if > 0, restarts groundd every that many polls.
	restartEvery int
	// afterStep, if set, is called after every step of run, which
	// returns when it says so.
	afterStep func(d *groundd.Daemon) bool
	restarts  int
	// opener opens the uplink frames the test inspects, when sealed.
	opener *protocol.Opener
	// alt, if set, is the vehicle instead of veh (flightd's engine).
	alt stepper
}

// stepper is a vehicle as the test drives it.
type stepper interface {
	SetLink(now time.Time, up bool)
	Step(now time.Time, in [][]byte) ([][]byte, error)
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func newWorld(t testing.TB, rng *rand.Rand, loss float64, onBundle func(*update.Plan, []byte) []int) *world {
	t.Helper()
	l1 := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 3, Files: 12, MaxFileSize: 24 << 10})
	l2, changes := ocitest.Modify(rng, l1, ocitest.ModifyOptions{})
	// And a new layer: full data, enough to need several passes.
	l2 = append(l2, ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 1, Files: 16, MaxFileSize: 32 << 10})...)
	t.Logf("v2 changes: %v and a new layer", changes)
	return newWorldOf(t, rng, loss, onBundle, l1, l2)
}

// newWorldOf is newWorld with the layers of the booted image (l1) and of
// the update (l2) given.
func newWorldOf(t testing.TB, rng *rand.Rand, loss float64, onBundle func(*update.Plan, []byte) []int, l1, l2 []ocitest.Layer) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), now: t0}
	layout := filepath.Join(w.dir, "images")
	w.v1 = ocitest.Build(t, layout, "os-1", l1)
	w.v2 = ocitest.Build(t, layout, "os-2", l2)

	// The release key, as groundd keygen writes it, and the images signed
	// beside themselves in the layout, as groundd sign does.
	kf, err := images.GenerateKey(filepath.Join(w.dir, "release"), releaseKey, bytes.NewReader(bytes.Repeat([]byte{0x52}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	_, relPriv, err := images.ReadPrivateKey(kf.Private)
	if err != nil {
		t.Fatal(err)
	}
	relKeys, err := protocol.NewKeyring(protocol.Key{ID: releaseKey, Pub: relPriv.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	for i, im := range []ocitest.Image{w.v1, w.v2} {
		r, err := images.ParseRef(im.Ref.String())
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := images.Sign(context.Background(), r, images.Options{}, releaseKey, relPriv, uint64(i+1), "obc-rev-c"); err != nil {
			t.Fatal(err)
		}
	}

	// Keys as the config names them: hex files.
	seed := bytes.Repeat([]byte{0x47}, 32)
	mac := bytes.Repeat([]byte{0x4d}, protocol.MACKeyLen)
	writeKey := func(name string, k []byte) string {
		p := filepath.Join(w.dir, name)
		if err := os.WriteFile(p, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	w.cfg = groundd.Config{
		StateDir: filepath.Join(w.dir, "state"), GroundKey: writeKey("ground.key", seed), GroundKeyID: groundKey, MaxFrame: maxFrame,
		ReleaseKeys: kf.Public,
		Vehicles: []groundd.VehicleConfig{{ID: vehicleID, Name: "sat-7", MACKey: groundd.KeyRef{ID: macKeyID, File: writeKey("mac.key", mac)},
			Rate: 64000, RTT: groundd.Duration(200 * time.Millisecond)}},
	}
	// Passes: 12 s each, 95 minutes apart, at 16 kbit/s.
	var ws []passes.Window
	for i := range 40 {
		st := t0.Add(time.Duration(i) * 95 * time.Minute)
		ws = append(ws, passes.Window{Vehicle: vehicleID, Start: st, End: st.Add(12 * time.Second), Rate: 16000})
	}
	if w.schedule, err = passes.New(ws); err != nil {
		t.Fatal(err)
	}
	// Planning inline: the tests drive Poll with a simulated clock.
	w.opts = groundd.Options{Schedule: w.schedule, Now: func() time.Time { return w.now }, PlanInline: true,
		Log: slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))}

	if w.codec, err = protocol.NewCodec(maxFrame); err != nil {
		t.Fatal(err)
	}
	seedRelay := rng.Uint64()
	t.Logf("relay seed %d, loss %.2f", seedRelay, loss)
	if w.relay, err = groundtest.NewRelay(seedRelay, loss, maxFrame); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.relay.Close() })
	w.vcfg = groundtest.VehicleConfig{
		ID: vehicleID, Codec: w.codec, MACKey: protocol.MACKey{ID: macKeyID, Key: mac},
		GroundKeys:  map[uint32]ed25519.PublicKey{groundKey: ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)},
		ReleaseKeys: relKeys, Booted: w.v1.ManifestDigest, Version: 1, Epoch: 1, OnBundle: onBundle,
	}
	w.veh, err = groundtest.NewVehicle(w.vcfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) open() *groundd.Daemon {
	w.t.Helper()
	d, err := groundd.Open(w.cfg, w.opts)
	if err != nil {
		w.t.Fatal(err)
	}
	return d
}

// held returns the chunks a report says the vehicle journaled.
func held(r *protocol.Report) map[uint32]bool {
	h := map[uint32]bool{}
	for i := uint32(0); i < r.Watermark; i++ {
		h[i] = true
	}
	missing := map[uint32]bool{}
	r.Ranges(func(s, e uint32) {
		for i := s; i < e; i++ {
			missing[i] = true
		}
	})
	for i := r.Cursor; i < r.End; i++ {
		if !missing[i] {
			h[i] = true
		}
	}
	return h
}

type chunkKey struct {
	id  uint64
	idx uint32
}

// run drives daemon and vehicle through the passes until the uplink ends
// or the passes run out; restartAt, if > 0, restarts groundd once the
// vehicle holds that fraction of the bundle transfer.
type runStats struct {
	passesUsed     map[int]bool
	restarted      bool
	resentReported int   // chunks sent after the restart that the vehicle had journaled and reported
	dupsAfter      int64 // chunks that reached the vehicle after the restart and that it already held
	sentAfter      int
	polls          int
}

func (w *world) run(d *groundd.Daemon, uplink uint64, restartAt float64, until func(*groundd.Daemon) bool) (*groundd.Daemon, runStats) {
	t := w.t
	ctx := context.Background()
	st := runStats{passesUsed: map[int]bool{}}
	reported := map[chunkKey]bool{} // from reports that reached the ground
	var reportedAtRestart map[chunkKey]bool
	var dupsAtRestart int64
	var in [][]byte
	for st.polls = 0; st.polls < 200000; st.polls++ {
		win, up := w.schedule.At(vehicleID, w.now)
		w.relay.Link = up
		var veh stepper = w.veh
		if w.alt != nil {
			veh = w.alt
		}
		veh.SetLink(w.now, up)
		// The reports groundd takes in now: what it knows the vehicle holds.
		for _, f := range in {
			if m, err := w.codec.Decode(f); err == nil {
				if r, ok := m.(*protocol.Report); ok {
					for i := range held(r) {
						reported[chunkKey{r.ID, i}] = true
					}
				}
			}
		}
		out, _, err := d.Poll(ctx, vehicleID, w.now, in)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range out {
			var m protocol.Message
			var err error
			if w.opener != nil {
				if f, err = w.opener.Open(f); err != nil {
					t.Fatalf("groundd sent a frame that does not open: %v", err)
				}
				m, err = w.vcfg.Codec.Decode(f)
			} else {
				m, err = w.codec.Decode(f)
			}
			if err != nil {
				t.Fatalf("groundd sent an undecodable frame: %v", err)
			}
			if c, ok := m.(*protocol.Chunk); ok {
				if up {
					st.passesUsed[int(win.Start.Sub(t0)/(95*time.Minute))] = true
				}
				if st.restarted {
					st.sentAfter++
					if reportedAtRestart[chunkKey{c.ID, c.Index}] {
						st.resentReported++
					}
				}
			}
		}
		delivered, err := w.relay.Up(out)
		if err != nil {
			t.Fatal(err)
		}
		vout, err := veh.Step(w.now, delivered)
		if err != nil {
			t.Fatal(err)
		}
		if in, err = w.relay.Down(vout); err != nil {
			t.Fatal(err)
		}
		u, err := d.QueueShow(ctx, uplink)
		if err != nil {
			t.Fatal(err)
		}
		if u.State.Final() && (until == nil || until(d)) {
			if w.alt == nil {
				st.dupsAfter = w.veh.Rx.Stats.Duplicates - dupsAtRestart
			}
			return d, st
		}
		if w.afterStep != nil && w.afterStep(d) {
			return d, st
		}
		if w.restartEvery > 0 && st.polls%w.restartEvery == w.restartEvery-1 {
			reportedAtRestart = map[chunkKey]bool{}
			for k := range reported {
				reportedAtRestart[k] = true
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			d = w.open()
			st.restarted = true
			w.restarts++
			in = nil
		}
		if restartAt > 0 && !st.restarted && w.alt == nil {
			for _, id := range w.veh.Rx.Active() {
				h, total, _ := w.veh.Rx.Progress(id)
				ts, _ := d.UplinkTransfers(ctx, uplink)
				isBundle := false
				for _, tr := range ts {
					isBundle = isBundle || (tr.ID == id && tr.Kind == "bundle")
				}
				if isBundle && float64(h) >= restartAt*float64(total) && reported[chunkKey{id, 0}] {
					reportedAtRestart = map[chunkKey]bool{}
					for k := range reported {
						reportedAtRestart[k] = true
					}
					dupsAtRestart = w.veh.Rx.Stats.Duplicates
					t.Logf("restarting groundd at %v: the vehicle holds %d of %d chunks of transfer %d, %d reported", w.now.Sub(t0), h, total, id, len(reportedAtRestart))
					// What operators see: progress and the passes still needed.
					ts, err := d.Transfers(ctx)
					if err != nil || len(ts) != 1 || ts[0].Kind != "bundle" || ts[0].Remaining == 0 || ts[0].Passes < 1 || ts[0].Chunks == 0 {
						t.Fatalf("transfers in flight: %+v %v", ts, err)
					}
					t.Logf("progress: %d/%d chunks, %d bytes left, %d passes estimated", ts[0].Chunks, ts[0].Total, ts[0].Remaining, ts[0].Passes)
					if err := d.Close(); err != nil {
						t.Fatal(err)
					}
					d = w.open()
					st.restarted = true
					in = nil // frames in flight to the dead daemon are lost
				}
			}
		}
		if up {
			w.now = w.now.Add(20 * time.Millisecond)
		} else if c := w.schedule.Change(vehicleID, w.now); !c.IsZero() {
			w.now = c
		} else {
			t.Fatalf("out of passes with uplink %d %s", uplink, u.State)
		}
	}
	t.Fatal("too many polls")
	return d, st
}

// checkBundle applies a plan's bundle to the vehicle's image and checks it
// rebuilds image want, layer by layer.
func checkBundle(t *testing.T, bundle []byte, want ocitest.Image, bases ...ocitest.Image) *delta.Header {
	t.Helper()
	b, err := delta.OpenBundle(bytes.NewReader(bundle), int64(len(bundle)))
	if err != nil {
		t.Fatal(err)
	}
	mb := delta.MapBase{}
	for _, base := range bases {
		for i, d := range base.DiffIDs {
			mb[d] = bytes.NewReader(base.Tars[i])
		}
	}
	for li, lp := range b.Header.Layers {
		if lp.DiffID != want.DiffIDs[li] {
			t.Fatalf("layer %d: %s, want %s", li, lp.DiffID, want.DiffIDs[li])
		}
		if lp.Decision == delta.Reuse {
			if mb[lp.DiffID] == nil {
				t.Fatalf("layer %d reused but the vehicle does not hold it", li)
			}
			continue
		}
		var out bytes.Buffer
		if err := b.ApplyLayer(context.Background(), li, mb, &out); err != nil {
			t.Fatalf("layer %d: %v", li, err)
		}
		if !bytes.Equal(out.Bytes(), want.Tars[li]) {
			t.Fatalf("layer %d rebuilt wrong", li)
		}
	}
	return b.Header
}

// TestEndToEnd: an uplink of a multi-layer image, planned as a delta
// against what the vehicle's booted slot holds, is sent over loopback UDP
// through a lossy relay across several passes; groundd restarts in the
// middle of the bundle (a new Daemon on the same store) and goes on from
// where the vehicle is: no chunk the vehicle had journaled and reported is
// sent again.
func TestEndToEnd(t *testing.T) { endToEnd(t, nil) }

// endToEnd is TestEndToEnd's body; setup, if set, changes the world before
// the daemon opens (the etcd store: stations_test.go).
func endToEnd(t *testing.T, setup func(*world)) {
	rng := testrand.New(t)
	w := newWorld(t, rng, 0.1, nil)
	if setup != nil {
		setup(w)
	}
	ctx := context.Background()
	d := w.open()
	defer func() { d.Close() }()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	// Run until the uplink is done and the vehicle's housekeeping shows
	// the new image in slot B.
	slotB := func(d *groundd.Daemon) bool {
		v, err := d.VehicleShow(ctx, vehicleID)
		return err == nil && len(v.Slots) == 2 && v.Slots[1].Digest == w.v2.ManifestDigest.Encoded()[:16]
	}
	d, st := w.run(d, u.ID, 0.4, slotB)
	u, _ = d.QueueShow(ctx, u.ID)
	if u.State != groundd.UplinkDone {
		t.Fatalf("uplink %s: %s", u.State, u.Error)
	}
	t.Logf("uplink done at %v after %d polls, passes used %v; up %d frames (%d lost), down %d (%d lost); after the restart %d chunks sent, %d of them reported held before it, %d reached the vehicle holding them already",
		w.now.Sub(t0), st.polls, st.passesUsed, w.relay.UpSent, w.relay.UpLost, w.relay.DownSent, w.relay.DownLost, st.sentAfter, st.resentReported, st.dupsAfter)
	for _, l := range u.Layers {
		t.Logf("layer %s: %s, %d bytes -> %d", l.DiffID[:19], l.Decision, l.Size, l.Payload)
	}
	if !st.restarted {
		t.Fatal("groundd never restarted")
	}
	// The transfers' counters are the uplink's, not the last daemon's:
	// every chunk went out at least once, whichever daemon sent it.
	ts, err := d.UplinkTransfers(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ts {
		if x.Sent < int64(x.Total) {
			t.Errorf("transfer %d (%s): %d chunks sent in all, of %d", x.ID, x.Kind, x.Sent, x.Total)
		}
	}
	if st.resentReported != 0 {
		t.Errorf("%d chunks the vehicle had journaled and reported were sent again after the restart", st.resentReported)
	}
	if len(st.passesUsed) < 2 {
		t.Errorf("the uplink took %d pass(es); the test wants several", len(st.passesUsed))
	}
	if u.Base != w.v1.ManifestDigest.String() {
		t.Errorf("planned against %q, want the booted image %s", u.Base, w.v1.ManifestDigest)
	}
	if len(u.Plans) != 1 || len(w.veh.Installed) != 1 || w.veh.Installed[0] != u.Plans[0] {
		t.Fatalf("plans %v, installed %v", u.Plans, w.veh.Installed)
	}
	checkBundle(t, w.veh.Bundles[u.Plans[0]], w.v2, w.v1)

	// The vehicle's slots as telemetry and the install told groundd.
	v, err := d.VehicleShow(ctx, vehicleID)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Slots) != 2 || v.BootedSlot != "a" || v.Slots[1].Manifest != w.v2.ManifestDigest.String() || v.Slots[1].State != "written" || v.LastContact.IsZero() {
		t.Fatalf("vehicle %+v", v)
	}
	if len(v.Transfers) != 0 {
		t.Fatalf("transfers still in flight: %+v", v.Transfers)
	}
}

// TestBaseMismatchSupplement: the vehicle reports a base mismatch in a
// layer; groundd plans a supplement with that layer as full data, signed,
// naming the plan it supplements, and the uplink completes with it.
func TestBaseMismatchSupplement(t *testing.T) {
	rng := testrand.New(t)
	var mismatched int = -1
	onBundle := func(p *update.Plan, b []byte) []int {
		if p.Supplement != 0 {
			return nil
		}
		bd, err := delta.OpenBundle(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Errorf("bundle: %v", err)
			return nil
		}
		for li, l := range bd.Header.Layers {
			if l.Decision != delta.Reuse {
				mismatched = li
				return []int{li}
			}
		}
		t.Error("no layer to mismatch")
		return nil
	}
	w := newWorld(t, rng, 0, onBundle)
	ctx := context.Background()
	d := w.open()
	defer func() { d.Close() }()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	d, _ = w.run(d, u.ID, 0, nil)
	u, _ = d.QueueShow(ctx, u.ID)
	if u.State != groundd.UplinkDone || len(u.Plans) != 2 {
		t.Fatalf("uplink %s (%s), plans %v", u.State, u.Error, u.Plans)
	}
	sup := w.veh.Plans[u.Plans[1]]
	if sup == nil || sup.Supplement != u.Plans[0] || sup.Release.Release.Manifest != w.v2.ManifestDigest {
		t.Fatalf("supplement %+v", sup)
	}
	// The supplement reuses what the first bundle rebuilt.
	h := checkBundle(t, w.veh.Bundles[u.Plans[1]], w.v2, w.v2)
	for li, l := range h.Layers {
		want := delta.Reuse
		if li == mismatched {
			want = delta.Full
		}
		if l.Decision != want {
			t.Errorf("supplement layer %d: %s, want %s", li, l.Decision, want)
		}
	}
}

// TestRestartsEverywhere: groundd restarts every few polls, wherever it
// is (planning, the plan, waiting for its acceptance, the bundle, after
// it); the uplink still completes, and no incarnation sends a chunk the
// vehicle had reported holding before it started.
func TestRestartsEverywhere(t *testing.T) {
	rng := testrand.New(t)
	w := newWorld(t, rng, 0.1, nil)
	w.restartEvery = 37 + rng.IntN(40)
	ctx := context.Background()
	d := w.open()
	defer func() { d.Close() }()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	d, st := w.run(d, u.ID, 0, nil)
	u, _ = d.QueueShow(ctx, u.ID)
	if u.State != groundd.UplinkDone {
		t.Fatalf("uplink %s (%s)", u.State, u.Error)
	}
	t.Logf("done after %d restarts (every %d polls), %d passes; chunks sent after the first restart %d, of them reported held before the restart preceding them %d",
		w.restarts, w.restartEvery, len(st.passesUsed), st.sentAfter, st.resentReported)
	if st.resentReported != 0 {
		t.Errorf("%d chunks reported held were sent again after a restart", st.resentReported)
	}
	checkBundle(t, w.veh.Bundles[u.Plans[0]], w.v2, w.v1)
}
