package groundd_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// TestBootedSlotFromEvents: a vehicle's rebooting event makes its booted
// slot unknown (planning waits for the next hk.boot rather than plan a
// delta against the slot the vehicle left: the vehicle would refuse it as a
// base mismatch), and a trial_boot or marked_good event names it again.
func TestBootedSlotFromEvents(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	ctx := context.Background()
	d := w.open()
	defer func() { d.Close() }()
	now := t0
	w.veh.SetLink(now, true)
	genuine, err := w.veh.Step(now, nil)
	if err != nil || len(genuine) == 0 {
		t.Fatalf("vehicle housekeeping: %v", err)
	}
	if _, _, err := d.Poll(ctx, vehicleID, now, genuine); err != nil {
		t.Fatal(err)
	}
	booted := func(want string) {
		t.Helper()
		v, err := d.VehicleShow(ctx, vehicleID)
		if err != nil {
			t.Fatal(err)
		}
		var flagged []string
		for _, s := range v.Slots {
			if s.Booted {
				flagged = append(flagged, s.Name)
			}
		}
		if v.BootedSlot != want || want == "" && len(flagged) != 0 || want != "" && (len(flagged) != 1 || flagged[0] != want) {
			t.Fatalf("booted slot %q, slots flagged booted %v; want %q", v.BootedSlot, flagged, want)
		}
	}
	booted("a")
	// Genuine events (the vehicle's key, a later epoch).
	a, err := protocol.NewReturnAuth(vehicleID, protocol.MACKey{ID: macKeyID, Key: bytes.Repeat([]byte{0x4d}, protocol.MACKeyLen)}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	seq := uint32(0)
	event := func(e *dict.Event, vals dict.Values) {
		t.Helper()
		seq++
		now = now.Add(time.Second)
		ev, err := e.NewEvent(vehicleID, now.UnixMilli(), seq, "", vals)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Sign(ev); err != nil {
			t.Fatal(err)
		}
		f, err := w.codec.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := d.Poll(ctx, vehicleID, now, [][]byte{f}); err != nil {
			t.Fatal(err)
		}
	}
	const slotA, slotB = uint64(1), uint64(2)
	event(dict.EvRebooting, dict.Values{"cause": uint64(1), "slot": slotB})
	booted("")
	// Nothing is planned while the booted slot is unknown.
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Poll(ctx, vehicleID, now.Add(time.Second), nil); err != nil {
		t.Fatal(err)
	}
	if u, err = d.QueueShow(ctx, u.ID); err != nil || len(u.Plans) != 0 {
		t.Fatalf("uplink planned while the booted slot is unknown: %+v %v", u, err)
	}
	if _, err := d.QueueCancel(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	event(dict.EvTrialBoot, dict.Values{"slot": slotB, "attempts_left": uint64(2)})
	booted("b")
	event(dict.EvRebooting, dict.Values{"cause": uint64(1), "slot": slotA})
	booted("")
	event(dict.EvMarkedGood, dict.Values{"slot": slotA, "version": uint64(1)})
	booted("a")
	// Restarted, groundd still knows.
	d.Close()
	d = w.open()
	booted("a")
}
