// Package slotbench measures slot writes against a plain sequential write
// of the same bytes on the same disk, interleaved round by round: the
// library of `hil bench slot-write`. It lives under hil, not in slots,
// because it drops the kernel's page cache (/proc/sys/vm/drop_caches) and
// times things, which the product never does.
package slotbench

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/slots/slotstest"
	"golang.org/x/sys/unix"
)

// Options configures Run.
type Options struct {
	Dir    string // where the slots and the reference file go (same disk)
	Size   int64  // root filesystem content bytes
	Rounds int
	Seed   uint64
	Sync   slots.SyncMode // directory slot sync discipline
	Log    io.Writer      // progress, one line per measurement; may be nil
	// DropCaches writes back all dirty data and drops the page cache
	// (sync; echo 3 > /proc/sys/vm/drop_caches, root only) before every
	// measurement, so that each starts cold and with no one else's
	// writeback pending. Where that is not permitted, every measurement
	// starts after a sync(2) instead.
	DropCaches bool
	// Layer, when set, is the root filesystem layer tar to write (a real
	// image's, say) instead of a generated one; Size and Seed are unused.
	Layer []byte
	// FlushEvery is the directory slot's early writeback step
	// (slots.ExtractOptions.FlushEvery; 0: its default), also used by the
	// files floor.
	FlushEvery int64
	// Device, when set, reads the disk's request counters (an emulated
	// disk's): each measurement's writes are then recorded
	// (Result.DeviceWrites).
	Device func() (writes, bytes int64)
	// Formatted, when its Path is set, is a directory slot formatted at
	// every install (slots.Slot.Format), on a partition of its own of the same
	// disk as Dir: its install (mkfs, mount, extract, syncfs) is measured
	// beside the others.
	Formatted slots.Slot
}

// Result holds the per-round times of each method, in round order.
type Result struct {
	TarBytes, ContentBytes int64
	Files                  int
	Entries                int // all entries (directories, links, ...) of the tree
	// DroppedCaches says whether the page cache was dropped before each
	// measurement (Options.DropCaches and permitted).
	DroppedCaches bool
	// Staging is the time, measured once and not part of any write, of
	// computing what the slots are verified against: the raw image's
	// sha256 and the directory slot's expected tree (slots.ExpectedTree). A real
	// update has them from the signed image config and the layer
	// verification.
	StageRaw, StageDir time.Duration
	// Plain is a sequential write of the tar's bytes to a new file with a
	// final fsync (what `dd conv=fsync` does); PlainOver the same into an
	// existing file of that size (`dd conv=notrunc,fsync` onto a partition).
	Plain, PlainOver []time.Duration
	// PlainDirect is the overwrite with O_DIRECT (`dd oflag=direct
	// conv=notrunc,fsync`), where the filesystem supports it.
	PlainDirect []time.Duration
	// Raw and Dir are the slot writes up to durable (synced) data; the
	// *Total times add the read-back verification from the medium.
	Raw, RawTotal []time.Duration
	Dir, DirTotal []time.Duration
	// Dir2 is the directory slot write with two small-file workers
	// (slots.ExtractOptions.Workers = 2), for comparison with the default.
	Dir2 []time.Duration
	// DirFinalSync is the directory slot write without early writeback
	// (slots.ExtractOptions.FlushEvery < 0: only the final syncfs), for
	// comparison with the default; empty with SyncEach.
	DirFinalSync []time.Duration
	// Floor is what any extractor that creates one file at a time costs on
	// this filesystem at least: the same directories and regular files
	// created and written (no metadata, links or checks), with the same
	// early writeback and final syncfs, into an emptied directory;
	// compare it with DirPrepared. Empty with SyncEach.
	Floor []time.Duration
	// DirPrepared is the directory slot write into a slot emptied
	// beforehand (slots.Manager.Prepare, as when an update starts downloading),
	// and DirEmpty that emptying, measured apart.
	DirPrepared, DirEmpty []time.Duration
	// DirFormatted is the install into Options.Formatted: making a
	// new filesystem on the slot's partition and mounting it in place of
	// emptying it, then extracting and syncing, as Install does it.
	DirFormatted []time.Duration
	// DeviceWrites holds, per method name as logged, the device's write
	// requests and bytes of each measurement (with Options.Device).
	DeviceWrites map[string][]DeviceCount
}

// DeviceCount is what one measurement asked of the device.
type DeviceCount struct{ Writes, Bytes int64 }

