package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The scenarios run in hil/vm; here, the command's scenario list: every
// scenario name is taken (the run then stops at the empty kernel
// directory, before any board is built), an unknown one is a usage error
// naming them.
func TestVMABScenarios(t *testing.T) {
	for _, s := range []string{"update", "rollback", "flightd-boot", "flightd-update", "flightd-rollback"} {
		var out, errb bytes.Buffer
		code := commands.Execute(context.Background(), []string{"vm", "ab", "--scenario", s, "--kernel-dir", t.TempDir()}, &out, &errb)
		if code != 1 || !strings.Contains(errb.String(), "vmlinuz") {
			t.Errorf("--scenario %s: exit %d, stderr %q; want 1 and a message naming vmlinuz", s, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := commands.Execute(context.Background(), []string{"vm", "ab", "--scenario", "nope"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "flightd-rollback") {
		t.Errorf("--scenario nope: exit %d, stderr %q; want 2 and the list of scenarios", code, errb.String())
	}
}
