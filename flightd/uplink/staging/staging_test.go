package staging

import (
	"errors"
	"testing"

	"github.com/bootorbit/bootorbit/internal/vfs"
)

func TestQuotaAndBounds(t *testing.T) {
	fs := vfs.NewMem()
	s, err := Open(fs, "state/staging", 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(1, 60); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(2, 41); !errors.Is(err, ErrQuota) {
		t.Fatalf("over quota: %v", err)
	}
	if err := s.Reserve(1, 61); err == nil {
		t.Fatal("reserved again with another size")
	}
	for _, c := range []struct {
		id  uint64
		off int64
		n   int
	}{{2, 0, 1}, {1, -1, 1}, {1, 60, 1}, {1, 59, 2}, {1, 1 << 62, 1}} {
		if err := s.WriteAt(c.id, c.off, make([]byte, c.n)); !errors.Is(err, ErrNotReserved) {
			t.Errorf("write %d bytes at %d of %d: %v", c.n, c.off, c.id, err)
		}
	}
	if err := s.WriteAt(1, 50, []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	// What was synced survives a power cut, with the file's entry.
	s2, err := Open(fs.CrashClone(nil), "state/staging", 100)
	if err != nil {
		t.Fatal(err)
	}
	files, strays, err := s2.Files()
	if err != nil || len(strays) != 0 || files[1] != 60 {
		t.Fatalf("after a cut: %v %v %v", files, strays, err)
	}
	if err := s2.Reserve(1, 60); err != nil {
		t.Fatal(err)
	}
	r, _, err := s2.Reader(1)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 10)
	if _, err := r.ReadAt(b, 50); err != nil || string(b) != "0123456789" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if err := s2.Remove(1); err != nil || s2.Used() != 0 {
		t.Fatalf("remove: %v, used %d", err, s2.Used())
	}
	if files, _, _ := s2.Files(); len(files) != 0 {
		t.Fatalf("files after remove: %v", files)
	}
}
