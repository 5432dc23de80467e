package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrStep is a setup or teardown step (losetup, mkfs, mount, ...) that
// failed or did not finish in time.
var ErrStep = errors.New("disk: step failed")

// Options configures Start.
type Options struct {
	// Device is served through FUSE; nil with File empty makes a new empty
	// device of Size bytes with Model and Clock.
	Device *Device
	Size   int64
	Model  Model
	Clock  Clock
	// File, instead of a device, is a host file put under the loop device
	// directly (no FUSE): to inspect an Image written out by
	// Image.WriteFile.
	File string
	// LoopDirectIO passes --direct-io=on to losetup: the loop device then
	// reads and writes disk.img with O_DIRECT, so no page cache sits between
	// the filesystem and the emulated device.
	LoopDirectIO bool
	// LoopSize, if positive, limits the loop device to the first LoopSize
	// bytes of the disk (losetup --sizelimit), leaving the rest for
	// Partition.
	LoopSize int64
	// Server tunes the FUSE server.
	Server ServerOptions
	// Format runs mkfs.ext4 on the loop device (with MkfsArgs added), and
	// Mount mounts it (ext4) on a directory of its own.
	Format    bool
	MkfsArgs  []string
	Mount     bool
	MountOpts []string // mount -o
	// TempDir is where the mount points go; "" is os.TempDir().
	TempDir string
	// StepTimeout bounds every external step (default 60 s). A step that
	// overruns is killed, and the FUSE connection aborted, so that it
	// cannot stay blocked on the emulated device.
	StepTimeout time.Duration
	// Deadline, if positive, aborts the FUSE connection that long after
	// Start whatever is happening: a guard for tests, so that a stuck
	// kernel request fails with an error instead of hanging the run.
	Deadline time.Duration
	Log      *slog.Logger
}

// Disk is the stack Start builds: a FUSE mount serving disk.img (unless
// Options.File), a loop device over it, and optionally ext4 mounted on it.
type Disk struct {
	Server *Server // nil with Options.File
	Loop   string  // /dev/loopN
	Mnt    string  // the ext4 mount point (see Mounted)

	o       Options
	backing string
	parts   []partition
	tmp     string
	mounted bool
	guard   *time.Timer
	mu      sync.Mutex
	closed  bool
}

