package disk_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/hil/disk"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/slots/slotstest"
	"golang.org/x/sys/unix"
)

// formatSlots are the options of a slot B formatted at every install on
// dev, mounted on mnt, with its state on the host (never cut).
func formatSlots(host, state, dev, mnt string) slots.Options {
	return slots.Options{
		StateDir: state,
		A:        slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(host, "a")},
		B: slots.Slot{Backend: slots.BackendDir, Path: mnt, Device: dev, Format: slots.FormatExt4,
			MkfsOptions: []string{"-E", "nodiscard"}, MountOptions: "noatime"},
		Booted: slots.A,
		Log:    slog.New(slog.DiscardHandler),
	}
}

// unmountAll unmounts dir until nothing is mounted there; a filesystem on
// a device that was cut may refuse (its I/O fails), then it is detached:
// this is the test's teardown, not the slot's.
func unmountAll(t *testing.T, dir string) {
	t.Helper()
	for {
		err := unix.Unmount(dir, 0)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return
		}
		if err != nil {
			t.Logf("unmount %s: %v; detaching", dir, err)
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("detach %s: %v", dir, err)
				return
			}
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Power cuts at random points of a formatted Install (unmount, mkfs,
// mount, extraction, sync, read-back), or of a Prepare and the Install
// after it, on the emulated device, the slot
// state on the host: after the cut the device comes back up without its
// old mount; the state says writing, or written if the Install returned,
// and then the remounted tree verifies; either way a new Install formats,
// extracts and verifies.
func TestFormattedInstallRandomCuts(t *testing.T) {
	needStack(t)
	ctx := context.Background()
	s := seed(t)
	rnd := rand.New(rand.NewPCG(s, 4))
	oldTar, _ := layer(t, 4)
	tarb, want := layer(t, 5)
	host := t.TempDir()
	for _, d := range []string{"a", "base-mnt"} {
		if err := os.Mkdir(filepath.Join(host, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	size := int64(64<<20 + 4**flagMiB<<20)
	diskOpts := func(dev *disk.Device) disk.Options {
		return disk.Options{Device: dev, Size: size, LoopDirectIO: true, Server: disk.ServerOptions{DirectIO: true},
			TempDir: t.TempDir(), Deadline: 2 * time.Minute, StepTimeout: 30 * time.Second}
	}
	newImage := slots.Image{Label: "new", Tree: want}

	// The base: the old image installed (formatted) and the slot unmounted.
	baseState := filepath.Join(host, "base-state")
	base, err := disk.Start(ctx, diskOpts(nil))
	if err != nil {
		t.Fatal(err)
	}
	baseMnt := filepath.Join(host, "base-mnt")
	m, err := slots.Open(formatSlots(host, baseState, base.Loop, baseMnt))
	if err == nil {
		_, err = m.Install(ctx, slots.B, slots.Image{Label: "old", Layers: []io.Reader{bytes.NewReader(oldTar)}})
	}
	unmountAll(t, baseMnt)
	if f, ferr := os.Open(base.Loop); ferr == nil { // the unmount's writes, flushed
		ferr = f.Sync()
		f.Close()
		err = errors.Join(err, ferr)
	}
	baseImg := base.Device().Snapshot()
	if cerr := base.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}

	// One uninterrupted formatted install from the base counts its writes.
	run := func(i int, mounted, prepare bool, cutAt int64, keep float64) (ierr error, img *disk.Image, state string) {
		dir := filepath.Join(host, fmt.Sprintf("run-%d", i))
		state, mnt := filepath.Join(dir, "state"), filepath.Join(dir, "mnt")
		copyFile(t, filepath.Join(baseState, "slots.json"), filepath.Join(state, "slots.json"))
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		d, err := disk.Start(ctx, diskOpts(baseImg.Device(disk.Model{}, nil)))
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			unmountAll(t, mnt)
			if err := d.Close(); err != nil {
				t.Error(err)
			}
		}()
		if mounted { // as fstab would have it: the old slot is mounted
			if err := unix.Mount(d.Loop, mnt, "ext4", 0, ""); err != nil {
				t.Fatal(err)
			}
		}
		dev := d.Device()
		if cutAt > 0 {
			dev.CutAfter(dev.Stats().Writes+cutAt, rand.New(rand.NewPCG(s, uint64(i))), keep)
		}
		w0 := dev.Stats().Writes
		m, err := slots.Open(formatSlots(host, state, d.Loop, mnt))
		if err != nil {
			t.Fatal(err)
		}
		img2 := newImage
		img2.Layers = []io.Reader{bytes.NewReader(tarb)}
		if prepare {
			ierr = m.Prepare(ctx, slots.B)
		}
		if ierr == nil {
			_, ierr = m.Install(ctx, slots.B, img2)
		}
		if cutAt == 0 {
			if ierr != nil {
				t.Fatal(ierr)
			}
			return nil, &disk.Image{Unflushed: int(dev.Stats().Writes - w0)}, state
		}
		return ierr, dev.Cut(rand.New(rand.NewPCG(s, uint64(i))), keep), state
	}
	_, calib, _ := run(0, true, false, 0, 0)
	total := int64(calib.Unflushed)
	t.Logf("an uninterrupted formatted install: %d write requests", total)

	written := 0
	for i := range *flagCuts {
		k := 1 + rnd.Int64N(2*total) // the count varies (the kernel initialises inode tables behind mkfs): many land after the end
		keep := rnd.Float64()
		mounted, prepare := rnd.IntN(2) == 0, rnd.IntN(3) == 0
		ierr, img, state := run(i+1, mounted, prepare, k, keep)
		completed := ierr == nil // returned before the cut: written was recorded after the sync

		// Back up: the cut image under a new loop device, nothing mounted.
		dir := filepath.Join(host, fmt.Sprintf("after-%d", i))
		mnt := filepath.Join(dir, "mnt")
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "cut.img")
		if err := img.WriteFile(p); err != nil {
			t.Fatal(err)
		}
		d, err := disk.Start(ctx, disk.Options{File: p, TempDir: dir, StepTimeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				unmountAll(t, mnt)
				if err := d.Close(); err != nil {
					t.Error(err)
				}
			}()
			m, err := slots.Open(formatSlots(host, state, d.Loop, mnt))
			if err != nil {
				t.Fatalf("cut %d: state after the cut: %v", i, err)
			}
			st := m.Status().Slots[1]
			t.Logf("cut %d: after write %d of %d, keep %.2f, slot mounted before: %v, Prepare first: %v: %d unflushed, %d kept; install: %v; state after the cut: %s",
				i, k, total, keep, mounted, prepare, img.Unflushed, img.Kept, ierr, st.State)
			switch {
			case completed && st.State != slots.Written:
				t.Errorf("cut %d after a completed install: slot B is %s", i, st.State)
			case !completed && st.State != slots.Writing:
				t.Errorf("cut %d during the install: slot B is %s, want writing", i, st.State)
			case st.Formatted:
				// Prepare records it after its mount; Install's first
				// state write clears it, and the state (on the host)
				// is never cut.
				t.Errorf("cut %d: freshly-formatted marker left (Prepare: %v, install: %v)", i, prepare, ierr)
			}
			if st.State == slots.Written {
				written++
				// Mounted again (the journal replays), it verifies.
				if err := unix.Mount(d.Loop, mnt, "ext4", 0, ""); err != nil {
					t.Fatalf("cut %d: mount of a slot recorded written: %v", i, err)
				}
				if vr, err := m.Verify(ctx, slots.B); err != nil || !vr.OK {
					t.Errorf("cut %d: slot B recorded written but verify: %+v %v", i, vr, err)
				}
				got, err := slots.ReadTree(ctx, mnt, slots.ReadTreeOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if diff := slots.DiffEntries(want, got, slots.DigestOptions{}); diff != "" {
					t.Errorf("cut %d: slot B recorded written: %s", i, diff)
				}
			}
			// Whatever the cut left, the next install goes through.
			img2 := newImage
			img2.Layers = []io.Reader{bytes.NewReader(tarb)}
			if _, err := m.Install(ctx, slots.B, img2); err != nil {
				t.Fatalf("cut %d: install after the cut: %v", i, err)
			}
			if vr, err := m.Verify(ctx, slots.B); err != nil || !vr.OK {
				t.Errorf("cut %d: verify after the new install: %+v %v", i, vr, err)
			}
		}()
	}
	t.Logf("%d of %d cuts left slot B written", written, *flagCuts)
}

var (
	flagFormatModel = flag.String("disk.format-model", "150MB/s,0.2ms", "device model of BenchmarkFormattedInstall (RATE[,LATENCY])")
	flagFormatTar   = flag.String("disk.format-tar", "", "layer tar BenchmarkFormattedInstall installs (over itself); default a generated tree of -disk.layer-mib")
	flagFormatMkfs  = flag.String("disk.format-mkfs", "-E nodiscard", "mkfs.ext4 options of the formatted slot, space-separated")
)

// BenchmarkFormattedInstall compares, on the emulated eMMC-like device,
// a directory slot install that empties the old tree file by file (the
// reference) with one that formats the slot, interleaved round by round on
// the same device; it reports each one's write time (empty or format,
// extract, sync) and install time (with the read-back) in milliseconds,
// and the device's write requests and bytes of the write.
//
//	go test -run - -bench FormattedInstall -benchtime 3x ./hil/disk/ -disk.format-tar old.tar
func BenchmarkFormattedInstall(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the emulated disk needs root")
	}
	model, err := disk.ParseModel(*flagFormatModel)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var tarb []byte
	if *flagFormatTar != "" {
		if tarb, err = os.ReadFile(*flagFormatTar); err != nil {
			b.Fatal(err)
		}
	} else if tarb, _, err = slotstest.GenerateRootfs(7, *flagMiB<<20); err != nil {
		b.Fatal(err)
	}
	exp, err := slots.ExpectedTree(ctx, []io.Reader{bytes.NewReader(tarb)}, slots.ExtractOptions{})
	if err != nil {
		b.Fatal(err)
	}
	size := (2*int64(len(tarb)) + 256<<20) &^ (disk.BlockSize - 1)
	b.Logf("tree: %d bytes, %d entries; device %d MiB, %s; mkfs.ext4 %s", len(tarb), len(exp.Entries), size>>20, model, *flagFormatMkfs)
	d, err := disk.Start(ctx, disk.Options{Size: size, Model: model, Format: true, LoopDirectIO: true,
		Server: disk.ServerOptions{DirectIO: true}, TempDir: b.TempDir(), StepTimeout: 5 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	host := b.TempDir()
	mnt := filepath.Join(host, "slot")
	os.Mkdir(mnt, 0o755)
	os.Mkdir(filepath.Join(host, "a"), 0o755)
	b.Cleanup(func() {
		for unix.Unmount(mnt, 0) == nil {
		}
		d.Close()
	})
	if err := unix.Mount(d.Loop, mnt, "ext4", 0, ""); err != nil {
		b.Fatal(err)
	}
	modes := []string{"emptied", "formatted"}
	ms := map[string]*slots.Manager{}
	for _, mode := range modes {
		o := formatSlots(host, filepath.Join(host, "state-"+mode), d.Loop, mnt)
		o.B.MkfsOptions = strings.Fields(*flagFormatMkfs)
		if mode == "emptied" {
			o.B = slots.Slot{Backend: slots.BackendDir, Path: mnt}
		}
		if ms[mode], err = slots.Open(o); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	write, total := map[string]time.Duration{}, map[string]time.Duration{}
	reqs, bytes_ := map[string]int64{}, map[string]int64{}
	for i := range b.N {
		for j := range modes {
			mode := modes[(i+j)%len(modes)]
			// The old tree back in place, durable.
			if _, err := slots.ExtractLayers(ctx, mnt, []io.Reader{bytes.NewReader(tarb)}, slots.ExtractOptions{}); err != nil {
				b.Fatal(err)
			}
			unix.Sync()
			s0 := d.Device().Stats()
			t0 := time.Now()
			res, err := ms[mode].Install(ctx, slots.B, slots.Image{Layers: []io.Reader{bytes.NewReader(tarb)}, Tree: exp.Entries})
			if err != nil {
				b.Fatal(err)
			}
			total[mode] += time.Since(t0)
			write[mode] += res.WriteTime
			s1 := d.Device().Stats()
			reqs[mode] += s1.Writes - s0.Writes
			bytes_[mode] += s1.WriteBytes - s0.WriteBytes
			b.Logf("round %d %s: write %v, install %v", i, mode, res.WriteTime.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		}
	}
	n := float64(b.N)
	for _, mode := range modes {
		b.ReportMetric(float64(write[mode].Milliseconds())/n, mode+"-write-ms/op")
		b.ReportMetric(float64(total[mode].Milliseconds())/n, mode+"-install-ms/op")
		b.ReportMetric(float64(reqs[mode])/n, mode+"-writes/op")
		b.ReportMetric(float64(bytes_[mode])/n/1e6, mode+"-MB/op")
	}
}
