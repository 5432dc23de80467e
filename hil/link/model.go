package link

import (
	"container/heap"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/bootorbit/bootorbit/protocol/linksim"
)

// Dir is a link direction: Forward is the ground side (A) to the vehicle
// side (B), Return the vehicle to the ground.
type Dir = linksim.Dir

// The directions.
const (
	Forward = linksim.Forward
	Return  = linksim.Return
)

// LinkState is the announced state of both directions (AOS/LOS), what the
// ground's pass handling follows.
type LinkState = linksim.LinkState

// Channel is one direction of the emulated link: linksim's channel (rate,
// delay, maximum frame, random and Gilbert-Elliott loss, duplication,
// reordering, corruption, truncation), with what a relay of real datagrams
// adds to it.
type Channel struct {
	linksim.Channel
	// Jitter spreads the one-way delay over [Delay-Jitter, Delay+Jitter]
	// (never below zero) with mean Delay, keeping the order of frames (as
	// on a radio, where jitter comes from the path, not from overtaking;
	// reordering is Reorder's job). The offset is a random walk reflected
	// at +-Jitter whose step from one frame to the next is bounded by the
	// time between them, so that a frame never arrives before the one
	// ahead of it: frames more than 2*Jitter apart get independent
	// uniform offsets, frames close together similar ones. A walk with
	// symmetric steps and reflecting bounds stays uniform over the range,
	// so the mean delay is Delay however dense the traffic (clamping each
	// frame to the one ahead instead would push the mean towards
	// Delay+Jitter under load).
	Jitter time.Duration
	// Queue bounds the bytes waiting for the serialiser (the frame being
	// sent included): a frame that would exceed it is dropped (tail drop),
	// as a radio's transmit buffer does. 0: DefaultQueue.
	Queue int
	// DropCorrupt drops a frame that would be corrupted or truncated
	// instead of delivering it damaged: a radio whose frame check
	// discards bad frames, so that corruption shows as loss.
	DropCorrupt bool
}

// DefaultQueue returns the queue bound used when Channel.Queue is 0: one
// second at the channel's rate, at least 16 KiB (enough for a TCP window
// of a few frames on the slowest profile, not a minute of bufferbloat).
func DefaultQueue(rate float64) int {
	return max(16<<10, int(rate/8))
}

// MaxInFlight bounds the bytes a Model holds for delivery (in flight
// through the delay, held back, duplicated): beyond it a frame is dropped
// as a queue drop. A channel without a rate has no transmit queue, so
// without this bound a flood across a long delay would take the relay's
// memory (1 Gbit/s for lunar's 1.35 s is 170 MB).
const MaxInFlight = 64 << 20

// Spec is the emulated link: both channels and the schedule (passes,
// outages), which can be time-compressed for demonstrations.
type Spec struct {
	Name            string
	Forward, Return Channel
	Schedule        linksim.Schedule
	// TimeScale compresses the schedule (passes, outages) by this factor:
	// 60 makes a 98-minute orbit last 98 s of wall time. Rates, delays and
	// jitter are not scaled (a frame still takes its time on the air).
	// 0 means 1.
	TimeScale float64
}

// FromProfile returns the spec of a linksim profile: its channels and
// schedule, no jitter, default queues.
func FromProfile(p linksim.Profile) Spec {
	return Spec{Name: p.Name, Forward: Channel{Channel: p.Forward}, Return: Channel{Channel: p.Return}, Schedule: p.Schedule}
}

// Profile returns the named linksim profile as a spec (uhf, sband,
// leo-fast, geo, lunar, stress: linksim.ProfileNames).
func Profile(name string) (Spec, error) {
	p, err := linksim.Named(name)
	if err != nil {
		return Spec{}, fmt.Errorf("link: %w", err)
	}
	return FromProfile(p), nil
}

// ErrSpec is wrapped by every error of Spec.Validate.
var ErrSpec = errors.New("link: bad link spec")

// Validate checks every parameter's range.
func (s Spec) Validate() error {
	for _, c := range []struct {
		name string
		ch   Channel
	}{{"forward", s.Forward}, {"return", s.Return}} {
		if err := c.ch.validate(); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrSpec, c.name, err)
		}
	}
	sc := s.Schedule
	for _, d := range []time.Duration{sc.PassPeriod, sc.PassUp, sc.OutageEvery, sc.OutageFor, sc.OutageOffset} {
		if d < 0 {
			return fmt.Errorf("%w: negative schedule duration %v", ErrSpec, d)
		}
	}
	if sc.PassPeriod > 0 && sc.PassUp > sc.PassPeriod {
		return fmt.Errorf("%w: pass up %v longer than its period %v", ErrSpec, sc.PassUp, sc.PassPeriod)
	}
	if sc.OutageEvery > 0 && sc.OutageFor > sc.OutageEvery {
		return fmt.Errorf("%w: outage of %v every %v", ErrSpec, sc.OutageFor, sc.OutageEvery)
	}
	for _, w := range append(append([]linksim.Window(nil), sc.ForwardOutages...), sc.ReturnOutages...) {
		if w.Start < 0 || w.End <= w.Start {
			return fmt.Errorf("%w: outage window [%v, %v)", ErrSpec, w.Start, w.End)
		}
	}
	if sc.LosePassEvery < 0 {
		return fmt.Errorf("%w: lose-pass-every %d", ErrSpec, sc.LosePassEvery)
	}
	if s.TimeScale < 0 || math.IsNaN(s.TimeScale) || math.IsInf(s.TimeScale, 0) {
		return fmt.Errorf("%w: time scale %v", ErrSpec, s.TimeScale)
	}
	return nil
}

