package vm

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testtool"
	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/bootorbit/bootorbit/watchdog/bootscripts"
)

func TestMBR(t *testing.T) {
	b, err := MBR(ABLayout, 0x01020304)
	if err != nil {
		t.Fatal(err)
	}
	if b[510] != 0x55 || b[511] != 0xaa || binary.LittleEndian.Uint32(b[440:]) != 0x01020304 {
		t.Fatalf("signature or disk id wrong: % x", b[440:])
	}
	for i, p := range ABLayout {
		e := b[446+16*i:]
		if got := int64(binary.LittleEndian.Uint32(e[8:])) * 512; got != p.Start {
			t.Errorf("partition %d start %d, want %d", i+1, got, p.Start)
		}
		if got := int64(binary.LittleEndian.Uint32(e[12:])) * 512; got != p.Size {
			t.Errorf("partition %d size %d, want %d", i+1, got, p.Size)
		}
		if (e[0] == 0x80) != p.Bootable || e[4] != p.Type {
			t.Errorf("partition %d flag %#x type %#x", i+1, e[0], e[4])
		}
	}
	if _, err := MBR([]Partition{{Start: 1000, Size: 512}}, 0); err == nil {
		t.Fatal("an unaligned partition was accepted")
	}
	if _, err := MBR(make([]Partition, 5), 0); err == nil {
		t.Fatal("five partitions were accepted")
	}
}

// The board variant keeps the shipped logic and saves nowhere but the
// environment partition.
func TestBoardScript(t *testing.T) {
	s, err := BoardScript(bootscripts.UBootScript)
	if err != nil {
		t.Fatal(err)
	}
	saves := 0
	for _, l := range strings.Split(s, "\n") {
		code, _, _ := strings.Cut(l, "#")
		if strings.Contains(code, "saveenv") {
			t.Errorf("a saveenv is left: %q", l)
		}
		if strings.Contains(code, "env export -c") {
			saves++
		}
	}
	shipped := 0
	for _, l := range strings.Split(bootscripts.UBootScript, "\n") {
		if code, _, _ := strings.Cut(l, "#"); strings.Contains(code, "saveenv") {
			shipped++
		}
	}
	if saves != shipped || shipped == 0 {
		t.Errorf("%d exports for the shipped script's saveenvs", saves)
	}
	if !strings.Contains(s, "setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1") {
		t.Error("the shipped logic is not in the board script")
	}
	if _, err := BoardScript("echo no save\n# saveenv in a comment\n"); err == nil {
		t.Error("a script without saveenv was adapted")
	}
}

var (
	abOnce  sync.Once
	abBoard *ABBoard
	abErr   error
)

// needABBoard returns the A/B board shared by the tests (its boot
// partition and init built once; each test copies the disk), or skips
// without qemu-system-aarch64, U-Boot for qemu arm64, mkimage or the
// kernel, unless BOOTORBIT_REQUIRE_BOOTLOADERS=1.
func needABBoard(t *testing.T, name string) *ABBoard {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		testtool.Missing(t, testtool.RequireBootloaders, "qemu-system-aarch64 not installed (Debian qemu-system-arm)")
	}
	uboot := os.Getenv(UBootEnvVar)
	if uboot == "" {
		uboot = DefaultUBoot
	}
	if _, err := os.Stat(uboot); err != nil {
		testtool.Missing(t, testtool.RequireBootloaders, "U-Boot for qemu arm64 not found (Debian u-boot-qemu): %v", err)
	}
	for _, tool := range []string{"mkimage", "fw_printenv", "mkfs." + DiskFS, "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			testtool.Missing(t, testtool.RequireBootloaders, "%s not installed: %v", tool, err)
		}
	}
	dir := os.Getenv(KernelDirEnv)
	if dir == "" {
		dir = defaultKernelDir
	}
	k, err := FindKernel(dir)
	if err != nil {
		testtool.Missing(t, testtool.RequireBootloaders, "%v (or set %s)", err, KernelDirEnv)
	}
	abOnce.Do(func() {
		work, err := os.MkdirTemp("", "bootorbit-ab-")
		if err != nil {
			abErr = err
			return
		}
		abDir = work
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		abBoard, abErr = NewABBoard(ctx, "qemu-system-aarch64", uboot, k, work, bootscripts.UBootScript)
	})
	if abErr != nil {
		t.Fatal(abErr)
	}
	b, err := abBoard.Copy(name + ".img")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(b.Disk) })
	return b
}

// armFrom sets up the environment as flightd leaves it after installing
// into slot: the running slot marked good, then slot armed.
func armFrom(t *testing.T, ab *ABBoard, running, slot string) {
	t.Helper()
	env, err := ab.Env()
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Save(watchdog.Vars{watchdog.VarBootOrder: running + " " + slot, watchdog.LeftVar("A"): "3", watchdog.LeftVar("B"): "3"}); err != nil {
		t.Fatal(err)
	}
	bc := &watchdog.BootControl{Env: env, Attempts: watchdog.DefaultAttempts}
	if err := bc.Arm(slot); err != nil {
		t.Fatal(err)
	}
}

type abRun struct {
	lines []Line
	start time.Time
}

func (r *abRun) console() string {
	var b strings.Builder
	for _, l := range r.lines {
		b.WriteString(l.Text + "\n")
	}
	return b.String()
}

func (r *abRun) events(ev string) []*Event {
	var out []*Event
	for _, l := range r.lines {
		if l.Event != nil && l.Event.Ev == ev {
			out = append(out, l.Event)
		}
	}
	return out
}

