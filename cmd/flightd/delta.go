//go:build linux

package main

import (
	"fmt"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
)

func init() {
	commands.Group("delta", "apply delta bundles", `The delta commands rebuild an image from a delta bundle and the image the
vehicle holds, as flightd does after an uplink.`)
	commands.Add("delta", func() *cobra.Command {
		var bundle, base, out, tag, tmp string
		var verbose, jsonOut bool
		c := &cobra.Command{
			Use:   "apply",
			Short: "rebuild the image a delta bundle describes from the base image, as an OCI layout in DIR",
			Long: `Apply rebuilds the target image of --bundle from --base, the image the
vehicle holds, and writes it as an OCI layout into --out. Every layer is
checked against the diff_id of the signed config as it streams; a layer whose
base ranges do not match is reported (layer, part, file, digests) and not
written, and the image is committed only when every layer was rebuilt.`,
			Example: `  flightd delta apply --bundle up.bundle --base oci:/var/lib/images:os-1 --out /var/lib/staged
  flightd delta apply --bundle up.bundle --base oci:/var/lib/images@sha256:4f2c... --out /tmp/new --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				stdout, stderr := c.OutOrStdout(), c.ErrOrStderr()
				if bundle == "" || base == "" || out == "" {
					return cli.Usagef("--bundle, --base and --out are required")
				}
				ref, err := oci.ParseRef(base)
				if err != nil {
					return cli.Usagef("--base: %v", err)
				}
				im, err := oci.Open(ref)
				if err != nil {
					return err
				}
				opts := delta.ApplyOptions{TempDir: tmp}
				if verbose {
					opts.Log = cli.Logger(stderr, true)
				}
				res, err := delta.ApplyImage(c.Context(), bundle, im, out, tag, opts)
				if jsonOut {
					if jerr := cli.WriteJSON(stdout, applyDoc(&res, out)); jerr != nil {
						return jerr
					}
					return err
				}
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
				fmt.Fprintf(stdout, "wrote image %s to %s: %d layers, each matching the diff_id in the new config\n", res.Manifest, out, len(res.Layers))
				return nil
			},
		}
		fs := c.Flags()
		fs.StringVar(&bundle, "bundle", "", "the delta bundle `FILE`")
		fs.StringVar(&base, "base", "", "the image the vehicle holds (the bundle's base), `oci:PATH:TAG` or oci:PATH@sha256:...")
		fs.StringVar(&out, "out", "", "the OCI layout `DIR` to write the new image into")
		fs.StringVar(&tag, "tag", "", "tag of the new image (default: the bundle's)")
		fs.StringVar(&tmp, "tmp", "", "`DIR` for temporary files, here decompressed base layers (default: system temp)")
		cli.VerboseFlag(c, &verbose)
		cli.JSONFlag(c, &jsonOut)
		return c
	})
}

// applyLayerDoc is one layer of `delta apply --json`.
type applyLayerDoc struct {
	DiffID   digest.Digest `json:"diff_id"`
	Decision string        `json:"decision"`
	Size     int64         `json:"size"`
	OK       bool          `json:"ok"`
	Error    string        `json:"error,omitempty"`
}

// applyDoc is the --json document of `delta apply`.
func applyDoc(res *delta.ApplyResult, out string) any {
	doc := struct {
		Out      string          `json:"out"`
		Manifest digest.Digest   `json:"manifest,omitempty"`
		Layers   []applyLayerDoc `json:"layers"`
	}{Out: out, Layers: []applyLayerDoc{}}
	if res == nil {
		return doc
	}
	doc.Manifest = res.Manifest
	for _, l := range res.Layers {
		d := applyLayerDoc{DiffID: l.DiffID, Decision: l.Decision, Size: l.Size, OK: l.Err == nil}
		if l.Err != nil {
			d.Error = l.Err.Error()
		}
		doc.Layers = append(doc.Layers, d)
	}
	return doc
}
