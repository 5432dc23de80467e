package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The runs themselves are tested in hil/vm (they need qemu and the
// kernel); here, the command's own checks.
func TestVMWatchdogUsage(t *testing.T) {
	for _, args := range [][]string{{"--timeout", "0"}, {"--timeout", "2047"}, {"--periods", "0"}, {"extra"}} {
		var out, errb bytes.Buffer
		if code := commands.Execute(context.Background(), append([]string{"vm", "watchdog"}, args...), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage); stderr %s", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	code := commands.Execute(context.Background(), []string{"vm", "watchdog", "--kernel-dir", t.TempDir()}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "vmlinuz") {
		t.Errorf("empty kernel dir: exit %d, stderr %q; want 1 and a message naming vmlinuz", code, errb.String())
	}
}