// Median returns the median of ds.
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// RatioRange returns the smallest and largest per-round ratio ref/d (the
// reference's time over ours: 1 means as fast as the reference), pairing
// the measurements of the same round.
func RatioRange(ref, d []time.Duration) (lo, hi float64) {
	for i := 0; i < len(ref) && i < len(d); i++ {
		r := ref[i].Seconds() / d[i].Seconds()
		if i == 0 || r < lo {
			lo = r
		}
		if i == 0 || r > hi {
			hi = r
		}
	}
	return lo, hi
}

// Run measures, interleaved round by round on the same disk, a
// plain sequential write of N bytes with a final fsync against installing
// the same N bytes into a raw slot (a tar holding one filesystem image of N
// bytes) and into a directory slot (a root filesystem tar of N bytes),
// through the same slots.Manager.Install that flightd uses, given the expected
// digest (raw) and tree (directory) as an update has them.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Rounds <= 0 {
		o.Rounds = 5
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	work, err := os.MkdirTemp(o.Dir, "slotbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	rootfs, files := o.Layer, 0
	if rootfs == nil {
		if rootfs, files, err = slotstest.GenerateRootfs(o.Seed, o.Size); err != nil {
			return nil, err
		}
	}
	res := &Result{TarBytes: int64(len(rootfs)), ContentBytes: o.Size, Files: files}
	// The raw image is the same bytes as the directory layer, so that all
	// methods write exactly len(rootfs) bytes of payload.
	rawLayer := bytes.Buffer{}
	tw := tar.NewWriter(&rawLayer)
	tw.WriteHeader(&tar.Header{Name: "rootfs.img", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(rootfs)), Format: tar.FormatPAX})
	tw.Write(rootfs)
	tw.Close()

	start := time.Now()
	rawDigest := fmt.Sprintf("sha256:%x", sha256.Sum256(rootfs))
	res.StageRaw = time.Since(start)
	start = time.Now()
	want, err := slots.ExpectedTree(ctx, []io.Reader{bytes.NewReader(rootfs)}, slots.ExtractOptions{})
	if err != nil {
		return nil, err
	}
	res.StageDir = time.Since(start)
	res.Entries = len(want.Entries)
	if o.Layer != nil {
		res.Files, res.ContentBytes = want.Files, want.Bytes
	}
	logf("root filesystem: %d entries, %d files, %d content bytes, tar %d bytes", res.Entries, res.Files, res.ContentBytes, len(rootfs))

	rawCap := (int64(len(rootfs)) + 1<<20) &^ (4096 - 1)
	rawPath := filepath.Join(work, "slot-b.img")
	if err := preallocate(rawPath, rawCap); err != nil {
		return nil, err
	}
	dirPath := filepath.Join(work, "slot-b")
	if err := os.Mkdir(dirPath, 0o755); err != nil {
		return nil, err
	}
	// mk opens a manager whose slot B is b, booted from A, with its state
	// in work/state, extracting with eo.
	mk := func(state string, b slots.Slot, eo slots.ExtractOptions) (*slots.Manager, error) {
		return slots.Open(slots.Options{StateDir: filepath.Join(work, state), Booted: slots.A, A: slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(work, "slot-a")},
			B: b, Extract: eo, Log: slog.New(slog.DiscardHandler)})
	}
	dirSlot, eo := slots.Slot{Backend: slots.BackendDir, Path: dirPath}, slots.ExtractOptions{Sync: o.Sync, FlushEvery: o.FlushEvery}
	rawM, err := mk("state", slots.Slot{Backend: slots.BackendRaw, Path: rawPath, Size: rawCap}, eo)
	if err != nil {
		return nil, err
	}
	dirM, err := mk("state", dirSlot, eo)
	if err != nil {
		return nil, err
	}
	eo2 := eo
	eo2.Workers = 2
	dir2M, err := mk("state2", dirSlot, eo2)
	if err != nil {
		return nil, err
	}
	eoFinal := eo
	eoFinal.FlushEvery = -1
	dirFinalM, err := mk("state3", dirSlot, eoFinal)
	if err != nil {
		return nil, err
	}
	plainPath := filepath.Join(work, "plain.img")
	overPath := filepath.Join(work, "plain-over.img")
	if err := preallocate(overPath, (int64(len(rootfs))+vfs.DirectAlign-1)&^(vfs.DirectAlign-1)); err != nil {
		return nil, err
	}
	if o.DropCaches {
		res.DroppedCaches = dropPageCache() == nil
	}
	// settle gives every measurement the same start: nothing of anyone's
	// left dirty and, when permitted, nothing cached.
	settle := func() error {
		if res.DroppedCaches {
			return dropPageCache()
		}
		syscall.Sync()
		return nil
	}
	timed := func(name string, dst *[]time.Duration, f func() error) func() error {
		return func() error {
			start := time.Now()
			if err := f(); err != nil {
				return err
			}
			*dst = append(*dst, time.Since(start))
			logf("%-16s %v", name, (*dst)[len(*dst)-1])
			return nil
		}
	}
	// dirWrite installs the layer into the directory slot B of m and
	// records the write time in dst.
	dirWrite := func(name string, m *slots.Manager, dst *[]time.Duration) func() error {
		return func() error {
			r, err := m.Install(ctx, slots.B, slots.Image{Layers: []io.Reader{bytes.NewReader(rootfs)}, Tree: want.Entries})
			if err != nil {
				return err
			}
			*dst = append(*dst, r.WriteTime)
			logf("%s %v", name, r.WriteTime)
			return nil
		}
	}
	methods := []func() error{
		func() error {
			start := time.Now()
			ok, err := plainDirect(overPath, rootfs)
			if err != nil {
				return err
			}
			if ok {
				res.PlainDirect = append(res.PlainDirect, time.Since(start))
				logf("plain direct     %v", res.PlainDirect[len(res.PlainDirect)-1])
			}
			return nil
		},
		timed("plain overwrite", &res.PlainOver, func() error { return plainOverwrite(overPath, rootfs) }),
		// Replacing the previous round's file, as a slot write replaces
		// the previous content: unlink, create, write, fsync.
		timed("plain new file", &res.Plain, func() error {
			if err := os.Remove(plainPath); err != nil && !os.IsNotExist(err) {
				return err
			}
			return plainWrite(plainPath, rootfs)
		}),
		func() error {
			start := time.Now()
			r, err := rawM.Install(ctx, slots.B, slots.Image{Layers: []io.Reader{bytes.NewReader(rawLayer.Bytes())}, Digest: rawDigest})
			if err != nil {
				return err
			}
			res.Raw, res.RawTotal = append(res.Raw, r.WriteTime), append(res.RawTotal, time.Since(start))
			logf("raw slot         %v (+ verify: %v)", r.WriteTime, time.Since(start))
			return nil
		},
		func() error {
			start := time.Now()
			r, err := dirM.Install(ctx, slots.B, slots.Image{Layers: []io.Reader{bytes.NewReader(rootfs)}, Tree: want.Entries})
			if err != nil {
				return err
			}
			res.Dir, res.DirTotal = append(res.Dir, r.WriteTime), append(res.DirTotal, time.Since(start))
			logf("dir slot         %v (+ verify: %v)", r.WriteTime, time.Since(start))
			return nil
		},
		dirWrite("dir slot, 2 workers", dir2M, &res.Dir2),
	}
	names := []string{"plain direct", "plain overwrite", "plain new file", "raw slot", "dir slot", "dir slot, 2 workers"}
	if o.Sync == slots.SyncFS {
		names = append(names, "dir slot, final syncfs only")
		methods = append(methods, dirWrite("dir slot, final syncfs only", dirFinalM, &res.DirFinalSync))
		floorFlush := o.FlushEvery
		if floorFlush == 0 {
			floorFlush = slots.DefaultFlushEvery
		}
		floorDir := filepath.Join(work, "floor")
		if err := os.Mkdir(floorDir, 0o755); err != nil {
			return nil, err
		}
		names = append(names, "files floor")
		methods = append(methods, func() error {
			if err := slots.EmptyDir(ctx, floorDir); err != nil {
				return err
			}
			if err := settle(); err != nil {
				return err
			}
			start := time.Now()
			if err := filesFloor(floorDir, rootfs, floorFlush); err != nil {
				return err
			}
			res.Floor = append(res.Floor, time.Since(start))
			logf("files floor      %v", res.Floor[len(res.Floor)-1])
			return nil
		})
	}
	if o.Formatted.Path != "" {
		fmtM, err := mk("state4", o.Formatted, eo)
		if err != nil {
			return nil, err
		}
		names = append(names, "dir slot, formatted")
		// Install's WriteTime is the write up to durable data, the
		// formatting included.
		methods = append(methods, dirWrite("dir slot, formatted", fmtM, &res.DirFormatted))
	}
	names = append(names, "dir slot, prepared")
	methods = append(methods, func() error {
		start := time.Now()
		if err := dirM.Prepare(ctx, slots.B); err != nil {
			return err
		}
		res.DirEmpty = append(res.DirEmpty, time.Since(start))
		if err := settle(); err != nil {
			return err
		}
		r, err := dirM.Install(ctx, slots.B, slots.Image{Layers: []io.Reader{bytes.NewReader(rootfs)}, Tree: want.Entries})
		if err != nil {
			return err
		}
		res.DirPrepared = append(res.DirPrepared, r.WriteTime)
		logf("dir slot, emptied beforehand %v (emptying: %v)", r.WriteTime, res.DirEmpty[len(res.DirEmpty)-1])
		return nil
	})
	for round := 0; round < o.Rounds; round++ {
		for i := range methods {
			// Rotate the order so that no method always runs first.
			k := (i + round) % len(methods)
			// Same starting conditions for every method: nothing of
			// anyone's left dirty, and (when permitted) nothing cached.
			if err := settle(); err != nil {
				return nil, err
			}
			cpu0 := cpuTime()
			var w0, b0 int64
			if o.Device != nil {
				w0, b0 = o.Device()
			}
			if err := methods[k](); err != nil {
				return nil, err
			}
			dev := ""
			if o.Device != nil {
				w1, b1 := o.Device()
				if res.DeviceWrites == nil {
					res.DeviceWrites = map[string][]DeviceCount{}
				}
				res.DeviceWrites[names[k]] = append(res.DeviceWrites[names[k]], DeviceCount{w1 - w0, b1 - b0})
				dev = fmt.Sprintf(", device: %d writes, %d bytes", w1-w0, b1-b0)
			}
			logf("  %s: cpu %v%s", names[k], cpuTime()-cpu0, dev)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	return res, nil
}

// filesFloor creates the directories and regular files of the layer tar
// below dir and writes their content, one create, write and close each,
// nothing else, with the extractor's early writeback and final syncfs.
func filesFloor(dir string, layer []byte, flushEvery int64) error {
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	var f *slots.Writeback
	if flushEvery > 0 {
		if f, err = slots.StartWriteback(dfd, flushEvery); err != nil {
			return err
		}
	}
	defer f.Stop()
	buf := make([]byte, 1<<20)
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		if name == "" || name == "." {
			continue
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := unix.Mkdirat(dfd, name, 0o755); err != nil && err != unix.EEXIST {
				return fmt.Errorf("floor: mkdir %s: %w", name, err)
			}
		case tar.TypeReg:
			fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return fmt.Errorf("floor: create %s: %w", name, err)
			}
			err = slots.WriteContent(fd, tr, h.Size, buf)
			unix.Close(fd)
			if err != nil {
				return err
			}
			f.Wrote(h.Size)
		}
	}
	if err := f.Stop(); err != nil {
		return err
	}
	return unix.Syncfs(dfd)
}

