package transfer

import (
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol/linksim"
)

// profileSize is the transfer size simulated per profile: multi-megabyte,
// scaled so that each runs in about a second of wall time.
func profileSize(name string) int {
	switch name {
	case "leo-fast", "geo", "sband":
		return 4 << 20
	}
	return 2 << 20
}

func TestProfiles(t *testing.T) {
	seed := testSeed(t)
	for _, name := range linksim.ProfileNames() {
		t.Run(name, func(t *testing.T) {
			prof, err := linksim.Named(name)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			h := newHarness(t, prof, seed, profileSize(name))
			h.run(60 * 24 * time.Hour)
			h.check()
			m := h.metrics()
			t.Logf("%s: %d bytes in %v simulated (%v link up, loss %.3f), %d events, %v wall: efficiency %.3f (%.3f to receiver completion) overhead %.3f return-bytes %d resent-journaled %d; receiver restarts %d",
				name, len(h.data), h.sim.Elapsed().Round(time.Second), m.upTime.Round(time.Second), m.lossRate, h.events,
				time.Since(start).Round(time.Millisecond), m.efficiency, m.rxEfficiency, m.overhead, m.returnBytes, m.resentJournaled, h.recvRests)
			if m.resentJournaled != 0 {
				t.Errorf("%d journaled chunks sent again", m.resentJournaled)
			}
		})
	}
}
