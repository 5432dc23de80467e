package uplink

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/update"
)

// TestCommands: pause drops the chunks of a plan and resume takes them
// again, with nothing journaled lost; abort cancels the bundle transfer
// (the ground told) and frees the staging; delete_staged does the same for
// every plan.
func TestCommands(t *testing.T) {
	rng := testrand.New(t)
	dir := t.TempDir()
	im := makeImages(t, rng, filepath.Join(dir, "img"), ocitest.GenOptions{Layers: 1, Files: 20})
	v := newVehicle(t, filepath.Join(dir, "v"), false, im.oldBase())
	defer v.close()
	g := newGround(t)
	if err := v.deliver(g, update.TargetPlan(7), im.plan(t, planOpts{id: 7})); err != nil {
		t.Fatal(err)
	}
	if err := v.e.Pause(99); !errors.Is(err, ErrUnknownPlan) {
		t.Fatalf("pause of an unknown plan: %v", err)
	}
	// Half the bundle, then pause.
	s := g.sender(update.TargetBundle(7), im.bundle)
	r := &relay{rng: rng}
	v.run(s, r, 30, nil)
	held, total, _ := v.e.rx.Progress(2)
	if held == 0 || held == total {
		t.Fatalf("after 30 steps: %d of %d", held, total)
	}
	if err := v.e.Pause(7); err != nil {
		t.Fatal(err)
	}
	if st := v.e.Status(); st.StateName != "paused" {
		t.Fatalf("paused: %+v", st)
	}
	v.run(s, r, 200, nil)
	if h, _, _ := v.e.rx.Progress(2); h != held {
		t.Fatalf("chunks taken while paused: %d, then %d", held, h)
	}
	// Paused survives a restart; resume finishes the transfer.
	v.close()
	v.open()
	if st := v.e.Status(); st.StateName != "paused" {
		t.Fatalf("paused after restart: %+v", st)
	}
	if err := v.e.Resume(7); err != nil {
		t.Fatal(err)
	}
	v.run(s, r, 100000, nil)
	if !s.Done() || s.Err() != nil {
		t.Fatalf("bundle after resume: %v", s.Err())
	}
	if st := v.e.Status(); st.StateName != "installing" {
		t.Fatalf("after resume: %+v", st)
	}
	if err := v.e.Abort(7); !errors.Is(err, ErrBusy) {
		t.Fatalf("abort while installing: %v", err)
	}
	if _, err := v.e.RunInstall(context.Background()); err != nil {
		t.Fatal(err)
	}

	// A second plan: abort it halfway.
	if err := v.deliver(g, update.TargetPlan(8), im.plan(t, planOpts{id: 8, version: 3})); err != nil {
		t.Fatal(err)
	}
	s = g.sender(update.TargetBundle(8), im.bundle)
	v.run(s, r, 30, nil)
	v.e.Events()
	if err := v.e.Abort(8); err != nil {
		t.Fatal(err)
	}
	if st := v.e.Status(); st.StateName != "failed" || st.StagingUsed != 0 {
		t.Fatalf("after abort: %+v", st)
	}
	if !hasEvent(v.e.Events(), dict.EvTransferAborted) {
		t.Fatal("no transfer_aborted event")
	}
	v.run(s, r, 1000, nil)
	if !errors.Is(s.Err(), transfer.ErrRefused) {
		t.Fatalf("the ground's sender after the abort: done %v, %v", s.Done(), s.Err())
	}
	if ps := v.e.Check(); len(ps) > 0 {
		t.Fatalf("Check: %v", ps)
	}

	// A third: delete_staged of everything.
	if err := v.deliver(g, update.TargetPlan(9), im.plan(t, planOpts{id: 9, version: 4})); err != nil {
		t.Fatal(err)
	}
	s = g.sender(update.TargetBundle(9), im.bundle)
	v.run(s, r, 30, nil)
	freed, err := v.e.DeleteStaged(0)
	if err != nil || freed != int64(len(im.bundle)) {
		t.Fatalf("delete_staged: %d, %v", freed, err)
	}
	if ev := v.e.Events(); !hasEvent(ev, dict.EvStagedDeleted) {
		t.Fatalf("events %v", eventNames(ev))
	} else {
		checkEvents(t, ev)
	}
	if n := dirBytes(t, filepath.Join(v.cfg.Dir, "staging")); n != 0 {
		t.Fatalf("staging holds %d bytes", n)
	}
	if ps := v.e.Check(); len(ps) > 0 {
		t.Fatalf("Check: %v", ps)
	}
}
