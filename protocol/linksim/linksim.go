// Package linksim is a deterministic discrete-event simulator of a space
// link, for tests and benchmarks of the transfer engine.
//
// A Sim models two directions (Forward: ground to vehicle, Return: vehicle
// to ground), each with its own rate (serialisation delay), propagation
// delay, maximum frame size, random and Gilbert-Elliott burst loss,
// duplication, reordering, bit corruption and truncation, plus a schedule:
// passes (up N minutes every M minutes), periodic outages (geo style),
// one-way outage windows, the stress profile's return link on every other
// pass, lost passes and vehicle power cuts. It has no goroutines, no sleeps
// and no clock of its own: time moves only when Step is called, and every
// random draw comes from the *rand.Rand passed to New, so a run is replayed
// exactly from its seed.
//
// The endpoints learn the announced link state (AOS/LOS) through EventLink
// events; the physical state may differ (a lost pass is announced up but
// carries nothing). Counters (Stats) give the figures the transfer metrics
// are computed from: frames sent while the link was physically up, frames
// lost, and the time the link was physically up.
package linksim

import (
	"container/heap"
	"math/rand/v2"
	"time"
)

// Dir is a link direction.
type Dir uint8

const (
	// Forward is ground to vehicle (the uplink).
	Forward Dir = iota
	// Return is vehicle to ground (the downlink).
	Return
)

func (d Dir) String() string {
	if d == Forward {
		return "forward"
	}
	return "return"
}

// GilbertElliott is the two-state burst loss model: once per frame slot
// (the time a maximum-size frame takes at the channel's rate) the channel
// moves from good to bad with probability P and from bad to good with
// probability R; a frame is lost with probability LossBad in the bad state
// and LossGood in the good state. The stationary loss rate is
// (P*LossBad + R*LossGood)/(P+R) and the mean burst length 1/R slots. The
// chain advances with time, not with traffic, so a sparse channel (reports
// on a return link) sees fades of realistic duration rather than bursts of
// ten consecutive reports minutes apart.
type GilbertElliott struct {
	P, R              float64
	LossGood, LossBad float64
}

// Channel describes one direction of the link.
type Channel struct {
	Rate     float64       // bits per second; 0 means no serialisation delay
	Delay    time.Duration // one-way propagation delay (RTT/2)
	MaxFrame int           // frames longer than this are dropped; 0 means no limit
	Loss     float64       // independent random frame loss probability
	GE       GilbertElliott
	// Duplicate is the probability a delivered frame is delivered twice.
	Duplicate float64
	// Reorder is the probability a frame is held back by a uniformly drawn
	// extra delay in (0, ReorderDelay], so that later frames overtake it.
	Reorder      float64
	ReorderDelay time.Duration
	// Corrupt is the probability one random bit of a frame is flipped.
	Corrupt float64
	// Truncate is the probability a frame is cut to a random shorter length.
	Truncate float64
}

// Window is a one-way outage, as offsets from the start of the simulation.
type Window struct {
	Start, End time.Duration
	// Silent outages are not announced to the endpoints.
	Silent bool
}

// Schedule says when the link is up.
type Schedule struct {
	// PassPeriod and PassUp: the link is up for PassUp at the start of every
	// PassPeriod (pass k starts at k*PassPeriod). PassPeriod 0: always up.
	PassPeriod, PassUp time.Duration
	// OutageEvery, OutageFor, OutageOffset: the link is down for OutageFor
	// every OutageEvery, the first outage starting at OutageOffset. Announced.
	OutageEvery, OutageFor, OutageOffset time.Duration
	// ReturnOddPassesDown: the return direction is down on odd passes
	// (announced): a return link only on every other pass.
	ReturnOddPassesDown bool
	// LosePassEvery n > 0: pass k with k%n == n-1 carries nothing in either
	// direction although it is announced up (an antenna failure, say).
	LosePassEvery int
	// PowerCutEvery n > 0: the vehicle loses power in the middle of pass k
	// when k%n == 1 (and of pass 1 for n == 1), for PowerCutFor.
	PowerCutEvery int
	PowerCutFor   time.Duration
	// ForwardOutages and ReturnOutages are one-way outage windows.
	ForwardOutages, ReturnOutages []Window
}

