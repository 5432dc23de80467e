package link

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol/linksim"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func newModel(t *testing.T, s Spec, seed uint64) *Model {
	t.Helper()
	m, err := NewModel(s, rand.New(rand.NewPCG(seed, seed)), t0)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// drain returns every delivery due by until.
func drain(m *Model, until time.Time) []Delivery {
	var out []Delivery
	for {
		d, ok := m.Deliver(until)
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

// stream offers a frame of n bytes every gap in direction d for span,
// collecting the deliveries (the fake clock moves in steps of gap), then
// drains the rest.
func stream(m *Model, d Dir, n int, gap, span time.Duration) []Delivery {
	var out []Delivery
	f := make([]byte, n)
	for t := time.Duration(0); t < span; t += gap {
		now := t0.Add(t)
		out = append(out, drain(m, now)...)
		m.Send(d, now, f)
	}
	return append(out, drain(m, t0.Add(span+time.Hour))...)
}

func channel(rate float64, delay time.Duration) Channel {
	return Channel{Channel: linksim.Channel{Rate: rate, Delay: delay}}
}

func TestSerialisationAndDelay(t *testing.T) {
	m := newModel(t, Spec{Forward: channel(9600, 25*time.Millisecond)}, 1)
	m.Send(Forward, t0, make([]byte, 120)) // 100 ms at 9600 bit/s
	m.Send(Forward, t0, make([]byte, 120)) // queued behind the first
	if at, ok := m.Next(); !ok || at.Sub(t0) != 125*time.Millisecond {
		t.Fatalf("next delivery %v %v, want after 125ms", at.Sub(t0), ok)
	}
	if got := drain(m, t0.Add(124*time.Millisecond)); len(got) != 0 {
		t.Fatalf("delivered early: %v", got)
	}
	got := drain(m, t0.Add(time.Second))
	if len(got) != 2 || got[0].At.Sub(t0) != 125*time.Millisecond || got[1].At.Sub(t0) != 225*time.Millisecond {
		t.Fatalf("deliveries %+v", got)
	}
	st := m.Stats().Forward
	if st.Frames != 2 || st.Delivered != 2 || st.DeliveredBytes != 240 || st.Dropped.Total() != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestQueueTailDrop(t *testing.T) {
	c := channel(8000, 0) // 1000 bytes/s
	c.Queue = 2500
	m := newModel(t, Spec{Forward: c}, 1)
	for range 5 {
		m.Send(Forward, t0, make([]byte, 1000))
	}
	st := m.Stats().Forward
	if st.Dropped.Queue != 3 {
		t.Fatalf("tail drops %d, want 3 (2 of 1000 bytes fit a 2500-byte queue)", st.Dropped.Queue)
	}
	// After one frame's time the first has left the queue: one more fits.
	m.Send(Forward, t0.Add(time.Second), make([]byte, 1000))
	m.Send(Forward, t0.Add(time.Second), make([]byte, 1000))
	if got := drain(m, t0.Add(time.Hour)); len(got) != 3 || got[2].At.Sub(t0) != 3*time.Second {
		t.Fatalf("deliveries %d, last %v", len(got), got[len(got)-1].At.Sub(t0))
	}
	if st := m.Stats().Forward; st.Dropped.Queue != 4 {
		t.Errorf("tail drops %d, want 4", st.Dropped.Queue)
	}
}

func TestJitterKeepsOrder(t *testing.T) {
	c := channel(1e6, 100*time.Millisecond)
	c.Jitter = 5 * time.Millisecond
	m := newModel(t, Spec{Forward: c}, testrand.Seed(t))
	// Frames 1 ms apart, closer than the jitter's spread: the offset
	// walks, never letting a frame overtake the one ahead, over the whole
	// range with the delay as its mean.
	got := stream(m, Forward, 100, time.Millisecond, 10*time.Second)
	var lo, hi, sum time.Duration = time.Hour, 0, 0
	for i, d := range got {
		if i > 0 && d.At.Before(got[i-1].At) {
			t.Fatalf("delivery %d overtakes %d", i, i-1)
		}
		sent := time.Duration(i) * time.Millisecond
		lat := d.At.Sub(t0) - sent
		lo, hi, sum = min(lo, lat), max(hi, lat), sum+lat
	}
	if len(got) != 10000 {
		t.Fatalf("%d deliveries", len(got))
	}
	mean := sum / time.Duration(len(got))
	if lo < 95*time.Millisecond || hi > 106*time.Millisecond || hi-lo < 9*time.Millisecond || relErr(float64(mean), float64(100800*time.Microsecond)) > 0.02 {
		t.Errorf("latency in [%v, %v], mean %v, want spread over [95.8ms, 105.8ms], mean 100.8ms", lo, hi, mean)
	}
	// Frames 200 ms apart, farther than the spread of 100 ms: independent
	// offsets.
	c.Jitter = 50 * time.Millisecond
	m = newModel(t, Spec{Forward: c}, testrand.Seed(t)+1)
	got = stream(m, Forward, 100, 200*time.Millisecond, 200*time.Second)
	lo, hi = time.Hour, 0
	for i, d := range got {
		lat := d.At.Sub(t0) - time.Duration(i)*200*time.Millisecond
		lo, hi = min(lo, lat), max(hi, lat)
	}
	if len(got) != 1000 || lo < 50*time.Millisecond || lo > 55*time.Millisecond || hi < 146*time.Millisecond || hi > 151*time.Millisecond {
		t.Errorf("%d deliveries, latency in [%v, %v], want spread over [50.8ms, 150.8ms]", len(got), lo, hi)
	}
}

func TestReorderDuplicateCorrupt(t *testing.T) {
	c := channel(0, 10*time.Millisecond)
	c.Reorder, c.ReorderDelay, c.Duplicate, c.Corrupt, c.Truncate = 0.05, 50*time.Millisecond, 0.05, 0.05, 0.05
	m := newModel(t, Spec{Forward: c}, testrand.Seed(t))
	var out []Delivery
	for i := range 20000 {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		out = append(out, drain(m, now)...)
		m.Send(Forward, now, []byte{byte(i), byte(i >> 8), 0, 0, 0, 0, 0, 0})
	}
	out = append(out, drain(m, t0.Add(time.Hour))...)
	st := m.Stats().Forward
	if int64(len(out)) != st.Delivered || st.Delivered != st.Frames+st.Duplicated {
		t.Fatalf("delivered %d (%d counted), frames %d + duplicated %d", len(out), st.Delivered, st.Frames, st.Duplicated)
	}
	overtaken := 0
	for i := 1; i < len(out); i++ {
		if out[i].At.Before(out[i-1].At) {
			t.Fatal("deliveries out of time order")
		}
		if len(out[i-1].Data) > 1 && len(out[i].Data) > 1 &&
			uint16(out[i].Data[0])|uint16(out[i].Data[1])<<8 < uint16(out[i-1].Data[0])|uint16(out[i-1].Data[1])<<8 {
			overtaken++
		}
	}
	for name, n := range map[string]int64{"reordered": st.Reordered, "duplicated": st.Duplicated, "corrupted": st.Corrupted, "truncated": st.Truncated} {
		if n < 800 || n > 1200 {
			t.Errorf("%s %d of 20000, want ~1000", name, n)
		}
	}
	if overtaken < 500 {
		t.Errorf("only %d frames arrived after a later one", overtaken)
	}

	// The same faults as loss: nothing damaged is delivered.
	c.DropCorrupt = true
	m = newModel(t, Spec{Forward: c}, 7)
	stream(m, Forward, 64, time.Millisecond, 20*time.Second)
	st = m.Stats().Forward
	if st.Corrupted != 0 || st.Truncated != 0 || st.Dropped.Corrupt < 1600 || st.Dropped.Corrupt > 2400 {
		t.Errorf("corrupt as loss: %+v", st)
	}
}

// TestInFlightBound: without a rate there is no transmit queue; the
// bytes held for delivery are bounded all the same.
func TestInFlightBound(t *testing.T) {
	c := channel(0, time.Hour)
	c.Duplicate = 0.5
	m := newModel(t, Spec{Forward: c}, testrand.Seed(t))
	m.maxInFlight = 10_000
	for range 1000 {
		m.Send(Forward, t0, make([]byte, 100))
		if m.inFlight > m.maxInFlight {
			t.Fatalf("%d bytes in flight", m.inFlight)
		}
	}
	st := m.Stats().Forward
	if st.Dropped.Queue < 800 {
		t.Errorf("%+v", st)
	}
	if got := drain(m, t0.Add(2*time.Hour)); int64(len(got)) != st.Frames-st.Dropped.Queue+st.Duplicated || m.inFlight != 0 {
		t.Errorf("%d deliveries, %d bytes left in flight: %+v", len(got), m.inFlight, st)
	}
}

func TestOversize(t *testing.T) {
	c := channel(0, 0)
	c.MaxFrame = 256
	m := newModel(t, Spec{Forward: c}, 1)
	m.Send(Forward, t0, make([]byte, 257))
	m.Send(Forward, t0, make([]byte, 256))
	if st := m.Stats().Forward; st.Dropped.Oversize != 1 || len(drain(m, t0)) != 1 {
		t.Errorf("%+v", st)
	}
}

func TestScheduleAndTimeScale(t *testing.T) {
	s, err := Profile("uhf") // up 8 min every 98 min
	if err != nil {
		t.Fatal(err)
	}
	s.Forward.GE, s.Return.GE = linksim.GilbertElliott{}, linksim.GilbertElliott{}
	s.TimeScale = 60 // 8 s up every 98 s
	m := newModel(t, s, 1)
	if !m.State(t0).Forward {
		t.Fatal("down at the start of pass 0")
	}
	next, ok := m.NextChange(t0)
	if !ok || next.Sub(t0) < 8*time.Second || next.Sub(t0) > 8*time.Second+time.Microsecond {
		t.Fatalf("next change at %v, want 8s (8 min / 60)", next.Sub(t0))
	}
	if m.State(next).Forward || !m.State(next.Add(-time.Millisecond)).Forward {
		t.Fatal("state does not change at NextChange")
	}
	next2, _ := m.NextChange(next)
	if d := next2.Sub(t0); d < 98*time.Second || d > 98*time.Second+time.Microsecond {
		t.Fatalf("next pass at %v, want 98s", d)
	}
	// Frames offered out of the pass are refused as outage drops.
	m.Send(Forward, t0.Add(10*time.Second), make([]byte, 10))
	m.Send(Forward, t0.Add(99*time.Second), make([]byte, 10))
	if st := m.Stats().Forward; st.Dropped.Outage != 1 || len(drain(m, t0.Add(time.Hour))) != 1 {
		t.Errorf("%+v", st)
	}

	// stress: the return link only on even passes, pass 4 lost (announced
	// up, carries nothing).
	s, _ = Profile("stress")
	s.Forward.GE, s.Return.GE = linksim.GilbertElliott{}, linksim.GilbertElliott{}
	m = newModel(t, s, 1)
	pass := func(k int) time.Time { return t0.Add(time.Duration(k)*98*time.Minute + time.Minute) }
	if st := m.State(pass(1)); !st.Forward || st.Return {
		t.Errorf("pass 1: %+v", st)
	}
	if st := m.State(pass(4)); !st.Forward || !st.Return {
		t.Errorf("pass 4 announced %+v", st)
	}
	m.Send(Forward, pass(4), []byte{1})
	if st := m.Stats().Forward; st.Dropped.Outage != 1 {
		t.Errorf("lost pass carried a frame: %+v", st)
	}
}

func TestDeterministic(t *testing.T) {
	sd := testrand.Seed(t)
	s, _ := Profile("stress")
	s.Forward.Duplicate, s.Forward.Corrupt, s.Forward.Reorder, s.Forward.ReorderDelay = 0.01, 0.01, 0.01, time.Second
	s.Forward.Jitter = 20 * time.Millisecond
	a := stream(newModel(t, s, sd), Forward, 200, 100*time.Millisecond, 3*time.Hour)
	b := stream(newModel(t, s, sd), Forward, 200, 100*time.Millisecond, 3*time.Hour)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different deliveries")
	}
	if len(a) < 1000 {
		t.Fatalf("only %d deliveries", len(a))
	}
}

func TestValidate(t *testing.T) {
	bad := []Spec{
		{Forward: Channel{Channel: linksim.Channel{Loss: 1.5}}},
		{Return: Channel{Channel: linksim.Channel{Rate: -1}}},
		{Forward: Channel{Channel: linksim.Channel{Delay: -time.Second}}},
		{Forward: Channel{Channel: linksim.Channel{GE: linksim.GilbertElliott{P: 0.1}}}},
		{Forward: Channel{Channel: linksim.Channel{Duplicate: math.NaN()}}},
		{Schedule: linksim.Schedule{PassPeriod: time.Minute, PassUp: time.Hour}},
		{TimeScale: -1},
		{Schedule: linksim.Schedule{ReturnOutages: []linksim.Window{{Start: time.Hour, End: time.Minute}}}},
	}
	for i, s := range bad {
		if _, err := NewModel(s, rand.New(rand.NewPCG(1, 1)), t0); err == nil {
			t.Errorf("spec %d accepted", i)
		}
	}
	for _, name := range linksim.ProfileNames() {
		s, err := Profile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Profile("nope"); err == nil {
		t.Error("unknown profile accepted")
	}
}

func TestOutageWindows(t *testing.T) {
	s := Spec{TimeScale: 10, Schedule: linksim.Schedule{ForwardOutages: []linksim.Window{{Start: 10 * time.Second, End: 20 * time.Second}}}}
	m := newModel(t, s, 1)
	next, ok := m.NextChange(t0)
	if !ok || next.Sub(t0) < time.Second || next.Sub(t0) > time.Second+time.Microsecond {
		t.Fatalf("next change at %v, want 1s (10s / 10)", next.Sub(t0))
	}
	if st := m.State(t0.Add(1500 * time.Millisecond)); st.Forward || !st.Return {
		t.Errorf("in the window: %+v", st)
	}
	if st := m.State(t0.Add(2 * time.Second)); !st.Forward {
		t.Errorf("after the window: %+v", st)
	}
	m.Send(Forward, t0.Add(1500*time.Millisecond), []byte{1})
	m.Send(Return, t0.Add(1500*time.Millisecond), []byte{1})
	if st := m.Stats(); st.Forward.Dropped.Outage != 1 || st.Return.Dropped.Outage != 0 {
		t.Errorf("%+v", st)
	}
	if next, _ = m.NextChange(next); next.Sub(t0) < 2*time.Second || next.Sub(t0) > 2*time.Second+time.Microsecond {
		t.Errorf("window ends at %v, want 2s", next.Sub(t0))
	}
	if _, ok := m.NextChange(next); ok {
		t.Error("a change after the last window")
	}
}

// TestInvariants drives random specs with random traffic: every frame
// offered is delivered once, twice (duplicated) or dropped for one
// counted cause; deliveries come out in time order; the bytes in flight
// stay bounded; nothing is left pending.
func TestInvariants(t *testing.T) {
	r := testrand.New(t)
	runs := 50
	if testrand.Long() {
		runs = 1000
	}
	prob := func() float64 {
		if r.IntN(3) == 0 {
			return 0
		}
		return r.Float64() * 0.3
	}
	for run := range runs {
		ch := func() Channel {
			c := Channel{Channel: linksim.Channel{
				Rate: []float64{0, 9600, 1e6}[r.IntN(3)], Delay: time.Duration(r.IntN(300)) * time.Millisecond,
				MaxFrame: []int{0, 256, 1024}[r.IntN(3)], Loss: prob(), Duplicate: prob(), Reorder: prob(),
				ReorderDelay: time.Duration(r.IntN(100)) * time.Millisecond, Corrupt: prob(), Truncate: prob()}}
			if r.IntN(2) == 0 {
				c.GE = linksim.GilbertElliott{P: 0.01 + prob(), R: 0.01 + prob(), LossBad: r.Float64(), LossGood: prob() / 10}
			}
			c.Jitter = time.Duration(r.IntN(50)) * time.Millisecond
			c.Queue = r.IntN(3) * 4096
			c.DropCorrupt = r.IntN(2) == 0
			return c
		}
		s := Spec{Forward: ch(), Return: ch(), TimeScale: float64(1 + r.IntN(100))}
		if r.IntN(2) == 0 {
			s.Schedule = linksim.Schedule{PassPeriod: 10 * time.Minute, PassUp: time.Duration(1+r.IntN(9)) * time.Minute,
				LosePassEvery: r.IntN(4), ReturnOddPassesDown: r.IntN(2) == 0}
		}
		m := newModel(t, s, r.Uint64())
		m.maxInFlight = 1 << 20
		now := t0
		var got []Delivery
		for range 2000 {
			now = now.Add(time.Duration(r.IntN(int(20 * time.Millisecond))))
			got = append(got, drain(m, now)...)
			d := Dir(r.IntN(2))
			m.Send(d, now, make([]byte, 1+r.IntN(1500)))
			if m.inFlight > m.maxInFlight {
				t.Fatalf("run %d: %d bytes in flight", run, m.inFlight)
			}
		}
		got = append(got, drain(m, now.Add(24*time.Hour))...)
		if _, ok := m.Next(); ok {
			t.Fatalf("run %d: deliveries left", run)
		}
		st := m.Stats()
		for _, d := range []Dir{Forward, Return} {
			ds := st.Dir(d)
			n := int64(0)
			for _, g := range got {
				if g.Dir == d {
					n++
				}
			}
			if ds.Delivered != n || ds.Delivered != ds.Frames-ds.Dropped.Total()+ds.Duplicated {
				t.Fatalf("run %d %s: %d deliveries; %+v", run, d, n, ds)
			}
		}
		for i := 1; i < len(got); i++ {
			if got[i].At.Before(got[i-1].At) {
				t.Fatalf("run %d: deliveries out of time order", run)
			}
		}
	}
}