func (c Channel) validate() error {
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		return fmt.Errorf("rate %v", c.Rate)
	}
	if c.Delay < 0 || c.Jitter < 0 || c.ReorderDelay < 0 {
		return errors.New("negative delay, jitter or reorder delay")
	}
	if c.MaxFrame < 0 || c.Queue < 0 {
		return errors.New("negative frame or queue size")
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"loss", c.Loss}, {"ge-p", c.GE.P}, {"ge-r", c.GE.R}, {"ge-good", c.GE.LossGood}, {"ge-bad", c.GE.LossBad},
		{"dup", c.Duplicate}, {"reorder", c.Reorder}, {"corrupt", c.Corrupt}, {"truncate", c.Truncate}} {
		if !(p.v >= 0 && p.v <= 1) {
			return fmt.Errorf("%s %v is not a probability", p.name, p.v)
		}
	}
	if (c.GE.P > 0) != (c.GE.R > 0) {
		return fmt.Errorf("Gilbert-Elliott needs both p and r (have p=%v r=%v)", c.GE.P, c.GE.R)
	}
	return nil
}

// Delivery is a frame leaving the link at At, in direction Dir.
type Delivery struct {
	Dir  Dir
	At   time.Time
	Data []byte
}

// Drops counts the frames a direction did not deliver, by cause.
type Drops struct {
	Loss     int64 `json:"loss"`     // random or Gilbert-Elliott loss
	Queue    int64 `json:"queue"`    // tail drop: the transmit queue was full, or MaxInFlight reached
	Outage   int64 `json:"outage"`   // the link was down (out of pass, outage)
	Corrupt  int64 `json:"corrupt"`  // damaged, dropped (Channel.DropCorrupt)
	Oversize int64 `json:"oversize"` // longer than MaxFrame
}

// Total is the sum of the drops.
func (d Drops) Total() int64 { return d.Loss + d.Queue + d.Outage + d.Corrupt + d.Oversize }

// DirStats are the counters of one direction.
type DirStats struct {
	Frames         int64 `json:"frames"` // offered
	Bytes          int64 `json:"bytes"`
	Delivered      int64 `json:"delivered"` // deliveries, duplicates and damaged frames included
	DeliveredBytes int64 `json:"delivered_bytes"`
	Dropped        Drops `json:"dropped"`
	Duplicated     int64 `json:"duplicated"`
	Reordered      int64 `json:"reordered"` // held back so that later frames overtake them
	Corrupted      int64 `json:"corrupted"` // delivered with a bit flipped
	Truncated      int64 `json:"truncated"` // delivered cut short
	// Set by the Emulator, not the model: datagrams refused at the
	// entrance because they came from neither endpoint, and deliveries
	// that could not be written out (no endpoint known yet, a failed
	// write).
	Strangers     int64 `json:"strangers"`
	Undeliverable int64 `json:"undeliverable"`
}

// Transmitted is the number of frames that went on the air: offered, not
// refused at the entrance (oversize, queue full, link down).
func (s DirStats) Transmitted() int64 {
	return s.Frames - s.Dropped.Oversize - s.Dropped.Queue - s.Dropped.Outage
}

// LossRate is the fraction of transmitted frames lost on the air (random
// and burst loss, and corruption dropped as loss).
func (s DirStats) LossRate() float64 {
	if n := s.Transmitted(); n > 0 {
		return float64(s.Dropped.Loss+s.Dropped.Corrupt) / float64(n)
	}
	return 0
}

// Stats are the counters of both directions.
type Stats struct {
	Forward DirStats `json:"forward"`
	Return  DirStats `json:"return"`
}

// Dir returns the counters of direction d.
func (s Stats) Dir(d Dir) DirStats {
	if d == Forward {
		return s.Forward
	}
	return s.Return
}

