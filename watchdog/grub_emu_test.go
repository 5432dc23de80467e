package watchdog

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/watchdog/bootscripts"
)

// The shipped GRUB snippet, run by a real GRUB (Debian's grub-emu) with its
// grubenv on an ext2 disk image, so that save_env really writes the block in
// place: its decision and the block it leaves must match BootloaderModel for
// every counter value flightd writes (0-9). Out of that range the snippet
// counts a slot as exhausted where U-Boot's setexpr would decrement hex;
// that documented difference is checked too.
//
// Needs grub-emu and mke2fs (e2fsprogs); skips without them unless
// BOOTORBIT_REQUIRE_BOOTLOADERS=1.

var ansi = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

func needGRUBEmu(t *testing.T) (grubEmu, mke2fs, modules string) {
	t.Helper()
	grubEmu, err := exec.LookPath("grub-emu")
	if err != nil {
		missingBootloader(t, "grub-emu not installed (Debian grub-emu)")
	}
	mke2fs, err = exec.LookPath("mke2fs")
	if err != nil {
		missingBootloader(t, "mke2fs not installed (Debian e2fsprogs)")
	}
	modules = "/usr/lib/grub/x86_64-emu" // Debian grub-emu
	if _, err := os.Stat(filepath.Join(modules, "loadenv.mod")); err != nil {
		missingBootloader(t, "grub-emu modules not found: %v", err)
	}
	return grubEmu, mke2fs, modules
}

func TestGRUBSnippetInGRUBEmuMatchesModel(t *testing.T) {
	grubEmu, mke2fs, modules := needGRUBEmu(t)
	scenarios := map[string]struct {
		vars Vars
		// exhausted: the snippet treats this value as 0 where the model
		// (U-Boot) decrements it.
		outOfRange bool
		// saveFails puts the grubenv on the host filesystem, where
		// save_env refuses to write (it needs a disk block list).
		saveFails bool
	}{
		"blank":                   {Vars{}, false, false},
		"trial last attempt":      {Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "1", "BOOTORBIT_TRIAL": "B"}, false, false},
		"trial first":             {Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "9"}, false, false},
		"fallback":                {Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}, false, false},
		"nothing left":            {Vars{"BOOT_ORDER": "A", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "0"}, false, false},
		"unknown slot":            {Vars{"BOOT_ORDER": "C B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "5"}, false, false},
		"out of range":            {Vars{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "10", "BOOT_B_LEFT": "2"}, true, false},
		"save fails, trial B":     {Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2", "BOOTORBIT_TRIAL": "B"}, false, true},
		"save fails, good slot B": {Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2"}, false, true},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			fsDir := filepath.Join(dir, "fs")
			os.Mkdir(fsDir, 0o755)
			blk, _ := NewGRUBBlock(GRUBEnvSize)
			if err := blk.Replace(sc.vars); err != nil {
				t.Fatal(err)
			}
			raw, _ := blk.Bytes()
			os.WriteFile(filepath.Join(fsDir, "grubenv"), raw, 0o644)
			disk := filepath.Join(dir, "disk.img")
			if out, err := exec.Command(mke2fs, "-q", "-F", "-t", "ext2", "-b", "1024", "-d", fsDir, disk, "1024").CombinedOutput(); err != nil {
				t.Fatalf("mke2fs: %v\n%s", err, out)
			}
			envDir := "(hd0)"
			if sc.saveFails {
				envDir = "(host)" + fsDir
			}
			prefix := filepath.Join(dir, "prefix")
			os.Mkdir(prefix, 0o755)
			os.Symlink(modules, filepath.Join(prefix, "x86_64-emu"))
			// Load what the snippet uses while the modules are reachable,
			// then point $prefix at the disk so load_env/save_env use its
			// grubenv, as they use /boot/grub/grubenv on a board.
			cfg := "insmod ext2\ninsmod loadenv\ninsmod test\ninsmod echo\ninsmod reboot\ninsmod halt\ninsmod linux\nset prefix=" + envDir + "\n" +
				bootscripts.GRUBSnippet + "\nhalt\n"
			os.WriteFile(filepath.Join(prefix, "grub.cfg"), []byte(cfg), 0o644)
			dm := filepath.Join(dir, "device.map")
			os.WriteFile(dm, []byte("(hd0) "+disk+"\n"), 0o644)

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, grubEmu, "-d", prefix, "-m", dm)
			cmd.Stdin = bytes.NewReader(nil)
			out, _ := cmd.CombinedOutput() // grub-emu's exit status after halt/reboot is not meaningful
			console := ansi.ReplaceAllString(string(out), "")
			m := scriptLine.FindStringSubmatch(console)
			if m == nil {
				t.Fatalf("the snippet printed no decision:\n%s", console)
			}
			img, err := os.ReadFile(disk)
			if sc.saveFails {
				img, err = os.ReadFile(filepath.Join(fsDir, "grubenv"))
			}
			if err != nil {
				t.Fatal(err)
			}
			at := bytes.Index(img, []byte(grubHeader))
			if at < 0 || at+GRUBEnvSize > len(img) {
				t.Fatal("grubenv not found on the disk image")
			}
			saved, err := ParseGRUBEnv(img[at : at+GRUBEnvSize])
			if err != nil {
				t.Fatalf("the block GRUB saved: %v", err)
			}
			sv := saved.Vars()

			model := &MemEnv{Vars: sc.vars.Clone()}
			var d BootDecision
			if sc.saveFails {
				ro := &readOnlyEnv{MemEnv: MemEnv{Vars: sc.vars.Clone()}}
				d, err = (BootloaderModel{Attempts: DefaultAttempts}).Boot(ro)
				if err == nil && (!d.SaveFailed || !sv.Equal(sc.vars)) {
					t.Fatalf("save_env was meant to fail: model %+v, block now %v", d, sv)
				}
				// What GRUB printed is what it tried to save.
				model.Vars, sv = ro.attempted, ro.attempted
			} else {
				d, err = (BootloaderModel{Attempts: DefaultAttempts}).Boot(model)
			}
			if err != nil {
				t.Fatal(err)
			}
			if sc.outOfRange {
				// A_LEFT=10 is skipped as exhausted; B boots.
				if m[2] != "B" || sv[LeftVar("A")] != "10" || sv[LeftVar("B")] != "1" {
					t.Fatalf("out-of-range counter: GRUB %q, saved %v", m[0], sv)
				}
				return
			}
			if (m[1] == "reset") != d.Reset || m[2] != d.Slot {
				t.Fatalf("GRUB: %q; model: %+v", m[0], d)
			}
			for _, k := range []string{VarBootOrder, LeftVar("A"), LeftVar("B")} {
				if sv[k] != model.Vars[k] {
					t.Fatalf("GRUB saved %s=%q, model %q\n%s", k, sv[k], model.Vars[k], console)
				}
			}
			if got := [3]string{m[3], m[4], m[5]}; got != [3]string{model.Vars[VarBootOrder], model.Vars[LeftVar("A")], model.Vars[LeftVar("B")]} {
				t.Fatalf("GRUB printed %q", got)
			}
			// Variables the snippet does not own survive its save_env.
			if sc.vars[VarTrial] != "" && sv[VarTrial] != sc.vars[VarTrial] {
				t.Fatalf("save_env lost %s", VarTrial)
			}
		})
	}
}
