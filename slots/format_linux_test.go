package slots

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testtool"
	"github.com/bootorbit/bootorbit/slots/slotstest"
	"golang.org/x/sys/unix"
)

// needFormat skips without root (a privilege, as for the other root-only
// tests) and without the tools (unless BOOTORBIT_REQUIRE_TOOLS=1).
func needFormat(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("formatting a slot needs root (losetup, mkfs, mount)")
	}
	testtool.Need(t, "losetup")
	testtool.Need(t, "mkfs.ext4")
}

// newLoop makes a loop device over a new file of size bytes in dir; the
// test detaches it (after the unmounts registered later).
func newLoop(t *testing.T, dir string, size int64) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "disk-*.img")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command("losetup", "--find", "--show", f.Name()).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	return loop
}

// unmountAtEnd unmounts everything mounted on dir when the test ends.
func unmountAtEnd(t *testing.T, dir string) {
	t.Cleanup(func() {
		for unix.Unmount(dir, 0) == nil {
		}
	})
}

// countMkfs counts the formats of the test.
func countMkfs(t *testing.T) *int {
	n := new(int)
	testHookMkfs = func([]string) { *n++ }
	t.Cleanup(func() { testHookMkfs = nil })
	return n
}

type fmtRig struct {
	dir, loop, path string
	o               Options
}

