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

// checkReport fails the test on any problem, with the console.
func checkReport(t *testing.T, r *ABReport, err error) {
	t.Helper()
	if r != nil {
		var b strings.Builder
		r.WriteText(&b)
		t.Log("\n" + b.String())
	}
	if err == nil && r.OK() {
		return
	}
	if r != nil {
		var c strings.Builder
		for _, l := range r.Console {
			c.WriteString(l.Text + "\n")
		}
		t.Logf("console:\n%s", c.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Fatalf("problems: %q", r.Problems)
}

// The nominal A/B switch on the real U-Boot, with a power cut during the
// trial boot (RunABUpdate).
func TestABBoardUpdate(t *testing.T) {
	ab := needABBoard(t, "update")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r, err := ab.RunABUpdate(ctx)
	checkReport(t, r, err)
	if strings.Join(r.Booted, ",") != "B,B" {
		t.Fatalf("booted %v", r.Booted)
	}
}

// The watchdog rollback on the real U-Boot (RunABRollback).
func TestABBoardRollback(t *testing.T) {
	ab := needABBoard(t, "rollback")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r, err := ab.RunABRollback(ctx)
	checkReport(t, r, err)
	if r.Booted[0] != strings.Repeat("B", watchdog.DefaultAttempts)+"A" {
		t.Fatalf("booted %v", r.Booted)
	}
}
