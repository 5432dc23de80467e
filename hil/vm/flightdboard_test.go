package vm

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/hil/link"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// The nominal update with flightd (linux/arm64) in the guest of the A/B
// board under the real U-Boot, from a ground on the host across
// hil/link's emulator (RunFlightdUpdate).
func TestFlightdBoardUpdate(t *testing.T) {
	ab := needABBoard(t, "flightd")
	rng := testrand.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	fb, err := NewFlightdBoard(ctx, ab)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := link.Profile("leo-fast")
	if err != nil {
		t.Fatal(err)
	}
	spec.Schedule = link.Spec{}.Schedule // always up: the update, not the passes
	r, err := fb.RunFlightdUpdate(ctx, spec, rng.Uint64())
	checkReport(t, r, err)
	if strings.Join(r.Booted, ",") != "AB" {
		t.Fatalf("booted %v", r.Booted)
	}
}
