package slotbench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/slots/slotstest"
)

// The side-by-side comparison with a plain write is `hil bench slot-write`;
// these measure the pieces in isolation (go test -bench . ./hil/slotbench).

func BenchmarkExtract(b *testing.B) {
	rootfs, _, err := slotstest.GenerateRootfs(1, 32<<20)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	b.SetBytes(int64(len(rootfs)))
	for b.Loop() {
		if _, err := slots.ExtractLayers(context.Background(), dir, []io.Reader{bytes.NewReader(rootfs)}, slots.ExtractOptions{Sync: slots.SyncFS}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteRaw(b *testing.B) {
	img := make([]byte, 32<<20)
	p := filepath.Join(b.TempDir(), "slot")
	if err := os.WriteFile(p, make([]byte, len(img)), 0o600); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(img)))
	for b.Loop() {
		if _, _, err := slots.WriteRaw(context.Background(), vfs.Default, p, bytes.NewReader(img), int64(len(img)), false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSHA256(b *testing.B) {
	img := make([]byte, 32<<20)
	b.SetBytes(int64(len(img)))
	for b.Loop() {
		sha256.Sum256(img)
	}
}

func BenchmarkTreeDigest(b *testing.B) {
	rootfs, _, _ := slotstest.GenerateRootfs(1, 8<<20)
	res, err := slots.ExtractLayers(context.Background(), b.TempDir(), []io.Reader{bytes.NewReader(rootfs)}, slots.ExtractOptions{Sync: slots.SyncNone})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		slots.TreeDigest(res.Entries, slots.DigestOptions{})
	}
}
