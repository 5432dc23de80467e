//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/internal/cli"
)

func init() {
	commands.Add(cli.Command{
		Name:    "delta apply",
		Args:    "--bundle FILE --base oci:PATH:TAG --out DIR [--tag TAG] [--tmp DIR] [-v]",
		Summary: "rebuild the image a delta bundle describes from the base image, as an OCI layout in DIR",
		Run:     runDeltaApply,
	})
}

func runDeltaApply(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("delta apply", stderr)
	bundle := fs.String("bundle", "", "the delta bundle")
	base := fs.String("base", "", "the image the vehicle holds (the bundle's base)")
	out := fs.String("out", "", "the OCI layout to write the new image into")
	tag := fs.String("tag", "", "tag of the new image (default: the bundle's)")
	tmp := fs.String("tmp", "", "directory for decompressed base layers (default: system temp)")
	verbose := fs.Bool("v", false, "log progress to stderr")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *bundle == "" || *base == "" || *out == "" || fs.NArg() != 0 {
		return cli.Usagef("--bundle, --base and --out are required")
	}
	ref, err := oci.ParseRef(*base)
	if err != nil {
		return cli.Usagef("--base: %v", err)
	}
	im, err := oci.Open(ref)
	if err != nil {
		return err
	}
	opts := delta.ApplyOptions{TempDir: *tmp}
	if *verbose {
		opts.Log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	res, err := delta.ApplyImage(ctx, *bundle, im, *out, *tag, opts)
	for i, l := range res.Layers {
		status := "ok, matches diff_id"
		if l.Err != nil {
			status = "FAILED"
		}
		fmt.Fprintf(stdout, "layer %d %s  %s  %d bytes  %s\n", i, l.DiffID, l.Decision, l.Size, status)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote image %s to %s: %d layers, each matching the diff_id in the new config\n", res.Manifest, *out, len(res.Layers))
	return nil
}
