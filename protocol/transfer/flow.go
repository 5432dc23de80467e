package transfer

import "time"

// Flow control: the sender paces at the link's rate until the receiver's
// reports show that the vehicle, not the link, is the bottleneck (a flight
// computer that journals every chunk on a slow CPU takes less than a fast
// link carries; what it cannot take overflows its socket buffer and is
// lost), then at about what the receiver takes, probing upward now and
// then. It needs no new message: the reports say which chunks the receiver
// journaled, and the sender knows when it sent each of them.
//
// A sample covers the chunk frames a report classifies (sent before its
// anchor, now known journaled or missing), sent after the pace last
// changed, in the current contact and to the current boot of the receiver
// (a contact or a reboot in between explains its losses by itself). It
// gives the delivery rate d (bytes of the chunks journaled per second of
// link-up time over which they were sent) and the loss fraction f.
//
// Telling the receiver from the channel. Channel loss takes a share of
// whatever is sent; a receiver that cannot keep up takes a fixed rate,
// however fast the sender goes. So:
//   - The sender leaves the link's rate only after two samples in a row lost
//     at least half of what they carried, or one lost three quarters, and
//     lost it all along (no run of losses a quarter of the sample long): the
//     channel loss of the reference profiles (stress: 17 % on average, in
//     bursts) stays below (the worst sample of 750 runs of stress, uhf,
//     geo, lunar and sband lost 56 %, never two in a row 50 %); a receiver
//     at a fifth of the link loses 80 %.
//   - Once limited, it paces at flowCruise times the delivery rate and,
//     every flowProbeEvery samples, probes at flowProbe times it: if the
//     delivery rate grows with the pace (by half the gain at least), the
//     receiver was not the limit - channel loss is proportional and leaves
//     the ratio alone - and the sender keeps probing, doubling, back up to
//     the link's rate. If it does not grow, the probe's delivery rate is
//     the receiver's rate.
//   - A sample that lost half or more while cruising says the receiver got
//     slower: the delivery rate becomes the new estimate.
//   - The spread test holds while limited too: a sample with a run of
//     losses a quarter of it long (an unsignalled fade or outage) is left
//     out, the pace unchanged; without it an outage cut the pace to 1.05
//     times what the sample delivered, and only the probes, every
//     flowProbeEvery samples (slow at a low pace), won it back.
const (
	flowTrigger     = 0.5  // loss fraction that suggests the receiver is the bottleneck
	flowTriggerRuns = 2    // in this many samples in a row
	flowTriggerNow  = 0.75 // loss fraction that suggests it at once
	flowSlower      = 0.5  // loss fraction, while limited, that says the receiver got slower
	flowCruise      = 1.05 // pace over the delivery rate while limited
	flowProbe       = 1.25 // the periodic probe's gain
	flowProbeFast   = 2.0  // the probe's gain after a probe that succeeded
	flowProbeEvery  = 4    // cruise samples between probes
	flowMinSample   = 256  // chunk frames in a sample
	flowFloor       = 512  // the pace never goes below the link's rate over this
	// flowReqBytes: while streaming, a report request after this many
	// bytes of chunk frames, so that samples come at a steady cadence
	// (a frame of about 40 bytes: 0.016 % of the uplink; a second at
	// 2 Mbit/s).
	flowReqBytes = 256 << 10
)

// flowCtl is the sender's flow control state.
type flowCtl struct {
	link    float64 // the configured rate, bits/s
	rate    float64 // the pace, bits/s
	limited bool    // the receiver is the bottleneck: rate is below link
	bw      float64 // while limited: the receiver's delivery rate, bits/s
	probe   float64 // gain of the probe in progress; 0 while cruising
	ref     float64 // delivery rate of the last sample before the probe
	since   int     // cruise samples since the last probe
	high    int     // samples in a row with loss at or above flowTrigger
	from    uint64  // samples take only frames sent after this sequence number
	epoch   uint32  // the receiver's boot epoch of the newest report
	acc     flowSample
}

// flowSample accumulates one sample.
type flowSample struct {
	frames      int
	done, lost  int64         // bytes
	first, last time.Duration // link-up time of the first and last send
	lastN       int           // bytes of the last frame
	run, maxRun int           // frames lost in a row: now, the longest
	started     bool
}

func (f *flowCtl) reset(seq uint64) {
	f.from = max(f.from, seq)
	f.acc = flowSample{}
}

// add takes the fate of one chunk frame into the sample.
func (f *flowCtl) add(e *sendRec, done bool) {
	if e.seq <= f.from || !e.both {
		return
	}
	a := &f.acc
	if !a.started {
		a.started, a.first = true, e.el
	}
	a.first = min(a.first, e.el)
	if e.el >= a.last {
		a.last, a.lastN = e.el, int(e.n)
	}
	a.frames++
	if done {
		a.done += int64(e.n)
		a.run = 0
	} else {
		a.lost += int64(e.n)
		a.run++
		a.maxRun = max(a.maxRun, a.run)
	}
}

// sample closes the sample if it is large enough and adjusts the pace; it
// returns whether the pace changed.
func (f *flowCtl) sample() bool {
	a := f.acc
	if a.frames < flowMinSample {
		return false
	}
	f.acc = flowSample{}
	span := a.last - a.first + time.Duration(float64(a.lastN*8)/f.rate*float64(time.Second))
	if span <= 0 {
		return false
	}
	d := float64(a.done*8) / span.Seconds()
	loss := float64(a.lost) / float64(a.done+a.lost)
	old := f.rate
	// A receiver that cannot keep up drops frames all along, a few in a
	// row between the ones it takes; a long run of losses is an outage or
	// a burst, not a rate.
	spread := a.maxRun < a.frames/4
	if !f.limited {
		if loss >= flowTrigger && spread {
			f.high++
		} else {
			f.high = 0
		}
		if (f.high >= flowTriggerRuns || loss >= flowTriggerNow && spread) && d > 0 {
			f.limited, f.bw, f.ref, f.probe, f.since = true, d, d, 0, 0
			f.set(flowCruise * f.bw)
		}
		return f.rate != old
	}
	switch {
	case !spread:
		// An outage or a burst inside the sample: its delivery rate says
		// nothing of the receiver's. The pace, the estimate and a probe
		// in progress stay; the next sample tells.
	case f.probe > 0 && d >= f.ref*(1+(f.probe-1)/2):
		// The delivery rate followed the pace: probe further.
		f.bw, f.ref, f.probe = d, d, flowProbeFast
		f.set(f.probe * f.bw)
	case f.probe > 0:
		// It did not: what the probe delivered is what the receiver takes.
		f.bw, f.probe, f.since = max(d, f.ref), 0, 0
		f.set(flowCruise * f.bw)
	case loss >= flowSlower && d > 0 && d < f.bw:
		f.bw, f.ref, f.since = d, d, 0
		f.set(flowCruise * f.bw)
	default:
		f.ref = d
		f.bw = max(f.bw, d)
		if f.since++; f.since >= flowProbeEvery {
			f.probe = flowProbe
			f.set(f.probe * f.bw)
		} else {
			f.set(flowCruise * f.bw)
		}
	}
	return f.rate != old
}

// set paces at r, within [link/flowFloor, link]; at the link's rate the
// sender is no longer limited.
func (f *flowCtl) set(r float64) {
	r = max(r, f.link/flowFloor)
	if r >= f.link {
		r = f.link
		f.limited, f.probe, f.high = false, 0, 0
	}
	f.rate = r
}
