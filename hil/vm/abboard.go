package vm

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bootorbit/bootorbit/watchdog"
)

// UBootEnvVar names the environment variable that overrides where the
// U-Boot binary for QEMU's arm64 virt machine is (default: Debian's
// u-boot-qemu).
const UBootEnvVar = "BOOTORBIT_UBOOT_QEMU_ARM64"

// DefaultUBoot is Debian's u-boot-qemu build for the arm64 virt machine.
const DefaultUBoot = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"

// The A/B board's disk: an MBR with four primary partitions, 1 MiB
// aligned.
//
//	1 boot    ext4, bootable flag: boot.scr (the board's script) and Image
//	2 rootfs A ext4: initrd (the slot's system: our init and its image file)
//	3 rootfs B ext4: the same for B
//	4 env     raw: the U-Boot environment, EnvSize bytes at offset 0
//
// The kernel is shared in the boot partition and a slot carries the
// initramfs that is its whole system: an update replaces what runs (the
// init and its image), which is what the A/B tests exercise, without
// copying a 33 MB kernel per slot on every test.
const (
	mib      = 1 << 20
	bootSize = 48 * mib
	slotSize = 24 * mib
	envPSize = 1 * mib
)

// Partition is one MBR partition: its byte offset and size.
type Partition struct {
	Start, Size int64
	Type        byte
	Bootable    bool
}

// ABLayout is the board's partition table.
var ABLayout = []Partition{
	{Start: 1 * mib, Size: bootSize, Type: 0x83, Bootable: true},
	{Start: 1*mib + bootSize, Size: slotSize, Type: 0x83},
	{Start: 1*mib + bootSize + slotSize, Size: slotSize, Type: 0x83},
	{Start: 1*mib + bootSize + 2*slotSize, Size: envPSize, Type: 0xda}, // non-FS data
}

// MBR encodes a DOS partition table (sector 0) for parts (at most 4,
// sector-aligned, within 2 TiB).
func MBR(parts []Partition, diskID uint32) ([]byte, error) {
	if len(parts) > 4 {
		return nil, fmt.Errorf("%w: mbr: %d partitions, at most 4", ErrBoard, len(parts))
	}
	b := make([]byte, 512)
	binary.LittleEndian.PutUint32(b[440:], diskID)
	for i, p := range parts {
		if p.Start%512 != 0 || p.Size%512 != 0 || p.Start <= 0 || p.Size <= 0 || (p.Start+p.Size)/512 > 1<<32-1 {
			return nil, fmt.Errorf("%w: mbr: partition %d at %d size %d: not sector-aligned or out of range", ErrBoard, i+1, p.Start, p.Size)
		}
		e := b[446+16*i : 446+16*(i+1)]
		if p.Bootable {
			e[0] = 0x80
		}
		copy(e[1:4], []byte{0xfe, 0xff, 0xff}) // CHS unused: LBA only
		e[4] = p.Type
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(e[8:], uint32(p.Start/512))
		binary.LittleEndian.PutUint32(e[12:], uint32(p.Size/512))
	}
	b[510], b[511] = 0x55, 0xaa
	return b, nil
}

// ABBoard is the full QEMU arm64 board: Debian's U-Boot as the firmware,
// the board's variant of the shipped boot script, the A/B disk above and
// the i6300esb watchdog that resets the machine (U-Boot runs again). The
// harness owns power (Run starts QEMU, killing it is a power cut) and
// reads and writes the environment offline, on the disk image.
type ABBoard struct {
	*Board
	UBoot string
	Disk  string // the raw disk image
	// Mkimage compiles the boot script (u-boot-tools).
	Mkimage string
}

// SlotImage is what a slot holds: the system the guest init runs as.
// Behaviour "good" opens the watchdog, pets it, passes its health check
// and marks its slot good (and a failed trial slot bad, as flightd does);
// "hang" opens the watchdog and stops petting, as a system that hangs
// after flightd took the watchdog.
type SlotImage struct {
	Version   string
	Behaviour string // good | hang
	// Timeout is the watchdog timeout in whole seconds (default 5 for a
	// good image, whose health check pets every 0.5 s for 1.5 s: a margin
	// for a guest starved of CPU on a loaded host; 2 for one that hangs,
	// so that a rollback takes three short timeouts).
	Timeout int
}

func (s SlotImage) file() []byte {
	t := s.Timeout
	if t <= 0 {
		t = 5
		if s.Behaviour == "hang" {
			t = 2
		}
	}
	return fmt.Appendf(nil, "version=%s\nbehaviour=%s\ntimeout=%d\n", s.Version, s.Behaviour, t)
}

// NewABBoard builds the guest init and the disk in dir: the boot
// partition with the kernel and the board script compiled from shipped
// (the text of watchdog/bootscripts' boot.cmd), empty slots and a blank
// environment partition (U-Boot then uses its default environment).
func NewABBoard(ctx context.Context, qemu, uboot string, k Kernel, dir, shipped string) (*ABBoard, error) {
	b, err := NewBoard(ctx, qemu, k, dir)
	if err != nil {
		return nil, err
	}
	ab := &ABBoard{Board: b, UBoot: uboot, Disk: filepath.Join(dir, "ab-disk.img")}
	if ab.Mkimage, err = exec.LookPath("mkimage"); err != nil {
		return nil, fmt.Errorf("%w: mkimage (u-boot-tools): %w", ErrBoard, err)
	}
	script, err := BoardScript(shipped)
	if err != nil {
		return nil, err
	}
	boot := filepath.Join(dir, "bootfs")
	if err := os.MkdirAll(boot, 0o755); err != nil {
		return nil, err
	}
	src := filepath.Join(dir, "boot.cmd")
	if err := os.WriteFile(src, []byte(script), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, ab.Mkimage, "-A", "arm64", "-T", "script", "-C", "none", "-d", src, filepath.Join(boot, "boot.scr")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%w: mkimage: %w: %s", ErrBoard, err, strings.TrimSpace(string(out)))
	}
	if err := copyFile(k.Image, filepath.Join(boot, "Image")); err != nil {
		return nil, err
	}
	last := ABLayout[len(ABLayout)-1]
	f, err := os.Create(ab.Disk)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := f.Truncate(last.Start + last.Size); err != nil {
		return nil, err
	}
	mbr, err := MBR(ABLayout, 0x626f6f74) // "boot"
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return nil, err
	}
	if err := ab.writeFS(ctx, f, 1, boot); err != nil {
		return nil, err
	}
	return ab, f.Close()
}

