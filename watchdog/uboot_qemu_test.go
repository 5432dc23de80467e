package watchdog

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/watchdog/bootscripts"
)

// The shipped boot script, run by a real U-Boot (Debian's u-boot-qemu
// build for QEMU's arm64 virt machine) against environments we write, must
// make the same decision and the same environment changes as
// BootloaderModel. The environment lives in the virt machine's second
// flash bank, where that U-Boot build keeps it (0x40000 bytes, one copy).
//
// This needs qemu-system-aarch64 (qemu-system-arm) and u-boot-qemu, which
// CI does not install yet: the test skips without them unless
// BOOTORBIT_REQUIRE_BOOTLOADERS=1. BOOTORBIT_UBOOT_QEMU_ARM64 overrides the path of
// the U-Boot binary.

const qemuEnvSize = 0x40000

func needQEMU(t *testing.T) (qemu, uboot string) {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		missingBootloader(t, "qemu-system-aarch64 not installed (Debian qemu-system-arm)")
	}
	uboot = os.Getenv("BOOTORBIT_UBOOT_QEMU_ARM64")
	if uboot == "" {
		uboot = "/usr/lib/u-boot/qemu_arm64/u-boot.bin" // Debian u-boot-qemu
	}
	if _, err := os.Stat(uboot); err != nil {
		missingBootloader(t, "U-Boot for qemu arm64 not found (Debian u-boot-qemu): %v", err)
	}
	return qemu, uboot
}

// saveFailedRE matches U-Boot's report of a failed saveenv to flash.
var saveFailedRE = regexp.MustCompile(`Saving Environment to [A-Za-z]+\.\.\.(?s:.*?)Failed \(`)

var scriptLine = regexp.MustCompile(`bootorbit: (booting slot (A|B)|reset) \(order ([^;]*); A left ([^,]*), B left ([^)]*)\)`)

func TestUBootScriptInQEMUMatchesModel(t *testing.T) {
	qemu, uboot := needQEMU(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "boot.cmd")
	os.WriteFile(src, []byte(bootscripts.UBootScript), 0o644)
	scr := filepath.Join(dir, "boot.scr")
	run(t, "mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-d", src, scr)

	scenarios := map[string]Vars{
		"blank":              {},
		"trial last attempt": {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "1", "BOOTORBIT_TRIAL": "B"},
		"trial A":            {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "3", "BOOTORBIT_TRIAL": "A"},
		"good slot":          {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2"},
		"fallback":           {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"},
		"nothing left":       {"BOOT_ORDER": "A", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "0"},
		"unknown slot":       {"BOOT_ORDER": "C B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "9"},
		"hex quirk":          {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "10", "BOOT_B_LEFT": "2"},
		"hex digit is zero":  {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "f", "BOOT_B_LEFT": "2"},
		// How hush splits BOOT_ORDER (hushFields): on spaces, not on a tab
		// or a carriage return. It splits on a newline too, but echo then
		// prints the order with a space, so that case is not compared here.
		"tab in order":             {"BOOT_ORDER": "B\tA", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "1"},
		"two spaces in order":      {"BOOT_ORDER": " B  A ", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "1"},
		"carriage return in order": {"BOOT_ORDER": "B\rA", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "2"},
		"blank order":              {"BOOT_ORDER": " ", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "2"},
	}
	for name, vars := range scenarios {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := vars.Clone()
			env["bootcmd"] = "source 0x40200000"
			env["bootdelay"] = "0"
			env["bootorbit_load_A"] = "echo BOOTORBIT_LOADED_A; poweroff"
			env["bootorbit_load_B"] = "echo BOOTORBIT_LOADED_B; poweroff"
			img, err := EncodeUBootEnv(env, qemuEnvSize, false, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			flash := filepath.Join(t.TempDir(), "flash1.img")
			if err := os.WriteFile(flash, img, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(flash, 64<<20); err != nil { // the virt machine's flash bank size
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, qemu, "-M", "virt", "-cpu", "cortex-a57", "-m", "256",
				"-nographic", "-no-reboot", "-nic", "none", "-bios", uboot,
				"-drive", "if=pflash,format=raw,index=1,file="+flash,
				"-device", "loader,file="+scr+",addr=0x40200000,force-raw=on")
			out, err := cmd.CombinedOutput()
			console := string(out)
			if err != nil {
				t.Fatalf("qemu: %v\n%s", err, console)
			}
			m := scriptLine.FindStringSubmatch(console)
			if m == nil {
				t.Fatalf("the script printed no decision:\n%s", console)
			}
			// QEMU's flash emulation rejects U-Boot's buffered write, so
			// saveenv fails there: the model then runs on an environment
			// whose Save fails too, which tests the script's failure path.
			saveFailed := saveFailedRE.MatchString(console)
			var model *MemEnv
			var d BootDecision
			if saveFailed {
				ro := &readOnlyEnv{MemEnv: MemEnv{Vars: env.Clone()}}
				d, err = (BootloaderModel{Attempts: DefaultAttempts}).Boot(ro)
				model = &MemEnv{Vars: ro.attempted}
			} else {
				model = &MemEnv{Vars: env.Clone()}
				d, err = (BootloaderModel{Attempts: DefaultAttempts}).Boot(model)
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("saveenv failed: %v; decision %+v", saveFailed, d)
			gotReset := m[1] == "reset"
			if gotReset != d.Reset || m[2] != d.Slot || saveFailed != d.SaveFailed {
				t.Fatalf("U-Boot: %q (saveenv failed: %v); model: %+v", m[0], saveFailed, d)
			}
			if trial := env[VarTrial]; saveFailed && !d.Reset && trial != "" && d.Slot != trial &&
				!strings.Contains(console, "not booting trial slot "+trial+" uncounted") {
				t.Fatalf("the script did not say why it skipped trial slot %s:\n%s", trial, console)
			}
			got := [3]string{m[3], m[4], m[5]}
			want := [3]string{model.Vars[VarBootOrder], model.Vars[LeftVar("A")], model.Vars[LeftVar("B")]}
			if got != want {
				t.Fatalf("U-Boot left order/A/B = %q, model %q\n%s", got, want, console)
			}
			// The counter is saved before the slot is loaded.
			save := strings.Index(console, "Saving Environment")
			if save < 0 || save > strings.Index(console, m[0]) {
				t.Fatalf("no saveenv before the decision:\n%s", console)
			}
			if !d.Reset && !strings.Contains(console, "BOOTORBIT_LOADED_"+d.Slot) {
				t.Fatalf("slot %s was not loaded:\n%s", d.Slot, console)
			}
		})
	}
}
