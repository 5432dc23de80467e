package disk_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/bootorbit/bootorbit/hil/disk"
	"golang.org/x/sys/unix"
)

// TestServerWorkers: with several workers (asynchronous direct I/O offered
// at INIT), writers in parallel through the loop device land every byte
// where they were written, flushes make them durable, and teardown ends
// every worker cleanly.
func TestServerWorkers(t *testing.T) {
	needStack(t)
	seed := seed(t)
	ctx := context.Background()
	const size, chunk, writers = 32 << 20, 256 << 10, 4
	d, err := disk.Start(ctx, disk.Options{
		Size: size, Model: disk.Model{Latency: 100 * time.Microsecond}, LoopDirectIO: true,
		Server:  disk.ServerOptions{DirectIO: true, Workers: 4},
		TempDir: t.TempDir(), Deadline: time.Minute, StepTimeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() }) // after a failure; a second Close does nothing
	want := make([]byte, size)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)}).Read(want)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.OpenFile(d.Loop, os.O_WRONLY|unix.O_DIRECT, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			buf := alignedChunk(chunk)
			// Writer w takes every writers-th chunk.
			for off := int64(w * chunk); off < size; off += writers * chunk {
				copy(buf, want[off:off+chunk])
				if _, err := f.WriteAt(buf, off); err != nil {
					errs <- err
					return
				}
			}
			errs <- f.Sync()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Synced: the durable image holds everything.
	im := d.Device().Snapshot()
	got := make([]byte, size)
	im.ReadAt(got, 0)
	if !bytes.Equal(got, want) {
		i := 0
		for got[i] == want[i] {
			i++
		}
		t.Fatalf("durable content differs first at byte %d", i)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("teardown: %v", err)
	}
}

// alignedChunk returns n bytes aligned for O_DIRECT.
func alignedChunk(n int) []byte {
	b := make([]byte, n+4096)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % 4096); r != 0 {
		off = 4096 - r
	}
	return b[off : off+n]
}
