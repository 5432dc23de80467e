package transfer_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol/linksim"
)

// profileSize is the transfer size simulated per profile: multi-megabyte,
// scaled so that each runs in about a second of wall time.
func profileSize(name string) int {
	switch name {
	case "leo-fast", "leo-fast-256", "geo", "sband":
		return 4 << 20
	}
	return 2 << 20
}

// profileNames are the profiles the profile test runs: linksim's, and
// leo-fast-256, leo-fast with 256-byte frames both ways - the fastest link
// with the smallest frames, where the receiver's pending buffer is shortest
// in link time.
func profileNames() []string {
	return append(linksim.ProfileNames(), "leo-fast-256")
}

// namedProfile returns a profile of profileNames.
func namedProfile(name string) (linksim.Profile, error) {
	if name == "leo-fast-256" {
		p, err := linksim.Named("leo-fast")
		p.Name = name
		p.Forward.MaxFrame, p.Return.MaxFrame = 256, 256
		return p, err
	}
	return linksim.Named(name)
}

// TestProfiles runs a transfer over each profile and checks the efficiency
// targets on every seed: 0.90 with 1024-byte frames, 0.80 with 256. One
// seed per profile; -long runs 1000 and logs the worst seed of each
// profile (docs/transfer.md has the command and the figures).
func TestProfiles(t *testing.T) {
	seed := testSeed(t)
	seeds := 1
	if testrand.Long() {
		seeds = 1000
	}
	for _, name := range profileNames() {
		worst, worstSeed, sum := 2.0, uint64(0), 0.0
		for sd := seed; sd < seed+uint64(seeds); sd++ {
			m := testProfile(t, name, sd)
			sum += m.efficiency
			if m.efficiency < worst {
				worst, worstSeed = m.efficiency, sd
			}
		}
		if seeds > 1 {
			t.Logf("%s: %d seeds from %d: efficiency mean %.3f, worst %.3f (-seed %d)", name, seeds, seed, sum/float64(seeds), worst, worstSeed)
		}
	}
}

// testProfile runs profile name with seed as a subtest and returns its
// metrics (zero if it could not finish).
func testProfile(t *testing.T, name string, seed uint64) (m metrics) {
	t.Run(name, func(t *testing.T) {
		prof, err := namedProfile(name)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		h := newHarness(t, prof, seed, profileSize(name))
		h.run(60 * 24 * time.Hour)
		h.check()
		m = h.metrics()
		t.Logf("%s -seed %d: %d bytes in %v simulated (%v link up, loss %.3f), %d events, %v wall: efficiency %.3f (%.3f to receiver completion) overhead %.3f return-bytes %d resent-journaled %d; receiver restarts %d; requests %d, flow-limited %d, pace changes %d",
			name, seed, len(h.data), h.sim.Elapsed().Round(time.Second), m.upTime.Round(time.Second), m.lossRate, h.events,
			time.Since(start).Round(time.Millisecond), m.efficiency, m.rxEfficiency, m.overhead, m.returnBytes, m.resentJournaled, h.recvRests,
			h.sender.Stats.Requests, h.sender.Stats.FlowLimited, h.sender.Stats.PaceChanges)
		if m.resentJournaled != 0 {
			t.Errorf("-seed %d: %d journaled chunks sent again", seed, m.resentJournaled)
		}
		// Issue 2's targets (the simulation is deterministic per seed).
		target := 0.90
		if prof.Forward.MaxFrame < 1024 {
			target = 0.80
		}
		if m.efficiency < target {
			t.Errorf("-seed %d: efficiency %.3f below the target %.2f; sender %+v; receiver %+v", seed, m.efficiency, target, h.sender.Stats, h.recv.Stats)
		}
	})
	return m
}

