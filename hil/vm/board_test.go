package vm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testtool"
)

// defaultKernelDir is where fetch-kernel.sh puts the kernel when called
// without an argument, relative to this package (a leading _ keeps go
// ./... out of its tree).
const defaultKernelDir = "_kernel-cache"

var (
	boardOnce sync.Once
	board     *Board
	boardErr  error
	boardDir  string
	abDir     string // the A/B board's (abboard_test.go)
)

// TestMain removes the shared board's work directory (init, initramfs,
// disk images) after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range []string{boardDir, abDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

// needBoard returns the board shared by the tests of this package (built
// once: compiling the guest init and packing the initramfs), or skips
// when qemu or the kernel is missing, unless BOOTORBIT_REQUIRE_TOOLS=1.
func needBoard(t *testing.T) *Board {
	t.Helper()
	qemu := testtool.Need(t, "qemu-system-aarch64")
	testtool.Need(t, "mkfs."+DiskFS)
	if _, err := exec.LookPath("go"); err != nil {
		testtool.Missing(t, testtool.RequireTools, "go toolchain not in PATH (builds the guest init): %v", err)
	}
	dir := os.Getenv(KernelDirEnv)
	if dir == "" {
		dir = defaultKernelDir
	}
	k, err := FindKernel(dir)
	if err != nil {
		testtool.Missing(t, testtool.RequireTools, "%v (or set %s)", err, KernelDirEnv)
	}
	boardOnce.Do(func() {
		work, err := os.MkdirTemp("", "bootorbit-vm-")
		if err != nil {
			boardErr = err
			return
		}
		boardDir = work
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		board, boardErr = NewBoard(ctx, qemu, k, work)
	})
	if boardErr != nil {
		t.Fatal(boardErr)
	}
	t.Logf("kernel %s, init %d bytes, initramfs %d bytes, modules %v", k.Version, board.InitSize, board.InitrdSize, moduleNames(board.Mods))
	return board
}

func moduleNames(ms []Module) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

// logRun logs the console of a run when the test fails, and saves it under
// the test's name when BOOTORBIT_VM_CONSOLE_DIR is set.
func logRun(t *testing.T, r *Run) {
	t.Helper()
	if r == nil {
		return
	}
	if d := os.Getenv("BOOTORBIT_VM_CONSOLE_DIR"); d != "" {
		os.WriteFile(filepath.Join(d, filepath.Base(t.Name())+".log"), []byte(r.Console()), 0o644)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console:\n%s", r.Console())
		}
	})
}
