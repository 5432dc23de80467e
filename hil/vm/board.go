package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// GuestModules are the modules the guest loads, with their dependencies:
// the watchdog driver, virtio over MMIO and its block driver for the
// persistent disk, the file system on it, and the virtio network driver
// (failover and net_failover come as its dependencies) for a board with
// a link. Debian builds them all as
// modules; ones a kernel has built in are skipped. crc32c_generic is
// ext4's and jbd2's soft dependency (crypto-crc32c, for metadata
// checksums): without a modprobe in the guest, it is loaded up front.
var GuestModules = []string{"i6300esb", "virtio_mmio", "virtio_blk", "crc32c_generic", "ext4", "virtio_net"}

// DiskFS is the file system of the persistent disk, formatted on the host
// by mkfs.ext4 (e2fsprogs) with its defaults: what a flight computer's
// state partition would use.
const DiskFS = "ext4"

// diskSize is the size of a fresh disk image.
const diskSize = 8 << 20

// Board is a virtual arm64 board ready to boot: qemu, the kernel, and the
// initramfs built for it.
type Board struct {
	QEMU   string
	Kernel Kernel
	Dir    string // work directory: init, initramfs, disks
	Initrd string
	Mods   []Module
	// Mkfs formats a disk image (mkfs.ext4).
	Mkfs string
	// Console gets a copy of every console line of every run, if set.
	Console io.Writer
	// InitSize and InitrdSize are the sizes of /init and of the initramfs.
	InitSize, InitrdSize int64
}

// NewBoard builds the guest init and the initramfs in dir for kernel k.
func NewBoard(ctx context.Context, qemu string, k Kernel, dir string) (*Board, error) {
	b := &Board{QEMU: qemu, Kernel: k, Dir: dir}
	mods, err := ResolveModules(k.Modules, GuestModules)
	if err != nil {
		return nil, err
	}
	b.Mods = mods
	initPath := filepath.Join(dir, "init")
	if err := BuildGuestInit(ctx, initPath); err != nil {
		return nil, err
	}
	init, err := os.ReadFile(initPath)
	if err != nil {
		return nil, err
	}
	b.InitSize = int64(len(init))
	b.Initrd = filepath.Join(dir, "initramfs.cpio")
	if err := BuildInitramfs(b.Initrd, init, mods); err != nil {
		return nil, err
	}
	st, err := os.Stat(b.Initrd)
	if err != nil {
		return nil, err
	}
	b.InitrdSize = st.Size()
	if b.Mkfs, err = exec.LookPath("mkfs." + DiskFS); err != nil {
		return nil, fmt.Errorf("%w: mkfs.%s (e2fsprogs): %w", ErrBoard, DiskFS, err)
	}
	return b, nil
}

// NewDisk creates a fresh formatted raw disk image in the work directory.
func (b *Board) NewDisk(name string) (string, error) {
	p := filepath.Join(b.Dir, name)
	f, err := os.Create(p)
	if err != nil {
		return "", fmt.Errorf("%w: disk: %w", ErrBoard, err)
	}
	err = f.Truncate(diskSize)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("%w: disk: %w", ErrBoard, err)
	}
	out, err := exec.Command(b.Mkfs, "-q", "-F", p).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%w: %s %s: %w: %s", ErrBoard, b.Mkfs, p, err, strings.TrimSpace(string(out)))
	}
	return p, nil
}

// machine returns the qemu invocation for a scenario; extra is added to
// the kernel command line. The watchdog action is reset.
func (b *Board) machine(disk, scenario string, timeout, periods int, extra string) Machine {
	return Machine{
		QEMU: b.QEMU, Kernel: b.Kernel.Image, Initrd: b.Initrd, Disk: disk,
		Append: strings.TrimSpace(fmt.Sprintf("bootorbit.scenario=%s bootorbit.timeout=%d bootorbit.periods=%d bootorbit.disk=/dev/vda bootorbit.fstype=%s %s",
			scenario, timeout, periods, DiskFS, extra)),
		WatchdogAction: "reset",
		Console:        b.Console,
	}
}

func secDur(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