// dropPageCache writes back all dirty data and drops the clean page cache,
// dentries and inodes (root only).
func dropPageCache() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}

func preallocate(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	chunk := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(int64(len(chunk)), size-off)]); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// plainOverwrite writes data over the start of an existing file, then
// fsyncs: a raw slot's reference.
func plainOverwrite(path string, data []byte) error {
	f, err := vfs.Default.OpenRW(path)
	if err != nil {
		return err
	}
	return writeSyncClose(f, data)
}

// plainDirect overwrites path with data using O_DIRECT and aligned 1 MiB
// writes, then fsyncs; false if direct I/O is not available there.
func plainDirect(path string, data []byte) (bool, error) {
	f, err := vfs.Default.(vfs.DirectOpener).OpenDirect(path)
	if err != nil {
		return false, nil
	}
	buf := alignedBuf(1 << 20)
	for off := 0; off < len(data); off += 1 << 20 {
		n := copy(buf, data[off:min(len(data), off+1<<20)])
		b := buf[:(n+vfs.DirectAlign-1)&^(vfs.DirectAlign-1)]
		clear(b[n:])
		if _, err := f.WriteAt(b, int64(off)); err != nil {
			f.Close()
			return true, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return true, err
	}
	return true, f.Close()
}

// plainWrite is the reference: sequential 1 MiB writes to a new file and
// one fsync, through the same vfs the raw slot uses.
func plainWrite(path string, data []byte) error {
	f, err := vfs.Default.Create(path, 0o644)
	if err != nil {
		return err
	}
	return writeSyncClose(f, data)
}

// writeSyncClose writes data from the file's start in 1 MiB writes, syncs
// and closes the file (closed on error too).
func writeSyncClose(f vfs.File, data []byte) error {
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := f.Write(data[off:min(len(data), off+1<<20)]); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
