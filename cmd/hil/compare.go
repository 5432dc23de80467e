package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/bootorbit/bootorbit/hil/compare"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", func() *cobra.Command {
		var f compareFlags
		c := &cobra.Command{
			Use:   "compare",
			Short: "bootorbit's uplink against an HTTP download with range-resume over TCP (RAUC, Mender), over the same emulated link, in one run",
			Long: `Compare moves the same bytes across the same emulated link (hil/link: same
profile, same seed) twice, one after the other: with bootorbit's uplink
(protocol/transfer over UDP through the emulator's UDP mode) and with an HTTP
download that resumes with Range after every failure or stall, over TCP (a Go
net/http server in the ground's network namespace, a client in the vehicle's,
through the emulator's IP mode: TUN devices in namespaces; root). It prints
both times and the ratio (HTTP over bootorbit: above 1, bootorbit is faster).

The bytes are --size seeded random bytes (incompressible, as a compressed
delta bundle is), or the file --file (a real bundle or image). Schedules
(passes, outages) are compressed by --time-scale; rates and delays are not.`,
			Example: `  hil compare --profile geo,leo-fast
  hil compare --profile leo-fast --size 4MiB --time-scale 120 --seed 3
  hil compare --profile geo --file bundle.bin --stall 20s --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runCompare(c, &f) },
		}
		fs := c.Flags()
		fs.StringVar(&f.profiles, "profile", "geo,leo-fast", "link profiles, comma-separated (uhf, sband, leo-fast, geo, lunar, stress)")
		cli.SizeVar(fs, &f.size, "size", 512<<10, "bytes to send (seeded random) when --file is not given")
		fs.StringVar(&f.file, "file", "", "send this `FILE` instead of random bytes")
		fs.Uint64Var(&f.seed, "seed", 0, "seed of the link model and of the random bytes (default: a fresh one, printed)")
		fs.Float64Var(&f.scale, "time-scale", compare.DefaultTimeScale, "compress the profiles' schedules (passes, outages) by this factor")
		cli.DurationVar(fs, &f.timeout, "timeout", 10*time.Minute, "give up on a method after this long")
		cli.DurationVar(fs, &f.stall, "stall", 10*time.Second, "HTTP: resume after receiving nothing for this long")
		cli.DurationVar(fs, &f.retry, "retry", time.Second, "HTTP: wait after a failed attempt")
		cli.JSONFlag(c, &f.json)
		return c
	})
}

type compareFlags struct {
	profiles, file        string
	size                  int64
	seed                  uint64
	scale                 float64
	timeout, stall, retry time.Duration
	json                  bool
}

func runCompare(c *cobra.Command, f *compareFlags) error {
	ctx, stdout, stderr := c.Context(), c.OutOrStdout(), c.ErrOrStderr()
	profiles := compare.ProfileList(f.profiles)
	if len(profiles) == 0 {
		return cli.Usagef("--profile: name at least one profile")
	}
	if f.scale <= 0 {
		return cli.Usagef("--time-scale %g: want > 0", f.scale)
	}
	if f.size <= 0 || f.size > 1<<30 {
		return cli.Usagef("--size %d: want 1 B to 1 GiB", f.size)
	}
	cfg := compare.Config{
		Profiles: profiles, Size: int(f.size), Seed: f.seed, TimeScale: f.scale, Timeout: f.timeout,
		HTTP:     compare.HTTPConfig{Stall: f.stall, Retry: f.retry},
		Progress: stderr,
	}
	if !cli.Given(c, "seed") {
		cfg.Seed = rand.Uint64()
	}
	if f.file != "" {
		data, err := os.ReadFile(f.file)
		if err != nil {
			return err
		}
		cfg.Data = data
	}
	fmt.Fprintf(stderr, "seed %d\n", cfg.Seed)
	cases, err := compare.Run(ctx, cfg)
	if f.json {
		if jerr := cli.WriteJSON(stdout, cases); jerr != nil {
			return jerr
		}
	} else if len(cases) > 0 {
		fmt.Fprintf(stdout, "seed %d, time scale %g, %d bytes\n\n", cfg.Seed, f.scale, cases[0].Bytes)
		if werr := compare.WriteTable(stdout, cases); werr != nil {
			return werr
		}
	}
	if err != nil {
		return err
	}
	for _, cs := range cases {
		if cs.Bootorbit.Err != "" || cs.HTTP.Err != "" {
			return fmt.Errorf("compare: %s: a method failed", cs.Profile)
		}
	}
	return nil
}
