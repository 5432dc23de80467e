package disk_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/hil/disk"
	"golang.org/x/sys/unix"
)

// TestPartition: a second loop device over the end of the disk reaches
// the same emulated device at its offset, the first loop device stops
// before it, and Close unmounts what was mounted on the partition and
// detaches it.
func TestPartition(t *testing.T) {
	needStack(t)
	ctx := context.Background()
	const mainSize, partSize = 32 << 20, 16 << 20
	d, err := disk.Start(ctx, disk.Options{
		Size: mainSize + partSize, LoopSize: mainSize, Format: true, Mount: true, LoopDirectIO: true,
		Server:  disk.ServerOptions{DirectIO: true},
		TempDir: t.TempDir(), Deadline: time.Minute, StepTimeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() }) // after a failure; a second Close does nothing
	if _, _, err := d.Partition(ctx, 1000, partSize); err == nil {
		t.Error("a partition at an unaligned offset was accepted")
	}
	loop, mnt, err := d.Partition(ctx, mainSize, partSize)
	if err != nil {
		t.Fatal(err)
	}
	for dev, want := range map[string]int64{d.Loop: mainSize, loop: partSize} {
		f, err := os.Open(dev)
		if err != nil {
			t.Fatal(err)
		}
		n, err := f.Seek(0, 2)
		f.Close()
		if err != nil || n != want {
			t.Errorf("%s: %d bytes (%v), want %d", dev, n, err, want)
		}
	}
	// A filesystem of its own on the partition, mounted on its directory.
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", loop).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v: %s", err, out)
	}
	if err := unix.Mount(loop, mnt, "ext4", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mnt+"/x", []byte("partition"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The ext4 superblock (magic 0xEF53 at 1024+56) of the partition is on
	// the device at the partition's offset.
	magic := make([]byte, 2)
	if err := d.Device().ReadAt(magic, mainSize+1024+56); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(magic, []byte{0x53, 0xef}) {
		t.Errorf("no ext4 superblock at the partition's offset: % x", magic)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mnt + "/x"); err == nil {
		t.Error("the partition is still mounted after Close")
	}
}