func newFmtRig(t *testing.T) *fmtRig {
	t.Helper()
	needFormat(t)
	r := &fmtRig{dir: t.TempDir()}
	r.loop = newLoop(t, r.dir, 32<<20)
	r.path = filepath.Join(r.dir, "b")
	for _, d := range []string{r.path, filepath.Join(r.dir, "a")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	unmountAtEnd(t, r.path)
	r.o = Options{
		StateDir: filepath.Join(r.dir, "state"),
		A:        Slot{Backend: BackendDir, Path: filepath.Join(r.dir, "a")},
		B: Slot{Backend: BackendDir, Path: r.path, Device: r.loop, Format: FormatExt4,
			MkfsOptions: []string{"-E", "nodiscard"}, MountOptions: "noatime,commit=30"},
		Booted: A, Now: fixedClock(), Log: discardLogger(),
	}
	return r
}

func (r *fmtRig) open(t *testing.T) *Manager {
	t.Helper()
	m, err := Open(r.o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (r *fmtRig) state(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.o.StateDir, stateFileName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return b
}

func (r *fmtRig) tree(t *testing.T) []Entry {
	t.Helper()
	es, err := ReadTree(context.Background(), r.path, ReadTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func (r *fmtRig) mounted(t *testing.T) bool {
	t.Helper()
	ok, err := r.o.B.mountedOn()
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

var (
	fmtImage1 = newTB().dir("etc/").file("etc/os-release", "ID=one\n").dir("usr/").file("usr/only-in-one", "old\n").bytes()
	fmtImage2 = newTB().dir("etc/").file("etc/os-release", "ID=two\n").dir("usr/").file("usr/only-in-two", "new\n").
			symlink("usr/link", "only-in-two").bytes()
)

func install(m *Manager, label string, layer []byte) (*InstallResult, error) {
	return m.Install(context.Background(), B, Image{Label: label, Layers: readers(layer)})
}

// A formatted install makes a new filesystem every time: the old tree is
// gone without being deleted, the new one verifies, and the mount has the
// configured options.
func TestFormatInstallReplacesTree(t *testing.T) {
	r := newFmtRig(t)
	n := countMkfs(t)
	m := r.open(t)
	if _, err := install(m, "one", fmtImage1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r.path, "usr/only-in-one")); err != nil {
		t.Fatal(err)
	}
	// The device is mounted on the path now: the second install unmounts it.
	res, err := install(m, "two", fmtImage2)
	if err != nil {
		t.Fatal(err)
	}
	if *n != 2 {
		t.Errorf("%d formats for two installs", *n)
	}
	if _, err := os.Lstat(filepath.Join(r.path, "usr/only-in-one")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file of the old tree survived: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(r.path, "etc/os-release")); err != nil || string(b) != "ID=two\n" {
		t.Errorf("new tree: %q %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(r.path, "lost+found")); err != nil || !fi.IsDir() {
		t.Errorf("the fresh filesystem's lost+found: %v", err)
	}
	if !r.mounted(t) {
		t.Fatal("device not mounted on the slot path after the install")
	}
	var sf unix.Statfs_t
	if err := unix.Statfs(r.path, &sf); err != nil {
		t.Fatal(err)
	}
	if sf.Type != unix.EXT4_SUPER_MAGIC || sf.Flags&unix.ST_NOATIME == 0 {
		t.Errorf("mount: type %#x flags %#x, want ext4 with noatime", sf.Type, sf.Flags)
	}
	st := m.Status().Slots[1]
	if st.State != Written || st.Image != "two" || st.Digest != res.Digest || st.Formatted || st.Device != r.loop || st.Format != FormatExt4 {
		t.Errorf("status %+v", st)
	}
	if d := TreeDigest(r.tree(t), DigestOptions{}); d != res.Digest {
		t.Errorf("tree on disk %s, recorded %s", d, res.Digest)
	}
	vr, err := m.Verify(context.Background(), B)
	if err != nil || !vr.OK {
		t.Errorf("verify: %+v %v", vr, err)
	}
	// Unmounted, the path is an empty directory: Verify says so rather
	// than reporting a mismatch.
	if err := unix.Unmount(r.path, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Verify(context.Background(), B); !errors.Is(err, ErrSlotDevice) || !strings.Contains(err.Error(), "not mounted") {
		t.Errorf("verify of an unmounted slot: %v", err)
	}
}

// Prepare formats; the Install after it does not, unless the slot path is
// no longer a mount of the device; a crash (a new Manager) keeps the
// marker, Install's first write clears it.
func TestFormatPrepareThenInstall(t *testing.T) {
	r := newFmtRig(t)
	n := countMkfs(t)
	m := r.open(t)
	if err := m.Prepare(context.Background(), B); err != nil {
		t.Fatal(err)
	}
	if *n != 1 || !r.mounted(t) {
		t.Fatalf("after Prepare: %d formats, mounted %v", *n, r.mounted(t))
	}
	m = r.open(t) // the marker is durable
	if st := m.Status().Slots[1]; st.State != Writing || !st.Formatted {
		t.Fatalf("after Prepare: %+v", st)
	}
	if _, err := install(m, "one", fmtImage1); err != nil {
		t.Fatal(err)
	}
	if *n != 1 {
		t.Errorf("Install after Prepare formatted again (%d formats)", *n)
	}
	if st := m.Status().Slots[1]; st.State != Written || st.Formatted {
		t.Errorf("after Install: %+v", st)
	}
	if !strings.Contains(string(r.state(t)), `"state": "written"`) || strings.Contains(string(r.state(t)), "formatted") {
		t.Errorf("state file: %s", r.state(t))
	}

	// Prepared, then unmounted (a reboot): Install formats again.
	if err := m.Prepare(context.Background(), B); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(r.path, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := install(m, "two", fmtImage2); err != nil {
		t.Fatal(err)
	}
	if *n != 3 {
		t.Errorf("%d formats, want 3 (Prepare, Prepare, Install after the unmount)", *n)
	}

	// Any other state write clears the marker.
	if err := m.Prepare(context.Background(), B); err != nil {
		t.Fatal(err)
	}
	if err := m.MarkBad(B, "test"); err != nil {
		t.Fatal(err)
	}
	if st := m.Status().Slots[1]; st.Formatted {
		t.Errorf("marker survived MarkBad: %+v", st)
	}
}

// Every refusal before the format leaves the state file and the slot's
// content as they were.
func TestFormatRefusals(t *testing.T) {
	r := newFmtRig(t)
	n := countMkfs(t)
	if _, err := install(r.open(t), "one", fmtImage1); err != nil {
		t.Fatal(err)
	}
	state, tree := r.state(t), r.tree(t)
	other := filepath.Join(r.dir, "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	unmountAtEnd(t, other)
	notBlock := filepath.Join(r.dir, "not-a-device")
	if err := os.WriteFile(notBlock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, o *Options) (undo func())
		want  string
	}{
		{"mounted elsewhere", func(t *testing.T, o *Options) func() {
			if err := unix.Mount(r.loop, other, "ext4", 0, ""); err != nil {
				t.Fatal(err)
			}
			return func() { unix.Unmount(other, 0) }
		}, "mounted on " + other},
		{"path is a mount of another device", func(t *testing.T, o *Options) func() {
			if err := unix.Mount("tmpfs", r.path, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
			return func() { unix.Unmount(r.path, 0) }
		}, "mount point of another device"},
		{"mount below the path", func(t *testing.T, o *Options) func() {
			if err := unix.Mount("tmpfs", filepath.Join(r.path, "usr"), "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
			return func() { unix.Unmount(filepath.Join(r.path, "usr"), 0) }
		}, "mounted below the slot path"},
		{"held by someone else", func(t *testing.T, o *Options) func() {
			if err := unix.Unmount(r.path, 0); err != nil {
				t.Fatal(err)
			}
			fd, err := unix.Open(r.loop, unix.O_RDONLY|unix.O_EXCL, 0)
			if err != nil {
				t.Fatal(err)
			}
			return func() {
				unix.Close(fd)
				if err := unix.Mount(r.loop, r.path, "ext4", 0, ""); err != nil {
					t.Fatal(err)
				}
			}
		}, "in use"},
		// Refused after the unmount: mounted back, the state unchanged.
		{"mounted in another mount namespace", func(t *testing.T, o *Options) func() {
			testtool.Need(t, "unshare")
			// A process in a private copy of our mounts holds the slot's
			// mount until its stdin is closed.
			cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", "echo ready; exec cat")
			in, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if b := make([]byte, 6); func() error { _, err := io.ReadFull(out, b); return err }() != nil || string(b) != "ready\n" {
				in.Close()
				cmd.Wait()
				t.Fatalf("unshare did not start: %q", b)
			}
			return func() {
				in.Close()
				cmd.Wait()
			}
		}, "still in use after unmounting"},
		{"not a block device", func(t *testing.T, o *Options) func() {
			o.B.Device = notBlock
			return func() {}
		}, "not a block device"},
		{"no device", func(t *testing.T, o *Options) func() {
			o.B.Device = filepath.Join(r.dir, "missing")
			return func() {}
		}, "no such file"},
		{"no mkfs", func(t *testing.T, o *Options) func() {
			t.Setenv("PATH", t.TempDir())
			return func() {}
		}, "mkfs.ext4 not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := r.o
			undo := tc.setup(t, &o)
			m, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			_, ierr := install(m, "two", fmtImage2)
			perr := m.Prepare(context.Background(), B)
			undo()
			for _, err := range []error{ierr, perr} {
				if !errors.Is(err, ErrSlotDevice) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), o.B.Device) || !strings.Contains(err.Error(), r.path) {
					t.Errorf("got %v, want %v naming %q, the device and the path", err, ErrSlotDevice, tc.want)
				}
			}
			if s := r.state(t); string(s) != string(state) {
				t.Errorf("state file changed:\n%s", s)
			}
			if d := DiffEntries(tree, r.tree(t), DigestOptions{Mtimes: true}); d != "" {
				t.Errorf("slot content changed: %s", d)
			}
			if !r.mounted(t) {
				t.Error("slot no longer mounted")
			}
		})
	}
	if *n != 1 {
		t.Errorf("%d formats, want only the first install's", *n)
	}
}

// A busy slot filesystem is not unmounted (never lazily): the error says
// so, the old content is still there, and once the user is gone the
// install goes through.
func TestFormatBusy(t *testing.T) {
	r := newFmtRig(t)
	m := r.open(t)
	if _, err := install(m, "one", fmtImage1); err != nil {
		t.Fatal(err)
	}
	tree, state := r.tree(t), r.state(t)
	f, err := os.Open(filepath.Join(r.path, "etc/os-release"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = install(m, "two", fmtImage2)
	if !errors.Is(err, ErrSlotBusy) || !strings.Contains(err.Error(), r.path) {
		t.Errorf("got %v, want %v naming %s", err, ErrSlotBusy, r.path)
	}
	if st := m.Status().Slots[1]; st.State != Written || st.Image != "one" {
		t.Errorf("state %s (%s) after a busy refusal, want the previous release's, written", st.State, st.Image)
	}
	if err := m.Prepare(context.Background(), B); !errors.Is(err, ErrSlotBusy) {
		t.Errorf("Prepare: got %v, want %v", err, ErrSlotBusy)
	}
	if s := r.state(t); string(s) != string(state) {
		t.Errorf("state file changed by the busy refusals:\n%s", s)
	}
	if !r.mounted(t) {
		t.Fatal("busy slot unmounted")
	}
	if d := DiffEntries(tree, r.tree(t), DigestOptions{Mtimes: true}); d != "" {
		t.Errorf("slot content changed: %s", d)
	}
	f.Close()
	if _, err := install(m, "two", fmtImage2); err != nil {
		t.Fatal(err)
	}

	// A slot that cannot be written (pending) is refused before the
	// unmount: busy or not, the error is the transition's.
	if err := m.MarkPending(B); err != nil {
		t.Fatal(err)
	}
	if f, err = os.Open(filepath.Join(r.path, "etc/os-release")); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := install(m, "three", fmtImage1); !errors.Is(err, ErrTransition) {
		t.Errorf("install into a pending slot: %v, want %v", err, ErrTransition)
	}
	if err := m.Prepare(context.Background(), B); !errors.Is(err, ErrTransition) {
		t.Errorf("Prepare of a pending slot: %v, want %v", err, ErrTransition)
	}
}

func TestFormatOptionErrors(t *testing.T) {
	dir := t.TempDir()
	ok := Slot{Backend: BackendDir, Path: filepath.Join(dir, "b"), Device: "/dev/loop7", Format: FormatExt4}
	cases := []struct {
		name string
		edit func(a, b *Slot)
		want string
	}{
		{"device without format", func(a, b *Slot) { b.Format = "" }, "without format"},
		{"mkfs options without format", func(a, b *Slot) { b.Format, b.Device, b.MkfsOptions = "", "", []string{"-m", "0"} }, "without format"},
		{"unsupported format", func(a, b *Slot) { b.Format = "xfs" }, `format "xfs"`},
		{"format on raw", func(a, b *Slot) { b.Backend = BackendRaw }, "only for directory slots"},
		{"format without device", func(a, b *Slot) { b.Device = "" }, "needs the slot's device"},
		{"relative device", func(a, b *Slot) { b.Device = "loop7" }, "not an absolute path"},
		{"device by filesystem uuid", func(a, b *Slot) { b.Device = "/dev/disk/by-uuid/0b9f7e3c-1d2a-4e5f-8a9b-0c1d2e3f4a5b" }, "filesystem UUID"},
		{"same device", func(a, b *Slot) { *a = *b; a.Path = filepath.Join(dir, "a") }, "same device"},
		{"read-only mount", func(a, b *Slot) { b.MountOptions = "noatime,ro" }, "ro:"},
		{"no barriers", func(a, b *Slot) { b.MountOptions = "barrier=0" }, "barrier=0"},
		// The kernel reads barrier's value as C does (kstrtouint, base 0).
		{"no barriers, octal", func(a, b *Slot) { b.MountOptions = "noatime,barrier=00" }, "barrier=00"},
		{"no barriers, hex", func(a, b *Slot) { b.MountOptions = "barrier=0x0" }, "barrier=0x0"},
		{"empty mount option", func(a, b *Slot) { b.MountOptions = "noatime,,nodev" }, "empty option"},
		// ext4 refuses them at the mount, after the format: refused at Open.
		{"fstab word", func(a, b *Slot) { b.MountOptions = "noatime,nofail" }, "nofail: an fstab word"},
		{"systemd fstab word", func(a, b *Slot) { b.MountOptions = "x-systemd.device-timeout=5" }, "an fstab word"},
		{"empty mkfs option", func(a, b *Slot) { b.MkfsOptions = []string{""} }, "empty mkfs option"},
		{"mkfs forced twice", func(a, b *Slot) { b.MkfsOptions = []string{"-E", "nodiscard", "-F"} }, "-F is ours"},
		{"mkfs forced twice, clustered", func(a, b *Slot) { b.MkfsOptions = []string{"-qF"} }, "-F is ours"},
		{"mkfs without a new filesystem", func(a, b *Slot) { b.MkfsOptions = []string{"-S"} }, "do not make a new filesystem"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := Slot{Backend: BackendDir, Path: filepath.Join(dir, "a")}, ok
			tc.edit(&a, &b)
			_, err := Open(Options{StateDir: dir, A: a, B: b, Log: discardLogger()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
	if _, err := Open(Options{StateDir: dir, A: Slot{Backend: BackendDir, Path: filepath.Join(dir, "a")}, B: ok, Log: discardLogger()}); err != nil {
		t.Errorf("a valid formatted slot: %v", err)
	}
	ok.MkfsOptions = []string{"-L", "slot-b", "-E", "nodiscard,lazy_itable_init=0", "-j", "-m", "0"}
	if _, err := Open(Options{StateDir: dir, A: Slot{Backend: BackendDir, Path: filepath.Join(dir, "a")}, B: ok, Log: discardLogger()}); err != nil {
		t.Errorf("a formatted slot with mkfs options: %v", err)
	}
}

func TestParseMountOptions(t *testing.T) {
	flags, data, err := parseMountOptions("noatime,nodev,commit=30,nosuid,data=ordered,rw")
	if err != nil || flags != unix.MS_NOATIME|unix.MS_NODEV|unix.MS_NOSUID || data != "commit=30,data=ordered" {
		t.Errorf("got %#x %q %v", flags, data, err)
	}
	if _, data, err := parseMountOptions("barrier=1,barrier"); data != "barrier=1,barrier" || err != nil {
		t.Errorf("barriers on: %q %v", data, err)
	}
	if flags, data, err := parseMountOptions(""); flags != 0 || data != "" || err != nil {
		t.Errorf("empty: %#x %q %v", flags, data, err)
	}
}

func TestParseMountinfo(t *testing.T) {
	const mi = "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n" +
		"40 22 7:3 /sub /mnt/slot\\040b rw master:2 - ext4 /dev/loop3 rw,noatime\n" +
		"41 22 0:45 / /tmp rw - tmpfs tmpfs rw\n"
	ms, err := parseMountinfo([]byte(mi))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 || ms[1].dev != unix.Mkdev(7, 3) || ms[1].point != "/mnt/slot b" || ms[1].root != "/sub" || ms[1].source != "/dev/loop3" || ms[2].fstype != "tmpfs" {
		t.Errorf("parsed %+v", ms)
	}
	for _, bad := range []string{"22 1 259:2 / / rw\n", "22 1 x:2 / / rw - ext4 /dev/x rw\n"} {
		if _, err := parseMountinfo([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	// A mountinfo longer than what is read is an error, not a list with
	// the mounts past the limit missing.
	big := filepath.Join(t.TempDir(), "mountinfo")
	line := []byte("41 22 0:45 / /tmp rw - tmpfs tmpfs rw\n")
	if err := os.WriteFile(big, bytes.Repeat(line, maxMountinfo/len(line)+1), 0o644); err != nil {
		t.Fatal(err)
	}
	mountinfoPath = big
	_, err = readMounts()
	mountinfoPath = "/proc/self/mountinfo"
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("a mountinfo over the limit: %v", err)
	}
	// The real one parses, and has the root.
	ms, err = readMounts()
	if err != nil || !func() bool {
		for _, m := range ms {
			if m.point == "/" {
				return true
			}
		}
		return false
	}() {
		t.Errorf("this process's mountinfo: %v", err)
	}
}

var (
	benchFormatMiB  = flag.Int64("slots.format-mib", 64, "content MiB of the generated trees BenchmarkFormattedSlot replaces")
	benchFormatTar  = flag.String("slots.format-tar", "", "a layer tar BenchmarkFormattedSlot installs (over itself) instead of generated trees")
	benchFormatMkfs = flag.String("slots.format-mkfs", "-E nodiscard", "mkfs.ext4 options of the formatted slot in BenchmarkFormattedSlot, space-separated")
)

// BenchmarkFormattedSlot measures, on one ext4 on a loop device, what
// replacing an installed tree costs when the slot is emptied file by file
// (the reference: a directory slot without Format) and when it is
// formatted: Prepare alone (deletion against umount + mkfs + mount), and
// a whole Install over the old tree. Between iterations the old tree is
// put back and everything synced, untimed.
//
//	go test -run - -bench FormattedSlot -benchtime 5x ./slots/ -args -slots.format-mib=200
func BenchmarkFormattedSlot(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (losetup, mkfs, mount)")
	}
	testtool.Need(b, "losetup")
	testtool.Need(b, "mkfs.ext4")
	oldTar, files, err := slotstest.GenerateRootfs(1, *benchFormatMiB<<20)
	if err != nil {
		b.Fatal(err)
	}
	newTar, _, err := slotstest.GenerateRootfs(2, *benchFormatMiB<<20)
	if err != nil {
		b.Fatal(err)
	}
	if *benchFormatTar != "" {
		if oldTar, err = os.ReadFile(*benchFormatTar); err != nil {
			b.Fatal(err)
		}
		newTar, files = oldTar, -1
		*benchFormatMiB = int64(len(oldTar) >> 20)
	}
	b.Logf("trees of %d MiB, %d files; mkfs.ext4 options %q", *benchFormatMiB, files, *benchFormatMkfs)
	dir := b.TempDir()
	f, err := os.CreateTemp(dir, "disk-*.img")
	if err != nil {
		b.Fatal(err)
	}
	f.Truncate(4**benchFormatMiB<<20 + 256<<20)
	f.Close()
	out, err := exec.Command("losetup", "--find", "--show", f.Name()).CombinedOutput()
	if err != nil {
		b.Fatalf("losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	b.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	mnt := filepath.Join(dir, "b")
	os.Mkdir(mnt, 0o755)
	b.Cleanup(func() {
		for unix.Unmount(mnt, 0) == nil {
		}
	})
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "nodiscard", loop).CombinedOutput(); err != nil {
		b.Fatalf("mkfs: %v: %s", err, out)
	}
	if err := unix.Mount(loop, mnt, "ext4", 0, ""); err != nil {
		b.Fatal(err)
	}
	exp, err := ExpectedTree(context.Background(), readers(newTar), ExtractOptions{})
	if err != nil {
		b.Fatal(err)
	}
	modes := []string{"emptied", "formatted"}
	ms := map[string]*Manager{}
	for _, mode := range modes {
		o := Options{StateDir: filepath.Join(dir, "state-"+mode), A: Slot{Backend: BackendDir, Path: filepath.Join(dir, "a")},
			B: Slot{Backend: BackendDir, Path: mnt}, Booted: A, Log: discardLogger()}
		if mode == "formatted" {
			o.B.Device, o.B.Format, o.B.MkfsOptions = loop, FormatExt4, strings.Fields(*benchFormatMkfs)
		}
		if ms[mode], err = Open(o); err != nil {
			b.Fatal(err)
		}
	}
	// oldTree puts the old tree back, syncs, and leaves no Prepare's
	// marker behind (so that Install formats).
	oldTree := func(b *testing.B, m *Manager) {
		if st := m.Status().Slots[1]; st.Formatted {
			if err := m.MarkBad(B, "benchmark"); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := ExtractLayers(context.Background(), mnt, readers(oldTar), ExtractOptions{}); err != nil {
			b.Fatal(err)
		}
		unix.Sync()
	}
	// Every round runs both modes, in turn first, on the same filesystem
	// (a formatted install leaves a fresh one for the next round); each
	// reports its mean in milliseconds (ns/op counts nothing: the timer is
	// stopped), for Install also of the write alone (format, extraction,
	// sync; without the read-back).
	bench := func(b *testing.B, op func(m *Manager) (*InstallResult, error)) {
		b.StopTimer()
		total := map[string]time.Duration{}
		write := map[string]time.Duration{}
		for i := range b.N {
			for j := range modes {
				mode := modes[(i+j)%len(modes)]
				oldTree(b, ms[mode])
				t0 := time.Now()
				res, err := op(ms[mode])
				total[mode] += time.Since(t0)
				if err != nil {
					b.Fatal(err)
				}
				if res != nil {
					write[mode] += res.WriteTime
				}
			}
		}
		for _, mode := range modes {
			b.ReportMetric(float64(total[mode].Milliseconds())/float64(b.N), mode+"-ms/op")
			if write[mode] > 0 {
				b.ReportMetric(float64(write[mode].Milliseconds())/float64(b.N), mode+"-write-ms/op")
			}
		}
	}
	b.Run("prepare", func(b *testing.B) {
		bench(b, func(m *Manager) (*InstallResult, error) { return nil, m.Prepare(context.Background(), B) })
	})
	b.Run("install", func(b *testing.B) {
		bench(b, func(m *Manager) (*InstallResult, error) {
			return m.Install(context.Background(), B, Image{Layers: readers(newTar), Tree: exp.Entries})
		})
	})
}

// superblockUUID reads the ext4 UUID of dev (superblock at 1024, UUID at
// 0x68): it changes when the device is formatted.
func superblockUUID(t *testing.T, dev string) []byte {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 16)
	if _, err := f.ReadAt(b, 1024+0x68); err != nil {
		t.Fatal(err)
	}
	return b
}

// newOtherLoop makes a second loop device holding an ext4 (the other
// slot's content, not mounted).
func newOtherLoop(t *testing.T, r *fmtRig) string {
	t.Helper()
	loop := newLoop(t, r.dir, 32<<20)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "nodiscard", loop).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v: %s", err, out)
	}
	return loop
}

// The device is checked and formatted under one name: a symlink (a
// /dev/disk/by-* name) that points elsewhere by the time mkfs runs does
// not redirect the format to another device.
func TestFormatDeviceSymlinkResolvedOnce(t *testing.T) {
	r := newFmtRig(t)
	other := newOtherLoop(t, r)
	before := superblockUUID(t, other)
	link := filepath.Join(r.dir, "by-partlabel-b")
	if err := os.Symlink(r.loop, link); err != nil {
		t.Fatal(err)
	}
	r.o.B.Device = link
	testHookMkfs = func([]string) {
		// udev renames, a hotplug: the name now means another device.
		os.Remove(link)
		if err := os.Symlink(other, link); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { testHookMkfs = nil })
	if _, err := install(r.open(t), "one", fmtImage1); err != nil {
		t.Fatal(err)
	}
	if after := superblockUUID(t, other); !bytes.Equal(before, after) {
		t.Fatalf("the device the symlink pointed to after the checks was formatted")
	}
	sl := r.o.B
	sl.Device = r.loop
	if ok, err := sl.mountedOn(); err != nil || !ok {
		t.Errorf("the checked device is not mounted on the slot path: %v", err)
	}
}

// The other slot's device under another name (a symlink, or a raw slot's
// path) is refused, even when nothing has it mounted.
func TestFormatOtherSlotsDevice(t *testing.T) {
	r := newFmtRig(t)
	n := countMkfs(t)
	link := filepath.Join(r.dir, "alias")
	if err := os.Symlink(r.loop, link); err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]Slot{
		"raw slot":                   {Backend: BackendRaw, Path: link},
		"formatted slot, alias name": {Backend: BackendDir, Path: filepath.Join(r.dir, "a"), Device: link, Format: FormatExt4},
	} {
		t.Run(name, func(t *testing.T) {
			o := r.o
			o.A, o.Booted = a, ""
			m, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			_, ierr := install(m, "one", fmtImage1)
			perr := m.Prepare(context.Background(), B)
			for _, err := range []error{ierr, perr} {
				if !errors.Is(err, ErrSlotDevice) || !strings.Contains(err.Error(), "other slot") {
					t.Errorf("got %v, want %v naming the other slot", err, ErrSlotDevice)
				}
			}
		})
	}
	if *n != 0 {
		t.Errorf("%d formats of the other slot's device", *n)
	}
}

// Verify reads what the slot path shows: with another filesystem mounted
// over the slot's, it refuses instead of reporting a mismatch (which would
// make a good slot look bad).
func TestFormatVerifyOvermounted(t *testing.T) {
	r := newFmtRig(t)
	m := r.open(t)
	if _, err := install(m, "one", fmtImage1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", r.path, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	vr, err := m.Verify(context.Background(), B)
	if !errors.Is(err, ErrSlotDevice) || !strings.Contains(err.Error(), "not mounted") {
		t.Errorf("verify under another mount: %+v %v, want %v", vr, err, ErrSlotDevice)
	}
	if err := unix.Unmount(r.path, 0); err != nil {
		t.Fatal(err)
	}
	if vr, err := m.Verify(context.Background(), B); err != nil || !vr.OK {
		t.Errorf("verify: %+v %v", vr, err)
	}
}
