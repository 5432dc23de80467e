package demo_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/hil/demo"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// TestDemo runs `hil demo` so that it cannot rot: the short form (the
// update alone) by default, the whole story with -long.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds flightd and runs the virtual board")
	}
	rng := testrand.New(t)
	var out bytes.Buffer
	res, err := demo.Run(context.Background(), demo.Options{Dir: t.TempDir(), Out: &out, Seed: rng.Uint64(), Short: !testrand.Long()})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Passed || !strings.Contains(out.String(), "=== bootorbit demo: OK") {
		t.Fatalf("demo: %v", res.Failures)
	}
}
