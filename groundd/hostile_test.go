package groundd_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/update"
)

// forgedSlots is an hk.slots packet claiming slot A holds other content,
// tagged with key (the wrong one, or none).
func forgedSlots(t *testing.T, codec *protocol.Codec, key []byte, epoch uint32) []byte {
	t.Helper()
	tm, err := dict.HKSlots.NewTelemetry(vehicleID, 1, 1, dict.Values{
		"slot_a_state": uint64(4), "slot_a_version": uint64(9), "slot_a_digest": bytes.Repeat([]byte{0xee}, 8), "slot_a_attempts": uint64(0),
		"slot_b_state": uint64(0), "slot_b_version": uint64(0), "slot_b_digest": make([]byte, 8), "slot_b_attempts": uint64(0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if key != nil {
		a, err := protocol.NewReturnAuth(vehicleID, protocol.MACKey{ID: macKeyID, Key: key}, epoch)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Sign(tm); err != nil {
			t.Fatal(err)
		}
	}
	f, err := codec.Encode(tm)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestForgedTelemetryIgnored: housekeeping without a valid return-link MAC
// (none, another key, a replay of a genuine frame after a restart of
// groundd) changes nothing groundd believes about the vehicle, and garbage
// does not stop it.
func TestForgedTelemetryIgnored(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	ctx := context.Background()
	d := w.open()
	defer func() { d.Close() }()
	now := t0
	poll := func(in ...[]byte) {
		t.Helper()
		if _, _, err := d.Poll(ctx, vehicleID, now, in); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
	}
	// A genuine first contact.
	w.veh.SetLink(now, true)
	genuine, err := w.veh.Step(now, nil)
	if err != nil || len(genuine) == 0 {
		t.Fatalf("vehicle housekeeping: %v", err)
	}
	poll(genuine...)
	before, err := d.VehicleShow(ctx, vehicleID)
	if err != nil || len(before.Slots) != 2 || before.Slots[0].Digest != w.v1.ManifestDigest.Encoded()[:16] {
		t.Fatalf("vehicle after genuine housekeeping: %+v %v", before, err)
	}
	poll(forgedSlots(t, w.codec, nil, 1),
		forgedSlots(t, w.codec, bytes.Repeat([]byte{0x66}, protocol.MACKeyLen), 1),
		[]byte("garbage"), bytes.Repeat([]byte{0xff}, 2000))
	// Every frame is counted, the dropped ones by reason.
	cs, err := d.VehicleCounters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := cs[vehicleID]
	if want := uint64(len(genuine) + 4); c.FramesReceived != want || c.BytesReceived < 2000 {
		t.Errorf("counted %d frames, %d bytes received; want %d frames", c.FramesReceived, c.BytesReceived, want)
	}
	// The forgery under another key reuses a sequence number already
	// accepted: the replay window refuses it before its MAC is checked.
	if c.Drops["mac"]+c.Drops["replay"] != 2 || c.Drops["decode"] != 2 || c.Passes != 1 {
		t.Errorf("drops %v, passes %d: want 2 mac or replay, 2 decode, 1 pass", c.Drops, c.Passes)
	}
	// The same genuine frames again, after a restart: the replay window
	// was stored.
	d.Close()
	d = w.open()
	poll(genuine...)
	after, err := d.VehicleShow(ctx, vehicleID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Slots[0].Digest != before.Slots[0].Digest || after.Slots[0].Version != before.Slots[0].Version || !after.LastContact.Equal(before.LastContact) {
		t.Fatalf("forged or replayed telemetry believed: before %+v, after %+v", before, after)
	}
	recs, err := d.TelemetryRange(ctx, vehicleID, time.Time{}, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(genuine) {
		t.Fatalf("%d records archived for %d genuine packets", len(recs), len(genuine))
	}
}

// TestCommandToUnreachableVehicle: a command to a vehicle whose link never
// comes up times out, visibly, and says so.
func TestCommandToUnreachableVehicle(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	ctx := context.Background()
	d := w.open()
	defer d.Close()
	w.now = t0.Add(20 * time.Minute) // between passes
	c, err := d.SendCommand(ctx, vehicleID, "noop", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Stage != groundd.CmdQueued {
		t.Fatalf("stage %s", c.Stage)
	}
	if _, err := d.SendCommand(ctx, vehicleID, "no_such_command", nil); err == nil {
		t.Fatal("an unknown command was queued")
	}
	for now := w.now; now.Before(t0.Add(90 * time.Minute)); now = now.Add(time.Minute) {
		w.now = now
		out, _, err := d.Poll(ctx, vehicleID, now, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 0 {
			t.Fatalf("%d frames sent with the link down", len(out))
		}
	}
	c, err = d.CommandShow(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Stage != groundd.CmdTimedOut {
		t.Fatalf("command %+v", c)
	}
	t.Logf("command %d: %s, history %+v", c.ID, c.Stage, c.History)
}

// TestEndlessMismatchReports: a vehicle that reports base mismatches after
// every supplement (full data cannot mismatch) ends the uplink, failed and
// saying why, after a bounded number of supplements.
func TestEndlessMismatchReports(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, func(p *update.Plan, b []byte) []int { return []int{0} })
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
	if u.State != groundd.UplinkFailed || !strings.Contains(u.Error, "supplements") || len(u.Plans) > 5 {
		t.Fatalf("uplink %s (%s), plans %v", u.State, u.Error, u.Plans)
	}
	t.Logf("%s after plans %v", u.Error, u.Plans)
}

// TestSlotManifestForgotten: groundd keeps the full manifest digest of the
// image it installed in a slot while the slot still shows that image; once
// the vehicle reports the slot with no image at all (emptied, or a later
// write failed), the manifest is forgotten, not shown beside an empty slot.
func TestSlotManifestForgotten(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
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
	v, err := d.VehicleShow(ctx, vehicleID)
	if err != nil || len(v.Slots) != 2 || v.Slots[1].Manifest != w.v2.ManifestDigest.String() {
		t.Fatalf("after the uplink: %+v %v", v, err)
	}
	// Genuine housekeeping (the vehicle's key, a later epoch): slot B
	// failed, holding nothing.
	tm, err := dict.HKSlots.NewTelemetry(vehicleID, 1, 1, dict.Values{
		"slot_a_state": uint64(4), "slot_a_version": uint64(1), "slot_a_digest": shortOf(w.v1.ManifestDigest.Encoded()), "slot_a_attempts": uint64(3),
		"slot_b_state": uint64(0), "slot_b_version": uint64(0), "slot_b_digest": []byte{}, "slot_b_attempts": uint64(0),
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := protocol.NewReturnAuth(vehicleID, protocol.MACKey{ID: macKeyID, Key: bytes.Repeat([]byte{0x4d}, protocol.MACKeyLen)}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Sign(tm); err != nil {
		t.Fatal(err)
	}
	f, err := w.codec.Encode(tm)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Poll(ctx, vehicleID, w.now, [][]byte{f}); err != nil {
		t.Fatal(err)
	}
	v, err = d.VehicleShow(ctx, vehicleID)
	if err != nil || len(v.Slots) != 2 || v.Slots[1].State != "empty" {
		t.Fatalf("after hk.slots: %+v %v", v, err)
	}
	if v.Slots[1].Manifest != "" {
		t.Fatalf("slot b is empty and still shows manifest %s", v.Slots[1].Manifest)
	}
}

func shortOf(hexDigest string) []byte {
	b, _ := hex.DecodeString(hexDigest[:16])
	return b
}
