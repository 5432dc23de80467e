package groundd_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// TestBadRecordSetAside: an uplink or transfer record that does not decode
// (a bad record in the bbolt file) is set aside under quarantine/ when a
// listing meets it, instead of failing every listing of its kind (the
// queue, and every poll of the vehicle's session, for good); the next
// uplink is planned and done.
func TestBadRecordSetAside(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	ctx := context.Background()
	d := w.open()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	d.Close()
	// The store, the daemon's: the test reads it while the daemon runs.
	st, err := store.OpenBolt(filepath.Join(w.cfg.StateDir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w.opts.Store = st
	bad := []string{"uplink/00000000000000aa", "transfer/00000000000000bb"}
	for _, k := range bad {
		if err := store.Put(ctx, st, k, []byte("{not json")); err != nil {
			t.Fatal(err)
		}
	}

	d = w.open()
	defer func() { d.Close() }()
	us, err := d.QueueList(ctx)
	if err != nil {
		t.Fatalf("queue list with a bad record: %v", err)
	}
	if len(us) != 0 {
		t.Fatalf("queue %+v", us)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	d, _ = w.run(d, u.ID, 0, nil)
	if u, err = d.QueueShow(ctx, u.ID); err != nil || u.State != groundd.UplinkDone {
		t.Fatalf("uplink %+v: %v", u, err)
	}
	if ts, err := d.UplinkTransfers(ctx, u.ID); err != nil || len(ts) != 2 {
		t.Fatalf("transfers of the uplink: %+v %v", ts, err)
	}
	for _, k := range bad {
		if _, err := st.Get(ctx, k); err == nil {
			t.Errorf("%s still in place", k)
		}
		if kv, err := st.Get(ctx, "quarantine/"+k); err != nil || string(kv.Value) != "{not json" {
			t.Errorf("%s not set aside: %v", k, err)
		}
	}
}

// TestNewerRecordLeftInPlace: a record that is good JSON but does not
// decode into this release's type (a newer release, in a rolling upgrade
// of stations sharing the store, changed a field's type) is left out of
// the listings and left in place, not set aside: an older station must not
// delete the newer stations' records. Before, any listing moved it to
// quarantine/ for every station.
func TestNewerRecordLeftInPlace(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	ctx := context.Background()
	d := w.open()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	d.Close()
	st, err := store.OpenBolt(filepath.Join(w.cfg.StateDir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w.opts.Store = st
	newer := map[string]string{
		"uplink/00000000000000aa":   `{"id":"uplink-170","vehicle":7,"state":{"name":"queued"}}`,
		"transfer/00000000000000bb": `{"id":187,"vehicle":7,"kind":{"v":2}}`,
	}
	for k, v := range newer {
		if err := store.Put(ctx, st, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	d = w.open()
	defer func() { d.Close() }()
	us, err := d.QueueList(ctx)
	if err != nil || len(us) != 0 {
		t.Fatalf("queue list with a newer record: %+v %v", us, err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	d, _ = w.run(d, u.ID, 0, nil)
	if u, err = d.QueueShow(ctx, u.ID); err != nil || u.State != groundd.UplinkDone {
		t.Fatalf("uplink %+v: %v", u, err)
	}
	for k, v := range newer {
		if kv, err := st.Get(ctx, k); err != nil || string(kv.Value) != v {
			t.Errorf("%s not left in place: %v", k, err)
		}
		if _, err := st.Get(ctx, "quarantine/"+k); err == nil {
			t.Errorf("%s set aside", k)
		}
	}
}