// Profile is a named link.
type Profile struct {
	Name     string
	Forward  Channel
	Return   Channel
	Schedule Schedule
}

// FrameSize is the forward maximum frame size.
func (p Profile) FrameSize() int { return p.Forward.MaxFrame }

// RTT is the round-trip propagation delay.
func (p Profile) RTT() time.Duration { return p.Forward.Delay + p.Return.Delay }

// LinkState is the announced state of both directions, as an endpoint sees it.
type LinkState struct {
	Forward, Return bool
}

// EventKind says what an Event is.
type EventKind uint8

const (
	// EventDeliver: a frame arrives at the end of direction Dir.
	EventDeliver EventKind = iota + 1
	// EventLink: the announced link state changed (AOS/LOS).
	EventLink
	// EventPower: the vehicle lost (On false) or regained (On true) power.
	EventPower
)

// Event is what Step returns.
type Event struct {
	Kind  EventKind
	At    time.Time
	Dir   Dir    // EventDeliver
	Frame []byte // EventDeliver: the frame as received (maybe damaged)
	State LinkState
	On    bool // EventPower
}

// DirStats are the counters of one direction.
type DirStats struct {
	Frames, Bytes     int64 // everything offered with Send
	UpFrames, UpBytes int64 // offered while the direction was physically up and the far end powered
	DownFrames        int64 // offered while physically down or the far end unpowered: never delivered
	Oversize          int64 // longer than MaxFrame: dropped
	Lost              int64 // UpFrames lost by random or burst loss, or at an unpowered far end
	Corrupted         int64 // delivered with a bit flipped
	Truncated         int64 // delivered cut short
	Duplicated        int64 // delivered a second time
	Reordered         int64 // held back
	Delivered         int64 // deliveries (including damaged ones and duplicates)
	UpTime            time.Duration
}

// LossRate is the frame loss rate: frames offered while up that did not
// arrive intact (lost, corrupted or truncated) over frames offered while up.
func (s DirStats) LossRate() float64 {
	if s.UpFrames == 0 {
		return 0
	}
	return float64(s.Lost+s.Corrupted+s.Truncated) / float64(s.UpFrames)
}

type event struct {
	Event
	seq uint64
	// internal boundary events carry no Event for the caller
	internal bool
	// a power event scheduled by the profile
	power bool
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if !q[i].At.Equal(q[j].At) {
		return q[i].At.Before(q[j].At)
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

// Sim is one simulated link. It is not safe for concurrent use.
type Sim struct {
	p       Profile
	rng     *rand.Rand
	start   time.Time
	now     time.Time
	q       eventQueue
	seq     uint64
	busy    [2]time.Time
	fade    [2]Fade
	stats   [2]DirStats
	ann     LinkState // last announced state
	powered bool
	// the next schedule boundary not yet queued
	nextBoundary time.Duration
	// power cut bookkeeping: pass index of the last cut scheduled
	cutPass int
}

// New returns a simulator of p starting at start, drawing every random
// decision from rng.
func New(p Profile, rng *rand.Rand, start time.Time) *Sim {
	s := &Sim{p: p, rng: rng, start: start, now: start, powered: true, cutPass: -1}
	s.ann = s.announced(0)
	s.queueBoundary(0)
	return s
}

// Profile returns the simulated profile.
func (s *Sim) Profile() Profile { return s.p }

// Now is the simulated time.
func (s *Sim) Now() time.Time { return s.now }

// Elapsed is the simulated time since the start.
func (s *Sim) Elapsed() time.Duration { return s.now.Sub(s.start) }

// State is the announced link state now.
func (s *Sim) State() LinkState { return s.ann }

// Powered says whether the vehicle has power.
func (s *Sim) Powered() bool { return s.powered }

// SetPowered switches the vehicle's power (for tests that cut it at moments
// of their choosing). Frames arriving at an unpowered vehicle are lost.
func (s *Sim) SetPowered(on bool) { s.powered = on }

// Stats returns the counters of direction d.
func (s *Sim) Stats(d Dir) DirStats { return s.stats[d] }

func (s *Sim) push(e *event) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.q, e)
}