// writeFS formats partition n (1-based) as ext4 populated from dir
// (mkfs.ext4 -d: no mount, no root) and copies it into the disk.
func (ab *ABBoard) writeFS(ctx context.Context, disk *os.File, n int, dir string) error {
	p := ABLayout[n-1]
	img := filepath.Join(ab.Dir, fmt.Sprintf("part%d.img", n))
	defer os.Remove(img)
	out, err := exec.CommandContext(ctx, ab.Mkfs, "-q", "-F", "-d", dir, img, fmt.Sprintf("%dk", p.Size/1024)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s -d %s: %w: %s", ErrBoard, ab.Mkfs, dir, err, strings.TrimSpace(string(out)))
	}
	src, err := os.Open(img)
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := io.Copy(io.NewOffsetWriter(disk, p.Start), io.LimitReader(src, p.Size)); err != nil {
		return fmt.Errorf("%w: partition %d: %w", ErrBoard, n, err)
	}
	return disk.Sync()
}

// WriteSlot installs img into slot A or B: an initramfs with the guest
// init, the modules and /image, in a fresh ext4 as the slot's initrd.
// This is the harness writing a slot offline; the board's own update path
// (flightd in the guest writing the other slot) is not this.
func (ab *ABBoard) WriteSlot(ctx context.Context, slot string, img SlotImage) error {
	if err := watchdog.CheckSlot(slot); err != nil {
		return err
	}
	n := 2
	if slot == "B" {
		n = 3
	}
	init, err := os.ReadFile(filepath.Join(ab.Dir, "init"))
	if err != nil {
		return err
	}
	dir := filepath.Join(ab.Dir, "slot"+slot)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := BuildInitramfs(filepath.Join(dir, "initrd"), init, ab.Mods, File{Name: "image", Perm: 0o644, Data: img.file()}); err != nil {
		return err
	}
	f, err := os.OpenFile(ab.Disk, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := ab.writeFS(ctx, f, n, dir); err != nil {
		return err
	}
	return f.Close()
}

// EnvLocation is the environment's place in the disk image, for
// watchdog.UBootEnv and fw_env.config: what flightd's config names as
// /dev/vda4 in the guest.
func (ab *ABBoard) EnvLocation() watchdog.UBootLocation {
	return watchdog.UBootLocation{Path: ab.Disk, Offset: ABLayout[EnvPart-1].Start, Size: EnvSize}
}

// Env is the environment on the disk image, offline (the board powered
// off), through the same code flightd uses in the guest.
func (ab *ABBoard) Env() (*watchdog.UBootEnv, error) {
	return watchdog.NewUBootEnv(ab.EnvLocation())
}

// FWPrintenv reads the environment offline with libubootenv's
// fw_printenv, an implementation independent of ours.
func (ab *ABBoard) FWPrintenv(ctx context.Context) (watchdog.Vars, error) {
	tool, err := exec.LookPath("fw_printenv")
	if err != nil {
		return nil, fmt.Errorf("%w: fw_printenv (libubootenv-tool): %w", ErrBoard, err)
	}
	cfg := filepath.Join(ab.Dir, "fw_env.config")
	if err := os.WriteFile(cfg, []byte(watchdog.FormatFWEnvConfig([]watchdog.UBootLocation{ab.EnvLocation()})), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, tool, "-c", cfg)
	// fw_printenv takes a lock in /var/lock; point it at our directory.
	cmd.Env = append(os.Environ(), "TMPDIR="+ab.Dir)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return nil, fmt.Errorf("%w: fw_printenv: %w: %s", ErrBoard, err, strings.TrimSpace(stderr))
	}
	v := watchdog.Vars{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, val, ok := strings.Cut(l, "="); ok {
			v[k] = val
		}
	}
	return v, nil
}

// Machine returns the QEMU invocation: U-Boot as firmware, the disk on
// virtio-mmio, the i6300esb with reset as its action.
func (ab *ABBoard) Machine() Machine {
	return Machine{QEMU: ab.QEMU, BIOS: ab.UBoot, Disk: ab.Disk, WatchdogAction: "reset", Console: ab.Console}
}

// PowerOn starts QEMU (the power switch on) and feeds every console line
// to stop until it returns true (QEMU is then killed: the power switch
// off), QEMU exits (the guest powered off), or ctx ends.
func (ab *ABBoard) PowerOn(ctx context.Context, stop func(Line) bool) ([]Line, error) {
	return ab.Machine().Run(ctx, stop)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Copy returns the board with a copy of its disk under name in the work
// directory: boards that share the built boot partition and init but
// keep their own slots and environment.
func (ab *ABBoard) Copy(name string) (*ABBoard, error) {
	c := *ab
	c.Disk = filepath.Join(ab.Dir, name)
	if err := copyFile(ab.Disk, c.Disk); err != nil {
		return nil, fmt.Errorf("%w: copy disk: %w", ErrBoard, err)
	}
	return &c, nil
}
