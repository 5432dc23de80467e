package groundd_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/groundtest"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
)

// TestEndToEndSealed: with a seal key, every uplink frame (plan, bundle,
// commands) is sealed and fits the link; a vehicle that opens every frame
// takes the uplink through loss and a restart of groundd.
func TestEndToEndSealed(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0.1, nil)
	sk := protocol.SealKey{ID: 2, Key: bytes.Repeat([]byte{0x53}, protocol.SealKeyLen)}
	w.opts.SealKeys = map[uint32]protocol.SealKey{vehicleID: sk}
	inner, err := protocol.NewInnerCodec(maxFrame)
	if err != nil {
		t.Fatal(err)
	}
	w.vcfg.Codec, w.vcfg.ReturnCodec, w.vcfg.SealKeys = inner, w.codec, []protocol.SealKey{sk}
	if w.veh, err = groundtest.NewVehicle(w.vcfg); err != nil {
		t.Fatal(err)
	}
	if w.opener, err = protocol.NewOpener(protocol.OpenerConfig{Vehicle: vehicleID, MaxFrame: maxFrame, Keys: []protocol.SealKey{sk}}); err != nil {
		t.Fatal(err)
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
	d, st := w.run(d, u.ID, 0.4, nil)
	u, _ = d.QueueShow(ctx, u.ID)
	if u.State != groundd.UplinkDone || !st.restarted || st.resentReported != 0 {
		t.Fatalf("uplink %s (%s); restarted %v, resent %d", u.State, u.Error, st.restarted, st.resentReported)
	}
	if w.veh.Unopened != 0 {
		t.Fatalf("%d frames did not open on the vehicle", w.veh.Unopened)
	}
	v, _ := d.VehicleShow(ctx, vehicleID)
	if v.Keys.SealKeyID != 2 {
		t.Fatalf("keys %+v", v.Keys)
	}
	t.Logf("sealed uplink done after %d passes; up %d frames (%d lost)", len(st.passesUsed), w.relay.UpSent, w.relay.UpLost)
}

// TestSealMarkCorrupt: the seal mark in the store is what keeps AES-GCM
// nonces from repeating across restarts. A mark record that is not 4
// bytes (a bad record in the bbolt file) must stop groundd, not restart
// the sequence numbers from 1 under the same key.
func TestSealMarkCorrupt(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	sk := protocol.SealKey{ID: 2, Key: bytes.Repeat([]byte{0x53}, protocol.SealKeyLen)}
	w.opts.SealKeys = map[uint32]protocol.SealKey{vehicleID: sk}
	d := w.open()
	d.Close()
	st, err := store.OpenBolt(filepath.Join(w.cfg.StateDir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("sealmark/%010d/%010d", vehicleID, sk.ID)
	if err := store.Put(context.Background(), st, key, []byte{0, 0, 0x10, 0, 0}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	d, err = groundd.Open(w.cfg, w.opts)
	if err == nil {
		d.Close()
		t.Fatal("groundd opened with a corrupt seal mark: its seal counter restarts from 1 under the same key")
	}
	t.Logf("refused: %v", err)
}
