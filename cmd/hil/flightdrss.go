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
		var f flightdRSSFlags
		c := &cobra.Command{
			Use:   "flightd-rss",
			Short: "run the real flightd, feed it a delta update over UDP, and print its peak RSS, the bundle and the storage used",
			Long: `Flightd-rss measures the daemon itself, receive and install together: it
installs the old image into directory slot A (good, booted, with its layer
index), computes the delta bundle of the new image against it, writes a
flightd configuration (a UDP listener on loopback, keys, slots, a GRUB
environment, memory_limit) and starts flightd on it as a process of its own.
Then it plays the ground with the protocol's Sender: the signed plan, then
the bundle, read from its file. flightd journals and stages them, installs
slot B from the bundle with slot A as the delta's base, and reports
install_done; the bench then reads the daemon's peak RSS, VmHWM of
/proc/PID/status (the kernel's count of the process's largest resident set
over its whole life: Go heap, stacks, binary pages alike), and stops it.

It prints that peak, the bundle size, and the vehicle storage used beside the
slots: the bytes under slots.state_dir (uplink journal and staging, slot
records, layer indexes, the pristine /etc), sampled every 50 ms during the
receive and install, its peak and what is left after.

The daemon is this binary running flightd.Run exactly as 'flightd run --config
FILE' does (its memory_limit applied), unless --flightd names a flightd
binary, which is then run as 'FLIGHTD run --config FILE'.

Without --old a root filesystem is generated (--size, --seed); without --new
the new layer is derived from the old one. hil/deltabench/mkimages.sh builds
the Debian pair: pass the layer tars of its old and new images.`,
			Example: `  hil bench flightd-rss --size 200MiB
  hil bench flightd-rss --old old.tar --new new.tar --memory-limit 24MiB --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runFlightdRSS(c, &f) },
		}
		fs := c.Flags()
		fs.StringVar(&f.old, "old", "", "the old image's layer `TAR` (uncompressed; default: generated)")
		fs.StringVar(&f.new, "new", "", "the new image's layer `TAR` (default: derived from the old)")
		cli.SizeVar(fs, &f.size, "size", 200<<20, "generated root filesystem content size")
		fs.Uint64Var(&f.seed, "seed", 1, "seed of the generated root filesystem and of the derived new layer")
		cli.SizeVar(fs, &f.part, "part-size", 0, "the bundle's part size (0: the delta engine's default)")
		fs.StringVar(&f.dir, "dir", os.TempDir(), "`PATH` for the work directory (slots, state, bundle)")
		fs.BoolVar(&f.keep, "keep", false, "keep the work directory (and flightd.log in it)")
		cli.SizeVar(fs, &f.limit, "memory-limit", 0, "the daemon's memory_limit (0: flightd's default, 24MiB)")
		fs.StringVar(&f.flightd, "flightd", "", "a flightd `BINARY` to measure instead of this binary's flightd.Run")
		fs.IntVar(&f.frame, "max-frame", 8192, "the link's frame size in bytes")
		fs.Float64Var(&f.rate, "rate", 200e6, "the ground's uplink rate in bits per second")
		fs.DurationVar(&f.timeout, "timeout", 30*time.Minute, "bound of the receive and the install")
		cli.JSONFlag(c, &f.json)
		cli.VerboseFlag(c, &f.verbose)
		return c
	})
	commands.Add("bench", func() *cobra.Command {
		var config string
		c := &cobra.Command{
			Use:    "flightd-rss-child",
			Short:  "(child of bench flightd-rss) run flightd as 'flightd run --config FILE' does",
			Long:   "Flightd-rss-child is the measured daemon of bench flightd-rss.",
			Hidden: true,
			Args:   cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				return installbench.RunFlightd(c.Context(), config, c.ErrOrStderr())
			},
		}
		c.Flags().StringVar(&config, "config", "", "flightd configuration `FILE`")
		return c
	})
}

type flightdRSSFlags struct {
	old, new, dir, flightd string
	size, part, limit      int64
	seed                   uint64
	frame                  int
	rate                   float64
	timeout                time.Duration
	keep, json, verbose    bool
}

func runFlightdRSS(c *cobra.Command, f *flightdRSSFlags) error {
	if f.old == "" && (f.size <= 0 || f.size > 16<<30) {
		return cli.Usagef("--size %d: want 1 byte to 16GiB", f.size)
	}
	if f.new != "" && f.old == "" {
		return cli.Usagef("--new needs --old")
	}
	if f.limit != 0 && f.limit < 8<<20 {
		return cli.Usagef("--memory-limit %d: want at least 8MiB", f.limit)
	}
	if f.frame < 256 || f.frame > 65536 {
		return cli.Usagef("--max-frame %d: want 256..65536", f.frame)
	}
	if f.rate <= 0 || f.timeout <= 0 {
		return cli.Usagef("--rate and --timeout must be positive")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	daemon := []string{exe, "bench", "flightd-rss-child"}
	if f.flightd != "" {
		daemon = []string{f.flightd, "run"}
	}
	o := installbench.RSSOptions{Dir: f.dir, Old: f.old, New: f.new, Size: f.size, Seed: f.seed, PartSize: f.part,
		Keep: f.keep, Flightd: daemon, MemoryLimit: f.limit, MaxFrame: f.frame, Rate: f.rate, Timeout: f.timeout}
	if f.verbose {
		o.Log = c.ErrOrStderr()
	}
	res, err := installbench.RunRSS(c.Context(), o)
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
	fmt.Fprintf(w, "old layer (%s)\t%s\t\n", src, mb(res.OldLayer))
	fmt.Fprintf(w, "new layer\t%s\t\n", mb(res.NewLayer))
	fmt.Fprintf(w, "bundle\t%s\tplan %d B\n", mb(res.Bundle), res.Plan)
	fmt.Fprintf(w, "receive (plan and bundle over UDP)\t%s\t%d chunks resent\n", res.Receive.Round(time.Millisecond), res.ChunksResent)
	fmt.Fprintf(w, "install (bundle complete to install_done)\t%s\t\n", res.Install.Round(time.Millisecond))
	fmt.Fprintf(w, "peak RSS (flightd VmHWM)\t%.1f MiB\tmemory_limit %.0f MiB\n", float64(res.PeakRSS)/(1<<20), float64(res.MemoryLimit)/(1<<20))
	fmt.Fprintf(w, "vehicle storage beside the slots\t%s peak\t%s before, %s after (slots.state_dir, sampled every 50 ms)\n",
		mb(res.StoragePeak), mb(res.StateBefore), mb(res.StorageAfter))
	if res.WorkDir != "" {
		fmt.Fprintf(w, "work directory\t%s\t\n", res.WorkDir)
	}
	return w.Flush()
}
