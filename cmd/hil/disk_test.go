package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/internal/testtool"
)

func TestDiskUsage(t *testing.T) {
	for _, args := range [][]string{
		{"disk", "serve", "--rate", "fast"},
		{"disk", "serve", "--size", "1000"},
		{"bench", "slot-write", "--emulate-disk", "100MB/s,soon"},
		{"bench", "slot-write", "--format-mkfs", "-E nodiscard"},
		{"bench", "slot-write", "--emulate-queue", "4"},
		{"bench", "slot-write", "--emulate-disk", "0", "--emulate-queue", "0"},
	} {
		var out, errb bytes.Buffer
		if code := commands.Execute(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage): %s", args, code, errb.String())
		}
	}
}

// TestSlotBenchEmulatedDisk runs the bench on a tiny root filesystem on
// the emulated disk: it must set the disk up, print every row and the
// device's counters, and tear it down.
func TestSlotBenchEmulatedDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the emulated disk needs root") // a privilege, not a tool
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testtool.Missing(t, testtool.RequireTools, "no /dev/fuse: %v", err)
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "mount", "umount"} {
		testtool.Need(t, tool)
	}
	for _, tc := range []struct {
		name string
		args []string
		rows []string
	}{
		{"emulated", []string{"--emulate-disk", "0"}, []string{"plain: new file", "dir slot: empty", "emulated disk (unlimited; 4 request(s) served at once)", "FSYNC="}},
		{"emulated, queue 1", []string{"--emulate-disk", "0", "--emulate-queue", "1"}, []string{"plain: new file", "dir slot: empty", "emulated disk (unlimited; 1 request(s) served at once)"}},
		{"emulated+formatted", []string{"--emulate-disk", "0", "--format-slot"},
			[]string{"plain: new file", "dir slot, formatted: mkfs", "formatted slot: mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0 on /dev/loop", "emulated disk (unlimited;",
				"device requests per measurement", "  dir slot, formatted ", "  plain new file "}},
		// The loop disk: an image file in --dir, removed afterwards.
		{"loop disk+formatted", []string{"--dir", t.TempDir(), "--format-slot", "--format-mkfs", "-E nodiscard"},
			[]string{"plain: new file", "dir slot, formatted: mkfs", "-F -E nodiscard on /dev/loop"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"bench", "slot-write", "--size", "1MiB", "--rounds", "1", "--drop-caches=false"}, tc.args...)
			if code := commands.Execute(context.Background(), args, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			for _, row := range tc.rows {
				if !strings.Contains(out.String(), row) {
					t.Errorf("output lacks %q:\n%s", row, out.String())
				}
			}
			if strings.Contains(out.String(), "teardown") {
				t.Errorf("teardown failed:\n%s", out.String())
			}
			if tc.args[0] == "--dir" {
				if left, _ := filepath.Glob(filepath.Join(tc.args[1], "*")); len(left) > 0 {
					t.Errorf("left behind in --dir: %v", left)
				}
			}
		})
	}
}
