package deltabench_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/internal/testtool"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/hil/deltabench"
)

func TestMain(m *testing.M) {
	if os.Getenv("BOOTORBIT_BENCH_SHIM") == "1" && len(os.Args) > 1 && os.Args[1] == "--rss-out" {
		os.Exit(deltabench.ShimMain(os.Args[1:], os.Stderr))
	}
	if op := os.Getenv("BOOTORBIT_BENCH_OURS"); op != "" {
		if err := oursChild(op, os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// oursChild is our row's child process: this test binary computing or
// applying a bundle with package delta, as `hil bench delta-*` does.
func oursChild(op string, a []string) error {
	ctx := context.Background()
	switch op {
	case "compute": // FROM TO BUNDLE
		from, err := oci.ParseRef(a[0])
		if err != nil {
			return err
		}
		to, err := oci.ParseRef(a[1])
		if err != nil {
			return err
		}
		fi, err := oci.Open(from)
		if err != nil {
			return err
		}
		ti, err := oci.Open(to)
		if err != nil {
			return err
		}
		f, err := os.Create(a[2])
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = delta.Compute(ctx, fi, ti, f, delta.Options{})
		return err
	case "apply": // BUNDLE BASE OUTDIR TAG
		base, err := oci.ParseRef(a[1])
		if err != nil {
			return err
		}
		bi, err := oci.Open(base)
		if err != nil {
			return err
		}
		_, err = delta.ApplyImage(ctx, a[0], bi, a[2], a[3], delta.ApplyOptions{})
		return err
	}
	return fmt.Errorf("unknown op %q", op)
}

func ours() *deltabench.Ours {
	cmd := func(op string, args ...string) *exec.Cmd {
		c := exec.Command(os.Args[0], args...)
		c.Env = append(os.Environ(), "BOOTORBIT_BENCH_OURS="+op)
		return c
	}
	return &deltabench.Ours{
		ComputeCmd: func(from, to oci.Ref, bundle string) *exec.Cmd {
			return cmd("compute", from.String(), to.String(), bundle)
		},
		ApplyCmd: func(bundle string, base oci.Ref, outDir, tag string) *exec.Cmd {
			return cmd("apply", bundle, base.String(), outDir, tag)
		},
	}
}

// shim makes this test binary the RSS shim of cfg.
func shim(t *testing.T) []string {
	t.Setenv("BOOTORBIT_BENCH_SHIM", "1")
	return []string{os.Args[0]}
}

func requireTools(t *testing.T) {
	t.Helper()
	for _, tool := range deltabench.Tools {
		for _, b := range tool.Bins {
			testtool.Need(t, b)
		}
	}
}

// pair builds a small layered pair: from (two layers) and to (same layers
// plus an upgrade layer), and a single-layer pair in the same layout.
func pair(t *testing.T) string {
	rng := rand.New(rand.NewPCG(testrand.Seed(t), 3))
	dir := t.TempDir()
	base := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 2, Files: 30})
	ocitest.Build(t, dir, "old", base)
	up, _ := ocitest.Modify(rng, base, ocitest.ModifyOptions{Changes: []ocitest.Change{ocitest.Upgrade}})
	ocitest.Build(t, dir, "new-layered", up)
	one := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 1, Files: 40})
	ocitest.Build(t, dir, "one", one)
	ed, _ := ocitest.Modify(rng, one, ocitest.ModifyOptions{Changes: []ocitest.Change{ocitest.Edit, ocitest.Add}})
	ocitest.Build(t, dir, "one-new", ed)
	return dir
}

