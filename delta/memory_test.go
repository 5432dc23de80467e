package delta

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// heapProbe is an output sink that samples the heap every MiB written.
type heapProbe struct {
	n, next uint64
	peak    uint64
}

func (h *heapProbe) Write(p []byte) (int, error) {
	h.n += uint64(len(p))
	if h.n >= h.next {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		h.peak = max(h.peak, ms.HeapInuse)
		h.next = h.n + 1<<20
	}
	return len(p), nil
}

// bigPair makes an old layer of about size bytes of binary-like files and a
// new one with a tenth of the files rebuilt (shifted), new files (a fifth of
// the layer, so that the literal stream is larger than its window) and the
// rest unchanged.
func bigPair(t testing.TB, size int) (old, nw [][]byte) {
	rng := rand.New(rand.NewPCG(3, 3))
	var oe, ne []ocitest.Entry
	for i := 0; i*(256<<10) < size; i++ {
		name := fmt.Sprintf("usr/lib/lib%04d.so", i)
		data := binaryLike(rng, 128<<10+rng.IntN(256<<10))
		oe = append(oe, ocitest.Entry{Name: name, Data: data, Mode: 0o755})
		switch {
		case i%10 == 0:
			ne = append(ne, ocitest.Entry{Name: name, Data: shift(data), Mode: 0o755})
		case i%5 == 1:
			// New files: enough literal data to fill the lit stream's window.
			ne = append(ne, ocitest.Entry{Name: name + ".new", Data: binaryLike(rng, 256<<10), Mode: 0o755})
			ne = append(ne, ocitest.Entry{Name: name, Data: data, Mode: 0o755})
		default:
			ne = append(ne, ocitest.Entry{Name: name, Data: data, Mode: 0o755})
		}
	}
	return tarsOf(t, []ocitest.Layer{{Entries: oe}}), tarsOf(t, []ocitest.Layer{{Entries: ne}})
}

// TestApplyMemoryBound applies a layer much larger than the bound and
// reports the peak heap in use during apply; with -long it is 512 MiB.
func TestApplyMemoryBound(t *testing.T) {
	size := 40 << 20
	if testrand.Long() {
		size = 512 << 20
	}
	old, nw := bigPair(t, size)
	b, err := OpenBundle(bytesReader(computeBytes(t, old, nw, Options{})))
	if err != nil {
		t.Fatal(err)
	}
	base := baseOf(old)
	// Two collections empty the decoder pool (and its victim cache), so
	// the apply below pays for its own decoders.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.HeapInuse
	probe := &heapProbe{}
	if err := b.ApplyLayer(context.Background(), 0, base, probe); err != nil {
		t.Fatal(err)
	}
	growth := int64(probe.peak) - int64(before)
	t.Logf("applied a %d MiB layer (%d parts, bundle %d bytes): heap in use grew by at most %.1f MiB over the test's own %.1f MiB",
		len(nw[0])>>20, len(b.Header.Layers[0].Parts), b.Header.PayloadSize, float64(growth)/(1<<20), float64(before)/(1<<20))
	// The bound documented in docs/delta.md: five zstd decoders plus
	// fixed buffers, well under this.
	if growth > ApplyMemoryBound {
		t.Errorf("apply heap grew by %d bytes, above the documented bound of %d", growth, ApplyMemoryBound)
	}
}
