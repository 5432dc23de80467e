package slots

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FormatExt4 is the only filesystem a directory slot can be formatted with.
const FormatExt4 = "ext4"

// Errors of formatted directory slots.
var (
	// ErrSlotDevice is a formatted slot whose device cannot be formatted
	// safely (not a block device, mounted elsewhere, in use, the slot path
	// a mount of something else, no mkfs.ext4), or a format, mount or
	// unmount that failed. The checks run before anything changes.
	ErrSlotDevice = errors.New("slots: slot device")
	// ErrSlotBusy is a slot filesystem that cannot be unmounted because
	// something uses it (an open file, a working directory).
	ErrSlotBusy = errors.New("slots: slot busy")
)

// testHookMkfs, when set, is called with mkfs.ext4's arguments just before
// it runs; tests count the formats through it.
var testHookMkfs func(args []string)

// mountinfoPath is read to find where devices are mounted.
var mountinfoPath = "/proc/self/mountinfo"

// validateFormat checks the formatting fields of slot id (Open runs it).
func (s Slot) validateFormat(id SlotID) error {
	switch {
	case s.Format == "":
		if s.Device != "" {
			return fmt.Errorf("slots: slot %s: device %s without format: an unformatted directory slot is the mounted filesystem at its path", id, s.Device)
		}
		if len(s.MkfsOptions) > 0 || s.MountOptions != "" {
			return fmt.Errorf("slots: slot %s: mkfs or mount options without format", id)
		}
		return nil
	case s.Format != FormatExt4:
		return fmt.Errorf("slots: slot %s: format %q: only %q is supported", id, s.Format, FormatExt4)
	case s.Backend != BackendDir:
		return fmt.Errorf("slots: slot %s: format is only for directory slots (backend %q)", id, s.Backend)
	case s.Device == "":
		return fmt.Errorf("slots: slot %s: format %s needs the slot's device", id, s.Format)
	case !filepath.IsAbs(s.Device):
		return fmt.Errorf("slots: slot %s: device %q is not an absolute path", id, s.Device)
	case strings.HasPrefix(filepath.Clean(s.Device), "/dev/disk/by-uuid/"):
		// The name of the filesystem, which every install replaces: the
		// second install would find no such device.
		return fmt.Errorf("slots: slot %s: device %s names a filesystem UUID, which changes at every format: name the partition (/dev/disk/by-partuuid/..., /dev/mmcblk0p3)", id, s.Device)
	}
	for _, o := range s.MkfsOptions {
		if o == "" {
			return fmt.Errorf("slots: slot %s: empty mkfs option", id)
		}
		// A cluster of mke2fs's flags without argument (-F, -qF, ...).
		if f := strings.TrimPrefix(o, "-"); f != o && f != "" && strings.Trim(f, "cjnqvDFKSV") == "" {
			switch {
			case strings.Contains(f, "F"):
				// A second -F makes mke2fs format a mounted or in-use
				// device: its own refusal is the last one before mkfs.
				return fmt.Errorf("slots: slot %s: mkfs option %q: -F is ours, once (twice formats a mounted device)", id, o)
			case strings.ContainsAny(f, "nS"):
				return fmt.Errorf("slots: slot %s: mkfs option %q: -n and -S do not make a new filesystem", id, o)
			}
		}
	}
	if _, _, err := parseMountOptions(s.MountOptions); err != nil {
		return fmt.Errorf("slots: slot %s: %w", id, err)
	}
	return nil
}

// mountFlags are the mount option words that are flags of mount(2) rather
// than options of the filesystem.
var mountFlags = map[string]uintptr{
	"rw":         0,
	"defaults":   0,
	"noatime":    unix.MS_NOATIME,
	"nodiratime": unix.MS_NODIRATIME,
	"relatime":   unix.MS_RELATIME,
	"nodev":      unix.MS_NODEV,
	"nosuid":     unix.MS_NOSUID,
	"noexec":     unix.MS_NOEXEC,
	"sync":       unix.MS_SYNCHRONOUS,
	"dirsync":    unix.MS_DIRSYNC,
}

