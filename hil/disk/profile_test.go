package disk_test

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/hil/disk"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/slots/slotstest"
)

var (
	flagProfile    = flag.String("disk.profile", "", "device model `RATE[,LATENCY]`: run TestProfileWrites (a measurement, not in the default run)")
	flagProfileTar = flag.String("disk.profile-tar", "", "root filesystem layer `TAR` for -disk.profile (default: generated, 200 MiB)")
	flagProfileFE  = flag.Int64("disk.profile-flush-every", 0, "ExtractOptions.FlushEvery `BYTES` for -disk.profile (0: the default)")
)

// TestProfileWrites shows where the time of a directory slot write goes on
// a modelled device, beside a plain write + fsync of the same bytes: the
// device's write requests, bytes, flushes, and how much of the wall time
// the model kept the device busy (the rest it idled, waiting for the
// kernel or the extractor). A measurement for the bench notes:
//
//	go test ./hil/disk -run ProfileWrites -v -disk.profile=150MB/s,0.2ms [-disk.profile-tar old.tar]
func TestProfileWrites(t *testing.T) {
	if *flagProfile == "" {
		t.Skip("a measurement: run with -disk.profile=RATE[,LATENCY]")
	}
	needStack(t)
	m, err := disk.ParseModel(*flagProfile)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var tarb []byte
	if *flagProfileTar != "" {
		tarb, err = os.ReadFile(*flagProfileTar)
	} else {
		tarb, _, err = slotstest.GenerateRootfs(1, 200<<20)
	}
	if err != nil {
		t.Fatal(err)
	}
	d, err := disk.Start(ctx, disk.Options{Size: (4*int64(len(tarb)) + 256<<20) / disk.BlockSize * disk.BlockSize, Model: m,
		Format: true, Mount: true, LoopDirectIO: true, Server: disk.ServerOptions{DirectIO: true}, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	}()
	dev := d.Device()
	measure := func(name string, f func() error) {
		syncfs(t, d.Mnt)
		os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
		s0, t0 := dev.Stats(), time.Now()
		if err := f(); err != nil {
			t.Fatal(err)
		}
		s1, wall := dev.Stats(), time.Since(t0)
		busy := s1.Busy - s0.Busy
		if busy > wall+10*time.Millisecond {
			t.Errorf("%s: device busy %v in %v of wall time", name, busy, wall)
		}
		w, b := s1.Writes-s0.Writes, s1.WriteBytes-s0.WriteBytes
		t.Logf("%-5s wall %v: %d writes, %.1f MB (mean %d KiB), %d flushes, device busy %v (%.0f%% of wall)", name, wall.Round(time.Millisecond),
			w, float64(b)/1e6, b/max(1, w)>>10, s1.Flushes-s0.Flushes, busy.Round(time.Millisecond), 100*busy.Seconds()/wall.Seconds())
	}
	if err := os.Mkdir(filepath.Join(d.Mnt, "slot"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d tar bytes on %v; FlushEvery %d", len(tarb), m, *flagProfileFE)
	for range 2 {
		measure("plain", func() error {
			p := filepath.Join(d.Mnt, "plain")
			os.Remove(p)
			f, err := os.Create(p)
			if err != nil {
				return err
			}
			for b := tarb; len(b) > 0; b = b[min(len(b), 1<<20):] {
				if _, err := f.Write(b[:min(len(b), 1<<20)]); err != nil {
					f.Close()
					return err
				}
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		})
		measure("dir", func() error {
			_, err := slots.ExtractLayers(ctx, filepath.Join(d.Mnt, "slot"), []io.Reader{bytes.NewReader(tarb)}, slots.ExtractOptions{FlushEvery: *flagProfileFE})
			return err
		})
	}
}