// pass returns the pass index and the offset into the pass at offset t.
func (sc Schedule) pass(t time.Duration) (k int, phase time.Duration) {
	if sc.PassPeriod <= 0 {
		return 0, t
	}
	return int(t / sc.PassPeriod), t % sc.PassPeriod
}

func inWindows(ws []Window, t time.Duration, announcedOnly bool) bool {
	for _, w := range ws {
		if announcedOnly && w.Silent {
			continue
		}
		if t >= w.Start && t < w.End {
			return true
		}
	}
	return false
}

// State returns the state of both directions at offset t from the start of
// the schedule, either as announced to the endpoints or, with physical, as
// the link really is: a lost pass is announced up but carries nothing, a
// silent outage window is not announced. Power cuts are not link state (the
// Sim tracks them apart); hil/link's emulator, which shares this schedule,
// ignores them.
func (sc Schedule) State(t time.Duration, physical bool) LinkState {
	k, phase := sc.pass(t)
	up := sc.PassPeriod <= 0 || phase < sc.PassUp
	if sc.OutageEvery > 0 && t >= sc.OutageOffset && (t-sc.OutageOffset)%sc.OutageEvery < sc.OutageFor {
		up = false
	}
	if physical && sc.LosePassEvery > 0 && k%sc.LosePassEvery == sc.LosePassEvery-1 {
		up = false
	}
	st := LinkState{Forward: up, Return: up}
	if sc.ReturnOddPassesDown && k%2 == 1 {
		st.Return = false
	}
	if inWindows(sc.ForwardOutages, t, !physical) {
		st.Forward = false
	}
	if inWindows(sc.ReturnOutages, t, !physical) {
		st.Return = false
	}
	return st
}

// NextBoundary returns the first offset after t at which a pass, a periodic
// outage or an outage window begins or ends (where State may change), and
// false if there is none (a link always up). The middle of a pass, where
// PowerCutEvery cuts the vehicle's power, is not a boundary of the link.
func (sc Schedule) NextBoundary(t time.Duration) (time.Duration, bool) {
	next := time.Duration(-1)
	cand := func(b time.Duration) {
		if b > t && (next < 0 || b < next) {
			next = b
		}
	}
	if sc.PassPeriod > 0 {
		base := (t / sc.PassPeriod) * sc.PassPeriod
		cand(base + sc.PassUp)
		cand(base + sc.PassPeriod)
	}
	if sc.OutageEvery > 0 {
		if t < sc.OutageOffset {
			cand(sc.OutageOffset)
		} else {
			base := sc.OutageOffset + ((t-sc.OutageOffset)/sc.OutageEvery)*sc.OutageEvery
			cand(base + sc.OutageFor)
			cand(base + sc.OutageEvery)
		}
	}
	for _, ws := range [][]Window{sc.ForwardOutages, sc.ReturnOutages} {
		for _, w := range ws {
			cand(w.Start)
			cand(w.End)
		}
	}
	return next, next >= 0
}

func (s *Sim) announced(t time.Duration) LinkState { return s.p.Schedule.State(t, false) }

// physUp says whether direction d is physically able to deliver at offset t.
func (s *Sim) physUp(d Dir, t time.Duration) bool {
	st := s.p.Schedule.State(t, true)
	if d == Forward {
		return st.Forward && s.powered
	}
	return st.Return && s.powered
}