// parseMountOptions splits comma-separated mount options into mount(2)
// flags and the filesystem's data string. A read-only mount cannot be
// written, and one without write barriers would make syncfs no promise
// of durability: both are refused.
func parseMountOptions(s string) (uintptr, string, error) {
	if s == "" {
		return 0, "", nil
	}
	var flags uintptr
	var data []string
	for _, o := range strings.Split(s, ",") {
		switch o {
		case "":
			return 0, "", fmt.Errorf("mount options %q: empty option", s)
		case "ro":
			return 0, "", fmt.Errorf("mount options %q: ro: the slot is written after the mount", s)
		case "nobarrier":
			return 0, "", fmt.Errorf("mount options %q: %s: without cache flushes the slot's sync proves nothing", s, o)
		case "auto", "noauto", "nofail", "user", "nouser", "users", "owner", "group", "_netdev":
			return 0, "", fmt.Errorf("mount options %q: %s: an fstab word for mount(8), not an option of the filesystem (the mount would fail after the format)", s, o)
		}
		if strings.HasPrefix(o, "x-") || strings.HasPrefix(o, "comment=") {
			return 0, "", fmt.Errorf("mount options %q: %s: an fstab word for mount(8), not an option of the filesystem (the mount would fail after the format)", s, o)
		}
		// ext4 reads the value as C does (base 0: "00", "0x0" are 0 too);
		// whatever is not a number other than 0 is refused.
		if v, ok := strings.CutPrefix(o, "barrier="); ok {
			if n, err := strconv.ParseUint(v, 0, 32); err != nil || n == 0 {
				return 0, "", fmt.Errorf("mount options %q: %s: without cache flushes the slot's sync proves nothing", s, o)
			}
		}
		if f, ok := mountFlags[o]; ok {
			flags |= f
			continue
		}
		data = append(data, o)
	}
	return flags, strings.Join(data, ","), nil
}

// CheckMountOptions checks a formatted slot's mount options (Open does it
// too): "ro", "nobarrier", "barrier=0" (or 00, 0x0: any value but a
// positive number), the fstab words only mount(8) knows ("nofail",
// "noauto", "x-...") and empty options are refused.
func CheckMountOptions(s string) error {
	_, _, err := parseMountOptions(s)
	return err
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	dev    uint64 // st_dev of the mounted filesystem (st_rdev of its block device)
	root   string // the mounted directory of the filesystem (not "/" for a bind mount)
	point  string // where it is mounted
	fstype string
	source string
}

const maxMountinfo = 16 << 20

