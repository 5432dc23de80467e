package groundd_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol/update"
)

func ids(us []groundd.Uplink) []uint64 {
	var out []uint64
	for _, u := range us {
		out = append(out, u.ID)
	}
	return out
}

func eq(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestQueueOrder: priority first, then order of arrival; reorder puts an
// entry where the operator asks; cancel ends it; bad requests are refused.
func TestQueueOrder(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	ctx := context.Background()
	d := w.open()
	defer d.Close()
	img := w.v2.Ref.String()
	add := func(prio int) uint64 {
		u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: img, Priority: prio})
		if err != nil {
			t.Fatal(err)
		}
		if u.State != groundd.UplinkQueued {
			t.Fatalf("new uplink %s", u.State)
		}
		return u.ID
	}
	a, b, c, e := add(0), add(5), add(0), add(0)
	list := func() []uint64 {
		us, err := d.QueueList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ids(us)
	}
	if got := list(); !eq(got, []uint64{b, a, c, e}) {
		t.Fatalf("order %v", got)
	}
	if _, err := d.QueueReorder(ctx, e, 0); err != nil {
		t.Fatal(err)
	}
	if got := list(); !eq(got, []uint64{e, b, a, c}) {
		t.Fatalf("after moving %d first: %v", e, got)
	}
	if _, err := d.QueueReorder(ctx, e, 2); err != nil {
		t.Fatal(err)
	}
	if got := list(); !eq(got, []uint64{b, a, e, c}) {
		t.Fatalf("after moving %d to 2: %v", e, got)
	}
	if _, err := d.QueueReorder(ctx, b, 99); err != nil {
		t.Fatal(err)
	}
	if got := list(); !eq(got, []uint64{a, e, c, b}) {
		t.Fatalf("after moving %d last: %v", b, got)
	}
	u, err := d.QueueCancel(ctx, a)
	if err != nil || u.State != groundd.UplinkCancelled {
		t.Fatalf("cancel: %+v %v", u, err)
	}
	if _, err := d.QueueCancel(ctx, a); !errors.Is(err, groundd.ErrState) {
		t.Fatalf("cancel twice: %v", err)
	}
	if _, err := d.QueueReorder(ctx, a, 0); !errors.Is(err, groundd.ErrState) {
		t.Fatalf("reorder a cancelled uplink: %v", err)
	}
	if got := list(); !eq(got, []uint64{e, c, b, a}) {
		t.Fatalf("after cancel: %v", got)
	}
	if _, err := d.QueueShow(ctx, 999); !errors.Is(err, groundd.ErrNotFound) {
		t.Fatalf("show unknown: %v", err)
	}
	for name, r := range map[string]groundd.UplinkRequest{
		"vehicle":  {Vehicle: 99, Image: img},
		"image":    {Vehicle: vehicleID},
		"deadline": {Vehicle: vehicleID, Image: img, NotBefore: t0.Add(time.Hour), Deadline: t0},
	} {
		if _, err := d.QueueAdd(ctx, r); !errors.Is(err, groundd.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestQueueDeadlineAndNotBefore: an uplink is not planned before its
// not-before time, and one whose deadline passes expires, visibly, whether
// waiting or being sent; the next one then goes.
func TestQueueDeadlineAndNotBefore(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	ctx := context.Background()
	d := w.open()
	defer d.Close()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	img := w.v2.Ref.String()
	// Expires while being sent: the passes are too short for it before the
	// deadline (the second pass starts at 95 minutes).
	firstU, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: img, Priority: 1, Deadline: t0.Add(30 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	// Waits for its not-before, after the first's deadline.
	laterU, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: img, NotBefore: t0.Add(90 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	// Expires before it is ever planned.
	neverU, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: img, Priority: -1, Deadline: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	first, later, never := firstU.ID, laterU.ID, neverU.ID
	d, _ = w.run(d, later, 0, nil)
	for _, c := range []struct {
		id   uint64
		want groundd.UplinkState
	}{{first, groundd.UplinkExpired}, {never, groundd.UplinkExpired}, {later, groundd.UplinkDone}} {
		u, err := d.QueueShow(ctx, c.id)
		if err != nil {
			t.Fatal(err)
		}
		if u.State != c.want || (c.want == groundd.UplinkExpired && u.Error == "") {
			t.Errorf("uplink %d: %s (%q), want %s", c.id, u.State, u.Error, c.want)
		}
		t.Logf("uplink %d: %s %s plans %v", c.id, u.State, u.Error, u.Plans)
	}
	u, _ := d.QueueShow(ctx, first)
	if len(u.Plans) != 1 {
		t.Errorf("the first uplink was not being sent when it expired: plans %v", u.Plans)
	}
	u, _ = d.QueueShow(ctx, never)
	if len(u.Plans) != 0 {
		t.Errorf("an uplink behind the active one was planned: %v", u.Plans)
	}
	ts, err := d.UplinkTransfers(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range ts {
		if !tr.Done && w.veh.Rx.Completed(tr.ID) {
			t.Errorf("transfer %+v", tr)
		}
	}
}

// TestPlanRefusals: an image without a trusted release signature, or
// signed for other hardware than the vehicle's, is never planned: the
// uplink fails and says why, and nothing is sent.
func TestPlanRefusals(t *testing.T) {
	rng := testrand.New(t)
	w := newWorld(t, rng, 0, nil)
	ctx := context.Background()
	unsigned := ocitest.Build(t, filepath.Join(w.dir, "images"), "os-3", ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 1}))
	for _, c := range []struct {
		name, image, hardware, want string
	}{
		{"unsigned", unsigned.Ref.String(), "", "no release signature"},
		{"hardware", w.v2.Ref.String(), "obc-rev-d", "other hardware"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w.cfg.Vehicles[0].HardwareID = c.hardware
			w.cfg.StateDir = filepath.Join(w.dir, "state-"+c.name)
			d := w.open()
			defer d.Close()
			if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
				t.Fatal(err)
			}
			u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: c.image})
			if err != nil {
				t.Fatal(err)
			}
			d, _ = w.run(d, u.ID, 0, nil)
			u, _ = d.QueueShow(ctx, u.ID)
			if u.State != groundd.UplinkFailed || !strings.Contains(u.Error, c.want) || len(u.Plans) != 0 {
				t.Fatalf("uplink %s %q plans %v", u.State, u.Error, u.Plans)
			}
			t.Logf("refused: %s", u.Error)
		})
	}
}

// TestPlanHardwareChoice: an image signed for several hardware revisions
// (one release signature each) is planned with the release for the
// vehicle's hardware, even when another revision's has a higher version.
func TestPlanHardwareChoice(t *testing.T) {
	rng := testrand.New(t)
	var got []update.Release
	w := newWorld(t, rng, 0, func(p *update.Plan, _ []byte) []int {
		got = append(got, p.Release.Release)
		return nil
	})
	_, relPriv, err := images.ReadPrivateKey(filepath.Join(w.dir, "release.key"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := images.ParseRef(w.v2.Ref.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := images.Sign(context.Background(), r, images.Options{}, releaseKey, relPriv, 9, "obc-rev-b"); err != nil {
		t.Fatal(err)
	}
	w.cfg.Vehicles[0].HardwareID = "obc-rev-c"
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
	if u.State != groundd.UplinkDone {
		t.Fatalf("uplink %s %q: an image with a release for the vehicle's hardware was not sent", u.State, u.Error)
	}
	if len(got) == 0 || got[0].HardwareID != "obc-rev-c" || got[0].Version != 2 {
		t.Fatalf("the vehicle got releases %+v, want obc-rev-c version 2", got)
	}
}