// TestRestarts restarts the sender and cuts the receiver's power at random
// moments; the transfer completes exactly and no chunk the receiver had
// journaled is ever sent again.
func TestRestarts(t *testing.T) {
	seed := testSeed(t)
	for _, name := range []string{"uhf", "leo-fast", "geo", "lunar"} {
		t.Run(name, func(t *testing.T) {
			prof, err := linksim.Named(name)
			if err != nil {
				t.Fatal(err)
			}
			size := 1 << 20
			if name == "uhf" || name == "lunar" {
				size = 256 << 10
			}
			h := newHarness(t, prof, seed, size)
			// Restart within the span the transfer takes without faults.
			base := newHarness(t, prof, seed, size)
			base.run(60 * 24 * time.Hour)
			span := base.sim.Elapsed()
			for range 5 {
				h.senderCuts = append(h.senderCuts, time.Duration(h.rng.Int64N(int64(span))))
				h.recvCuts = append(h.recvCuts, time.Duration(h.rng.Int64N(int64(span))))
			}
			sortDurations(h.senderCuts)
			sortDurations(h.recvCuts)
			h.run(60 * 24 * time.Hour)
			h.check()
			if h.senderRests == 0 || h.recvRests == 0 {
				t.Fatalf("restarts did not happen: sender %d receiver %d", h.senderRests, h.recvRests)
			}
			t.Logf("%s: %d sender restarts, %d receiver restarts, done in %v (%v without), resent-journaled %d",
				name, h.senderRests, h.recvRests, h.sim.Elapsed().Round(time.Second), span.Round(time.Second), h.resentJournaled)
			if h.resentJournaled != 0 {
				t.Errorf("%d journaled chunks sent again", h.resentJournaled)
			}
		})
	}
}

func sortDurations(d []time.Duration) {
	for i := 1; i < len(d); i++ {
		for j := i; j > 0 && d[j] < d[j-1]; j-- {
			d[j], d[j-1] = d[j-1], d[j]
		}
	}
}

// crashProfile is a small lossy link that is always up: every step of a
// small transfer runs in microseconds.
func crashProfile() linksim.Profile {
	return linksim.Profile{
		Name:    "crash",
		Forward: linksim.Channel{Rate: 9600, Delay: 25 * time.Millisecond, MaxFrame: 256, GE: linksim.GilbertElliott{P: 0.02, R: 0.25, LossBad: 1}},
		Return:  linksim.Channel{Rate: 9600, Delay: 25 * time.Millisecond, MaxFrame: 256, Loss: 0.05},
	}
}

// TestCrashEveryStep cuts the receiver's power at every step of a
// transfer in turn - before, inside and after each durable action of every
// Ready - and checks the transfer still completes exactly each time, with
// no journaled chunk sent again.
func TestCrashEveryStep(t *testing.T) {
	seed := testSeed(t)
	const size = 12 << 10
	runs := 0
	for sd := seed; sd < seed+3; sd++ {
		base := newHarness(t, crashProfile(), sd, size)
		base.run(24 * time.Hour)
		base.check()
		steps := base.rxSteps
		if steps < 5 {
			t.Fatalf("seed %d: only %d receiver steps", sd, steps)
		}
		for step := 1; step <= steps; step++ {
			for phase := 0; phase <= 3; phase++ {
				h := newHarness(t, crashProfile(), sd, size)
				h.crash = &crashPoint{step: step, phase: phase}
				h.run(24 * time.Hour)
				if !h.crashed {
					t.Fatalf("seed %d step %d phase %d: the crash did not happen", sd, step, phase)
				}
				h.check()
				if h.resentJournaled != 0 {
					t.Fatalf("seed %d step %d phase %d: %d journaled chunks sent again", sd, step, phase, h.resentJournaled)
				}
				runs++
			}
		}
		t.Logf("seed %d: %d receiver steps, each cut in 4 places", sd, steps)
	}
	t.Logf("%d crash runs, all complete and exact", runs)
}