// readMounts parses /proc/self/mountinfo (see proc(5)).
func readMounts() ([]mountEntry, error) {
	f, err := os.Open(mountinfoPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The kernel writes it; 16 MiB is tens of thousands of mounts. More is
	// an error: a mount past the limit must not go unseen.
	data, err := io.ReadAll(io.LimitReader(f, maxMountinfo+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxMountinfo {
		return nil, fmt.Errorf("mountinfo: larger than %d bytes", maxMountinfo)
	}
	return parseMountinfo(data)
}

func parseMountinfo(data []byte) ([]mountEntry, error) {
	var ms []mountEntry
	for line := range bytes.Lines(data) {
		fs := strings.Fields(string(line))
		if len(fs) == 0 {
			continue
		}
		sep := -1
		for i := 6; i < len(fs); i++ {
			if fs[i] == "-" {
				sep = i
				break
			}
		}
		if len(fs) < 5 || sep < 0 || sep+2 >= len(fs) {
			return nil, fmt.Errorf("mountinfo: malformed line %q", strings.TrimSpace(string(line)))
		}
		maj, min, ok := strings.Cut(fs[2], ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo: bad device %q", fs[2])
		}
		ms = append(ms, mountEntry{
			dev:    unix.Mkdev(uint32(ma), uint32(mi)),
			root:   unescapeMount(fs[3]),
			point:  unescapeMount(fs[4]),
			fstype: fs[sep+1],
			source: unescapeMount(fs[sep+2]),
		})
	}
	return ms, nil
}

// unescapeMount undoes the kernel's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// formatCheck is what the checks before formatting found.
type formatCheck struct {
	mkfs    string // mkfs.ext4's path
	dev     string // the device, symlinks resolved: what is checked is what is formatted
	path    string // the slot path, absolute, symlinks resolved
	rdev    uint64 // the device's number
	mounted bool   // the device is mounted on the slot path (and nowhere else)
	fstype  string // what it is mounted as, when mounted
}

func (s Slot) deviceErr(err error, format string, a ...any) error {
	return fmt.Errorf("%w: device %s, slot path %s: %s", err, s.Device, s.Path, fmt.Sprintf(format, a...))
}

// resolvedPath is the slot path made absolute with every symlink
// resolved: the name mountinfo shows its mount under.
func (s Slot) resolvedPath() (string, error) {
	p, err := filepath.Abs(s.Path)
	if err == nil {
		p, err = filepath.EvalSymlinks(p)
	}
	if err != nil {
		return "", s.deviceErr(ErrSlotDevice, "slot path: %v", err)
	}
	return p, nil
}

// checkFormat refuses a device that cannot be formatted safely: not a
// block device, mounted anywhere but on the slot path, held by someone
// (a mounted partition of it, swap, device mapper), a whole disk with
// partitions; a slot path that is a mount of another device or has a
// mount below it; no mkfs.ext4. It changes nothing. Matching is by device
// number (st_rdev against mountinfo's major:minor), so that no name of
// the device (a symlink under /dev/disk, /dev/root) hides a mount. The
// other slot's device (its Device, or a raw slot's Path), under whatever
// name, is refused even when nothing has it mounted.
func checkFormat(s, other Slot) (*formatCheck, error) {
	// Resolved once: mkfs and mount get the name that was checked, not a
	// symlink that may point elsewhere by then.
	dev, err := filepath.EvalSymlinks(s.Device)
	if err != nil {
		return nil, s.deviceErr(ErrSlotDevice, "%v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return nil, s.deviceErr(ErrSlotDevice, "%v", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, s.deviceErr(ErrSlotDevice, "not a block device")
	}
	c := &formatCheck{dev: dev, rdev: st.Rdev}
	otherDev := other.Device
	if other.Backend == BackendRaw {
		otherDev = other.Path
	}
	var ost unix.Stat_t
	if otherDev != "" && unix.Stat(otherDev, &ost) == nil && ost.Mode&unix.S_IFMT == unix.S_IFBLK && ost.Rdev == c.rdev {
		return nil, s.deviceErr(ErrSlotDevice, "it is the other slot's device (%s)", otherDev)
	}
	p, err := s.resolvedPath()
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
		return nil, s.deviceErr(ErrSlotDevice, "slot path %s is not a directory", p)
	}
	c.path = p
	mounts, err := readMounts()
	if err != nil {
		return nil, s.deviceErr(ErrSlotDevice, "%v", err)
	}
	for _, m := range mounts {
		switch {
		case m.dev == c.rdev && m.point == p:
			c.mounted, c.fstype = true, m.fstype
		case m.dev == c.rdev:
			return nil, s.deviceErr(ErrSlotDevice, "the device is mounted on %s, not (only) on the slot path: refusing to format it", m.point)
		case m.point == p:
			return nil, s.deviceErr(ErrSlotDevice, "the slot path is a mount point of another device (%s, %d:%d, %s)", m.source, unix.Major(m.dev), unix.Minor(m.dev), m.fstype)
		case strings.HasPrefix(m.point, p+"/") || (p == "/" && m.point != "/"):
			return nil, s.deviceErr(ErrSlotDevice, "%s is mounted below the slot path", m.point)
		}
	}
	if !c.mounted {
		// Mounted nowhere we can see: an exclusive open fails if anything
		// else holds it (a mount in another namespace, a mounted partition
		// of a whole disk, swap, device mapper, md).
		if err := exclusiveOpen(c.dev); err != nil {
			return nil, s.deviceErr(ErrSlotDevice, "the device is in use (%v): mounted in another mount namespace, a mounted partition of it, swap, device mapper or RAID", err)
		}
	}
	if parts := partitions(c.rdev); len(parts) > 0 {
		return nil, s.deviceErr(ErrSlotDevice, "a whole disk with partitions (%s): give the slot's partition", strings.Join(parts, ", "))
	}
	if c.mkfs, err = exec.LookPath("mkfs.ext4"); err != nil {
		return nil, s.deviceErr(ErrSlotDevice, "mkfs.ext4 not found in PATH (e2fsprogs): %v", err)
	}
	return c, nil
}

// partitions lists the partitions sysfs knows of a whole disk (none for a
// partition, or without sysfs).
func partitions(rdev uint64) []string {
	dir := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(rdev), unix.Minor(rdev))
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		return nil
	}
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var parts []string
	for _, e := range es {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err == nil {
			parts = append(parts, e.Name())
		}
	}
	return parts
}

// mountedOn reports whether the slot's device is what its path shows: the
// topmost mount there.
func (s Slot) mountedOn() (bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(s.Device, &st); err != nil {
		return false, s.deviceErr(ErrSlotDevice, "%v", err)
	}
	p, err := s.resolvedPath()
	if err != nil {
		return false, err
	}
	mounts, err := readMounts()
	if err != nil {
		return false, s.deviceErr(ErrSlotDevice, "%v", err)
	}
	// The last mount on the path is the one on top, the one reads see: the
	// device mounted below another filesystem is not what Path shows.
	on := false
	for _, m := range mounts {
		if m.point == p {
			on = m.dev == st.Rdev
		}
	}
	return on, nil
}

// maxMkfsOutput bounds what of mkfs's output an error carries.
const maxMkfsOutput = 4 << 10

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room < len(p) {
		b.buf.Write(p[:max(room, 0)])
		b.truncated = true
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *boundedBuffer) String() string {
	s := strings.TrimSpace(b.buf.String())
	if b.truncated {
		s += " [...]"
	}
	return s
}

// release unmounts the slot path, if the device is mounted there, and
// checks that nothing holds the device any more. It runs before writing
// is recorded, as unmounting changes no content: a refusal leaves the
// state as it was (perhaps the previous release, the one to roll back
// to) and the slot mounted as it was (mounted back when a check after the
// unmount fails).
func release(s Slot, c *formatCheck) error {
	if !c.mounted {
		return nil
	}
	// Never MNT_DETACH: a lazily detached filesystem stays alive for
	// whoever holds it open while mkfs rewrites the device under it.
	if err := unix.Unmount(c.path, 0); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%w: %s is in use (an open file or a working directory below it): not unmounted, not formatted", ErrSlotBusy, s.Path)
		}
		return s.deviceErr(ErrSlotDevice, "unmount %s: %v", c.path, err)
	}
	if err := checkReleased(s, c); err != nil {
		return errors.Join(err, c.remount(s))
	}
	return nil
}

