package groundd_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/images/imagestest"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/groundd/store/etcdtest"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// TestPrefetchAhead: a station that stands by looks for the bundle blobs
// of the vehicle's active uplink at once when another station plans one
// (the vehicle's open uplinks changed in the store), and when its own link
// to the vehicle comes up while the other holds it, not only every 10 s of
// its standby: the fetch starts within a step of the plan, and of the
// link. Before, it waited for its 10 s look (failed: no fetch in the step
// after the plan).
func TestPrefetchAhead(t *testing.T) {
	const tick = 50 * time.Millisecond
	ctx := context.Background()
	reg := imagestest.StartRegistry(t, imagestest.RegistryConfig{})
	cluster := etcdtest.Start(t, 1)
	w := newWorld(t, testrand.New(t), 0, nil)
	w.cfg.Vehicles[0].Rate = 8000
	w.cfg.Bundles = &groundd.BundlesConfig{Registry: reg.Host, Repository: "flight/bundles"}
	w.cfg.Registry.PlainHTTP = true
	w.opts.Schedule = nil
	stations := []*regStation{{name: "station-a", dir: filepath.Join(w.dir, "a")}, {name: "station-c", dir: filepath.Join(w.dir, "c")}}
	for _, s := range stations {
		var err error
		if s.st, err = store.OpenEtcd(store.EtcdConfig{Endpoints: cluster.Endpoints(), RequestTimeout: time.Second}); err != nil {
			t.Fatal(err)
		}
		cfg, opts := w.cfg, w.opts
		cfg.Station, cfg.Lease, cfg.StateDir = s.name, groundd.Duration(2*time.Second), s.dir
		opts.Store = s.st
		s.log = &lineLog{t: t, name: s.name}
		// Debug: the prefetch's looks, with why.
		opts.Log = slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if s.d, err = groundd.Open(cfg, opts); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.d.Close(); s.st.Close() })
	}
	a, c := stations[0], stations[1]
	step := func(up ...bool) {
		var toVehicle [][]byte
		for i, s := range stations {
			s.d.SetLink(vehicleID, up[i])
			out, _, err := s.d.Poll(ctx, vehicleID, w.now, s.in)
			s.in = nil
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			if len(out) > 0 && s == c {
				t.Fatalf("station C sent %d frames", len(out))
			}
			toVehicle = append(toVehicle, out...)
		}
		w.veh.SetLink(w.now, up[0] || up[1])
		back, err := w.veh.Step(w.now, toVehicle)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range stations {
			if up[i] {
				s.in = append(s.in, back...)
			}
		}
		w.now = w.now.Add(tick)
	}
	if _, err := a.d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()}); err != nil {
		t.Fatal(err)
	}
	// A's pass, C standing by with its link down: A plans and pushes.
	start := w.now
	for p := 0; ; p++ {
		if p > 2000 {
			t.Fatal("station A never pushed the bundle")
		}
		step(true, false)
		if _, ok := a.log.find("bundle pushed"); ok {
			break
		}
	}
	planned := w.now
	step(true, false)
	if _, ok := c.log.find("fetching the bundle"); !ok {
		t.Fatalf("station C did not look for the bundle in the step after A planned (%v after the start; it looks every 10 s)", planned.Sub(start))
	}
	t.Logf("A planned %v after the start; C started fetching in the next step", planned.Sub(start))
	// Wait for C's fetch to end (in the background), then take C's copy
	// away: nothing changes in the store, and C's link comes up while A
	// holds the vehicle. C looks again at once.
	for begin := time.Now(); ; {
		if _, ok := c.log.find("bundle fetched"); ok {
			break
		}
		if time.Since(begin) > time.Minute {
			t.Fatal("station C's fetch did not end")
		}
		step(true, false)
	}
	ents, err := os.ReadDir(filepath.Join(c.dir, "bundles"))
	if err != nil || len(ents) == 0 {
		t.Fatalf("C's bundle directory: %v %v", ents, err)
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(c.dir, "bundles", e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	c.log.mu.Lock()
	c.log.lines = nil
	c.log.mu.Unlock()
	step(true, true)
	if _, ok := c.log.find("prefetch look", `why="link up"`); !ok {
		t.Fatal("station C did not look for the bundle when its link came up")
	}
	if _, ok := c.log.find("fetching the bundle"); !ok {
		t.Fatal("station C did not fetch the bundle when its link came up")
	}
	if _, held := c.log.find("station holds the vehicle"); held {
		t.Fatal("station C held the vehicle")
	}
}