// Model is the sans-IO channel model of the emulator: frames go in with
// the time they were offered, deliveries come out with the time they are
// due, every random decision from the generator given to NewModel. It has
// no clock and no goroutine: the socket loop (or a test with a fake clock)
// drives it. Not safe for concurrent use.
type Model struct {
	spec  Spec
	rng   *rand.Rand
	start time.Time
	q     deliveries
	seq   uint64
	dirs  [2]dirState
	// inFlight is the bytes held in q, maxInFlight its bound.
	inFlight, maxInFlight int
}

type dirState struct {
	ch     Channel
	busy   time.Time     // the serialiser is busy until then
	fifo   []queued      // frames not yet serialised, in order
	queued int           // their bytes
	last   time.Time     // latest in-order delivery
	jitX   time.Duration // the jitter walk's offset
	jitEnd time.Time     // the end of serialisation of the frame that set it
	fade   linksim.Fade
	stats  DirStats
}

type queued struct {
	end  time.Time
	size int
}

// NewModel returns the model of spec, started at start, drawing from rng.
func NewModel(spec Spec, rng *rand.Rand, start time.Time) (*Model, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if spec.TimeScale == 0 {
		spec.TimeScale = 1
	}
	m := &Model{spec: spec, rng: rng, start: start, maxInFlight: MaxInFlight}
	m.dirs[Forward].ch = spec.Forward
	m.dirs[Return].ch = spec.Return
	for d := range m.dirs {
		if m.dirs[d].ch.Queue == 0 {
			m.dirs[d].ch.Queue = DefaultQueue(m.dirs[d].ch.Rate)
		}
	}
	return m, nil
}

// Spec returns the model's spec.
func (m *Model) Spec() Spec { return m.spec }

// Start is the time the schedule started.
func (m *Model) Start() time.Time { return m.start }

// Stats returns the counters.
func (m *Model) Stats() Stats {
	return Stats{Forward: m.dirs[Forward].stats, Return: m.dirs[Return].stats}
}

// schedTime is the schedule's time at now: the elapsed time, compressed.
func (m *Model) schedTime(now time.Time) time.Duration {
	el := now.Sub(m.start)
	if el < 0 {
		return 0
	}
	if m.spec.TimeScale == 1 {
		return el
	}
	return time.Duration(float64(el) * m.spec.TimeScale)
}

// realTime is the first wall time whose schedule time is at least t.
func (m *Model) realTime(t time.Duration) time.Time {
	if m.spec.TimeScale == 1 {
		return m.start.Add(t)
	}
	return m.start.Add(time.Duration(math.Ceil(float64(t)/m.spec.TimeScale)) + 1)
}

// State is the announced state of the link at now.
func (m *Model) State(now time.Time) LinkState { return m.state(m.schedTime(now), false) }

// state is linksim's schedule (passes, periodic outages, the return link
// only on even passes, lost passes announced up but physically down,
// one-way windows) at schedule time t. Power cuts are the board's
// business, not the link's: the emulator ignores PowerCutEvery.
func (m *Model) state(t time.Duration, physical bool) LinkState {
	return m.spec.Schedule.State(t, physical)
}

func (m *Model) physUp(d Dir, now time.Time) bool {
	st := m.state(m.schedTime(now), true)
	if d == Forward {
		return st.Forward
	}
	return st.Return
}

// NextChange returns the first time after now at which the schedule has a
// boundary (the state may change there), and false for a link that is
// always up.
func (m *Model) NextChange(now time.Time) (time.Time, bool) {
	next, ok := m.spec.Schedule.NextBoundary(m.schedTime(now))
	if !ok {
		return time.Time{}, false
	}
	return m.realTime(next), true
}

// Next returns the time of the earliest pending delivery.
func (m *Model) Next() (time.Time, bool) {
	if len(m.q) == 0 {
		return time.Time{}, false
	}
	return m.q[0].At, true
}

// Deliver returns the earliest pending delivery due at or before now.
func (m *Model) Deliver(now time.Time) (Delivery, bool) {
	if len(m.q) == 0 || m.q[0].At.After(now) {
		return Delivery{}, false
	}
	e := heap.Pop(&m.q).(*pending)
	m.inFlight -= len(e.Data)
	st := &m.dirs[e.Dir].stats
	st.Delivered++
	st.DeliveredBytes += int64(len(e.Data))
	return e.Delivery, true
}

