package gateway_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd/gateway"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/linksim"
)

// TestCommandsOverLossyLink drives the gateway over the simulated stress
// link (UHF passes 8 min every 98, burst loss, the return link on every
// other pass, a lost pass in five, vehicle power cuts), with duplication,
// reordering and corruption added and the return link authenticated:
// commands are submitted around the clock, sent only while the link is
// announced up, and the vehicle stand-in answers. Whatever the link does,
// every command ends completed or visibly timed out, none is completed
// that the vehicle did not run, and the vehicle runs none twice.
func TestCommandsOverLossyLink(t *testing.T) {
	r := testrand.New(t)
	hours := 24
	if testrand.Long() {
		hours = 24 * 14
	}
	e := newEnv(t)
	e.cfg.QueueTimeout = 3 * time.Hour
	e.restart()
	p, err := linksim.Named("stress")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*linksim.Channel{&p.Forward, &p.Return} {
		c.Duplicate, c.Reorder, c.ReorderDelay, c.Corrupt = 0.05, 0.05, 2*time.Second, 0.02
	}
	sim := linksim.New(p, r, t0)
	mk := protocol.MACKey{ID: 1, Key: []byte("0123456789abcdef0123456789abcdef")[:protocol.MACKeyLen]}
	e.veh.Auth, err = protocol.NewReturnAuth(vehicleID, mk, 1)
	if err != nil {
		t.Fatal(err)
	}
	ver, err := protocol.NewReturnVerifier(vehicleID, mk)
	if err != nil {
		t.Fatal(err)
	}
	codec := e.veh.Codec
	names := []string{"noop", "status", "mark_good", "reset_counters"}

	end := t0.Add(time.Duration(hours) * time.Hour)
	nextSubmit := t0
	var up bool
	var submitted []uint64
	var dropped, unmatched int
	for sim.Now().Before(end) {
		now := sim.Now()
		if !now.Before(nextSubmit) {
			c, err := e.g.Submit(now, gateway.Request{Vehicle: vehicleID, Name: names[r.IntN(len(names))]})
			if err != nil {
				t.Fatal(err)
			}
			submitted = append(submitted, c.Seq)
			nextSubmit = now.Add(time.Duration(5+r.IntN(55)) * time.Minute)
		}
		if _, err := e.g.Tick(now); err != nil {
			t.Fatal(err)
		}
		for up {
			out, ok, err := e.g.Next(now, vehicleID)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			sim.Send(linksim.Forward, out.Frame)
		}
		until := nextSubmit
		if d, ok := e.g.NextDeadline(); ok && d.Before(until) {
			until = d
		}
		ev, ok := sim.Step(until)
		if !ok {
			continue
		}
		switch {
		case ev.Kind == linksim.EventLink:
			up = ev.State.Forward
		case ev.Kind == linksim.EventDeliver && ev.Dir == linksim.Forward:
			reps, err := e.veh.Handle(ev.Frame)
			if err != nil {
				continue // damaged: the vehicle drops it
			}
			for _, rep := range reps {
				f, err := codec.Encode(rep)
				if err != nil {
					t.Fatal(err)
				}
				sim.Send(linksim.Return, f)
			}
		case ev.Kind == linksim.EventDeliver && ev.Dir == linksim.Return:
			m, err := codec.Decode(ev.Frame)
			if err == nil {
				err = ver.Verify(m)
			}
			if err != nil {
				dropped++ // damaged or a duplicate: the return verifier drops it
				continue
			}
			if err := e.g.Receive(sim.Now(), vehicleID, m); errors.Is(err, gateway.ErrUnmatched) {
				unmatched++ // a report on a command already settled
			} else if err != nil {
				t.Fatal(err)
			}
		}
	}
	// Let every timer run out.
	if _, err := e.g.Tick(end.Add(e.cfg.QueueTimeout + time.Hour)); err != nil {
		t.Fatal(err)
	}

	ran := map[uint64]int{}
	for _, s := range e.veh.RanSeqs {
		ran[s]++
		if ran[s] > 1 {
			t.Errorf("the vehicle ran seq %d twice", s)
		}
	}
	tally := map[string]int{}
	for _, seq := range submitted {
		c := e.command(seq)
		key := c.Stage.String()
		if c.Stage == gateway.Timeout {
			key += "(" + c.Last().Waited.String() + ")"
		}
		if slices.ContainsFunc(c.History, func(h gateway.Entry) bool { return h.Late }) {
			key += " late"
		}
		tally[key]++
		switch c.Stage {
		case gateway.Completed:
			if ran[seq] != 1 {
				t.Errorf("seq %d completed but the vehicle did not run it: %q", seq, stages(c))
			}
		case gateway.Timeout:
			if c.Last().Waited == gateway.Queued && ran[seq] != 0 {
				t.Errorf("seq %d never sent but run", seq)
			}
		default:
			t.Errorf("seq %d ends %v: %q", seq, c.Stage, stages(c))
		}
	}
	if tally["completed"] == 0 {
		t.Errorf("no command completed over %d hours: %v", hours, tally)
	}
	fwd, ret := sim.Stats(linksim.Forward), sim.Stats(linksim.Return)
	t.Logf("%d h, %d commands: %v; vehicle ran %d; return frames dropped %d, reports unmatched %d; loss forward %.1f%%, return %.1f%%",
		hours, len(submitted), tally, len(ran), dropped, unmatched, 100*fwd.LossRate(), 100*ret.LossRate())
}
