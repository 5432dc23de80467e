package groundd_test

import (
	"context"
	"encoding/hex"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// TestHousekeepingHeardLate: housekeeping that reaches groundd after newer
// housekeeping (a station that was cut off from etcd works through the
// frames it heard meanwhile; a frame two stations heard is folded by the
// slower one last) does not take the vehicle's knowledge back: the slots
// stay as the newest hk.slots left them, the manifest groundd learnt
// included. The order is the return link's authenticated sequence number
// (MAC epoch and counter), which never goes back on a vehicle.
func TestHousekeepingHeardLate(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	d := w.open()
	defer d.Close()
	ctx := context.Background()
	auth, err := protocol.NewReturnAuth(vehicleID, w.vcfg.MACKey, 1)
	if err != nil {
		t.Fatal(err)
	}
	short := func(s string) []byte {
		b, _ := hex.DecodeString(s[:2*dict.ShortDigestLen])
		return b
	}
	v1, v2 := w.v1.ManifestDigest.Encoded(), w.v2.ManifestDigest.Encoded()
	hk := func(bState uint64, bDigest []byte, at time.Time) []byte {
		vals := dict.Values{
			"slot_a_state": uint64(4), "slot_a_version": uint64(1), "slot_a_digest": short(v1), "slot_a_attempts": uint64(0),
			"slot_b_state": bState, "slot_b_version": uint64(0), "slot_b_digest": bDigest, "slot_b_attempts": uint64(0),
		}
		tm, err := dict.HKSlots.NewTelemetry(vehicleID, at.UnixMilli(), 1, vals)
		if err != nil {
			t.Fatal(err)
		}
		if err := auth.Sign(tm); err != nil {
			t.Fatal(err)
		}
		f, err := w.codec.Encode(tm)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	// The vehicle says slot B is empty, then written with v2; groundd
	// hears the second first.
	older := hk(0, make([]byte, dict.ShortDigestLen), w.now)
	newer := hk(2, short(v2), w.now.Add(2*time.Second))
	for _, f := range [][]byte{newer, older} {
		if _, _, err := d.Poll(ctx, vehicleID, w.now, [][]byte{f}); err != nil {
			t.Fatal(err)
		}
		w.now = w.now.Add(time.Second)
	}
	v, err := d.VehicleShow(ctx, vehicleID)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Slots) != 2 || v.Slots[1].State != "written" || v.Slots[1].Digest != v2[:2*dict.ShortDigestLen] {
		t.Fatalf("slots after late housekeeping: %+v", v.Slots)
	}
}
