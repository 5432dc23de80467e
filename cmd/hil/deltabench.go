package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/hil/deltabench"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/internal/cli"
)

func init() {
	commands.Add(cli.Command{
		Name:    "bench delta",
		Args:    "--layout DIR --from TAG --to TAG [--tools " + strings.Join(deltabench.ToolNames(), ",") + "] [--workdir DIR] [--no-ours]",
		Summary: "measure our delta bundle beside zstd --patch-from, xdelta3 and bsdiff on one image pair",
		Run:     runBenchDelta,
	})
	// The two halves of our row, run as child processes of bench delta so
	// that their time and peak RSS are measured like the other tools'.
	commands.Add(cli.Command{
		Name:    "bench delta-compute",
		Args:    "--from REF --to REF --out FILE [--tmp DIR]",
		Summary: "(child of bench delta) compute a delta bundle",
		Run:     runBenchDeltaCompute,
	})
	commands.Add(cli.Command{
		Name:    "bench rss-exec",
		Args:    "--rss-out FILE -- COMMAND [ARGS...]",
		Summary: "(child of bench delta) run COMMAND and write its peak RSS to FILE",
		Run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if code := deltabench.ShimMain(args, stderr); code != 0 {
				os.Exit(code)
			}
			return nil
		},
	})
	commands.Add(cli.Command{
		Name:    "bench delta-apply",
		Args:    "--bundle FILE --base REF --out DIR --tag TAG [--tmp DIR]",
		Summary: "(child of bench delta) apply a delta bundle",
		Run:     runBenchDeltaApply,
	})
}

func runBenchDelta(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("bench delta", stderr)
	layout := fs.String("layout", "", "OCI image layout holding both images")
	from := fs.String("from", "", "tag (or @sha256:... digest) of the old image")
	to := fs.String("to", "", "tag (or @sha256:... digest) of the new image")
	tools := fs.String("tools", strings.Join(deltabench.ToolNames(), ","), "reference tools to run, comma-separated")
	work := fs.String("workdir", "", "keep layer tars and outputs here (default: a temporary directory, removed)")
	noOurs := fs.Bool("no-ours", false, "leave out our bundle's row")
	timeout := fs.Duration("timeout", time.Hour, "limit for each child process")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *layout == "" || *from == "" || *to == "" || fs.NArg() != 0 {
		return cli.Usagef("--layout, --from and --to are required")
	}
	fromRef, err := refIn(*layout, *from)
	if err != nil {
		return cli.Usagef("--from: %v", err)
	}
	toRef, err := refIn(*layout, *to)
	if err != nil {
		return cli.Usagef("--to: %v", err)
	}
	cfg := deltabench.Config{From: fromRef, To: toRef, WorkDir: *work, Timeout: *timeout, Progress: stderr}
	if *quiet {
		cfg.Progress = nil
	}
	known := map[string]bool{}
	for _, n := range deltabench.ToolNames() {
		known[n] = true
	}
	cfg.Tools = []string{}
	for _, n := range strings.Split(*tools, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if !known[n] {
			return cli.Usagef("--tools: unknown tool %q (have %s)", n, strings.Join(deltabench.ToolNames(), ", "))
		}
		cfg.Tools = append(cfg.Tools, n)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.Shim = []string{self, "bench", "rss-exec"}
	if !*noOurs {
		tmp := *work
		cfg.Ours = &deltabench.Ours{
			Label: "ours (bootorbit bundle)",
			ComputeCmd: func(from, to oci.Ref, bundle string) *exec.Cmd {
				a := []string{"bench", "delta-compute", "--from", from.String(), "--to", to.String(), "--out", bundle}
				if tmp != "" {
					a = append(a, "--tmp", tmp)
				}
				return exec.Command(self, a...)
			},
			ApplyCmd: func(bundle string, base oci.Ref, outDir, tag string) *exec.Cmd {
				a := []string{"bench", "delta-apply", "--bundle", bundle, "--base", base.String(), "--out", outDir, "--tag", tag}
				if tmp != "" {
					a = append(a, "--tmp", tmp)
				}
				return exec.Command(self, a...)
			},
		}
	}
	res, err := deltabench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	res.WriteTable(stdout)
	return nil
}

// refIn makes a reference to tag (or @digest) in layout.
func refIn(layout, s string) (oci.Ref, error) {
	if strings.HasPrefix(s, "@") {
		return oci.ParseRef("oci:" + layout + s)
	}
	return oci.ParseRef("oci:" + layout + ":" + s)
}

func runBenchDeltaCompute(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("bench delta-compute", stderr)
	from := fs.String("from", "", "old image reference")
	to := fs.String("to", "", "new image reference")
	out := fs.String("out", "", "bundle file to write")
	tmp := fs.String("tmp", "", "temporary directory")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *from == "" || *to == "" || *out == "" {
		return cli.Usagef("--from, --to and --out are required")
	}
	fr, err := oci.ParseRef(*from)
	if err != nil {
		return cli.Usagef("--from: %v", err)
	}
	tr, err := oci.ParseRef(*to)
	if err != nil {
		return cli.Usagef("--to: %v", err)
	}
	fromIm, err := oci.Open(fr)
	if err != nil {
		return err
	}
	toIm, err := oci.Open(tr)
	if err != nil {
		return err
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	st, err := delta.Compute(ctx, fromIm, toIm, f, delta.Options{TempDir: *tmp})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(*out)
		return err
	}
	fmt.Fprintf(stdout, "bundle %d bytes\n", st.BundleSize)
	return nil
}

func runBenchDeltaApply(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("bench delta-apply", stderr)
	bundle := fs.String("bundle", "", "bundle file")
	base := fs.String("base", "", "base image reference")
	out := fs.String("out", "", "output layout directory")
	tag := fs.String("tag", "rebuilt", "tag of the rebuilt image")
	tmp := fs.String("tmp", "", "temporary directory")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *bundle == "" || *base == "" || *out == "" {
		return cli.Usagef("--bundle, --base and --out are required")
	}
	br, err := oci.ParseRef(*base)
	if err != nil {
		return cli.Usagef("--base: %v", err)
	}
	baseIm, err := oci.Open(br)
	if err != nil {
		return err
	}
	res, err := delta.ApplyImage(ctx, *bundle, baseIm, *out, *tag, delta.ApplyOptions{TempDir: *tmp})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rebuilt %d layers, manifest %s\n", len(res.Layers), res.Manifest)
	return nil
}
