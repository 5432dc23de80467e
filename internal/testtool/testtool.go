// Package testtool finds the real tools that cross-check tests run against
// (fw_printenv, grub-editenv, zstd, umoci, ...). A missing tool skips the
// test, unless the environment asks for it: BOOTORBIT_REQUIRE_TOOLS=1 (set by
// CI after it installs them) turns a missing tool into a failure, and
// BOOTORBIT_REQUIRE_BOOTLOADERS=1 does the same for real bootloaders.
package testtool

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Environment variables that make a missing tool fail the test.
const (
	RequireTools       = "BOOTORBIT_REQUIRE_TOOLS"
	RequireBootloaders = "BOOTORBIT_REQUIRE_BOOTLOADERS"
)

// Need returns the path of the named tool, or ends the test: it skips when
// the tool is not installed, and fails when BOOTORBIT_REQUIRE_TOOLS=1.
func Need(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, RequireTools, "%s not installed: %v", name, err)
	}
	return p
}

// Missing ends the test for something it needs that is not there: a failure
// when the environment variable env is "1", a skip otherwise.
func Missing(t testing.TB, env, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(env) == "1" {
		t.Fatalf("%s (%s=1)", msg, env)
		return
	}
	t.Skip(msg)
}
