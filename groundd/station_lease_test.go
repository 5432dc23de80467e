package groundd

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/groundd/store/etcdtest"
)

// TestStationGivesUpLostLease: a station that stops trusting its lease
// (etcd did not confirm it in time: a member died under its connection, a
// partition) lets it go in etcd as well. If its client went on renewing
// the lease in the background once the connection came back, the holds
// made on it would live on with nobody transmitting on them, and no other
// station could win the vehicle: everything would stop. The issue 14 test
// (hil/stations, -long: an etcd member killed) ran into it.
func TestStationGivesUpLostLease(t *testing.T) {
	c := etcdtest.Start(t, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	open := func(name string) *station {
		st, err := store.OpenEtcd(store.EtcdConfig{Endpoints: c.Endpoints(), RequestTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		s, err := newStation(st, name, 2*time.Second, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.close)
		return s
	}
	const vehicle = 7
	a, b := open("a"), open("b")
	// waitHold polls s.hold as Poll does, until s holds the vehicle.
	waitHold := func(s *station, within time.Duration) bool {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		end := time.Now().Add(within)
		for time.Now().Before(end) {
			if held, _ := s.hold(vehicle, true); held {
				return true
			}
			<-tick.C
		}
		return false
	}
	if !waitHold(a, 5*time.Second) {
		t.Fatal("a never held the vehicle")
	}
	// a's lease is not confirmed in time (as when its member dies): it
	// stops transmitting.
	a.mu.Lock()
	a.lease.ok = time.Now().Add(-2 * time.Second)
	a.mu.Unlock()
	if held, _ := a.hold(vehicle, true); held {
		t.Fatal("a transmits on a lease it does not trust")
	}
	// a's pass ends, b's begins: b must win within the lease time (a's
	// lease ends in etcd at the latest then), not wait behind a's old
	// hold for ever.
	a.hold(vehicle, false)
	start := time.Now()
	if !waitHold(b, 4*time.Second) {
		t.Fatal("b did not win the vehicle: a's lost lease still holds it in etcd")
	}
	t.Logf("b holds the vehicle %v after a gave its lease up", time.Since(start).Round(time.Millisecond))
}