// queueBoundary queues the first schedule boundary after offset t: the
// link's, or the middle of a pass where a power cut may fall.
func (s *Sim) queueBoundary(t time.Duration) {
	sc := s.p.Schedule
	next, ok := sc.NextBoundary(t)
	if sc.PassPeriod > 0 && sc.PowerCutEvery > 0 {
		if cut := (t/sc.PassPeriod)*sc.PassPeriod + sc.PassUp/2; cut > t && (!ok || cut < next) {
			next, ok = cut, true
		}
	}
	if !ok {
		return
	}
	s.nextBoundary = next
	s.push(&event{Event: Event{At: s.start.Add(next)}, internal: true})
}

// accrue adds up-time for the interval [from, to), during which the state is
// constant (every boundary is an event).
func (s *Sim) accrue(from, to time.Time) {
	if !to.After(from) {
		return
	}
	t := from.Sub(s.start)
	dt := to.Sub(from)
	for d := Forward; d <= Return; d++ {
		if s.physUp(d, t) {
			s.stats[d].UpTime += dt
		}
	}
}

// Step returns the next event if it happens at or before until, moving the
// clock to it; otherwise it moves the clock to until and returns false.
// A zero until means "the next event, whenever it is". Step never moves the
// clock backwards.
func (s *Sim) Step(until time.Time) (Event, bool) {
	for {
		if len(s.q) == 0 || (!until.IsZero() && s.q[0].At.After(until)) {
			if !until.IsZero() && until.After(s.now) {
				s.accrue(s.now, until)
				s.now = until
			}
			return Event{}, false
		}
		e := heap.Pop(&s.q).(*event)
		if e.At.After(s.now) {
			s.accrue(s.now, e.At)
			s.now = e.At
		}
		if e.internal {
			if ev, ok := s.boundary(); ok {
				return ev, true
			}
			continue
		}
		if e.power {
			s.powered = e.On
			return e.Event, true
		}
		if e.Kind == EventDeliver {
			if e.Dir == Forward && !s.powered {
				// Only the vehicle loses power: what reaches it meanwhile is lost.
				s.stats[e.Dir].Lost++
				continue
			}
			s.stats[e.Dir].Delivered++
		}
		return e.Event, true
	}
}

// boundary handles a schedule boundary at s.now.
func (s *Sim) boundary() (Event, bool) {
	t := s.now.Sub(s.start)
	s.queueBoundary(t)
	sc := s.p.Schedule
	if sc.PowerCutEvery > 0 && sc.PassPeriod > 0 {
		k, phase := sc.pass(t)
		if phase == sc.PassUp/2 && k%sc.PowerCutEvery == 1%sc.PowerCutEvery && k != s.cutPass {
			s.cutPass = k
			s.powered = false
			s.push(&event{Event: Event{Kind: EventPower, At: s.now.Add(sc.PowerCutFor), On: true}, power: true})
			return Event{Kind: EventPower, At: s.now, On: false}, true
		}
	}
	st := s.announced(t)
	if st == s.ann {
		return Event{}, false
	}
	s.ann = st
	return Event{Kind: EventLink, At: s.now, State: st}, true
}

// Fade is one direction's loss state: its Gilbert-Elliott chain. It is
// shared with hil/link's emulator, so that both draw loss the same way.
type Fade struct {
	bad  bool
	slot time.Time // start of the slot the chain state belongs to
}

// Lose draws the loss of a frame whose transmission begins at begin on
// channel c: the Gilbert-Elliott chain is advanced to begin, one step per
// slot (a fade lasts a time, not a number of frames; slot 0 steps once per
// frame), then the frame is lost with the state's probability or with the
// independent random loss. Every draw comes from rng. Calls must come in
// time order.
func (f *Fade) Lose(c *Channel, slot time.Duration, begin time.Time, rng *rand.Rand) bool {
	lost := false
	if c.GE.P > 0 || c.GE.R > 0 {
		f.advance(c.GE, slot, begin, rng)
		pl := c.GE.LossGood
		if f.bad {
			pl = c.GE.LossBad
		}
		if pl > 0 && rng.Float64() < pl {
			lost = true
		}
	}
	if c.Loss > 0 && rng.Float64() < c.Loss {
		lost = true
	}
	return lost
}

