package groundd_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/groundtest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// TestSeveralVehicles: two vehicles are served at once, each with one
// active uplink; a vehicle's second uplink waits for its first; cancelling
// an active uplink cancels its transfer on the vehicle and lets the next go.
func TestSeveralVehicles(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	const other = vehicleID + 1
	mac2 := bytes.Repeat([]byte{0x4e}, protocol.MACKeyLen)
	vc := w.cfg.Vehicles[0]
	vc.ID, vc.Name = other, "sat-8"
	w.cfg.Vehicles = append(w.cfg.Vehicles, vc)
	w.opts.MACKeys = map[uint32]protocol.MACKey{other: {ID: macKeyID, Key: mac2}}
	w.opts.Schedule = nil // always up
	c2 := w.vcfg
	c2.ID, c2.MACKey = other, protocol.MACKey{ID: macKeyID, Key: mac2}
	veh2, err := groundtest.NewVehicle(c2)
	if err != nil {
		t.Fatal(err)
	}
	vehicles := map[uint32]*groundtest.Vehicle{vehicleID: w.veh, other: veh2}
	ctx := context.Background()
	d := w.open()
	defer d.Close()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	add := func(v uint32) uint64 {
		u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: v, Image: w.v2.Ref.String()})
		if err != nil {
			t.Fatal(err)
		}
		return u.ID
	}
	a1, a2, b1 := add(vehicleID), add(vehicleID), add(other)
	state := func(id uint64) groundd.UplinkState {
		u, err := d.QueueShow(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return u.State
	}
	in := map[uint32][][]byte{}
	for _, v := range vehicles {
		v.SetLink(w.now, true)
	}
	var both, cancelled bool
	for i := 0; i < 20000 && !(state(a2).Final() && state(b1).Final()); i++ {
		for id, v := range vehicles {
			out, _, err := d.Poll(ctx, id, w.now, in[id])
			if err != nil {
				t.Fatal(err)
			}
			if in[id], err = v.Step(w.now, out); err != nil {
				t.Fatal(err)
			}
		}
		sa1, sa2, sb1 := state(a1), state(a2), state(b1)
		if sa1 == groundd.UplinkActive && sa2 != groundd.UplinkQueued {
			t.Fatalf("vehicle %d: uplink %d is %s while %d is active", vehicleID, a2, sa2, a1)
		}
		if sa1 == groundd.UplinkActive && sb1 == groundd.UplinkActive {
			both = true
		}
		// Cancel a1 once its bundle is on its way.
		if !cancelled && sa1 == groundd.UplinkActive {
			if ts, _ := d.UplinkTransfers(ctx, a1); len(ts) == 2 && ts[1].Chunks > 0 {
				if _, err := d.QueueCancel(ctx, a1); err != nil {
					t.Fatal(err)
				}
				cancelled = true
			}
		}
		w.now = w.now.Add(20 * time.Millisecond)
	}
	if !both {
		t.Error("the two vehicles never had an uplink active at once")
	}
	for id, want := range map[uint64]groundd.UplinkState{a1: groundd.UplinkCancelled, a2: groundd.UplinkDone, b1: groundd.UplinkDone} {
		if got := state(id); got != want {
			t.Errorf("uplink %d: %s, want %s", id, got, want)
		}
	}
	ts, err := d.UplinkTransfers(ctx, a1)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[1].Done || len(w.veh.Rx.Active()) != 0 {
		t.Fatalf("cancelled uplink's transfers %+v; the vehicle still has %v active", ts, w.veh.Rx.Active())
	}
	if w.veh.Rx.Stats.Cancelled == 0 {
		t.Error("the vehicle never saw the cancel")
	}
	// And the plan was abandoned on the vehicle, freeing its staging.
	u, _ := d.QueueShow(ctx, a1)
	var aborted bool
	for _, c := range w.veh.Commands {
		aborted = aborted || c.Opcode == dict.CmdAbort.Opcode
	}
	if u.Abort == 0 || !aborted {
		t.Errorf("no transfer_abort for the cancelled uplink's plan (command %d, vehicle saw it: %v)", u.Abort, aborted)
	}
}
