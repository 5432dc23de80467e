package groundd_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// TestFollowTag: when the tag a vehicle follows moves to a newer image
// signed for it, an uplink of that image, pinned by digest, is queued (or
// waits for approval); the same image is not queued twice; an unsigned
// image on the tag is not queued, and the vehicle says why.
func TestFollowTag(t *testing.T) {
	for _, policy := range []string{"auto", "approve"} {
		t.Run(policy, func(t *testing.T) {
			rng := testrand.New(t)
			w := newWorld(t, rng, 0, nil)
			ctx := context.Background()
			layout := filepath.Join(w.dir, "images")
			tag := "oci:" + layout + ":stable"
			w.cfg.Vehicles[0].Follow = &groundd.FollowConfig{Ref: tag, Policy: policy}
			w.cfg.Vehicles[0].HardwareID = "obc-rev-c"
			d := w.open()
			defer d.Close()
			kr, err := images.LoadKeyring(w.cfg.ReleaseKeys)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := images.ParseRef(tag)
			if err != nil {
				t.Fatal(err)
			}
			watch, err := images.NewWatcher(images.WatchConfig{Ref: ref, Keys: kr, HardwareID: "obc-rev-c", Above: func() uint64 { return 1 }})
			if err != nil {
				t.Fatal(err)
			}
			var last images.TagEvent
			check := func() (groundd.Uplink, bool) {
				t.Helper()
				ev, ok, err := watch.Check(ctx)
				if err != nil || !ok {
					t.Fatalf("watcher: %v %v", ok, err)
				}
				last = ev
				u, queued, err := d.FollowEvent(ctx, vehicleID, ev)
				if err != nil {
					t.Fatal(err)
				}
				return u, queued
			}
			// The tag moves to v2 (signed, version 2 > 1).
			ocitest.Build(t, layout, "stable", w.v2.Layers)
			u, queued := check()
			want := groundd.UplinkQueued
			if policy == "approve" {
				want = groundd.UplinkPending
			}
			if !queued || u.State != want || u.Source != "follow" || u.Image != ref.WithDigest(w.v2.ManifestDigest).String() {
				t.Fatalf("uplink %+v queued %v", u, queued)
			}
			if policy == "approve" {
				// Pending is not planned until approved.
				if _, _, err := d.Poll(ctx, vehicleID, t0, nil); err != nil {
					t.Fatal(err)
				}
				if got, _ := d.QueueShow(ctx, u.ID); got.State != groundd.UplinkPending {
					t.Fatalf("pending uplink %s", got.State)
				}
				if u, err = d.QueueApprove(ctx, u.ID); err != nil || u.State != groundd.UplinkQueued {
					t.Fatalf("approve: %+v %v", u, err)
				}
			}
			// The same image again (a new verdict): not queued twice.
			if _, queued, err := d.FollowEvent(ctx, vehicleID, last); err != nil || queued {
				t.Fatal("the same image queued twice")
			}
			// An unsigned image on the tag.
			unsigned := ocitest.Build(t, layout, "stable", ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 1}))
			if _, queued := check(); queued {
				t.Fatal("an unsigned image was queued")
			}
			v, err := d.VehicleShow(ctx, vehicleID)
			if err != nil {
				t.Fatal(err)
			}
			if v.Following == nil || v.Following.Reason == "" || v.Following.Manifest != unsigned.ManifestDigest.String() {
				t.Fatalf("following %+v", v.Following)
			}
			t.Logf("unsigned image on the tag: %s (%s)", v.Following.Reason, v.Following.Detail)
			us, _ := d.QueueList(ctx)
			if len(us) != 1 {
				t.Fatalf("queue %+v", us)
			}
			// The uplink queued, pinned by digest, goes through although the
			// tag moved on.
			if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
				t.Fatal(err)
			}
			d, _ = w.run(d, u.ID, 0, nil)
			if got, _ := d.QueueShow(ctx, u.ID); got.State != groundd.UplinkDone || got.Manifest != w.v2.ManifestDigest.String() {
				t.Fatalf("followed uplink %s %q %s", got.State, got.Error, got.Manifest)
			}
		})
	}
}