// advance moves the chain to the slot of time at.
func (f *Fade) advance(ge GilbertElliott, slot time.Duration, at time.Time, rng *rand.Rand) {
	steps := int64(1)
	if slot > 0 {
		if f.slot.IsZero() {
			f.slot = at
		}
		steps = int64(at.Sub(f.slot) / slot)
		f.slot = f.slot.Add(time.Duration(steps) * slot)
		if steps < 1 {
			steps = 1 // back-to-back frames: one step each
		}
	}
	if steps > 256 {
		// Long idle: the chain has forgotten its state; draw from the
		// stationary distribution.
		f.bad = rng.Float64() < ge.P/(ge.P+ge.R)
		return
	}
	for range steps {
		if f.bad {
			if rng.Float64() < ge.R {
				f.bad = false
			}
		} else if rng.Float64() < ge.P {
			f.bad = true
		}
	}
}

func (s *Sim) lose(d Dir, at time.Time) bool {
	c := &s.p.Forward
	if d == Return {
		c = &s.p.Return
	}
	// The chain steps once per slot of a maximum frame at the rate; a
	// channel without a rate or a frame limit steps once per frame.
	var slot time.Duration
	if c.Rate > 0 && c.MaxFrame > 0 {
		slot = time.Duration(float64(c.MaxFrame*8) / c.Rate * float64(time.Second))
	}
	return s.fade[d].Lose(c, slot, at, s.rng)
}

// Send offers frame to direction d at the current time. The frame is
// copied. It is transmitted after the frames before it (serialisation at the
// channel's rate), then delivered after the propagation delay unless the
// link is down or a fault model drops it.
func (s *Sim) Send(d Dir, frame []byte) {
	c := s.p.Forward
	if d == Return {
		c = s.p.Return
	}
	st := &s.stats[d]
	st.Frames++
	st.Bytes += int64(len(frame))
	if c.MaxFrame > 0 && len(frame) > c.MaxFrame {
		st.Oversize++
		return
	}
	begin := s.now
	if s.busy[d].After(begin) {
		begin = s.busy[d]
	}
	end := begin
	if c.Rate > 0 {
		end = begin.Add(time.Duration(float64(len(frame)*8) / c.Rate * float64(time.Second)))
	}
	s.busy[d] = end
	if !s.physUp(d, begin.Sub(s.start)) {
		st.DownFrames++
		return
	}
	st.UpFrames++
	st.UpBytes += int64(len(frame))
	if s.lose(d, begin) {
		st.Lost++
		return
	}
	f := append([]byte(nil), frame...)
	if c.Corrupt > 0 && len(f) > 0 && s.rng.Float64() < c.Corrupt {
		bit := s.rng.IntN(len(f) * 8)
		f[bit/8] ^= 1 << (bit % 8)
		st.Corrupted++
	} else if c.Truncate > 0 && len(f) > 1 && s.rng.Float64() < c.Truncate {
		f = f[:s.rng.IntN(len(f))]
		st.Truncated++
	}
	at := end.Add(c.Delay)
	if c.Reorder > 0 && c.ReorderDelay > 0 && s.rng.Float64() < c.Reorder {
		at = at.Add(time.Duration(1 + s.rng.Int64N(int64(c.ReorderDelay))))
		st.Reordered++
	}
	s.push(&event{Event: Event{Kind: EventDeliver, At: at, Dir: d, Frame: f}})
	if c.Duplicate > 0 && s.rng.Float64() < c.Duplicate {
		st.Duplicated++
		s.push(&event{Event: Event{Kind: EventDeliver, At: at, Dir: d, Frame: append([]byte(nil), f...)}})
	}
}
