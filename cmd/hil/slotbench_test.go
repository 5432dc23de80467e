package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"200MiB": 200 << 20, "1GiB": 1 << 30, "5MB": 5e6, "4096": 4096, "2M": 2 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x", "-1MiB", "0", "99999999GiB"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestSlotBenchRuns runs the bench command on a tiny root filesystem: it
// must complete and print every row (the numbers themselves are not
// checked; they come from the bench, not from tests).
func TestSlotBenchRuns(t *testing.T) {
	var out, errb bytes.Buffer
	code := commands.Execute(context.Background(), []string{"bench", "slot-write", "--size", "1MiB", "--rounds", "1", "--drop-caches=false", "--dir", t.TempDir()}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, row := range []string{"plain: new file", "raw slot: write", "dir slot: empty", "% of"} {
		if !strings.Contains(out.String(), row) {
			t.Errorf("output lacks %q:\n%s", row, out.String())
		}
	}
	if code := commands.Execute(context.Background(), []string{"bench", "slot-write", "--sync", "nope"}, &out, &errb); code != 2 {
		t.Errorf("bad --sync: exit %d", code)
	}
}
