package scenario

import (
	"context"
	"errors"
	"testing"

	"github.com/bootorbit/bootorbit/hil/images"
)

// TestDebianPairOutlivesCtx: the first scenario to ask for the Debian pair
// runs out of time while it is built: that scenario fails, the next one
// gets the pair. Before, the first scenario's context error was kept and
// every later Debian scenario of the run failed with it.
func TestDebianPairOutlivesCtx(t *testing.T) {
	builds := 0
	e := &Env{Dir: t.TempDir(), DebianLayout: "layout", buildDebian: func(ctx context.Context, _ images.DebianOptions) (*images.Set, error) {
		builds++
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return &images.Set{}, nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Pair(ctx, images.PairDebian); !errors.Is(err, context.Canceled) {
		t.Fatalf("first scenario, out of time: %v", err)
	}
	s, err := e.Pair(context.Background(), images.PairDebian)
	if err != nil || s == nil {
		t.Fatalf("next scenario: %v", err)
	}
	if s2, err := e.Pair(context.Background(), images.PairDebian); err != nil || s2 != s || builds != 2 {
		t.Fatalf("third scenario: set %p (want %p), %v, %d builds (want 2: the set is kept once made)", s2, s, err, builds)
	}
}
