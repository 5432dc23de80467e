package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// The size parser's own assertions moved with it to internal/cli
// (TestParseSize); a size of 0 is the command's to refuse.
func TestSlotBenchSizeZero(t *testing.T) {
	var out, errb bytes.Buffer
	if code := commands.Execute(context.Background(), []string{"bench", "slot-write", "--size", "0"}, &out, &errb); code != 2 {
		t.Errorf("--size 0: exit %d, want 2: %s", code, errb.String())
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
	out.Reset()
	code = commands.Execute(context.Background(), []string{"bench", "slot-write", "--json", "--size", "1MiB", "--rounds", "1", "--drop-caches=false", "--dir", t.TempDir()}, &out, &errb)
	var res struct{ Raw, Dir []int64 }
	if code != 0 || json.Unmarshal(out.Bytes(), &res) != nil || len(res.Raw) != 1 || len(res.Dir) != 1 {
		t.Errorf("--json: exit %d: %s", code, out.String())
	}
	if code := commands.Execute(context.Background(), []string{"bench", "slot-write", "--sync", "nope"}, &out, &errb); code != 2 {
		t.Errorf("bad --sync: exit %d", code)
	}
}
