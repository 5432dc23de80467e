package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/bootorbit/bootorbit/hil/installbench"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	benchGroup()
	commands.Add("bench", func() *cobra.Command {
		var f flightdInstallFlags
		c := &cobra.Command{
			Use:   "flightd-install",
			Short: "apply a delta bundle into a directory slot with the booted slot as the base, and print peak RSS and storage",
			Long: `Flightd-install measures a delta update on the vehicle's side: it installs the
old image into directory slot A (recording A's layer index), computes the delta
bundle of the new image against it, then runs a child process that does what
flightd does with a complete bundle: open slot A as the delta's base (its files
and its index, no copy of the old image), check every base range, and install
slot B from the layers rebuilt as they stream. It prints the child's peak RSS
(VmHWM from /proc/self/status, read by the child after the install), the bundle
size, the layer indexes' sizes and the storage the update used beside the
slots: the bundle, the state directory and the child's temporary directory.

Without --old a root filesystem is generated (--size, --seed); without --new
the new layer is derived from the old one (a few bytes changed in one file in
40, one in 200 grown, a 4 MiB file added). hil/deltabench/mkimages.sh builds a
realistic Debian pair: pass the layer tars of its old and new images.`,
			Example: `  hil bench flightd-install --size 200MiB
  hil bench flightd-install --old old.tar --new new.tar --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runFlightdInstall(c, &f) },
		}
		fs := c.Flags()
		fs.StringVar(&f.old, "old", "", "the old image's layer `TAR` (uncompressed; default: generated)")
		fs.StringVar(&f.new, "new", "", "the new image's layer `TAR` (default: derived from the old)")
		cli.SizeVar(fs, &f.size, "size", 200<<20, "generated root filesystem content size")
		fs.Uint64Var(&f.seed, "seed", 1, "seed of the generated root filesystem and of the derived new layer")
		cli.SizeVar(fs, &f.part, "part-size", 0, "the bundle's part size (0: the delta engine's default)")
		fs.StringVar(&f.dir, "dir", os.TempDir(), "`PATH` for the work directory (slots, state, bundle)")
		fs.BoolVar(&f.keep, "keep", false, "keep the work directory")
		cli.SizeVar(fs, &f.limit, "memory-limit", 0, "the child's Go memory limit (GOMEMLIMIT; 0: none, the collector's default pacing)")
		cli.JSONFlag(c, &f.json)
		cli.VerboseFlag(c, &f.verbose)
		return c
	})
	commands.Add("bench", func() *cobra.Command {
		var cfg installbench.ChildConfig
		c := &cobra.Command{
			Use:    "flightd-install-child",
			Short:  "(child of bench flightd-install) install slot B from a bundle against slot A",
			Long:   "Flightd-install-child is the measured process of bench flightd-install.",
			Hidden: true,
			Args:   cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				res, err := installbench.InstallChild(c.Context(), cfg)
				if err != nil {
					return err
				}
				return cli.WriteJSON(c.OutOrStdout(), res)
			},
		}
		fs := c.Flags()
		fs.StringVar(&cfg.State, "state", "", "state `DIR`")
		fs.StringVar(&cfg.A, "slot-a", "", "slot A `DIR` (booted)")
		fs.StringVar(&cfg.B, "slot-b", "", "slot B `DIR`")
		fs.StringVar(&cfg.Bundle, "bundle", "", "bundle `FILE`")
		return c
	})
}

type flightdInstallFlags struct {
	old, new, dir       string
	size, part, limit   int64
	seed                uint64
	keep, json, verbose bool
}

func mb(n int64) string { return fmt.Sprintf("%.2f MB", float64(n)/1e6) }

func runFlightdInstall(c *cobra.Command, f *flightdInstallFlags) error {
	if f.old == "" && (f.size <= 0 || f.size > 16<<30) {
		return cli.Usagef("--size %d: want 1 byte to 16GiB", f.size)
	}
	if f.limit < 0 {
		return cli.Usagef("--memory-limit %d: want a size", f.limit)
	}
	if f.new != "" && f.old == "" {
		return cli.Usagef("--new needs --old")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o := installbench.Options{Dir: f.dir, Old: f.old, New: f.new, Size: f.size, Seed: f.seed, PartSize: f.part,
		Child: []string{exe, "bench", "flightd-install-child"}, Keep: f.keep, MemoryLimit: f.limit}
	if f.verbose {
		o.Log = c.ErrOrStderr()
	}
	res, err := installbench.Run(c.Context(), o)
	if err != nil {
		return err
	}
	if f.json {
		return cli.WriteJSON(c.OutOrStdout(), res)
	}
	w := tabwriter.NewWriter(c.OutOrStdout(), 0, 0, 2, ' ', 0)
	src := "given"
	if res.Generated {
		src = "generated"
	}
	fmt.Fprintf(w, "old layer (%s)\t%s\t%d files\n", src, mb(res.OldLayer), res.OldFiles)
	fmt.Fprintf(w, "new layer\t%s\t%d files\n", mb(res.NewLayer), res.Child.Files)
	fmt.Fprintf(w, "bundle\t%s\t%d base ranges\n", mb(res.Bundle), res.BaseRanges)
	fmt.Fprintf(w, "layer index, old (slot A)\t%s\t\n", mb(res.IndexOld))
	fmt.Fprintf(w, "layer index, new (slot B)\t%s\t\n", mb(res.IndexNew))
	fmt.Fprintf(w, "install (child)\t%s\t%d of %d layers rebuilt\n", res.Child.Install.Round(time.Millisecond), res.Child.Rebuilt, res.Child.Layers)
	fmt.Fprintf(w, "peak RSS (child VmHWM)\t%.1f MiB\t\n", float64(res.Child.PeakRSS)/(1<<20))
	fmt.Fprintf(w, "storage used beside the slots\t%s\tbundle %s + state dir %s + scratch %s\n", mb(res.Storage),
		mb(res.Bundle), mb(res.StateDir), mb(res.Scratch))
	if res.WorkDir != "" {
		fmt.Fprintf(w, "work directory\t%s\t\n", res.WorkDir)
	}
	return w.Flush()
}