// randomProfile draws a link with every fault the simulator has.
func randomProfile(r *rand.Rand) (p linksim.Profile, silent bool) {
	frames := []int{256, 512, 1024, 2048}
	rates := []float64{9600, 64000, 256000}
	ch := func() linksim.Channel {
		c := linksim.Channel{
			Rate:     rates[r.IntN(len(rates))],
			Delay:    time.Duration(1+r.IntN(1500)) * time.Millisecond,
			MaxFrame: frames[r.IntN(len(frames))],
		}
		switch r.IntN(3) {
		case 0:
			c.Loss = r.Float64() * 0.2
		case 1:
			c.GE = linksim.GilbertElliott{P: r.Float64() * 0.05, R: 0.1 + r.Float64()*0.5, LossBad: 1}
		}
		if r.IntN(2) == 0 {
			c.Duplicate = r.Float64() * 0.05
		}
		if r.IntN(2) == 0 {
			c.Reorder = r.Float64() * 0.05
			c.ReorderDelay = time.Duration(1+r.IntN(500)) * time.Millisecond
		}
		if r.IntN(2) == 0 {
			c.Corrupt = r.Float64() * 0.03
			c.Truncate = r.Float64() * 0.03
		}
		return c
	}
	p = linksim.Profile{Name: "random", Forward: ch(), Return: ch()}
	if r.IntN(2) == 0 {
		p.Schedule.PassPeriod = time.Duration(20+r.IntN(300)) * time.Second
		p.Schedule.PassUp = p.Schedule.PassPeriod * time.Duration(1+r.IntN(5)) / 10
	}
	for range r.IntN(3) {
		w := linksim.Window{Start: time.Duration(r.Int64N(int64(2 * time.Minute)))}
		w.End = w.Start + time.Duration(r.Int64N(int64(time.Minute)))
		w.Silent = r.IntN(4) == 0
		silent = silent || w.Silent
		if r.IntN(2) == 0 {
			p.Schedule.ForwardOutages = append(p.Schedule.ForwardOutages, w)
		} else {
			p.Schedule.ReturnOutages = append(p.Schedule.ReturnOutages, w)
		}
	}
	return p, silent
}

// TestRandomLinks is the property test: random links with every fault,
// random transfer sizes, random restarts of either side. Every transfer
// completes exactly; none sends a journaled chunk again unless the link
// had an unannounced outage (then the silence rule may guess wrong, and
// the count is only logged).
func TestRandomLinks(t *testing.T) {
	seed := testSeed(t)
	runs := 16
	if testrand.Long() {
		runs = 400
	}
	for i := range runs {
		s := seed + uint64(i)
		h, silent := randomRun(t, s)
		prof, size := h.prof, len(h.data)
		t.Logf("run %d (seed %d): %d bytes, frames %d/%d, restarts %d/%d, %v simulated, resent-journaled %d, silent outages %v",
			i, s, size, prof.Forward.MaxFrame, prof.Return.MaxFrame, h.senderRests, h.recvRests, h.sim.Elapsed().Round(time.Second), h.resentJournaled, silent)
		if h.resentJournaled != 0 && !silent {
			t.Errorf("run %d (seed %d): %d journaled chunks sent again", i, s, h.resentJournaled)
		}
	}
}

// randomRun runs the random-link transfer of seed s.
func randomRun(t *testing.T, s uint64) (h *harness, silent bool) {
	r := rand.New(rand.NewPCG(s, 1))
	prof, silent := randomProfile(r)
	size := 1 + r.IntN(96<<10)
	h = newHarness(t, prof, s, size)
	base := newHarness(t, prof, s, size)
	base.run(90 * 24 * time.Hour)
	span := base.sim.Elapsed()
	for range r.IntN(4) {
		h.senderCuts = append(h.senderCuts, time.Duration(r.Int64N(int64(span))))
	}
	for range r.IntN(4) {
		h.recvCuts = append(h.recvCuts, time.Duration(r.Int64N(int64(span))))
	}
	sortDurations(h.senderCuts)
	sortDurations(h.recvCuts)
	h.run(90 * 24 * time.Hour)
	h.check()
	return h, silent
}
