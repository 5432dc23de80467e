package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", func() *cobra.Command {
		var f bundleFlags
		c := &cobra.Command{
			Use:   "bundle",
			Short: "write a signed update file for one vehicle, for flightd install",
			Long: `Bundle plans an image for a vehicle as groundd run would (per layer: nothing,
a delta against what the vehicle holds, or the full layer), signs the plan
with the ground key for that vehicle alone, and writes the update file: the
plan, then the delta bundle. flightd install takes it from a file, for a
vehicle reached by other means than groundd's links.

What the vehicle holds is, in order: --base, the booted slot groundd knows
from the vehicle's telemetry, or nothing with --full. The plan id comes from
the store's counter, as the uplink queue's do: run bundle where groundd runs,
with groundd stopped (the store is locked while it runs).`,
			Example: `  groundd bundle --config groundd.json --vehicle 7 --image oci:images:os-2 --out os-2.boupdate
  groundd bundle --config groundd.json --vehicle 7 --image oci:images:os-2 --base oci:images:os-1 --out os-2.boupdate --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runBundle(c, &f) },
		}
		fs := c.Flags()
		fs.StringVar(&f.config, "config", "", "the groundd configuration `FILE` (JSON)")
		fs.Uint32Var(&f.vehicle, "vehicle", 0, "the vehicle `ID`")
		fs.StringVar(&f.image, "image", "", "the image to install, `oci:PATH:TAG` or oci:PATH@sha256:...")
		fs.StringVar(&f.base, "base", "", "the image the vehicle holds, `oci:PATH:TAG` (default: its booted slot as groundd knows it)")
		fs.BoolVar(&f.full, "full", false, "send every layer in full, whatever the vehicle holds")
		fs.BoolVar(&f.downgrade, "allow-downgrade", false, "sign the permission to install a lower release version")
		fs.StringVar(&f.out, "out", "", "the update `FILE` to write")
		cli.VerboseFlag(c, &f.verbose)
		cli.JSONFlag(c, &f.json)
		return c
	})
}

type bundleFlags struct {
	config, image, base, out string
	vehicle                  uint32
	full, downgrade          bool
	verbose, json            bool
}

func runBundle(c *cobra.Command, f *bundleFlags) error {
	if f.config == "" || f.image == "" || f.out == "" || f.vehicle == 0 {
		return cli.Usagef("--config, --vehicle, --image and --out are required")
	}
	if f.full && f.base != "" {
		return cli.Usagef("--full and --base exclude each other")
	}
	cfg, err := groundd.LoadConfig(f.config)
	if err != nil {
		return err
	}
	d, err := groundd.Open(cfg, groundd.Options{Log: cli.Logger(c.ErrOrStderr(), f.verbose)})
	if err != nil {
		return err
	}
	defer d.Close()
	// Written durably and atomically: a temporary file beside the
	// destination, synced, renamed.
	tmp, err := os.CreateTemp(filepath.Dir(f.out), ".boupdate-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<20)
	info, err := d.WriteBundle(c.Context(), groundd.BundleRequest{Vehicle: f.vehicle, Image: f.image, Base: f.base, Full: f.full, AllowDowngrade: f.downgrade}, bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.out)
	}
	if err != nil {
		return err
	}
	if f.json {
		return cli.WriteJSON(c.OutOrStdout(), info)
	}
	out := c.OutOrStdout()
	for i, l := range info.Layers {
		fmt.Fprintf(out, "layer %d %s  %s  %d bytes -> %d\n", i, l.DiffID, l.Decision, l.Size, l.Payload)
	}
	base := info.Base
	if base == "" {
		base = "nothing"
	}
	fmt.Fprintf(out, "plan %d for vehicle %d: %s against %s; %s: %d bytes (bundle %d)\n", info.Plan, info.Vehicle, info.Manifest, base, f.out, info.FileSize, info.BundleSize)
	return nil
}
