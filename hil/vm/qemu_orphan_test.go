package vm

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const orphanEnv = "BOOTORBIT_VM_ORPHAN_HELPER"

// A test process that dies while a board runs (a panic in any goroutine,
// go test's -timeout) runs no cleanup: qemu must die with it rather than
// keep a guest running on the machine. The helper, this test binary run
// again, starts a stand-in qemu and panics; the stand-in must be gone.
func TestQEMUDiesWithTheTestProcess(t *testing.T) {
	if os.Getenv(orphanEnv) != "" {
		orphanHelper()
		return
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "qemu")
	// The stand-in prints its pid and then sleeps, as a hung guest would.
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho $$\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestQEMUDiesWithTheTestProcess$")
	cmd.Env = append(os.Environ(), orphanEnv+"="+fake)
	out, _ := cmd.CombinedOutput() // the helper panics: an error is expected
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	pid := 0
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "qemu pid "); ok {
			pid, _ = strconv.Atoi(p)
		}
	}
	if pid == 0 {
		t.Fatalf("the helper printed no pid:\n%s", out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("qemu (pid %d) outlived the test process that started it", pid)
		}
		time.Sleep(50 * time.Millisecond) // polling another process's death: no event to wait on
	}
}

func orphanHelper() {
	m := Machine{QEMU: os.Getenv(orphanEnv)}
	m.Run(context.Background(), func(l Line) bool {
		fmt.Printf("qemu pid %s\n", l.Text)
		os.Stdout.Sync()
		panic("the test process dies while the board runs")
	})
}

// alive says whether pid runs (a zombie waiting for a reaper does not).
func alive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...
	i := strings.LastIndexByte(string(st), ')')
	return i > 0 && i+2 < len(st) && st[i+2] != 'Z'
}