// Send offers frame to direction d at now. The frame is copied. It waits
// for the frames ahead of it in the transmit queue (dropped if the queue
// is full), is serialised at the channel's rate, and arrives after the
// delay and jitter unless the link is down or a fault drops it. Calls
// must come in time order (a now before the previous call's reads as it).
func (m *Model) Send(d Dir, now time.Time, frame []byte) {
	ds := &m.dirs[d]
	c := &ds.ch
	st := &ds.stats
	st.Frames++
	st.Bytes += int64(len(frame))
	if c.MaxFrame > 0 && len(frame) > c.MaxFrame {
		st.Dropped.Oversize++
		return
	}
	if m.inFlight+2*len(frame) > m.maxInFlight {
		// Room for the frame and a duplicate, so that the bound holds
		// whatever the draws.
		st.Dropped.Queue++
		return
	}
	// The queue holds what is not yet fully serialised at now.
	n := 0
	for n < len(ds.fifo) && !ds.fifo[n].end.After(now) {
		ds.queued -= ds.fifo[n].size
		n++
	}
	ds.fifo = append(ds.fifo[:0], ds.fifo[n:]...)
	begin := now
	if ds.busy.After(begin) {
		begin = ds.busy
	}
	if !m.physUp(d, begin) {
		// Nothing is transmitted while the link is down: the radio
		// refuses the frame rather than sending it into the void.
		st.Dropped.Outage++
		return
	}
	end := begin
	if c.Rate > 0 {
		if ds.queued+len(frame) > c.Queue {
			st.Dropped.Queue++
			return
		}
		end = begin.Add(time.Duration(float64(len(frame)*8) / c.Rate * float64(time.Second)))
		ds.fifo = append(ds.fifo, queued{end: end, size: len(frame)})
		ds.queued += len(frame)
	}
	ds.busy = end
	if m.lose(ds, begin) {
		st.Dropped.Loss++
		return
	}
	f := append([]byte(nil), frame...)
	if c.Corrupt > 0 && len(f) > 0 && m.rng.Float64() < c.Corrupt {
		if c.DropCorrupt {
			st.Dropped.Corrupt++
			return
		}
		bit := m.rng.IntN(len(f) * 8)
		f[bit/8] ^= 1 << (bit % 8)
		st.Corrupted++
	} else if c.Truncate > 0 && len(f) > 1 && m.rng.Float64() < c.Truncate {
		if c.DropCorrupt {
			st.Dropped.Corrupt++
			return
		}
		f = f[:m.rng.IntN(len(f))]
		st.Truncated++
	}
	at := end.Add(c.Delay)
	if c.Jitter > 0 {
		at = at.Add(m.jitter(ds, end))
		if at.Before(end) {
			at = end
		}
	}
	if c.Reorder > 0 && c.ReorderDelay > 0 && m.rng.Float64() < c.Reorder {
		// Held back: later frames overtake it; it does not hold them.
		at = at.Add(time.Duration(1 + m.rng.Int64N(int64(c.ReorderDelay))))
		st.Reordered++
	} else {
		if at.Before(ds.last) {
			at = ds.last
		}
		ds.last = at
	}
	m.push(Delivery{Dir: d, At: at, Data: f})
	if c.Duplicate > 0 && m.rng.Float64() < c.Duplicate {
		st.Duplicated++
		m.push(Delivery{Dir: d, At: at, Data: append([]byte(nil), f...)})
	}
}

// jitter moves direction ds's jitter walk to a frame whose serialisation
// ends at end and returns its offset.
func (m *Model) jitter(ds *dirState, end time.Time) time.Duration {
	j := ds.ch.Jitter
	g := end.Sub(ds.jitEnd)
	if ds.jitEnd.IsZero() || g >= 2*j {
		ds.jitX = time.Duration(m.rng.Int64N(2*int64(j)+1)) - j
	} else {
		x := ds.jitX + time.Duration(m.rng.Int64N(2*int64(g)+1)) - g
		if x > j {
			x = 2*j - x
		} else if x < -j {
			x = -2*j - x
		}
		ds.jitX = x
	}
	ds.jitEnd = end
	return ds.jitX
}

// lose draws the loss of a frame starting at begin with linksim's loss
// model (its Gilbert-Elliott chain and independent random loss). The chain
// advances once per slot of a maximum frame at the rate, so that fades
// last a time, not a number of frames; a channel without a frame limit
// counts slots of 1500 bytes.
func (m *Model) lose(ds *dirState, begin time.Time) bool {
	c := &ds.ch
	var slot time.Duration
	if c.Rate > 0 {
		frame := c.MaxFrame
		if frame <= 0 {
			frame = 1500
		}
		slot = max(time.Duration(float64(frame*8)/c.Rate*float64(time.Second)), 1)
	}
	return ds.fade.Lose(&c.Channel, slot, begin, m.rng)
}

func (m *Model) push(d Delivery) {
	m.inFlight += len(d.Data)
	m.seq++
	heap.Push(&m.q, &pending{Delivery: d, seq: m.seq})
}

type pending struct {
	Delivery
	seq uint64
}

type deliveries []*pending

func (q deliveries) Len() int { return len(q) }
func (q deliveries) Less(i, j int) bool {
	if !q[i].At.Equal(q[j].At) {
		return q[i].At.Before(q[j].At)
	}
	return q[i].seq < q[j].seq
}
func (q deliveries) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *deliveries) Push(x any)   { *q = append(*q, x.(*pending)) }
func (q *deliveries) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}
