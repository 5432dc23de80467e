package vm

import (
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// The bench ground keeps a vehicle's events with their arguments once
// their MAC verifies, and drops one whose MAC does not.
func TestGroundEvents(t *testing.T) {
	keys := BenchKeys()
	g, err := newBenchGround(nil, keys, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	auth, err := protocol.NewReturnAuth(FlightdVehicle, keys.MAC, 3)
	if err != nil {
		t.Fatal(err)
	}
	frame := func(seq uint32, ev *dict.Event, vals dict.Values, forge bool) []byte {
		t.Helper()
		m, err := ev.NewEvent(FlightdVehicle, 0, seq, "", vals)
		if err != nil {
			t.Fatal(err)
		}
		if err := auth.Sign(m); err != nil {
			t.Fatal(err)
		}
		if forge {
			m.Args[0] = uint64(1)
		}
		b, err := g.codec.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	now := time.Unix(1700000000, 0)
	g.take(now, frame(1, dict.EvRolledBack, dict.Values{"from": "b", "to": "a", "code": uint64(dict.CodeHealthCheckFailed)}, false), nil)
	g.take(now, frame(2, dict.EvMarkedGood, dict.Values{"slot": "b", "version": uint64(3)}, true), nil)
	g.take(now, frame(3, dict.EvWatchdogReset, dict.Values{"slot": "a", "boot_count": uint64(5)}, false), nil)
	if len(g.events) != 2 {
		t.Fatalf("events %v: want the two whose MAC verifies", g.events)
	}
	rb, ok := g.event(dict.EvRolledBack.Name)
	if !ok || rb.Args["from"] != uint64(2) || rb.Args["to"] != uint64(1) {
		t.Fatalf("rolled_back: %v %v", rb, rb.Args)
	}
	if got, want := rb.String(), "rolled_back from=b to=a code="+dict.EnumReason.NameOf(uint64(dict.CodeHealthCheckFailed)); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if _, ok := g.event(dict.EvMarkedGood.Name); ok {
		t.Error("a forged marked_good was kept")
	}
	if wd, _ := g.event(dict.EvWatchdogReset.Name); wd.String() != "watchdog_reset slot=a boot_count=5" {
		t.Errorf("watchdog_reset: %q", wd.String())
	}
}
