//go:build unix

package watchdog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func tryLock(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) }

func TestUBootEnvLockFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "env")
	zeroFile(t, p, 0x1000, 0)
	lock := filepath.Join(dir, "fw_printenv.lock")
	e := &UBootEnv{Copies: []UBootLocation{{p, 0, 0x1000}}, LockFile: lock}
	if err := e.Save(Vars{"a": "1"}); err != nil {
		t.Fatal(err)
	}
	if v, err := e.Load(); err != nil || v["a"] != "1" {
		t.Fatalf("load: %v %v", v, err)
	}
	// The lock exists and was released: a non-blocking lock succeeds.
	f, err := os.Open(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tryLock(f); err != nil {
		t.Fatalf("lock still held after Save: %v", err)
	}
	e.LockFile = filepath.Join(dir, "missing", "x.lock")
	if _, err := e.Load(); err == nil || !strings.Contains(err.Error(), "x.lock") {
		t.Fatalf("unusable lock file: %v", err)
	}
}
