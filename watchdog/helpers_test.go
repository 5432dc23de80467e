package watchdog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/internal/testtool"
)

// needTool returns the path of a real tool for a cross-check, skipping the
// test when it is missing unless BOOTORBIT_REQUIRE_TOOLS=1.
func needTool(t *testing.T, name string) string { return testtool.Need(t, name) }

// missingBootloader skips a test that needs a real bootloader (QEMU with
// U-Boot, grub-emu) it cannot find, or fails it when
// BOOTORBIT_REQUIRE_BOOTLOADERS=1.
func missingBootloader(t *testing.T, format string, args ...any) {
	t.Helper()
	testtool.Missing(t, testtool.RequireBootloaders, format, args...)
}

// run runs a tool and returns its stdout; a non-zero exit fails the test.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, errOut, err := runErr(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func runErr(t *testing.T, name string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(needTool(t, name), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// zeroFile creates a file of n bytes filled with b.
func zeroFile(t *testing.T, path string, n int, b byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Repeat([]byte{b}, n), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeFWConfig writes a fw_env.config for locs in dir and returns its path.
func writeFWConfig(t *testing.T, dir string, locs []UBootLocation) string {
	t.Helper()
	p := filepath.Join(dir, "fw_env.config")
	if err := os.WriteFile(p, []byte(FormatFWEnvConfig(locs)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// parsePrintenv parses fw_printenv / grub-editenv list output where no value
// contains a newline.
func parsePrintenv(t *testing.T, out string) Vars {
	t.Helper()
	v := Vars{}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		k, x, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("tool output line without '=': %q", line)
		}
		v[k] = x
	}
	return v
}

// diffVars describes how got differs from want, values shortened.
func diffVars(got, want Vars) string {
	short := func(s string) string {
		if len(s) > 40 {
			return fmt.Sprintf("%q...(%d bytes)", s[:40], len(s))
		}
		return fmt.Sprintf("%q", s)
	}
	var b strings.Builder
	for _, k := range want.Keys() {
		if g, ok := got[k]; !ok {
			fmt.Fprintf(&b, "\n  missing %s (want %s)", k, short(want[k]))
		} else if g != want[k] {
			fmt.Fprintf(&b, "\n  %s = %s, want %s", k, short(g), short(want[k]))
		}
	}
	for _, k := range got.Keys() {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(&b, "\n  extra %s = %s", k, short(got[k]))
		}
	}
	return b.String()
}

// readOnlyEnv is an environment whose Save fails (worn or write-protected
// storage); it keeps what the last Save tried to write.
type readOnlyEnv struct {
	MemEnv
	attempted Vars
}

func (e *readOnlyEnv) Save(v Vars) error {
	e.attempted = v.Clone()
	return errors.New("read-only environment")
}
