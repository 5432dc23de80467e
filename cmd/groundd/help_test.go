package main

import (
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/internal/cli/clitest"
)

// TestHelp walks every command: documented, and --help and help PATH
// exit 0 with the summary, the synopsis and the flags.
func TestHelp(t *testing.T) {
	clitest.CheckTree(t, commands)
	code, out, _ := clitest.Run(commands, "delta", "--help")
	for _, want := range []string{"compute the delta bundle", "groundd delta [flags]", "Examples:", "--part-size size", "(default 32MiB)", "--json", "-v, --verbose"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("delta --help lacks %q:\n%s", want, out)
		}
	}
}
