package repotest

import (
	"errors"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// groundPlatforms are the systems groundd must build for: operators run the
// ground side on their own machines. flightd is Linux only (the watchdog
// ioctls, O_DIRECT, mounts and loop devices).
var groundPlatforms = []string{"linux", "darwin", "windows"}

// TestGrounddBuildsEverywhere cross-builds cmd/groundd and the groundd
// packages, and with them every package they import, for each of
// groundPlatforms. A full build (not only `go list -deps`) is what catches
// a Linux-only symbol used in a file without a build constraint. .ci/run
// runs the same builds; here they cost little once the build cache holds
// them. It skips when the go tool is not installed.
func TestGrounddBuildsEverywhere(t *testing.T) {
	goTool := goCommand(t)
	root := moduleRoot(t)
	for _, goos := range groundPlatforms {
		t.Run(goos, func(t *testing.T) {
			cmd := exec.Command(goTool, "build", "./cmd/groundd", "./groundd/...")
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "GOOS="+goos, "CGO_ENABLED=0")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("GOOS=%s go build ./cmd/groundd ./groundd/...: %v\n%s", goos, err, out)
			}
			// The dependency set, for the log: what a change to any of
			// these packages must keep portable.
			list := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./cmd/groundd", "./groundd/...")
			list.Dir = root
			list.Env = cmd.Env
			deps, err := list.Output()
			if err != nil {
				t.Fatalf("GOOS=%s go list -deps: %v", goos, err)
			}
			t.Logf("GOOS=%s: groundd's module dependencies build: %s", goos, strings.Join(strings.Fields(string(deps)), " "))
		})
	}
}

// goCommand finds the go tool on PATH, else in $GOROOT/bin; it skips the
// test when there is none (a test binary copied to a board).
func goCommand(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if goroot := os.Getenv("GOROOT"); goroot != "" {
		p := filepath.Join(goroot, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("no go tool on PATH or in $GOROOT/bin to cross-build with")
	return ""
}

// TestFlightdIsLinuxOnly checks that every Go file of cmd/flightd is
// constrained to Linux, so that building it elsewhere says so ("build
// constraints exclude all Go files") instead of failing deep inside a
// package that needs Linux. It reads build constraints only, without the go
// tool.
func TestFlightdIsLinuxOnly(t *testing.T) {
	dir := filepath.Join(moduleRoot(t), "cmd", "flightd")
	for _, goos := range []string{"darwin", "windows"} {
		ctx := build.Default
		ctx.GOOS = goos
		ctx.CgoEnabled = false
		pkg, err := ctx.ImportDir(dir, 0)
		var noGo *build.NoGoError
		if errors.As(err, &noGo) {
			continue
		}
		if err != nil {
			t.Fatalf("GOOS=%s: %v", goos, err)
		}
		var files []string
		files = append(files, pkg.GoFiles...)
		files = append(files, pkg.TestGoFiles...)
		files = append(files, pkg.XTestGoFiles...)
		t.Errorf("GOOS=%s: cmd/flightd files build outside Linux; add //go:build linux to %s", goos, strings.Join(files, ", "))
	}
	// And on Linux it is a command at all.
	ctx := build.Default
	ctx.GOOS = "linux"
	pkg, err := ctx.ImportDir(dir, 0)
	if err != nil || pkg.Name != "main" || len(pkg.GoFiles) == 0 {
		t.Fatalf("cmd/flightd on linux: package %q, %d files, %v", pkg.Name, len(pkg.GoFiles), err)
	}
}
