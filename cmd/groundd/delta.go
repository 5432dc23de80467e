package main

import (
	"fmt"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", func() *cobra.Command {
		var f deltaFlags
		c := &cobra.Command{
			Use:   "delta",
			Short: "compute the delta bundle that turns image --from (what the vehicle holds) into image --to",
			Long: `Delta computes the bundle that rebuilds image --to on a vehicle that holds
image --from: per layer, nothing (the vehicle has it), a zstd delta against
the files and ranges of the old image, or the full layer. Images are OCI
layouts, named oci:PATH:TAG or oci:PATH@sha256:DIGEST. It prints each layer's
decision and size, and the bundle's size against the layers'.`,
			Example: `  groundd delta --from oci:images:os-1 --to oci:images:os-2 --out os-2.bundle
  groundd delta --from oci:images:os-1 --to oci:images@sha256:4f2c... --out os-2.bundle --part-size 16KiB --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runDelta(c, &f) },
		}
		fs := c.Flags()
		fs.StringVar(&f.from, "from", "", "the image the vehicle holds, `oci:PATH:TAG` or oci:PATH@sha256:...")
		fs.StringVar(&f.to, "to", "", "the image to send, `oci:PATH:TAG` or oci:PATH@sha256:...")
		fs.StringVar(&f.out, "out", "", "the bundle `FILE` to write")
		cli.SizeVar(fs, &f.partSize, "part-size", delta.DefaultPartSize, "output bytes per part, at most (bytes or with a unit: 16KiB)")
		fs.StringVar(&f.tmp, "tmp", "", "`DIR` for temporary files, here spooled layers (default: system temp)")
		cli.VerboseFlag(c, &f.verbose)
		cli.JSONFlag(c, &f.json)
		return c
	})
}

type deltaFlags struct {
	from, to, out, tmp string
	partSize           int64
	verbose, json      bool
}

func runDelta(c *cobra.Command, f *deltaFlags) error {
	ctx, stdout, stderr := c.Context(), c.OutOrStdout(), c.ErrOrStderr()
	if f.from == "" || f.to == "" || f.out == "" {
		return cli.Usagef("--from, --to and --out are required")
	}
	if f.partSize <= 0 {
		return cli.Usagef("--part-size must be more than 0")
	}
	fromRef, err := oci.ParseRef(f.from)
	if err != nil {
		return cli.Usagef("--from: %v", err)
	}
	toRef, err := oci.ParseRef(f.to)
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
	opts := delta.Options{TempDir: f.tmp, PartSize: f.partSize, Tag: toRef.Tag}
	if f.verbose {
		opts.Log = cli.Logger(stderr, true)
	}
	start := time.Now()
	st, err := delta.ComputeFile(ctx, fromIm, toIm, f.out, opts)
	if err != nil {
		return err
	}
	var total int64
	for _, l := range st.Layers {
		total += l.Size
	}
	if f.json {
		return cli.WriteJSON(stdout, deltaDoc{Layers: st.Layers, LayerBytes: total, Bundle: f.out, BundleSize: st.BundleSize, Seconds: time.Since(start).Seconds()})
	}
	for i, l := range st.Layers {
		switch l.Decision {
		case delta.Reuse:
			fmt.Fprintf(stdout, "layer %d %s  %s  %12d bytes -> 0 (the vehicle holds it)\n", i, l.DiffID, l.Decision, l.Size)
		default:
			fmt.Fprintf(stdout, "layer %d %s  %s  %12d bytes -> %d (%.2f%%, %d parts; files copied %d, diffed %d, literal %d)\n",
				i, l.DiffID, l.Decision, l.Size, l.Payload, pct(l.Payload, l.Size), l.Parts, l.Copied, l.Diffed, l.Literal)
		}
	}
	fmt.Fprintf(stdout, "total: %d bytes of layers -> bundle %s of %d bytes (%.2f%%) in %.1fs\n",
		total, f.out, st.BundleSize, pct(st.BundleSize, total), time.Since(start).Seconds())
	return nil
}

// deltaDoc is the --json document of groundd delta.
type deltaDoc struct {
	Layers     []delta.LayerStats `json:"layers"`
	LayerBytes int64              `json:"layer_bytes"`
	Bundle     string             `json:"bundle"`
	BundleSize int64              `json:"bundle_size"`
	Seconds    float64            `json:"seconds"`
}

func pct(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}
