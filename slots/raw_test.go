package slots

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/internal/vfs"
)

// TestWriteRawOS writes an unaligned image through the OS filesystem (the
// O_DIRECT path where the filesystem supports it) and reads it back.
func TestWriteRawOS(t *testing.T) {
	r := testRand(t)
	img := make([]byte, 3<<20+17)
	for i := range img {
		img[i] = byte(r.IntN(256))
	}
	p := filepath.Join(t.TempDir(), "slot.img")
	const capacity = 4 << 20
	if err := os.WriteFile(p, bytes.Repeat([]byte{0xAA}, capacity), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, hash := range []bool{true, false} {
		n, sum, err := WriteRaw(context.Background(), vfs.Default, p, bytes.NewReader(img), capacity, hash)
		if err != nil {
			t.Fatal(err)
		}
		want := sha256.Sum256(img)
		if !hash {
			want = [32]byte{} // not hashed on the way
		}
		if n != int64(len(img)) || sum != want {
			t.Fatalf("hash %v: wrote %d bytes, sum %x", hash, n, sum)
		}
		got, _ := os.ReadFile(p)
		if !bytes.Equal(got[:len(img)], img) || len(got) != capacity {
			t.Fatalf("hash %v: content differs", hash)
		}
		back, err := HashRaw(context.Background(), vfs.Default, p, n)
		if err != nil || back != sha256.Sum256(img) {
			t.Fatalf("hash %v: read-back %x %v", hash, back, err)
		}
		os.WriteFile(p, bytes.Repeat([]byte{0xAA}, capacity), 0o600)
	}
	// Too large for the slot: refused.
	if _, _, err := WriteRaw(context.Background(), vfs.Default, p, bytes.NewReader(make([]byte, capacity+1)), capacity, false); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized image: %v", err)
	}
}

func TestWriteRawInjectedError(t *testing.T) {
	m := vfs.NewMem()
	f, _ := m.Create("dev", 0o600)
	f.Write(make([]byte, 8<<20))
	f.Close()
	boom := errors.New("EIO")
	writes := 0
	m.Inject = func(op vfs.Op, name string) error {
		if op == vfs.OpWrite {
			if writes++; writes == 3 {
				return boom
			}
		}
		return nil
	}
	_, _, err := WriteRaw(context.Background(), m, "dev", bytes.NewReader(make([]byte, 6<<20)), 8<<20, true)
	if !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
}
