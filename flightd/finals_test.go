package flightd

import (
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/slots"
)

// TestDaemonRepeatsFinalReports: the final reports of the ground's
// commands are sent once more when the ground is next heard after a gap
// (they may have been lost on the return link), across a restart too; not
// within a pass, not twice, and never the rejections of what did not
// authenticate.
func TestDaemonRepeatsFinalReports(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
	run := r.start(slots.A)

	// finals reads every frame the vehicle sends until the verification
	// of stage of seq `until`, and returns the seqs of the final reports
	// seen on the way, in order.
	finals := func(until uint64, stage protocol.Stage) []uint64 {
		t.Helper()
		var seen []uint64
		r.until(run, "the last verification", func(m protocol.Message) bool {
			v, ok := m.(*protocol.Verification)
			if !ok {
				return false
			}
			if v.Stage == protocol.StageCompleted || v.Stage == protocol.StageFailed || v.Stage == protocol.StageRejected {
				seen = append(seen, v.Seq)
			}
			return v.Seq == until && v.Stage == stage
		})
		return seen
	}
	eq := func(what string, got []uint64, want ...uint64) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: finals %v, want %v", what, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: finals %v, want %v", what, got, want)
			}
		}
	}

	c1 := r.command(run, "noop", nil, nil)
	eq("first command", finals(c1.Seq, protocol.StageCompleted), c1.Seq)
	// Within the pass: nothing repeated.
	c2 := r.command(run, "noop", nil, nil)
	eq("second command", finals(c2.Seq, protocol.StageCompleted), c2.Seq)
	// An unsigned command is rejected, not kept.
	forged := r.command(run, "noop", nil, func(c *protocol.Command) { c.Auth = nil })
	eq("forged command", finals(forged.Seq, protocol.StageRejected), forged.Seq)

	// After a gap: c1's and c2's finals once more, before c3's.
	r.clock.Advance(2*DefaultTelemetryPeriod + time.Second)
	c3 := r.command(run, "noop", nil, nil)
	eq("after a gap", finals(c3.Seq, protocol.StageCompleted), c1.Seq, c2.Seq, c3.Seq)
	// Repeated once only.
	r.clock.Advance(2*DefaultTelemetryPeriod + time.Second)
	c4 := r.command(run, "noop", nil, nil)
	eq("after a second gap", finals(c4.Seq, protocol.StageCompleted), c3.Seq, c4.Seq)

	// Bounded: of 10 commands, the last MaxRepeatedFinals.
	var last []uint64
	for range 10 {
		c := r.command(run, "noop", nil, nil)
		finals(c.Seq, protocol.StageCompleted)
		last = append(last, c.Seq)
	}
	// Kept across a restart: the first authenticated frame of the next
	// start gets them.
	if err := run.stop(); err == nil {
		t.Fatal("Run ended without an error")
	}
	run = r.start(slots.A)
	c := r.command(run, "noop", nil, nil)
	eq("after a restart", finals(c.Seq, protocol.StageCompleted), append(last[len(last)-MaxRepeatedFinals:], c.Seq)...)
}
