package bsdiff

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/bootorbit/bootorbit/internal/testrand"
)

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
	rng := rand.New(rand.NewPCG(testrand.Seed(t), 3))
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
	rng := testrand.New(t)
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

// TestRepetitiveInputIsLinear guards against bsdiff's quadratic case: long
// zero runs match almost everywhere. The number of suffix array searches
// must stay proportional to the input divided by the skip length, not to
// the input.
func TestRepetitiveInputIsLinear(t *testing.T) {
	old := make([]byte, 1<<20)
	nw := make([]byte, 1<<20)
	for i := 0; i < len(nw); i += 4096 {
		nw[i] = 1 // sparse edits keep the alignment from being perfect
		old[i+7] = 2
	}
	x := NewIndex(old)
	var cs []Control
	x.Diff(nw, func(c Control) { cs = append(cs, c) })
	patch(t, old, nw, cs)
	t.Logf("%d searches for %d bytes, %d controls", x.searches, len(nw), len(cs))
	if x.searches > len(nw)/8 {
		t.Fatalf("%d suffix array searches for %d bytes: quadratic scan", x.searches, len(nw))
	}
}

// TestWorkIsBounded feeds inputs on which suffix-array alignment is
// quadratic (long runs that match almost everywhere but not quite) and
// checks that the comparisons stay within the budget and the controls
// still rebuild new.
func TestWorkIsBounded(t *testing.T) {
	n := 1 << 18
	cases := map[string]func() ([]byte, []byte){
		"zero runs with sparse marks": func() ([]byte, []byte) {
			o, w := make([]byte, n), make([]byte, n)
			for i := 0; i < n; i += 300 {
				w[i] = 1
			}
			for i := 150; i < n; i += 1000 {
				o[i] = 1
			}
			return o, w
		},
		"period shifted": func() ([]byte, []byte) {
			o, w := make([]byte, n), make([]byte, n)
			for i := range o {
				o[i], w[i] = byte(i%2), byte((i/2)%2)
			}
			return o, w
		},
	}
	for name, mk := range cases {
		o, w := mk()
		x := NewIndex(o)
		var cs []Control
		x.Diff(w, func(c Control) { cs = append(cs, c) })
		patch(t, o, w, cs)
		t.Logf("%s: %s", name, x.Stats())
		if limit := int64(workPerByte)*int64(len(o)+len(w)) + 1<<20 + maxCompare*64; x.work > limit {
			t.Errorf("%s: %d bytes compared, budget %d", name, x.work, limit)
		}
	}
}
