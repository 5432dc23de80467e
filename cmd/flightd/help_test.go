//go:build linux

package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/internal/cli/clitest"
)

// TestHelp walks every command: documented, and --help and help PATH
// exit 0 with the summary, the synopsis and the flags.
func TestHelp(t *testing.T) {
	paths := clitest.CheckTree(t, commands)
	for _, want := range []string{"flightd update install", "flightd boot status", "flightd slot verify", "flightd delta apply", "flightd completion bash"} {
		if !slices.Contains(paths, want) {
			t.Errorf("tree lacks %q: %v", want, paths)
		}
	}
	for _, args := range [][]string{{"update", "--help"}, {"help", "update", "install"}, {"boot", "--help"}, {"boot"}} {
		code, out, errOut := clitest.Run(commands, args...)
		if code != 0 || !strings.Contains(out, "Usage:") || !strings.Contains(out, "Flags:") {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	code, out, _ := clitest.Run(commands, "help", "update", "install")
	for _, want := range []string{"write an image into the inactive SLOT", "flightd update install SLOT FILE... [flags]", "Examples:", "--digest sha256:HEX", "--uboot-env PATH", "--json", "-v, --verbose"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("help update install lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = clitest.Run(commands, "completion", "bash")
	if code != 0 || !strings.Contains(out, "bash completion") || !strings.Contains(out, "flightd") {
		t.Errorf("completion bash: exit %d\n%.300s", code, out)
	}
}

// A bad flag, an unknown command, a missing argument: one error line and
// one hint, exit 2.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"boot", "status", "--bogus"}, "flightd boot status: unknown flag: --bogus\nRun 'flightd boot status --help' for usage.\n"},
		{[]string{"boot", "stauts"}, `flightd boot: unknown command "stauts" for "flightd boot" (did you mean "status"?)`},
		{[]string{"nope"}, `unknown command "nope" for "flightd"`},
		{[]string{"update", "arm"}, "flightd update arm: want exactly one SLOT (A or B), got 0 arguments\n"},
		{[]string{"boot", "status", "--env-size", "1.5MiB"}, `invalid argument "1.5MiB" for "--env-size" flag`},
	} {
		code, out, errOut := clitest.Run(commands, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "for usage.") != 1 || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and %q once", tc.args, code, out, errOut, tc.want)
		}
	}
}