func TestToolsRoundTrip(t *testing.T) {
	requireTools(t)
	dir := pair(t)
	// The layered pair covers both the old reference made of several layer
	// tars and a target layer the old image already has.
	for _, c := range []struct{ from, to string }{{"old", "new-layered"}} {
		res, err := deltabench.Run(context.Background(), deltabench.Config{
			From: oci.Ref{Layout: dir, Tag: c.from}, To: oci.Ref{Layout: dir, Tag: c.to},
			WorkDir: filepath.Join(t.TempDir(), "w"), Shim: shim(t), Ours: ours(),
		})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		res.WriteTable(&buf)
		t.Log("\n" + buf.String())
		if len(res.Changed) != 1 || len(res.Rows) != len(deltabench.Tools)+1 || res.OursRow != len(deltabench.Tools) {
			t.Fatalf("changed %v, rows %d", res.Changed, len(res.Rows))
		}
		for _, r := range res.Rows {
			if r.Err != nil || r.Skipped != "" || !r.RoundTrip || r.Size <= 0 || r.ApplyRSS <= 0 {
				t.Fatalf("%s: %+v", r.Label, r)
			}
		}
		if best := res.Best(); best < 0 || res.Rows[best].Name == "full" {
			t.Fatalf("best %d", best)
		}
		if !strings.Contains(buf.String(), "ours / best tool") {
			t.Fatal("table does not compare ours with the best tool")
		}
	}
}

func TestSkippedAndFailedRows(t *testing.T) {
	dir := pair(t)
	saved := deltabench.Tools
	defer func() { deltabench.Tools = saved }()
	deltabench.Tools = []deltabench.Tool{
		{Name: "ghost", Label: "ghost", Bins: []string{"no-such-tool-bootorbit"}},
		{Name: "liar", Label: "liar", Bins: []string{"cp"},
			// "encodes" by copying old and "decodes" by copying old: wrong output.
			Encode: func(old, _, o string) []string { return []string{"cp", old, o} },
			Decode: func(old, _, o string) []string { return []string{"cp", old, o} }},
		{Name: "broken", Label: "broken", Bins: []string{"false"},
			Encode: func(_, _, _ string) []string { return []string{"false"} },
			Decode: func(_, _, _ string) []string { return []string{"false"} }},
	}
	res, err := deltabench.Run(context.Background(), deltabench.Config{
		From: oci.Ref{Layout: dir, Tag: "one"}, To: oci.Ref{Layout: dir, Tag: "one-new"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	res.WriteTable(&buf)
	out := buf.String()
	t.Log("\n" + out)
	if !strings.Contains(out, "skipped: no-such-tool-bootorbit not installed") ||
		!strings.Contains(out, "MISMATCH") || !strings.Contains(out, "failed:") {
		t.Fatal("table does not report the skipped, mismatched and failed tools")
	}
	if !strings.Contains(out, "ours: not measured") {
		t.Fatal("table without ours should say so")
	}
	if res.Best() != -1 {
		t.Fatal("a tool that did not round-trip counted as best")
	}
}

var ballast []byte

// TestShimRSS shows why the shim exists: a child started directly reports
// at least this process's peak RSS; through the shim it reports its own.
func TestShimRSS(t *testing.T) {
	ballast = make([]byte, 96<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	dir := pair(t)
	saved := deltabench.Tools
	defer func() { deltabench.Tools = saved }()
	deltabench.Tools = []deltabench.Tool{{Name: "cp", Label: "cp", Bins: []string{"cp"},
		Encode: func(_, n, o string) []string { return []string{"cp", n, o} },
		Decode: func(_, p, o string) []string { return []string{"cp", p, o} }}}
	cfg := deltabench.Config{From: oci.Ref{Layout: dir, Tag: "one"}, To: oci.Ref{Layout: dir, Tag: "one-new"}}
	direct, err := deltabench.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Shim = shim(t)
	shimmed, err := deltabench.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	d, s := direct.Rows[0].ApplyRSS, shimmed.Rows[0].ApplyRSS
	t.Logf("cp peak RSS: direct %s, through the shim %s", deltabench.MiB(d), deltabench.MiB(s))
	if !shimmed.Rows[0].RoundTrip || d < 96<<20 || s >= 32<<20 {
		t.Fatalf("direct %d, shim %d: want direct >= 96 MiB (the parent's peak) and shim < 32 MiB", d, s)
	}
	ballast = nil
}