// Start builds the stack. On error everything already set up is torn
// down again.
func Start(ctx context.Context, o Options) (_ *Disk, err error) {
	if o.StepTimeout <= 0 {
		o.StepTimeout = 60 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Server.Log == nil {
		o.Server.Log = o.Log
	}
	d := &Disk{o: o}
	if d.tmp, err = os.MkdirTemp(o.TempDir, "bootorbit-disk-"); err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, d.Close())
		}
	}()
	d.Mnt = filepath.Join(d.tmp, "mnt")
	if err := os.Mkdir(d.Mnt, 0o755); err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	backing := o.File
	if backing == "" {
		dev := o.Device
		if dev == nil {
			if dev, err = NewDevice(o.Size, o.Model, o.Clock); err != nil {
				return nil, err
			}
		}
		fdir := filepath.Join(d.tmp, "fuse")
		if err := os.Mkdir(fdir, 0o755); err != nil {
			return nil, fmt.Errorf("disk: %w", err)
		}
		if d.Server, err = Serve(fdir, dev, o.Server); err != nil {
			return nil, err
		}
		if o.Deadline > 0 {
			d.SetDeadline(o.Deadline)
		}
		backing = d.Server.Path()
	}
	d.backing = backing
	if d.Loop, err = d.losetup(ctx, 0, o.LoopSize); err != nil {
		return nil, err
	}
	if o.Format {
		if err := d.Format(ctx, o.MkfsArgs...); err != nil {
			return nil, err
		}
	}
	if o.Mount {
		if err := d.MountFS(ctx, o.MountOpts...); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// losetup attaches a loop device to the backing file, from offset on, of
// size bytes (0: to the end), and returns its path.
func (d *Disk) losetup(ctx context.Context, offset, size int64) (string, error) {
	args := []string{"--find", "--show", "--direct-io=off"}
	if d.o.LoopDirectIO {
		args[2] = "--direct-io=on"
	}
	if offset > 0 {
		args = append(args, "--offset", strconv.FormatInt(offset, 10))
	}
	if size > 0 {
		args = append(args, "--sizelimit", strconv.FormatInt(size, 10))
	}
	out, err := d.run(ctx, "losetup", append(args, d.backing)...)
	if err != nil {
		return "", err
	}
	loop := strings.TrimSpace(out)
	if !strings.HasPrefix(loop, "/dev/loop") {
		return "", fmt.Errorf("%w: losetup printed %q", ErrStep, loop)
	}
	return loop, nil
}

// partition is a second loop device over part of the disk, and a mount
// point made for it.
type partition struct{ loop, mnt string }

// Partition attaches another loop device over size bytes of the same disk
// from offset on (a partition: the same device model, requests and
// counters), and makes an empty directory to mount it on. Nothing is
// formatted or mounted; whatever the caller mounts on the directory is
// unmounted again by Close, before the loop device is detached.
func (d *Disk) Partition(ctx context.Context, offset, size int64) (loop, mnt string, err error) {
	if offset <= 0 || offset%512 != 0 || size <= 0 || size%512 != 0 {
		return "", "", fmt.Errorf("%w: partition at %d of %d bytes: want positive multiples of 512", ErrStep, offset, size)
	}
	mnt, err = os.MkdirTemp(d.tmp, "part-")
	if err != nil {
		return "", "", fmt.Errorf("disk: %w", err)
	}
	if loop, err = d.losetup(ctx, offset, size); err != nil {
		return "", "", err
	}
	d.parts = append(d.parts, partition{loop, mnt})
	return loop, mnt, nil
}

// SetDeadline (re)arms the guard of Options.Deadline: dur from now, the
// FUSE connection is aborted, whatever is happening.
func (d *Disk) SetDeadline(dur time.Duration) {
	if d.Server == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.guard != nil {
		d.guard.Stop()
	}
	d.guard = time.AfterFunc(dur, func() {
		d.o.Log.Error("disk: deadline passed: aborting the fuse connection", "deadline", dur)
		d.Server.Abort()
	})
}

// Device is the emulated device (nil with Options.File).
func (d *Disk) Device() *Device {
	if d.Server == nil {
		return nil
	}
	return d.Server.Device()
}

// Format makes an ext4 filesystem on the loop device: all metadata
// written by mkfs itself (no lazy initialisation by the kernel later, which
// would write behind the bench's back), no discard (the device has none).
func (d *Disk) Format(ctx context.Context, extra ...string) error {
	args := append([]string{"-q", "-F", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0"}, extra...)
	_, err := d.run(ctx, "mkfs.ext4", append(args, d.Loop)...)
	return err
}

// MountFS mounts the loop device's ext4 on d.Mnt (an unclean filesystem's
// journal is replayed by the kernel here).
func (d *Disk) MountFS(ctx context.Context, opts ...string) error {
	args := []string{"-t", "ext4"}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	if _, err := d.run(ctx, "mount", append(args, d.Loop, d.Mnt)...); err != nil {
		return err
	}
	d.mounted = true
	return nil
}

// Unmount unmounts the ext4 (lazily when it is still busy after the
// regular attempt).
func (d *Disk) Unmount(ctx context.Context) error {
	if !d.mounted {
		return nil
	}
	_, err := d.run(ctx, "umount", d.Mnt)
	if err != nil {
		if _, err2 := d.run(ctx, "umount", "-l", d.Mnt); err2 == nil {
			err = nil
		}
	}
	if err == nil {
		d.mounted = false
	}
	return err
}

// Fsck runs `e2fsck -fn` on the loop device (unmounted) and returns its
// output; an unclean result (any exit status but 0) is an error.
func (d *Disk) Fsck(ctx context.Context) (string, error) {
	return d.run(ctx, "e2fsck", "-fn", d.Loop)
}

// Close tears the stack down in order: the ext4 mount, the loop device,
// the FUSE mount and server, the temporary directories. It always goes
// through every step and reports all errors.
func (d *Disk) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	ctx := context.Background()
	var errs []error
	if err := d.Unmount(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, p := range d.parts {
		if err := unix.Unmount(p.mnt, 0); err != nil && err != unix.EINVAL {
			errs = append(errs, fmt.Errorf("%w: umount %s: %v", ErrStep, p.mnt, err))
			continue
		}
		if _, err := d.run(ctx, "losetup", "-d", p.loop); err != nil {
			errs = append(errs, err)
		}
	}
	if d.Loop != "" {
		if _, err := d.run(ctx, "losetup", "-d", d.Loop); err != nil {
			errs = append(errs, err)
		}
	}
	d.mu.Lock()
	if d.guard != nil {
		d.guard.Stop()
	}
	d.mu.Unlock()
	if d.Server != nil {
		if err := d.Server.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.tmp != "" && len(errs) == 0 {
		if err := os.RemoveAll(d.tmp); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// run runs a command under the step timeout. On timeout the command is
// killed and the FUSE connection aborted (a process blocked on the
// emulated device is in D state and would not die otherwise); if it still
// does not end, run gives up waiting and reports it.
func (d *Disk) run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.o.StepTimeout)
	defer cancel()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrStep, name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		if d.Server != nil {
			d.Server.Abort()
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			return "", fmt.Errorf("%w: %s %s: still running after kill and fuse abort", ErrStep, name, strings.Join(args, " "))
		}
		err = fmt.Errorf("timed out after %v (killed; fuse connection aborted)", d.o.StepTimeout)
	}
	d.o.Log.Debug("disk step", "cmd", name, "args", args, "err", err)
	if err != nil {
		return out.String(), fmt.Errorf("%w: %s %s: %v: %s", ErrStep, name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}
