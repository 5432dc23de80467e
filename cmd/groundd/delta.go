package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/internal/cli"
)

func init() {
	commands.Add(cli.Command{
		Name:    "delta",
		Args:    "--from oci:PATH:TAG|oci:PATH@sha256:... --to oci:PATH:TAG|oci:PATH@sha256:... --out FILE [--part-size BYTES] [--tmp DIR] [-v]",
		Summary: "compute the delta bundle that turns image --from (what the vehicle holds) into image --to",
		Run:     runDelta,
	})
}

func runDelta(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("delta", stderr)
	from := fs.String("from", "", "the image the vehicle holds")
	to := fs.String("to", "", "the image to send")
	out := fs.String("out", "", "the bundle file to write")
	partSize := fs.Int64("part-size", delta.DefaultPartSize, "output bytes per part, at most")
	tmp := fs.String("tmp", "", "directory for spooled layers (default: system temp)")
	verbose := fs.Bool("v", false, "log progress to stderr")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *from == "" || *to == "" || *out == "" || fs.NArg() != 0 {
		return cli.Usagef("--from, --to and --out are required")
	}
	fromRef, err := oci.ParseRef(*from)
	if err != nil {
		return cli.Usagef("--from: %v", err)
	}
	toRef, err := oci.ParseRef(*to)
	if err != nil {
		return cli.Usagef("--to: %v", err)
	}
	fromIm, err := oci.Open(fromRef)
	if err != nil {
		return err
	}
	toIm, err := oci.Open(toRef)
	if err != nil {
		return err
	}
	opts := delta.Options{TempDir: *tmp, PartSize: *partSize, Tag: toRef.Tag}
	if *verbose {
		opts.Log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	start := time.Now()
	st, err := delta.ComputeFile(ctx, fromIm, toIm, *out, opts)
	if err != nil {
		return err
	}
	var total int64
	for i, l := range st.Layers {
		total += l.Size
		switch l.Decision {
		case delta.Reuse:
			fmt.Fprintf(stdout, "layer %d %s  %s  %12d bytes -> 0 (the vehicle holds it)\n", i, l.DiffID, l.Decision, l.Size)
		default:
			fmt.Fprintf(stdout, "layer %d %s  %s  %12d bytes -> %d (%.2f%%, %d parts; files copied %d, diffed %d, literal %d)\n",
				i, l.DiffID, l.Decision, l.Size, l.Payload, pct(l.Payload, l.Size), l.Parts, l.Copied, l.Diffed, l.Literal)
		}
	}
	fmt.Fprintf(stdout, "total: %d bytes of layers -> bundle %s of %d bytes (%.2f%%) in %.1fs\n",
		total, *out, st.BundleSize, pct(st.BundleSize, total), time.Since(start).Seconds())
	return nil
}

func pct(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}
