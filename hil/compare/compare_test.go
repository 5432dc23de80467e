//go:build linux

package compare

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/hil/link"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/internal/testtool"
)

// bootorbit's uplink across the UDP emulator delivers the bytes, on a
// lossy profile with the schedule off (no root needed).
func TestBootorbitUDP(t *testing.T) {
	spec, err := link.Profile("leo-fast")
	if err != nil {
		t.Fatal(err)
	}
	spec.Schedule = link.Spec{}.Schedule // always up
	seed := testrand.Seed(t)
	data := bytes.Repeat([]byte("bootorbit compare "), 10000) // 180 kB
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Bootorbit(ctx, spec, seed, data)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes in %v, %d wire bytes, %d chunks resent; link forward %+v", m.Bytes, m.Time, m.WireBytes, m.Retransmits, m.Link.Forward.Dropped)
	if m.Bytes != int64(len(data)) || m.Time <= 0 {
		t.Fatalf("method %+v", m)
	}
}

// The whole comparison on one small case, both methods (root: the HTTP
// baseline needs the emulator's IP mode).
func TestRunBoth(t *testing.T) {
	if err := link.CheckIP(); err != nil {
		testtool.Missing(t, testtool.RequireTools, "%v", err)
	}
	var progress strings.Builder
	cases, err := Run(context.Background(), Config{
		Profiles: []string{"leo-fast"}, Size: 256 << 10, Seed: testrand.Seed(t),
		Timeout: 2 * time.Minute, Progress: &progress,
		HTTP: HTTPConfig{NSA: fmt.Sprintf("bo-c%d-a", os.Getpid()), NSB: fmt.Sprintf("bo-c%d-b", os.Getpid())},
	})
	t.Log(progress.String())
	if err != nil {
		t.Fatal(err)
	}
	var tab strings.Builder
	WriteTable(&tab, cases)
	t.Log("\n" + tab.String())
	c := cases[0]
	if c.Bootorbit.Err != "" || c.HTTP.Err != "" || c.Ratio <= 0 {
		t.Fatalf("case %+v", c)
	}
}
