package linksim

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testrand"
)

// seed returns the test's seed, logged (BOOTORBIT_SEED replays it).
func seed(t *testing.T) uint64 {
	t.Helper()
	return testrand.Seed(t)
}

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func newSim(p Profile, s uint64) *Sim { return New(p, rand.New(rand.NewPCG(s, s)), t0) }

// drain steps until until and returns every event.
func drain(s *Sim, until time.Time) []Event {
	var evs []Event
	for {
		ev, ok := s.Step(until)
		if !ok {
			return evs
		}
		evs = append(evs, ev)
	}
}

// stream sends a frame of n bytes every gap until end, collecting events.
func stream(s *Sim, d Dir, n int, gap time.Duration, end time.Duration) []Event {
	var evs []Event
	f := make([]byte, n)
	for t := time.Duration(0); t < end; t += gap {
		evs = append(evs, drain(s, t0.Add(t))...)
		s.Send(d, f)
	}
	return append(evs, drain(s, t0.Add(end-time.Nanosecond))...)
}

func TestDeterministic(t *testing.T) {
	sd := seed(t)
	p, _ := Named("stress")
	p.Forward.Duplicate, p.Forward.Corrupt, p.Forward.Reorder, p.Forward.ReorderDelay = 0.01, 0.01, 0.01, time.Second
	a := stream(newSim(p, sd), Forward, 200, 100*time.Millisecond, 3*time.Hour)
	b := stream(newSim(p, sd), Forward, 200, 100*time.Millisecond, 3*time.Hour)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different events")
	}
	if len(a) < 1000 {
		t.Fatalf("only %d events", len(a))
	}
}

func TestSerialisationAndDelay(t *testing.T) {
	p := Profile{Forward: Channel{Rate: 9600, Delay: 25 * time.Millisecond}}
	s := newSim(p, 1)
	s.Send(Forward, make([]byte, 120)) // 100 ms at 9600 bit/s
	s.Send(Forward, make([]byte, 120)) // queued behind the first
	evs := drain(s, time.Time{})
	if len(evs) != 2 {
		t.Fatalf("%d events", len(evs))
	}
	if got := evs[0].At.Sub(t0); got != 125*time.Millisecond {
		t.Errorf("first delivery after %v, want 125ms", got)
	}
	if got := evs[1].At.Sub(t0); got != 225*time.Millisecond {
		t.Errorf("second delivery after %v, want 225ms", got)
	}
}

// TestGilbertElliott checks the measured loss rate and mean burst length
// against the model's stationary values, for the uhf profile's parameters.
func TestGilbertElliott(t *testing.T) {
	sd := seed(t)
	p, _ := Named("uhf")
	p.Schedule = Schedule{}
	s := newSim(p, sd)
	const n = 200000
	f := make([]byte, 256)
	slot := 256 * 8 * time.Second / 9600
	got := make([]bool, 0, n)
	for i := range n {
		drain(s, t0.Add(time.Duration(i)*slot))
		before := s.Stats(Forward).Lost
		s.Send(Forward, f)
		got = append(got, s.Stats(Forward).Lost > before)
	}
	lost, bursts := 0, 0
	for i, l := range got {
		if l {
			lost++
			if i == 0 || !got[i-1] {
				bursts++
			}
		}
	}
	rate := float64(lost) / n
	want := 0.01 / (0.01 + 0.25)
	if math.Abs(rate-want) > 0.006 {
		t.Errorf("loss rate %.4f, want %.4f", rate, want)
	}
	if mean := float64(lost) / float64(bursts); math.Abs(mean-4) > 0.5 {
		t.Errorf("mean burst %.2f frames, want 4", mean)
	}
	if s.Stats(Forward).LossRate() != rate {
		t.Errorf("LossRate %v, counted %v", s.Stats(Forward).LossRate(), rate)
	}
}

func TestPassesAndUpTime(t *testing.T) {
	p, _ := Named("uhf")
	s := newSim(p, 1)
	evs := stream(s, Forward, 256, time.Second, 2*98*time.Minute)
	var links []time.Duration
	for _, e := range evs {
		if e.Kind == EventLink {
			links = append(links, e.At.Sub(t0))
		}
	}
	want := []time.Duration{8 * time.Minute, 98 * time.Minute, 106 * time.Minute}
	if !reflect.DeepEqual(links, want) {
		t.Errorf("link changes at %v, want %v", links, want)
	}
	st := s.Stats(Forward)
	if st.UpTime != 16*time.Minute {
		t.Errorf("up time %v, want 16m", st.UpTime)
	}
	if st.UpFrames != 16*60 || st.DownFrames != st.Frames-st.UpFrames {
		t.Errorf("up frames %d down %d of %d", st.UpFrames, st.DownFrames, st.Frames)
	}
}

