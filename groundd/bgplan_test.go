package groundd_test

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
)

// TestPlanningOffThePoll: the planning of an uplink (the delta computed,
// the blobs written) takes long, as an 85 MB image does on a loaded
// machine. Meanwhile the vehicle's session goes on: every Poll returns at
// once, and a command queued while the delta is computed completes before
// anything of the plan is sent; the uplink stays queued, its Waiting
// saying why, and goes on when the planning ends.
func TestPlanningOffThePoll(t *testing.T) {
	const tick = 50 * time.Millisecond
	ctx := context.Background()
	var (
		entered = make(chan struct{}, 1)
		release = make(chan struct{})
	)
	w := newWorld(t, testrand.New(t), 0, nil)
	w.opts.Schedule = nil
	w.opts.PlanInline = false // the daemon's default
	log := &lineLog{t: t, name: "groundd"}
	w.opts.Log = slog.New(slog.NewTextHandler(log, nil))
	d := w.open()
	defer d.Close()
	unblock := func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}
	defer unblock() // before Close, which waits for the planning
	groundd.SetPlanHook(d, func(ctx context.Context) {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	d.SetLink(vehicleID, true)
	w.veh.SetLink(w.now, true)
	var in [][]byte
	sent := 0
	var slowest time.Duration
	step := func() {
		start := time.Now()
		defer func() { slowest = max(slowest, time.Since(start)) }()
		type polled struct {
			out [][]byte
			err error
		}
		done := make(chan polled, 1)
		go func() {
			out, _, err := d.Poll(ctx, vehicleID, w.now, in)
			done <- polled{out, err}
		}()
		var p polled
		select {
		case p = <-done:
		case <-time.After(30 * time.Second): // a watchdog, not a wait: Poll returns at once
			unblock()
			t.Fatal("Poll blocked while the delta was computed")
		}
		if p.err != nil {
			t.Fatal(p.err)
		}
		for _, f := range p.out {
			if m, err := w.codec.Decode(f); err == nil {
				if _, ok := m.(*protocol.Chunk); ok {
					sent++
				}
			}
		}
		if in, err = w.veh.Step(w.now, p.out); err != nil {
			t.Fatal(err)
		}
		w.now = w.now.Add(tick)
	}
	for p := 0; ; p++ {
		if p > 4000 {
			t.Fatal("planning never began")
		}
		step()
		if len(entered) > 0 {
			break
		}
	}
	c, err := d.SendCommand(ctx, vehicleID, "noop", nil)
	if err != nil {
		t.Fatal(err)
	}
	slowest = 0
	for p := 0; ; p++ {
		if p > 400 {
			x, _ := d.CommandShow(ctx, c.ID)
			t.Fatalf("the command queued while planning did not complete: stage %s", x.Stage)
		}
		step()
		if x, err := d.CommandShow(ctx, c.ID); err == nil && x.Stage == groundd.CmdCompleted {
			t.Logf("while planning: the command completed after %d polls (%v of the link's clock); slowest Poll and vehicle step %v", p+1, time.Duration(p+1)*tick, slowest)
			break
		}
	}
	x, err := d.QueueShow(ctx, u.ID)
	if err != nil || x.State != groundd.UplinkQueued || !strings.Contains(x.Waiting, "computing") || sent != 0 {
		t.Fatalf("while planning: uplink %s, waiting %q, %d chunks sent (%v)", x.State, x.Waiting, sent, err)
	}
	unblock()
	for p := 0; ; p++ {
		if p > 4000 {
			x, _ := d.QueueShow(ctx, u.ID)
			t.Fatalf("the uplink did not go on once planned: %s %q %q", x.State, x.Error, x.Waiting)
		}
		step()
		if sent > 0 {
			break
		}
	}
	x, err = d.QueueShow(ctx, u.ID)
	if err != nil || x.State != groundd.UplinkActive || x.Waiting != "" || len(x.Plans) != 1 {
		t.Fatalf("once planned: uplink %s, waiting %q, plans %v (%v)", x.State, x.Waiting, x.Plans, err)
	}
}

// TestPlanningCancelled: an uplink cancelled while its delta is computed
// is never sent: the planning's result is dropped once it ends, and the
// next uplink is planned then (one planning per vehicle at a time).
func TestPlanningCancelled(t *testing.T) {
	const tick = 50 * time.Millisecond
	ctx := context.Background()
	entered := make(chan struct{}, 4)
	release := make(chan struct{}, 4)
	w := newWorld(t, testrand.New(t), 0, nil)
	w.opts.Schedule = nil
	w.opts.PlanInline = false
	d := w.open()
	defer d.Close()
	groundd.SetPlanHook(d, func(ctx context.Context) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	d.SetLink(vehicleID, true)
	w.veh.SetLink(w.now, true)
	var in [][]byte
	sent := 0
	step := func() {
		out, _, err := d.Poll(ctx, vehicleID, w.now, in)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range out {
			if m, err := w.codec.Decode(f); err == nil {
				if _, ok := m.(*protocol.Chunk); ok {
					sent++
				}
			}
		}
		if in, err = w.veh.Step(w.now, out); err != nil {
			t.Fatal(err)
		}
		w.now = w.now.Add(tick)
	}
	for p := 0; len(entered) == 0; p++ {
		if p > 4000 {
			t.Fatal("planning never began")
		}
		step()
	}
	<-entered
	if _, err := d.QueueCancel(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	u2, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	// The cancelled planning is cancelled (the hook sees its context
	// end) and the next one begins only after it ended.
	release <- struct{}{}
	for p := 0; len(entered) == 0; p++ {
		if p > 4000 {
			t.Fatal("the next uplink was never planned")
		}
		step()
	}
	release <- struct{}{}
	for p := 0; sent == 0; p++ {
		if p > 4000 {
			x, _ := d.QueueShow(ctx, u2.ID)
			t.Fatalf("the next uplink did not go on: %s %q %q", x.State, x.Error, x.Waiting)
		}
		step()
	}
	x, err := d.QueueShow(ctx, u.ID)
	if err != nil || x.State != groundd.UplinkCancelled || len(x.Plans) != 0 || len(x.Transfers) != 0 {
		t.Fatalf("cancelled while planned: %s, plans %v, transfers %v (%v)", x.State, x.Plans, x.Transfers, err)
	}
	x, err = d.QueueShow(ctx, u2.ID)
	if err != nil || x.State != groundd.UplinkActive || len(x.Plans) != 1 {
		t.Fatalf("next uplink: %s, plans %v (%v)", x.State, x.Plans, err)
	}
}

// TestSupplementOffThePoll: the supplement of a plan whose base the
// vehicle reported mismatched is planned in the background too: the
// uplink stays active, waiting "computing the supplement", every Poll
// returns and nothing of the uplink is sent meanwhile; once planned, the
// supplement is committed and the uplink completes with it.
func TestSupplementOffThePoll(t *testing.T) {
	rng := testrand.New(t)
	onBundle := func(p *update.Plan, b []byte) []int {
		if p.Supplement != 0 {
			return nil
		}
		bd, err := delta.OpenBundle(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Errorf("bundle: %v", err)
			return nil
		}
		for li, l := range bd.Header.Layers {
			if l.Decision != delta.Reuse {
				return []int{li}
			}
		}
		t.Error("no layer to mismatch")
		return nil
	}
	w := newWorld(t, rng, 0, onBundle)
	w.opts.PlanInline = false
	ctx := context.Background()
	d := w.open()
	defer func() { d.Close() }()
	entered := make(chan struct{}, 4)
	release := make(chan struct{})
	plannings := 0
	groundd.SetPlanHook(d, func(ctx context.Context) {
		plannings++ // one planning at a time
		if plannings < 2 {
			return
		}
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	// The simulated clock waits for a planning to end (the test's
	// determinism), except the supplement's, which it holds.
	w.afterStep = func(d *groundd.Daemon) bool {
		for groundd.PlanningRuns(d, vehicleID) && len(entered) == 0 {
			runtime.Gosched()
		}
		return len(entered) > 0
	}
	d, _ = w.run(d, u.ID, 0, nil)
	if len(entered) == 0 {
		x, _ := d.QueueShow(ctx, u.ID)
		t.Fatalf("no supplement planned: %s (%s), plans %v", x.State, x.Error, x.Plans)
	}
	x, err := d.QueueShow(ctx, u.ID)
	if err != nil || x.State != groundd.UplinkActive || !strings.Contains(x.Waiting, "computing the supplement") || len(x.Plans) != 1 {
		t.Fatalf("while the supplement is planned: %s, waiting %q, plans %v (%v)", x.State, x.Waiting, x.Plans, err)
	}
	for range 20 {
		if _, _, err := d.Poll(ctx, vehicleID, w.now, nil); err != nil {
			t.Fatal(err)
		}
		w.now = w.now.Add(50 * time.Millisecond)
	}
	close(release)
	w.afterStep = func(d *groundd.Daemon) bool {
		for groundd.PlanningRuns(d, vehicleID) {
			runtime.Gosched()
		}
		return false
	}
	w.afterStep(d)
	d, _ = w.run(d, u.ID, 0, nil)
	x, _ = d.QueueShow(ctx, u.ID)
	if x.State != groundd.UplinkDone || len(x.Plans) != 2 || x.Waiting != "" {
		t.Fatalf("uplink %s (%s), plans %v, waiting %q", x.State, x.Error, x.Plans, x.Waiting)
	}
}
