package main

import (
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/internal/cli/clitest"
)

// TestHelp walks every command, the hidden children of bench delta
// included: documented, and --help and help PATH exit 0 with the summary,
// the synopsis and the flags.
func TestHelp(t *testing.T) {
	clitest.CheckTree(t, commands)
	code, out, _ := clitest.Run(commands, "bench", "--help")
	for _, want := range []string{"delta", "slot-write"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("bench --help lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "rss-exec") {
		t.Errorf("bench --help lists the hidden child commands:\n%s", out)
	}
	code, out, _ = clitest.Run(commands, "vm", "watchdog", "--help")
	if code != 0 || !strings.Contains(out, "--timeout duration") || !strings.Contains(out, "(default 2s)") {
		t.Errorf("vm watchdog --help:\n%s", out)
	}
}