func TestStressSchedule(t *testing.T) {
	p, _ := Named("stress")
	p.Forward.GE, p.Return.GE = GilbertElliott{}, GilbertElliott{}
	s := newSim(p, 1)
	period := 98 * time.Minute
	var power []time.Duration
	delivered := map[int]int{}
	f := make([]byte, 100)
	for at := time.Duration(0); at < 6*period; at += 10 * time.Second {
		for _, e := range drain(s, t0.Add(at)) {
			if e.Kind == EventPower {
				power = append(power, e.At.Sub(t0))
			}
			if e.Kind == EventDeliver {
				delivered[int(e.At.Sub(t0)/period)]++
			}
		}
		st := s.State()
		k := int(at / period)
		inPass := at%period < 8*time.Minute
		if st.Forward != inPass || st.Return != (inPass && k%2 == 0) {
			t.Fatalf("at %v (pass %d) announced %+v", at, k, st)
		}
		s.Send(Forward, f)
	}
	if delivered[4] != 0 || delivered[0] == 0 || delivered[3] == 0 {
		t.Errorf("deliveries per pass %v: pass 4 must carry nothing", delivered)
	}
	want := []time.Duration{period + 4*time.Minute, period + 4*time.Minute + 90*time.Second,
		4*period + 4*time.Minute, 4*period + 4*time.Minute + 90*time.Second}
	if !reflect.DeepEqual(power, want) {
		t.Errorf("power events at %v, want %v", power, want)
	}
}

func TestGeoOutage(t *testing.T) {
	p, _ := Named("geo")
	s := newSim(p, 1)
	stream(s, Forward, 100, time.Second, 2*time.Hour)
	if got := s.Stats(Forward).UpTime; got != 2*time.Hour-10*time.Minute {
		t.Errorf("up time %v, want 1h50m", got)
	}
}

func TestFaults(t *testing.T) {
	p := Profile{Forward: Channel{Rate: 1e6, MaxFrame: 100, Duplicate: 1, Corrupt: 1}}
	s := newSim(p, 1)
	in := bytes.Repeat([]byte{0x55}, 64)
	s.Send(Forward, in)
	s.Send(Forward, make([]byte, 101))
	evs := drain(s, time.Time{})
	st := s.Stats(Forward)
	if len(evs) != 2 || st.Duplicated != 1 || st.Corrupted != 1 || st.Oversize != 1 {
		t.Fatalf("events %d, stats %+v", len(evs), st)
	}
	diff := 0
	for i := range in {
		diff += popcount(in[i] ^ evs[0].Frame[i])
	}
	if diff != 1 || !bytes.Equal(evs[0].Frame, evs[1].Frame) {
		t.Errorf("corruption flipped %d bits", diff)
	}
	p = Profile{Forward: Channel{Truncate: 1, Reorder: 1, ReorderDelay: time.Second}}
	s = newSim(p, 1)
	s.Send(Forward, in)
	evs = drain(s, time.Time{})
	if len(evs) != 1 || len(evs[0].Frame) >= len(in) || s.Stats(Forward).Reordered != 1 || evs[0].At == t0 {
		t.Errorf("truncate/reorder: %d events, stats %+v", len(evs), s.Stats(Forward))
	}
	if _, err := Named("nope"); err == nil {
		t.Error("unknown profile accepted")
	}
}

func popcount(b byte) int {
	n := 0
	for ; b != 0; b &= b - 1 {
		n++
	}
	return n
}

func TestOneWayOutages(t *testing.T) {
	p := Profile{
		Forward: Channel{Rate: 1e6},
		Return:  Channel{Rate: 1e6},
		Schedule: Schedule{
			ForwardOutages: []Window{{Start: time.Minute, End: 2 * time.Minute}},
			ReturnOutages:  []Window{{Start: 3 * time.Minute, End: 4 * time.Minute, Silent: true}},
		},
	}
	s := newSim(p, 1)
	var links []LinkState
	f := make([]byte, 10)
	for at := time.Duration(0); at < 5*time.Minute; at += time.Second {
		for _, e := range drain(s, t0.Add(at)) {
			if e.Kind == EventLink {
				links = append(links, e.State)
			}
		}
		s.Send(Forward, f)
		s.Send(Return, f)
	}
	want := []LinkState{{Forward: false, Return: true}, {Forward: true, Return: true}}
	if !reflect.DeepEqual(links, want) {
		t.Errorf("announced %v, want %v (the silent return outage is not announced)", links, want)
	}
	fw, rt := s.Stats(Forward), s.Stats(Return)
	if fw.DownFrames != 60 || rt.DownFrames != 60 || fw.UpTime != 4*time.Minute-time.Second || rt.UpTime != 4*time.Minute-time.Second {
		t.Errorf("forward %+v return %+v", fw, rt)
	}
}
