package disk_test

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/hil/disk"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/internal/testtool"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/slots/slotstest"
	"golang.org/x/sys/unix"
)

// The seed of the random power cuts is the test's seed from
// internal/testrand (-seed, BOOTORBIT_SEED).
var (
	flagCuts = flag.Int("disk.cuts", 3, "random power cuts per test (-disk.cuts=50 for a campaign)")
	flagMiB  = flag.Int64("disk.layer-mib", 6, "content MiB of the generated layer the power-cut tests write (over 32, the extraction's early syncfs lands in the middle)")
)

// seed returns the test's seed, logged (BOOTORBIT_SEED replays it).
func seed(t *testing.T) uint64 {
	t.Helper()
	return testrand.Seed(t)
}

// needStack skips (or fails, with BOOTORBIT_REQUIRE_TOOLS=1) without what
// the emulated disk needs.
func needStack(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		// A privilege, not a tool: skipped as slots' root-only tests are.
		t.Skip("the emulated disk needs root (mount, losetup)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testtool.Missing(t, testtool.RequireTools, "no /dev/fuse: %v", err)
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "e2fsck", "mount", "umount"} {
		testtool.Need(t, tool)
	}
}

// start builds a fresh ext4 on an emulated disk, with content outside
// the slot directory, all synced; the test tears it down.
func start(t *testing.T, ctx context.Context, mountOpts ...string) *disk.Disk {
	t.Helper()
	d, err := disk.Start(ctx, disk.Options{
		Size: 64<<20 + 4**flagMiB<<20, Format: true, Mount: true, MountOpts: mountOpts, LoopDirectIO: true,
		Server:   disk.ServerOptions{DirectIO: true},
		TempDir:  t.TempDir(),
		Deadline: 2 * time.Minute, StepTimeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		t.Logf("fuse requests: %s", d.Server.OpsString())
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := os.MkdirAll(filepath.Join(d.Mnt, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.Mnt, "state", "keep"), bytes.Repeat([]byte("outside the slot\n"), 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(d.Mnt, "slot"), 0o755); err != nil {
		t.Fatal(err)
	}
	syncfs(t, d.Mnt)
	return d
}

func syncfs(t *testing.T, dir string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		t.Fatal(err)
	}
}

var outside = slots.ReadTreeOptions{Skip: []string{"slot", "lost+found"}}

// survivor is what a remount of the image after a cut shows.
type survivor struct {
	fsck    string
	slot    []slots.Entry
	outside []slots.Entry
	root    string // mount point, valid inside the callback of remount
}

// remount writes the image out, mounts it (the kernel replays the ext4
// journal), unmounts it, requires `e2fsck -fn` to find it clean, mounts it
// again and reads the trees; check runs while it is mounted.
func remount(t *testing.T, ctx context.Context, img *disk.Image, check func(root string)) survivor {
	t.Helper()
	tmp := t.TempDir()
	p := filepath.Join(tmp, "cut.img")
	if err := img.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	d, err := disk.Start(ctx, disk.Options{File: p, Mount: true, TempDir: tmp, StepTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("mount after the cut (journal replay): %v", err)
	}
	defer func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := d.Unmount(ctx); err != nil {
		t.Fatal(err)
	}
	var s survivor
	if s.fsck, err = d.Fsck(ctx); err != nil {
		t.Fatalf("e2fsck -fn after journal replay: %v", err)
	}
	if err := d.MountFS(ctx); err != nil {
		t.Fatal(err)
	}
	if s.slot, err = slots.ReadTree(ctx, filepath.Join(d.Mnt, "slot"), slots.ReadTreeOptions{}); err != nil {
		t.Fatal(err)
	}
	if s.outside, err = slots.ReadTree(ctx, d.Mnt, outside); err != nil {
		t.Fatal(err)
	}
	if check != nil {
		check(d.Mnt)
	}
	return s
}

func layer(t *testing.T, seed uint64) ([]byte, []slots.Entry) {
	t.Helper()
	tarb, files, err := slotstest.GenerateRootfs(seed, *flagMiB<<20)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := slots.ExpectedTree(context.Background(), []io.Reader{bytes.NewReader(tarb)}, slots.ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("layer: %d bytes, %d files, %d entries", len(tarb), files, len(exp.Entries))
	return tarb, exp.Entries
}

// One syncfs(2) after the extraction makes the directory slot durable
// through a real power cut of the real kernel's ext4; without it the data
// is not all there.
func TestExtractSurvivesPowerCut(t *testing.T) {
	needStack(t)
	ctx := context.Background()
	s := seed(t)
	tarb, want := layer(t, 1)
	for _, tc := range []struct {
		name string
		sync slots.SyncMode
	}{{"syncfs", slots.SyncFS}, {"none", slots.SyncNone}} {
		t.Run(tc.name, func(t *testing.T) {
			// Without a sync, only a journal commit (every 5 s by default)
			// would make the tree durable; a long commit interval keeps a
			// slow run from committing before the cut.
			d := start(t, ctx, "commit=300")
			before, err := slots.ReadTree(ctx, d.Mnt, outside)
			if err != nil {
				t.Fatal(err)
			}
			w0 := d.Device().Stats()
			if _, err := slots.ExtractLayers(ctx, filepath.Join(d.Mnt, "slot"), []io.Reader{bytes.NewReader(tarb)}, slots.ExtractOptions{Sync: tc.sync}); err != nil {
				t.Fatal(err)
			}
			// The cut keeps a random half of whatever is still volatile.
			img := d.Device().Cut(rand.New(rand.NewPCG(s, 1)), 0.5)
			w1 := d.Device().Stats()
			t.Logf("extraction: %d writes, %d bytes, %d flushes; at the cut %d blocks unflushed, %d of them kept",
				w1.Writes-w0.Writes, w1.WriteBytes-w0.WriteBytes, w1.Flushes-w0.Flushes, img.Unflushed, img.Kept)
			got := remount(t, ctx, img, nil)
			if diff := slots.DiffEntries(before, got.outside, slots.DigestOptions{}); diff != "" {
				t.Errorf("outside the slot: %s", diff)
			}
			diff := slots.DiffEntries(want, got.slot, slots.DigestOptions{})
			switch {
			case tc.sync == slots.SyncFS && diff != "":
				t.Errorf("synced slot after the cut: %s", diff)
			case tc.sync == slots.SyncNone && diff == "":
				t.Errorf("unsynced slot complete after the cut: the cut lost nothing (%d blocks unflushed)", img.Unflushed)
			case tc.sync == slots.SyncNone:
				t.Logf("unsynced slot after the cut, as expected incomplete (%d of %d entries): %s", len(got.slot), len(want), diff)
			}
		})
	}
}

// Power cuts at random points of the extraction: the filesystem always
// comes back clean (e2fsck -fn after journal replay), nothing outside the
// slot changes, and an extraction that returned before the cut left the
// whole tree.
func TestExtractRandomCuts(t *testing.T) {
	needStack(t)
	ctx := context.Background()
	s := seed(t)
	rnd := rand.New(rand.NewPCG(s, 2))
	tarb, want := layer(t, 2)
	// The number of writes of an uninterrupted extraction.
	d := start(t, ctx)
	w0 := d.Device().Stats().Writes
	if _, err := slots.ExtractLayers(ctx, filepath.Join(d.Mnt, "slot"), []io.Reader{bytes.NewReader(tarb)}, slots.ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	total := d.Device().Stats().Writes - w0
	t.Logf("an uninterrupted extraction: %d write requests", total)
	for i := range *flagCuts {
		k := 1 + rnd.Int64N(total+total/4) // a few land after the end
		keep := rnd.Float64()
		d := start(t, ctx)
		before, err := slots.ReadTree(ctx, d.Mnt, outside)
		if err != nil {
			t.Fatal(err)
		}
		dev := d.Device()
		dev.CutAfter(dev.Stats().Writes+k, rand.New(rand.NewPCG(s, uint64(i))), keep)
		_, xerr := slots.ExtractLayers(ctx, filepath.Join(d.Mnt, "slot"), []io.Reader{bytes.NewReader(tarb)}, slots.ExtractOptions{})
		// An extraction that returned nil ended with a syncfs that
		// succeeded, so the cut came after it: the kernel's own writes
		// after the return (a journal commit, writeback) may fire the cut
		// before the next line here, so whether the cut has fired by now
		// says nothing about the extraction.
		completed := xerr == nil
		img := dev.Cut(rand.New(rand.NewPCG(s, uint64(i))), keep)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		got := remount(t, ctx, img, nil)
		t.Logf("cut %d: after write %d of %d, keep %.2f: %d unflushed, %d kept; extraction: %v; slot holds %d of %d entries",
			i, k, total, keep, img.Unflushed, img.Kept, xerr, len(got.slot), len(want))
		if diff := slots.DiffEntries(before, got.outside, slots.DigestOptions{}); diff != "" {
			t.Errorf("cut %d: outside the slot: %s", i, diff)
		}
		if completed {
			if diff := slots.DiffEntries(want, got.slot, slots.DigestOptions{}); diff != "" {
				t.Errorf("cut %d after a completed extraction: %s", i, diff)
			}
		}
	}
}

// A whole Manager.Install of a directory slot with the state file on the
// same filesystem, cut at random points: after the remount the state file
// parses, and a slot recorded written holds exactly its recorded tree.
func TestInstallRandomCuts(t *testing.T) {
	needStack(t)
	ctx := context.Background()
	s := seed(t)
	rnd := rand.New(rand.NewPCG(s, 3))
	tarb, want := layer(t, 3)
	opts := func(root string) slots.Options {
		return slots.Options{
			StateDir: filepath.Join(root, "state"),
			A:        slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(root, "slot", "a")},
			B:        slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(root, "slot", "b")},
			Booted:   slots.A,
		}
	}
	install := func(d *disk.Disk) error {
		for _, p := range []string{"a", "b"} {
			if err := os.MkdirAll(filepath.Join(d.Mnt, "slot", p), 0o755); err != nil {
				return err
			}
		}
		o := opts(d.Mnt)
		o.Log = slog.New(slog.DiscardHandler)
		m, err := slots.Open(o)
		if err != nil {
			return err
		}
		_, err = m.Install(ctx, slots.B, slots.Image{Label: "img", Layers: []io.Reader{bytes.NewReader(tarb)}, Tree: want})
		return err
	}
	d := start(t, ctx)
	w0 := d.Device().Stats().Writes
	if err := install(d); err != nil {
		t.Fatal(err)
	}
	total := d.Device().Stats().Writes - w0
	t.Logf("an uninterrupted install: %d write requests", total)
	written := 0
	for i := range *flagCuts {
		k := 1 + rnd.Int64N(total+total/4)
		keep := rnd.Float64()
		d := start(t, ctx)
		dev := d.Device()
		dev.CutAfter(dev.Stats().Writes+k, rand.New(rand.NewPCG(s, uint64(i))), keep)
		ierr := install(d)
		completed := ierr == nil // as in TestExtractRandomCuts
		img := dev.Cut(rand.New(rand.NewPCG(s, uint64(i))), keep)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		remount(t, ctx, img, func(root string) {
			o := opts(root)
			o.Log = slog.New(slog.DiscardHandler)
			m, err := slots.Open(o)
			if err != nil {
				t.Fatalf("cut %d: state after the cut: %v", i, err)
			}
			st := m.Status()
			var states []string
			for _, sl := range st.Slots {
				states = append(states, string(sl.ID)+"="+string(sl.State))
			}
			t.Logf("cut %d: after write %d of %d, keep %.2f: install: %v; state after the cut: %v", i, k, total, keep, ierr, states)
			for _, sl := range st.Slots {
				if completed && sl.ID == slots.B && sl.State != slots.Written {
					t.Errorf("cut %d after a completed install: slot B is %s", i, sl.State)
				}
				if sl.ID != slots.B || sl.State != slots.Written {
					continue
				}
				written++
				vr, err := m.Verify(ctx, slots.B)
				if err != nil || !vr.OK {
					t.Errorf("cut %d: slot B recorded written but verify: %+v %v", i, vr, err)
				}
				got, err := slots.ReadTree(ctx, filepath.Join(root, "slot", "b"), slots.ReadTreeOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if diff := slots.DiffEntries(want, got, slots.DigestOptions{}); diff != "" {
					t.Errorf("cut %d: slot B recorded written: %s", i, diff)
				}
			}
		})
	}
	t.Logf("%d of %d cuts left slot B written", written, *flagCuts)
}

// gateClock lets no device time pass once stuck, until released: a
// device that stops answering.
type gateClock struct {
	stuck   atomic.Bool
	release chan struct{}
}

func (c *gateClock) Now() time.Time { return time.Unix(0, 0) }
func (c *gateClock) Sleep(time.Duration) {
	if c.stuck.Load() {
		<-c.release
	}
}

// writeSync creates path with 1 MiB in it and fsyncs it: a write that
// must reach the device.
func writeSync(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	f.Write(make([]byte, 1<<20))
	err = f.Sync()
	f.Close()
	return err
}

// A device that stops answering must not hang the test run: the deadline
// aborts the FUSE connection, the blocked fsync fails, and the teardown
// completes.
func TestStuckDeviceIsAborted(t *testing.T) {
	needStack(t)
	ctx := context.Background()
	clk := &gateClock{release: make(chan struct{})}
	released := false
	release := func() {
		if !released {
			close(clk.release)
			released = true
		}
	}
	defer release()
	d, err := disk.Start(ctx, disk.Options{Size: 64 << 20, Model: disk.Model{Latency: time.Microsecond}, Clock: clk,
		Format: true, Mount: true, LoopDirectIO: true, Server: disk.ServerOptions{DirectIO: true}, TempDir: t.TempDir(),
		Deadline: 2 * time.Minute, StepTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d.SetDeadline(time.Second)
	clk.stuck.Store(true)
	t0 := time.Now()
	err = writeSync(filepath.Join(d.Mnt, "new"))
	t.Logf("write + fsync on a stuck device: %v after %v", err, time.Since(t0).Round(time.Millisecond))
	if err == nil {
		t.Error("fsync on a stuck device succeeded")
	}
	release()
	t0 = time.Now()
	if err := d.Close(); err != nil {
		t.Error(err)
	}
	t.Logf("teardown after the abort: %v", time.Since(t0).Round(time.Millisecond))
}

// panicWriter panics on the write after the first n: a bug in the
// server's request handling.
type panicWriter struct{ n atomic.Int64 }

func (w *panicWriter) Write(p []byte) (int, error) {
	if w.n.Add(-1) < 0 {
		panic("injected server bug")
	}
	return len(p), nil
}

// A panic in the FUSE server must not kill the test process: that would
// skip every cleanup and leave the loop device and both mounts behind on
// the machine. The server recovers, aborts the connection (the I/O waiting
// on it fails) and reports the panic from Close; the teardown completes.
func TestServerPanicAbortsConnection(t *testing.T) {
	needStack(t)
	ctx := context.Background()
	pw := &panicWriter{}
	pw.n.Store(1 << 40)
	d, err := disk.Start(ctx, disk.Options{Size: 64 << 20, Format: true, Mount: true, LoopDirectIO: true,
		Server:  disk.ServerOptions{DirectIO: true, Trace: pw},
		TempDir: t.TempDir(), Deadline: 2 * time.Minute, StepTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()
	pw.n.Store(0)
	t0 := time.Now()
	err = os.WriteFile(filepath.Join(d.Mnt, "new"), make([]byte, 1<<20), 0o644)
	if err == nil {
		syncfs(t, d.Mnt) // fails the test: the device is gone
	}
	t.Logf("write on a server that panicked: %v after %v", err, time.Since(t0).Round(time.Millisecond))
	closed = true
	cerr := d.Close()
	if cerr == nil || !strings.Contains(cerr.Error(), "injected server bug") {
		t.Errorf("Close: %v, want the server's panic reported", cerr)
	}
	if out, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(out), d.Mnt) {
		t.Errorf("%s still mounted after Close", d.Mnt)
	}
}

var flagKernelTimeout = flag.Bool("disk.kernel-timeout", false, "also wait for the kernel's FUSE request timeout to abort a stuck device (~15 s)")

// The kernel's own guard: the kernel accepts the request timeout at INIT;
// with -disk.kernel-timeout, a device that stops answering, with no
// deadline of ours, fails the waiting fsync once the kernel's request
// timeout passes (measured: 15.2 s with a 1 s timeout, the kernel checks
// every 15 s), so that not even a dead or stuck test process can leave a
// request waiting forever.
func TestKernelRequestTimeout(t *testing.T) {
	needStack(t)
	ctx := context.Background()
	clk := &gateClock{release: make(chan struct{})}
	defer close(clk.release)
	d, err := disk.Start(ctx, disk.Options{Size: 64 << 20, Model: disk.Model{Latency: time.Microsecond}, Clock: clk,
		Format: true, Mount: true, LoopDirectIO: true,
		Server:  disk.ServerOptions{DirectIO: true, RequestTimeout: time.Second},
		TempDir: t.TempDir(), Deadline: 2 * time.Minute, StepTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Server.RequestTimeout() == 0 {
		testtool.Missing(t, testtool.RequireTools, "the kernel (%s) offers no FUSE request timeout (Linux 6.14 and later)", kernelRelease())
	}
	if !*flagKernelTimeout {
		t.Skipf("request timeout %v accepted; -disk.kernel-timeout waits for it to fire (~15 s)", d.Server.RequestTimeout())
	}
	clk.stuck.Store(true)
	t0 := time.Now()
	err = writeSync(filepath.Join(d.Mnt, "new"))
	took := time.Since(t0)
	t.Logf("write + fsync on a stuck device, request timeout %v: %v after %v", d.Server.RequestTimeout(), err, took.Round(time.Millisecond))
	if err == nil {
		t.Fatal("fsync on a stuck device succeeded")
	}
	if took > time.Minute {
		t.Errorf("the kernel did not time the request out: %v (the test's own deadline fired)", took)
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}
