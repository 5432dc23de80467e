package transfer

import (
	"testing"
	"time"
)

// feedSample gives f one sample of n frames of size bytes sent at pace
// f.rate, whose fate keep decides (true: journaled), and closes it.
func feedSample(f *flowCtl, seq *uint64, el *time.Duration, n int, size int32, keep func(i int) bool) bool {
	gap := time.Duration(float64(size*8) / f.rate * float64(time.Second))
	for i := range n {
		*seq++
		f.add(&sendRec{seq: *seq, el: *el, both: true, n: size}, keep(i))
		*el += gap
	}
	return f.sample()
}

// TestFlowLimitedOutage: once limited, a sample with an unsignalled
// outage in it (one run of losses three fifths of the sample long, the rest
// all taken) says nothing of the receiver's rate, as before the sender was
// limited: the pace stays. Before, the spread test applied only to the
// first trigger, and the outage cut the pace to 1.05 times the sample's
// delivery rate, recovered only by the probes flowProbeEvery samples
// later.
func TestFlowLimitedOutage(t *testing.T) {
	const (
		link  = 1e6
		size  = 1000
		n     = 400
		recvr = 5 // the receiver takes one frame in recvr
	)
	f := &flowCtl{link: link, rate: link}
	var seq uint64
	var el time.Duration
	slow := func(i int) bool { return i%recvr == 0 }
	for range 2 {
		feedSample(f, &seq, &el, n, size, slow)
	}
	if !f.limited {
		t.Fatalf("not limited by a receiver at a fifth of the link: rate %.0f", f.rate)
	}
	// Cruise at the receiver's rate: it takes nearly all.
	for range 2 {
		feedSample(f, &seq, &el, n, size, func(i int) bool { return i%20 != 0 })
	}
	if !f.limited || f.probe != 0 {
		t.Fatalf("state after cruising: limited %v, probe %v", f.limited, f.probe)
	}
	before, bw := f.rate, f.bw
	// An outage: three fifths of the sample lost in one run, the rest
	// taken.
	changed := feedSample(f, &seq, &el, n, size, func(i int) bool { return i < n/5 || i >= 4*n/5 })
	if changed || f.rate != before || f.bw != bw {
		t.Fatalf("an outage inside a sample moved the pace: %.0f -> %.0f bit/s (estimate %.0f -> %.0f)", before, f.rate, bw, f.bw)
	}
}
