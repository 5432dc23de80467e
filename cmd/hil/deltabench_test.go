package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/internal/testtool"

	"github.com/bootorbit/bootorbit/delta/ocitest"
)

// TestMain lets this test binary stand in for hil when bench delta
// re-executes itself for its child processes.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "bench" {
		os.Exit(commands.Execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestBenchDeltaCommand(t *testing.T) {
	testtool.Need(t, "zstd")
	rng := rand.New(rand.NewPCG(9, 9))
	dir := t.TempDir()
	old := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 2, Files: 20})
	ocitest.Build(t, dir, "old", old)
	upd, log := ocitest.Modify(rng, old, ocitest.ModifyOptions{Changes: []ocitest.Change{ocitest.Edit, ocitest.Move}})
	t.Log(log)
	ocitest.Build(t, dir, "new", upd)

	var out, errb bytes.Buffer
	code := commands.Execute(context.Background(), []string{"bench", "delta", "--layout", dir, "--from", "old", "--to", "new",
		"--tools", "full,zstd19"}, &out, &errb)
	t.Log("\n" + out.String())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, row := range []string{"full zstd -19", "zstd -19 --long=31 --patch-from", "ours (bootorbit bundle)"} {
		if !regexp.MustCompile(regexp.QuoteMeta(row) + `\s+[0-9.]+ kB .* ok\s*$`).MatchString(lineWith(out.String(), row)) {
			t.Errorf("no round-tripped row for %q", row)
		}
	}
	if !strings.Contains(out.String(), "ours / best tool") {
		t.Error("no comparison line")
	}

	if code := commands.Execute(context.Background(), []string{"bench", "delta", "--layout", dir, "--from", "old"}, &out, &errb); code != 2 {
		t.Errorf("missing --to: exit %d, want 2", code)
	}
	if code := commands.Execute(context.Background(), []string{"bench", "delta", "--layout", dir, "--from", "old", "--to", "new", "--tools", "rsync"}, &out, &errb); code != 2 {
		t.Errorf("unknown tool: exit %d, want 2", code)
	}
}

func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
