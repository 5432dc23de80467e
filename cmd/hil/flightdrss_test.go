package main

import (
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/internal/cli/clitest"
)

// TestFlightdRSSUsage: bad flags are usage errors (exit 2) before any work.
func TestFlightdRSSUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "flightd-rss", "--new", "x.tar"},
		{"bench", "flightd-rss", "--memory-limit", "1MiB"},
		{"bench", "flightd-rss", "--max-frame", "100"},
		{"bench", "flightd-rss", "--size", "0"},
	} {
		if code, _, errOut := clitest.Run(commands, args...); code != 2 || !strings.Contains(errOut, "--") {
			t.Errorf("%v: exit %d, %s", args, code, errOut)
		}
	}
}
