package bsdiff

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("seed", 0, "seed for randomized tests (0: time-based)")

// patch rebuilds new from old, the controls and new itself (standing in for
// the difference and extra streams), checking that the controls tile new.
func patch(t *testing.T, old, nw []byte, cs []Control) {
	t.Helper()
	var out []byte
	for _, c := range cs {
		if c.NewPos != len(out) {
			t.Fatalf("control at new %d, want %d", c.NewPos, len(out))
		}
		if c.Add < 0 || c.Extra < 0 || c.OldPos < 0 || c.OldPos+c.Add > len(old) {
			t.Fatalf("bad control %+v (old %d)", c, len(old))
		}
		for i := 0; i < c.Add; i++ {
			d := nw[len(out)] - old[c.OldPos+i]
			out = append(out, old[c.OldPos+i]+d)
		}
		out = append(out, nw[len(out):len(out)+c.Extra]...)
	}
	if !bytes.Equal(out, nw) {
		t.Fatalf("controls cover %d of %d bytes", len(out), len(nw))
	}
}

func TestDiffCoversNew(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	for i := 0; i < 300; i++ {
		old := make([]byte, rng.IntN(5000))
		for j := range old {
			old[j] = byte(rng.IntN(8))
		}
		nw := mutate(rng, old)
		x := NewIndex(old)
		var cs []Control
		x.Diff(nw, func(c Control) { cs = append(cs, c) })
		patch(t, old, nw, cs)
	}
}

func mutate(rng *rand.Rand, old []byte) []byte {
	nw := append([]byte(nil), old...)
	for k := rng.IntN(10); k > 0; k-- {
		switch rng.IntN(3) {
		case 0:
			if len(nw) > 0 {
				nw[rng.IntN(len(nw))] ^= byte(1 + rng.IntN(255))
			}
		case 1:
			p := rng.IntN(len(nw) + 1)
			ins := make([]byte, rng.IntN(100))
			for j := range ins {
				ins[j] = byte(rng.IntN(256))
			}
			nw = append(nw[:p], append(ins, nw[p:]...)...)
		case 2:
			if len(nw) > 0 {
				p := rng.IntN(len(nw))
				q := min(len(nw), p+rng.IntN(200))
				nw = append(nw[:p], nw[q:]...)
			}
		}
	}
	return nw
}

// TestDiffFindsShiftedCode checks the point of the exercise: a copy of old
// with a few bytes changed and an insertion is coded almost entirely as Add,
// with a difference stream that is mostly zero.
func TestDiffFindsShiftedCode(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	old := make([]byte, 100000)
	for i := range old {
		old[i] = byte(rng.IntN(256))
	}
	nw := append(append(append([]byte(nil), old[:50000]...), []byte("inserted text")...), old[50000:]...)
	nw[1000] ^= 1
	nw[70000] ^= 1
	x := NewIndex(old)
	var add, extra, nonzero int
	x.Diff(nw, func(c Control) {
		add += c.Add
		extra += c.Extra
		for i := 0; i < c.Add; i++ {
			if nw[c.NewPos+i] != old[c.OldPos+i] {
				nonzero++
			}
		}
	})
	if extra > 100 || nonzero > 10 || add+extra != len(nw) {
		t.Fatalf("add %d extra %d nonzero diffs %d", add, extra, nonzero)
	}
}
