package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/hil/deltabench"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

// benchGroup declares the bench group; slotbench.go adds to it too.
func benchGroup() {
	commands.Group("bench", "measure our delta and slot writes beside the reference tools, side by side in one run",
		`The bench commands measure one thing of ours and its reference in the same
run, interleaved where the disk is shared, and print the ratios: delta
bundles against zstd --patch-from, xdelta3 and bsdiff; slot writes against a
plain sequential write of the same bytes.`)
}

func init() {
	benchGroup()
	commands.Add("bench", func() *cobra.Command {
		var f benchDeltaFlags
		c := &cobra.Command{
			Use:   "delta",
			Short: "measure our delta bundle beside zstd --patch-from, xdelta3 and bsdiff on one image pair",
			Long: `Delta measures, on one image pair of an OCI layout, the full zstd -19 of each
changed layer, zstd --patch-from at -19 and --ultra -22, xdelta3 -9 and
bsdiff against the old image's layer tars, and our bundle. Every encoder and
every apply runs as a child process, so that its wall time and peak RSS are
measured the same way, and every output is applied and checked against the
target. hil/deltabench/mkimages.sh builds realistic pairs.`,
			Example: `  hil bench delta --layout testdata-gen/oci --from old --to new
  hil bench delta --layout testdata-gen/oci --from old --to new --tools zstd19,xdelta3 -v
  hil bench delta --layout testdata-gen/oci --from old --to @sha256:4f2c... --tools "" --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runBenchDelta(c, &f) },
		}
		fs := c.Flags()
		fs.StringVar(&f.layout, "layout", "", "OCI image layout `DIR` holding both images")
		fs.StringVar(&f.from, "from", "", "`TAG` (or @sha256:... digest) of the old image")
		fs.StringVar(&f.to, "to", "", "`TAG` (or @sha256:... digest) of the new image")
		fs.StringVar(&f.tools, "tools", strings.Join(deltabench.ToolNames(), ","), "reference tools to run, comma-separated")
		fs.StringVar(&f.work, "workdir", "", "keep layer tars and outputs in this `DIR` (default: a temporary directory, removed)")
		fs.StringVar(&f.tmp, "tmp", "", "`DIR` for our row's temporary files (default: --workdir, else system temp)")
		fs.BoolVar(&f.noOurs, "no-ours", false, "leave out our bundle's row")
		cli.DurationVar(fs, &f.timeout, "timeout", time.Hour, "limit for each child process")
		cli.VerboseFlag(c, &f.verbose)
		cli.JSONFlag(c, &f.json)
		return c
	})
	// The two halves of our row, run as child processes of bench delta so
	// that their time and peak RSS are measured like the other tools'.
	commands.Add("bench", func() *cobra.Command {
		var from, to, out, tmp string
		c := &cobra.Command{
			Use:    "delta-compute",
			Short:  "(child of bench delta) compute a delta bundle",
			Long:   "Delta-compute is our row's encoder, run by bench delta as a child process.",
			Hidden: true,
			Args:   cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				return runBenchDeltaCompute(c, from, to, out, tmp)
			},
		}
		fs := c.Flags()
		fs.StringVar(&from, "from", "", "old image `REF`")
		fs.StringVar(&to, "to", "", "new image `REF`")
		fs.StringVar(&out, "out", "", "bundle `FILE` to write")
		fs.StringVar(&tmp, "tmp", "", "`DIR` for temporary files")
		return c
	})
	commands.Add("bench", func() *cobra.Command {
		return &cobra.Command{
			Use:                "rss-exec --rss-out FILE -- COMMAND [ARGS...]",
			Short:              "(child of bench delta) run COMMAND and write its peak RSS to FILE",
			Long:               "Rss-exec runs COMMAND, passes its exit status on and writes its peak RSS (rusage Maxrss) to FILE; bench delta runs every tool through it.",
			Hidden:             true,
			DisableFlagParsing: true, // everything after -- is COMMAND's
			RunE: func(c *cobra.Command, args []string) error {
				if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
					return c.Help()
				}
				if code := deltabench.ShimMain(args, c.ErrOrStderr()); code != 0 {
					os.Exit(code)
				}
				return nil
			},
		}
	})
	commands.Add("bench", func() *cobra.Command {
		var bundle, base, out, tag, tmp string
		c := &cobra.Command{
			Use:    "delta-apply",
			Short:  "(child of bench delta) apply a delta bundle",
			Long:   "Delta-apply is our row's decoder, run by bench delta as a child process.",
			Hidden: true,
			Args:   cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				return runBenchDeltaApply(c, bundle, base, out, tag, tmp)
			},
		}
		fs := c.Flags()
		fs.StringVar(&bundle, "bundle", "", "bundle `FILE`")
		fs.StringVar(&base, "base", "", "base image `REF`")
		fs.StringVar(&out, "out", "", "output layout `DIR`")
		fs.StringVar(&tag, "tag", "rebuilt", "tag of the rebuilt image")
		fs.StringVar(&tmp, "tmp", "", "`DIR` for temporary files")
		return c
	})
}

type benchDeltaFlags struct {
	layout, from, to, tools, work, tmp string
	noOurs, verbose, json              bool
	timeout                            time.Duration
}

func runBenchDelta(c *cobra.Command, f *benchDeltaFlags) error {
	ctx, stdout, stderr := c.Context(), c.OutOrStdout(), c.ErrOrStderr()
	if f.layout == "" || f.from == "" || f.to == "" {
		return cli.Usagef("--layout, --from and --to are required")
	}
	fromRef, err := refIn(f.layout, f.from)
	if err != nil {
		return cli.Usagef("--from: %v", err)
	}
	toRef, err := refIn(f.layout, f.to)
	if err != nil {
		return cli.Usagef("--to: %v", err)
	}
	cfg := deltabench.Config{From: fromRef, To: toRef, WorkDir: f.work, Timeout: f.timeout}
	if f.verbose {
		cfg.Progress = stderr
	}
	known := map[string]bool{}
	for _, n := range deltabench.ToolNames() {
		known[n] = true
	}
	cfg.Tools = []string{}
	for _, n := range strings.Split(f.tools, ",") {
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
	if !f.noOurs {
		tmp := f.tmp
		if tmp == "" {
			tmp = f.work
		}
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
	if f.json {
		return cli.WriteJSON(stdout, benchDeltaDoc(res))
	}
	res.WriteTable(stdout)
	return nil
}

// benchDeltaRow is one row of `bench delta --json`; times in seconds,
// sizes and RSS in bytes.
type benchDeltaRow struct {
	Name       string  `json:"name"`
	Label      string  `json:"label"`
	Skipped    string  `json:"skipped,omitempty"`
	Error      string  `json:"error,omitempty"`
	Size       int64   `json:"size"`
	Compute    float64 `json:"compute_s"`
	ComputeCPU float64 `json:"compute_cpu_s"`
	ComputeRSS int64   `json:"compute_rss"`
	Apply      float64 `json:"apply_s"`
	ApplyRSS   int64   `json:"apply_rss"`
	RoundTrip  bool    `json:"round_trip"`
}

func benchDeltaDoc(res *deltabench.Result) any {
	rows := []benchDeltaRow{}
	for _, r := range res.Rows {
		row := benchDeltaRow{Name: r.Name, Label: r.Label, Skipped: r.Skipped, Size: r.Size, Compute: r.Compute.Seconds(),
			ComputeCPU: r.ComputeCPU.Seconds(), ComputeRSS: r.ComputeRSS, Apply: r.Apply.Seconds(), ApplyRSS: r.ApplyRSS, RoundTrip: r.RoundTrip}
		if r.Err != nil {
			row.Error = r.Err.Error()
		}
		rows = append(rows, row)
	}
	return struct {
		From     string          `json:"from"`
		To       string          `json:"to"`
		Layers   int             `json:"layers"`
		Changed  []int           `json:"changed"`
		NewBytes int64           `json:"new_bytes"`
		OldBytes int64           `json:"old_bytes"`
		Rows     []benchDeltaRow `json:"rows"`
		OursRow  int             `json:"ours_row"`
	}{res.From.String(), res.To.String(), res.Layers, res.Changed, res.NewBytes, res.OldBytes, rows, res.OursRow}
}

// refIn makes a reference to tag (or @digest) in layout.
func refIn(layout, s string) (oci.Ref, error) {
	if strings.HasPrefix(s, "@") {
		return oci.ParseRef("oci:" + layout + s)
	}
	return oci.ParseRef("oci:" + layout + ":" + s)
}

func runBenchDeltaCompute(c *cobra.Command, from, to, out, tmp string) error {
	ctx, stdout := c.Context(), c.OutOrStdout()
	if from == "" || to == "" || out == "" {
		return cli.Usagef("--from, --to and --out are required")
	}
	fr, err := oci.ParseRef(from)
	if err != nil {
		return cli.Usagef("--from: %v", err)
	}
	tr, err := oci.ParseRef(to)
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
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	st, err := delta.Compute(ctx, fromIm, toIm, f, delta.Options{TempDir: tmp})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return err
	}
	fmt.Fprintf(stdout, "bundle %d bytes\n", st.BundleSize)
	return nil
}

func runBenchDeltaApply(c *cobra.Command, bundle, base, out, tag, tmp string) error {
	ctx, stdout := c.Context(), c.OutOrStdout()
	if bundle == "" || base == "" || out == "" {
		return cli.Usagef("--bundle, --base and --out are required")
	}
	br, err := oci.ParseRef(base)
	if err != nil {
		return cli.Usagef("--base: %v", err)
	}
	baseIm, err := oci.Open(br)
	if err != nil {
		return err
	}
	res, err := delta.ApplyImage(ctx, bundle, baseIm, out, tag, delta.ApplyOptions{TempDir: tmp})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rebuilt %d layers, manifest %s\n", len(res.Layers), res.Manifest)
	return nil
}
