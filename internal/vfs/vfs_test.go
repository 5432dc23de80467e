package vfs

import (
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/internal/testrand"
)

// testSeed returns the test's seed, logged (BOOTORBIT_SEED replays it).
func testSeed(t *testing.T) uint64 {
	t.Helper()
	return testrand.Seed(t)
}

func readAll(t *testing.T, fsys FS, name string) (string, error) {
	t.Helper()
	f, err := fsys.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	return string(b), err
}

func TestMemDropsUnsynced(t *testing.T) {
	m := NewMem()
	if err := m.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(m, "/"); err != nil {
		t.Fatal(err)
	}
	f, _ := m.Create("d/f", 0o644)
	f.Write([]byte("hello"))
	f.Sync()
	f.Write([]byte(" world"))
	// File synced but its directory entry was not: the file is gone.
	if _, err := readAll(t, m.CrashClone(nil), "d/f"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("unsynced directory entry survived the crash")
	}
	SyncDir(m, "d")
	got, err := readAll(t, m.CrashClone(nil), "d/f")
	if err != nil || got != "hello" {
		t.Fatalf("after crash: %q, %v; want the synced %q", got, err, "hello")
	}
	if got, _ := readAll(t, m, "d/f"); got != "hello world" {
		t.Fatalf("live view %q", got)
	}
}

// TestWriteFileAtomicCrash cuts the power at every operation of an atomic
// replace, with and without random survival of unsynced writes: the file
// always holds the old or the new content.
func TestWriteFileAtomicCrash(t *testing.T) {
	r := rand.New(rand.NewPCG(testSeed(t), 0))
	for _, random := range []bool{false, true} {
		for n := 0; ; n++ {
			m := NewMem()
			m.MkdirAll("s", 0o755)
			SyncDir(m, "/")
			if err := WriteFileAtomic(m, "s/state", []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			var cr *rand.Rand
			if random {
				cr = r
			}
			m.SetCrashAfter(n, cr)
			err := WriteFileAtomic(m, "s/state", []byte("new content"), 0o644)
			after := m.Crashed()
			if after == nil {
				if err != nil {
					t.Fatal(err)
				}
				if n < 5 {
					t.Fatalf("finished after %d ops; expected at least create, write, sync, rename, dir sync", n)
				}
				break
			}
			if !errors.Is(err, ErrCrashed) {
				t.Fatalf("crash %d: error %v does not wrap ErrCrashed", n, err)
			}
			got, rerr := readAll(t, after, "s/state")
			if rerr != nil || (got != "old" && got != "new content") {
				t.Fatalf("crash at op %d (random %v): state %q, %v", n, random, got, rerr)
			}
		}
	}
}

func TestInject(t *testing.T) {
	m := NewMem()
	boom := errors.New("boom")
	m.Inject = func(op Op, name string) error {
		if op == OpSync {
			return boom
		}
		return nil
	}
	if err := WriteFileAtomic(m, "x", []byte("x"), 0o644); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
}

func TestOSWriteFileAtomic(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	for _, s := range []string{"one", "two"} {
		if err := WriteFileAtomic(Default, p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := readAll(t, Default, p); err != nil || got != s {
			t.Fatalf("%q %v", got, err)
		}
	}
}