func checkReleased(s Slot, c *formatCheck) error {
	// A second mount of the device on the same path (stacked) would
	// still be there; mkfs -F refuses a mounted device too, but say so.
	mounts, err := readMounts()
	if err != nil {
		return s.deviceErr(ErrSlotDevice, "%v", err)
	}
	for _, m := range mounts {
		if m.dev == c.rdev {
			return s.deviceErr(ErrSlotDevice, "still mounted on %s after unmounting the slot path", m.point)
		}
	}
	// A mount in another mount namespace (a container) is not in our
	// mountinfo, but keeps the device claimed.
	if err := exclusiveOpen(c.dev); err != nil {
		return s.deviceErr(ErrSlotDevice, "the device is still in use after unmounting the slot path (%v): mounted in another mount namespace?", err)
	}
	return nil
}

// remount mounts the device back on the slot path after release, when
// the install stops before anything was recorded.
func (c *formatCheck) remount(s Slot) error {
	if !c.mounted {
		return nil
	}
	flags, data, _ := parseMountOptions(s.MountOptions)
	if err := unix.Mount(c.dev, c.path, c.fstype, flags, data); err != nil {
		return s.deviceErr(ErrSlotDevice, "mount %s back on %s: %v", c.fstype, c.path, err)
	}
	return nil
}

// format makes a new ext4 on the device, makes it durable, and mounts it
// on the slot path. The slot must be released, and recorded writing.
func format(ctx context.Context, s Slot, c *formatCheck) error {
	args := append([]string{"-q", "-F"}, s.MkfsOptions...)
	args = append(args, c.dev)
	if testHookMkfs != nil {
		testHookMkfs(args)
	}
	cmd := exec.CommandContext(ctx, c.mkfs, args...)
	out := &boundedBuffer{max: maxMkfsOutput}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return s.deviceErr(ErrSlotDevice, "mkfs.ext4 %s: %v: %s", strings.Join(args, " "), err, out)
	}
	// mke2fs 1.47 fsyncs the device before it exits (strace shows it), but
	// other versions and other implementations (busybox) need not: the
	// filesystem must be on the medium before anything is recorded about
	// it or written into it. One more cache flush costs next to nothing.
	if err := fsyncDevice(c.dev); err != nil {
		return s.deviceErr(ErrSlotDevice, "sync after mkfs: %v", err)
	}
	flags, data, err := parseMountOptions(s.MountOptions)
	if err != nil {
		return s.deviceErr(ErrSlotDevice, "%v", err)
	}
	if err := unix.Mount(c.dev, c.path, "ext4", flags, data); err != nil {
		return s.deviceErr(ErrSlotDevice, "mount ext4 on %s (options %q): %v", c.path, s.MountOptions, err)
	}
	return nil
}

// exclusiveOpen opens a block device with O_EXCL (which, without O_CREAT,
// claims it as a mount does) and closes it again: EBUSY means someone
// holds it.
func exclusiveOpen(dev string) error {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func fsyncDevice(dev string) error {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = unix.Fsync(fd)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}
