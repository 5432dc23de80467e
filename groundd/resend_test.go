package groundd_test

import (
	"context"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/groundtest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// lossyPass drives groundd and the vehicle stand-in through the first
// pass in 100 ms steps over a link that loses what drop says (a
// deterministic lossy link: no randomness), until done or the pass ends.
// It returns the time done said yes (zero: never).
func lossyPass(t *testing.T, w *world, d *groundd.Daemon, drop func(now time.Time, up bool, f []byte) bool, done func() bool) time.Time {
	t.Helper()
	ctx := context.Background()
	var down [][]byte
	w.veh.SetLink(t0, true)
	for now := t0; now.Before(t0.Add(12 * time.Second)); now = now.Add(100 * time.Millisecond) {
		w.now = now
		var in [][]byte
		for _, f := range down {
			if !drop(now, false, f) {
				in = append(in, f)
			}
		}
		out, _, err := d.Poll(ctx, vehicleID, now, in)
		if err != nil {
			t.Fatal(err)
		}
		if done() {
			return now
		}
		var up [][]byte
		for _, f := range out {
			if !drop(now, true, f) {
				up = append(up, f)
			}
		}
		if down, err = w.veh.Step(now, up); err != nil {
			t.Fatal(err)
		}
	}
	return time.Time{}
}

// commandOf decodes an uplink frame as a command (nil: not one).
func commandOf(w *world, f []byte) *protocol.Command {
	m, err := w.codec.Decode(f)
	if err != nil {
		return nil
	}
	c, _ := m.(*protocol.Command)
	return c
}

// TestLostCommandResent: a command whose frame the link loses is sent again
// (the same sequence number) within a few round trips, not left to its
// two-minute ack timeout.
func TestLostCommandResent(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	ctx := context.Background()
	d := w.open()
	defer d.Close()
	c, err := d.SendCommand(ctx, vehicleID, "noop", nil)
	if err != nil {
		t.Fatal(err)
	}
	copies := 0
	drop := func(now time.Time, up bool, f []byte) bool {
		if cmd := commandOf(w, f); up && cmd != nil && cmd.Seq == c.ID {
			copies++
			return copies <= 2 // the first two copies are lost
		}
		return false
	}
	at := lossyPass(t, w, d, drop, func() bool {
		c, err := d.CommandShow(ctx, c.ID)
		return err == nil && c.Stage == groundd.CmdCompleted
	})
	if at.IsZero() {
		t.Fatalf("command not completed in the pass after %d copies", copies)
	}
	t.Logf("completed after %v, %d copies", at.Sub(t0), copies)
	if at.IsZero() || at.Sub(t0) > 3*time.Second || copies != 3 {
		t.Fatalf("command completed at %v after %d copies", at, copies)
	}
	if len(w.veh.Commands) != 1 {
		t.Fatalf("the vehicle got %d copies", len(w.veh.Commands))
	}
	if c, err := d.CommandShow(ctx, c.ID); err != nil || c.Resends != 2 {
		t.Fatalf("command %+v: %v", c, err)
	}
}

// TestLostStatusReasked: while an uplink waits for the vehicle's slots,
// a lost status request (and the vehicle's own housekeeping, lost too) is
// asked again within a few round trips, not after statusInterval: the
// uplink is planned within the pass.
func TestLostStatusReasked(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	w.vcfg.HKInterval = time.Hour // housekeeping only when asked
	var err error
	if w.veh, err = groundtest.NewVehicle(w.vcfg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d := w.open()
	defer d.Close()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	asks := map[uint64]int{}
	drop := func(now time.Time, up bool, f []byte) bool {
		if cmd := commandOf(w, f); up && cmd != nil && cmd.Opcode == dict.CmdStatus.Opcode {
			asks[cmd.Seq]++
		}
		return now.Before(t0.Add(3 * time.Second)) // both ways
	}
	at := lossyPass(t, w, d, drop, func() bool {
		u, err := d.QueueShow(ctx, u.ID)
		return err == nil && u.State != groundd.UplinkQueued
	})
	if at.IsZero() {
		t.Fatalf("uplink not planned in the pass; status asks (seq: copies) %v", asks)
	}
	t.Logf("planned after %v; status asks (seq: copies) %v", at.Sub(t0), asks)
	if at.IsZero() || at.Sub(t0) > 5*time.Second {
		t.Fatalf("uplink planned at %v; status asks %v", at, asks)
	}
	if len(asks) > 8 {
		t.Fatalf("%d status asks in %v", len(asks), at.Sub(t0))
	}
}