// power runs the board until the guest powers off, reports an error or
// panics, or cut(l) says to cut the power at line l.
func power(t *testing.T, ab *ABBoard, cut func(Line) bool) *abRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	m := ab.Machine()
	if cut != nil {
		m.CutOnStop = true
	}
	r := &abRun{start: time.Now()}
	lines, err := m.Run(ctx, func(l Line) bool {
		if strings.Contains(l.Text, "Kernel panic") || l.Event != nil && l.Event.Ev == "error" {
			return true
		}
		return cut != nil && cut(l)
	})
	r.lines = lines
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console:\n%s", r.console())
		}
	})
	if err != nil {
		t.Fatalf("%v", err)
	}
	if e := r.events("error"); len(e) > 0 {
		t.Fatalf("guest error: %s", e[0].Err)
	}
	return r
}

func printenv(t *testing.T, ab *ABBoard) watchdog.Vars {
	t.Helper()
	v, err := ab.FWPrintenv(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func wantVars(t *testing.T, got watchdog.Vars, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s=%q, want %q (fw_printenv)", k, got[k], w)
		}
	}
}

func bootedSlots(console string) []string {
	var out []string
	for _, l := range strings.Split(console, "\n") {
		if _, rest, ok := strings.Cut(l, "bootorbit: booting slot "); ok && len(rest) > 0 {
			out = append(out, rest[:1])
		}
	}
	return out
}

// The nominal A/B switch on the real U-Boot: from A, slot B holds a new
// image and is armed (the environment as flightd leaves it). The power is
// cut during B's first boot, before its health check: U-Boot had already
// counted the attempt in the environment partition. At the next power-on
// U-Boot boots B again, B passes its health check and marks itself good.
func TestABBoardUpdate(t *testing.T) {
	ab := needABBoard(t, "update")
	ctx := context.Background()
	if err := ab.WriteSlot(ctx, "A", SlotImage{Version: "1", Behaviour: "good"}); err != nil {
		t.Fatal(err)
	}
	if err := ab.WriteSlot(ctx, "B", SlotImage{Version: "2", Behaviour: "good"}); err != nil {
		t.Fatal(err)
	}
	armFrom(t, ab, "A", "B")
	wantVars(t, printenv(t, ab), map[string]string{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "3", "BOOTORBIT_TRIAL": "B"})

	r := power(t, ab, func(l Line) bool { return l.Event != nil && l.Event.Ev == "ab-boot" })
	boot := r.events("ab-boot")
	if len(boot) != 1 || boot[0].Slot != "B" || boot[0].Version != "2" {
		t.Fatalf("first power-on booted %+v, want slot B version 2", boot)
	}
	t.Logf("power cut at B's first boot, %v after power-on", time.Since(r.start).Round(time.Millisecond))
	wantVars(t, printenv(t, ab), map[string]string{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "2", "BOOTORBIT_TRIAL": "B"})

	r = power(t, ab, nil)
	if got := bootedSlots(r.console()); strings.Join(got, "") != "B" {
		t.Fatalf("U-Boot booted %v, want B", got)
	}
	if g := r.events("ab-marked-good"); len(g) != 1 || g[0].Slot != "B" {
		t.Fatalf("marked good: %+v", g)
	}
	if d := r.events("done"); len(d) != 1 || d[0].Version != "2" {
		t.Fatalf("done: %+v", d)
	}
	t.Logf("second power-on to power-off: %v", time.Since(r.start).Round(time.Millisecond))
	v := printenv(t, ab)
	wantVars(t, v, map[string]string{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "BOOTORBIT_TRIAL": ""})
	// Ours and libubootenv's reading agree.
	env, _ := ab.Env()
	ours, err := env.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !ours.Equal(v) {
		t.Errorf("watchdog.UBootEnv read %v, fw_printenv %v", ours, v)
	}
}

// The watchdog rollback on the real U-Boot: slot B holds an image that
// hangs after taking the watchdog. The i6300esb resets the board each
// time, U-Boot counts each attempt in the environment partition and,
// after DefaultAttempts tries of B, boots A, which finds the failed trial
// and marks B bad.
func TestABBoardRollback(t *testing.T) {
	ab := needABBoard(t, "rollback")
	ctx := context.Background()
	if err := ab.WriteSlot(ctx, "A", SlotImage{Version: "1", Behaviour: "good"}); err != nil {
		t.Fatal(err)
	}
	if err := ab.WriteSlot(ctx, "B", SlotImage{Version: "2", Behaviour: "hang"}); err != nil {
		t.Fatal(err)
	}
	armFrom(t, ab, "A", "B")
	r := power(t, ab, nil)
	got := strings.Join(bootedSlots(r.console()), "")
	if want := strings.Repeat("B", watchdog.DefaultAttempts) + "A"; got != want {
		t.Fatalf("U-Boot booted %q, want %q", got, want)
	}
	if h := r.events("ab-hang"); len(h) != watchdog.DefaultAttempts {
		t.Fatalf("%d hangs, want %d", len(h), watchdog.DefaultAttempts)
	}
	// The boots after the first were watchdog resets.
	wd := r.events("ab-watchdog")
	for i, e := range wd[1:] {
		if e.Cause != string(watchdog.CauseWatchdog) {
			t.Errorf("boot %d: reset cause %q, want watchdog", i+2, e.Cause)
		}
	}
	b := r.events("ab-marked-bad")
	if len(b) != 1 || b[0].Slot != "B" {
		t.Fatalf("marked bad: %+v", b)
	}
	t.Logf("power-on to rollback done: %v (%d boots)", time.Since(r.start).Round(time.Millisecond), len(wd))
	wantVars(t, printenv(t, ab), map[string]string{"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0", "BOOTORBIT_TRIAL": ""})
}
