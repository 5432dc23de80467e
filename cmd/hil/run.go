package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/hil/board"
	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/bootorbit/bootorbit/hil/realboard"
	"github.com/bootorbit/bootorbit/hil/scenario"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", func() *cobra.Command {
		var f runFlags
		c := &cobra.Command{
			Use:   "run [SCENARIO|FILE]...",
			Short: "run scenarios: groundd and the virtual board (flightd as a process) over the link emulator, with faults; check the outcome; report",
			Long: `Run builds flightd for --arch (arm64 runs under qemu-user: qemu-aarch64-static,
called explicitly unless binfmt_misc runs arm64 binaries), generates the
synthetic image set (and signs the Debian pair's when a scenario names it),
and runs each scenario: groundd in-process, the virtual
board (directory slots, a U-Boot environment file, the bootloader model, a
watchdog that resets the board) and hil/link between them, the scenario's
faults at their phases, until the expected outcome holds or the scenario's
timeout passes.

A SCENARIO is a shipped scenario's name (hil/scenarios: --list shows them)
or a scenario file (JSON, docs/hil.md "Scenarios"). --all runs every
shipped scenario but the long ones, --short the quick subset, --long adds
the long ones.

The long scenarios run on the realistic Debian pair ("images": "debian":
Debian bookworm and its security upgrade, 85 MB compressed each, a 3 MB
delta), which a fresh clone does not have: build it once, as root, with
hil/deltabench/mkimages.sh testdata-gen (a few minutes; debootstrap, umoci
and deb.debian.org), then run from the repository, or name its layout with
--debian-layout or $BOOTORBIT_DEBIAN_LAYOUT. The pair is linked into the
run's directory and signed there with the bench's release key; the layout
is only read. Run them as root (the images' files belong to root and
other users).

It prints a summary a person reads (--json: the whole report as JSON) and
writes JUnit XML with --junit. Exit status 1 if a scenario failed.

With --board, the scenarios run on a real board of the bench instead
(hil/realboard: SSH, a power command, the serial console; the configuration
of hil realboard with the keys a scenario run needs, docs/hil.md "Real
boards"): flightd is built for the board's architecture (uname -m over SSH)
and deployed with each scenario's keys and configuration, the factory
command resets the board before each scenario, the link emulator's vehicle
side listens on bench_addr. The report names the board. A scenario that
needs what a real board cannot give (a power cut timed inside a slot write;
an image that hangs at boot, unless the bench sets image_behaviour) is
reported as skipped, with the reason.`,
			Example: `  hil run --all
  hil run --short --junit .ci/out/hil-junit.xml
  sudo hil/deltabench/mkimages.sh testdata-gen && sudo hil run --all --long
  hil run nominal-debian-sband --debian-layout /srv/testdata-gen/oci
  hil run nominal-debian-leo-fast --arch arm64
  hil run watchdog-rollback --arch arm64
  hil run my-scenario.json --keep /tmp/hil-run -v
  hil run --board bench.json nominal-leo-fast powercut-receive`,
			RunE: func(c *cobra.Command, args []string) error { return runScenarios(c, args, &f) },
		}
		fs := c.Flags()
		fs.BoolVar(&f.all, "all", false, "run every shipped scenario")
		fs.BoolVar(&f.short, "short", false, "run the quick subset of the shipped scenarios")
		fs.BoolVar(&f.list, "list", false, "list the shipped scenarios and exit")
		fs.BoolVar(&f.long, "long", false, "with --all, run the long scenarios too (the Debian pair: see above)")
		fs.StringVar(&f.debian, "debian-layout", cmp.Or(os.Getenv(images.DebianLayoutEnv), images.DefaultDebianLayout),
			"the OCI layout `DIR` hil/deltabench/mkimages.sh wrote, for the scenarios on the Debian pair (env "+images.DebianLayoutEnv+")")
		fs.StringVar(&f.arch, "arch", runtime.GOARCH, "flightd's architecture: amd64, arm64 (qemu-user), ...")
		fs.StringVar(&f.junit, "junit", "", "write the report as JUnit XML to `FILE`")
		fs.StringVar(&f.board, "board", "", "run on the real board of the bench configuration `FILE` (JSON, hil/realboard) instead of the virtual board")
		fs.StringVar(&f.keep, "keep", "", "work in `DIR` and keep it (boards, logs, stores); default a temporary directory, removed")
		fs.Uint64Var(&f.seed, "seed", 1, "seed of the images, keys and link faults")
		fs.DurationVar(&f.watchdog, "watchdog-timeout", 0, "the board's watchdog timeout for every scenario (0: each scenario's, default 3s; the Debian scenarios' 20s)")
		cli.SizeVar(fs, &f.size, "image-size", 3<<20, "approximate size of the synthetic base image")
		cli.JSONFlag(c, &f.json)
		cli.VerboseFlag(c, &f.verbose)
		return c
	})
}

type runFlags struct {
	all, short, list, long, json, verbose bool
	arch, junit, keep, debian, board      string
	seed                                  uint64
	watchdog                              time.Duration
	size                                  int64
}

func runScenarios(c *cobra.Command, args []string, f *runFlags) error {
	ctx, stdout, stderr := c.Context(), c.OutOrStdout(), c.ErrOrStderr()
	if f.list {
		all, err := scenario.ShippedAll()
		if err != nil {
			return err
		}
		for _, s := range all {
			mark := ""
			switch {
			case s.Short:
				mark = " (short)"
			case s.Long && s.Pair() == images.PairDebian:
				mark = " (long: the Debian pair of hil/deltabench/mkimages.sh, built as root beforehand, and minutes per run; --long or by name)"
			case s.Long:
				mark = " (long: --long or by name)"
			}
			fmt.Fprintf(stdout, "%-24s %s%s\n", s.Name, s.Description, mark)
		}
		return nil
	}
	var scs []*scenario.Scenario
	switch {
	case (f.all || f.short) && len(args) > 0:
		return cli.Usagef("name scenarios or give --all/--short, not both")
	case f.long && !f.all:
		return cli.Usagef("--long adds the long scenarios to --all")
	case f.all && f.long:
		var err error
		if scs, err = scenario.ShippedAll(); err != nil {
			return err
		}
	case f.all || f.short:
		var err error
		if scs, err = scenario.Shipped(f.short && !f.all); err != nil {
			return err
		}
	case len(args) == 0:
		return cli.Usagef("name at least one scenario, or give --all or --short (--list shows them)")
	}
	for _, a := range args {
		s, err := scenario.Find(a)
		if err != nil {
			return cli.Usagef("%v", err)
		}
		scs = append(scs, s)
	}
	dir := f.keep
	if dir == "" {
		tmp, err := os.MkdirTemp("", "bootorbit-hil-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	log := cli.Logger(stderr, f.verbose)
	start := time.Now()
	var real *realBench
	if f.board != "" {
		var err error
		if real, err = openBench(c, f.board); err != nil {
			return err
		}
		if c.Flags().Changed("arch") && f.arch != real.arch {
			return cli.Usagef("--arch %s: the board is %s (%s)", f.arch, real.arch, real.desc)
		}
		f.arch = real.arch
		fmt.Fprintf(stderr, "real board: %s\n", real.desc)
	}
	fmt.Fprintf(stderr, "building flightd for linux/%s and the synthetic images...\n", f.arch)
	prepArch := f.arch
	if real != nil {
		prepArch = runtime.GOARCH // the board runs flightd, not qemu-user here
	}
	env, err := scenario.Prepare(ctx, dir, prepArch, f.seed, int(f.size))
	if err != nil {
		return err
	}
	env.Log = log
	if real != nil {
		if err := real.setup(ctx, env, dir, log); err != nil {
			return err
		}
	}
	env.DebianLayout = f.debian
	env.WatchdogTimeout = f.watchdog
	if f.verbose {
		env.FlightdLog = stderr
		env.Progress = func(name, line string) { fmt.Fprintf(stderr, "[%s] %s\n", name, line) }
	}
	rep := &scenario.Report{Arch: f.arch, Board: "virtual", Seed: f.seed, Started: start}
	switch {
	case real != nil:
		rep.Board = env.Board
	case len(env.Emulator) > 0:
		rep.Board = "virtual (qemu-user)"
	}
	for _, s := range scs {
		if err := ctx.Err(); err != nil {
			return err // interrupted: the remaining scenarios would fail at once
		}
		fmt.Fprintf(stderr, "running %s...\n", s.Name)
		res, err := scenario.Run(ctx, env, s)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		rep.Results = append(rep.Results, res)
	}
	rep.Elapsed = time.Since(start)
	if f.junit != "" {
		out, err := os.Create(f.junit)
		if err != nil {
			return err
		}
		if err := rep.WriteJUnit(out); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
	}
	if f.json {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteSummary(stdout)
	}
	if err != nil {
		return err
	}
	if n := rep.Failed(); n > 0 {
		return fmt.Errorf("%d of %d scenarios failed", n, len(rep.Results))
	}
	return nil
}

// realBench is the real board of hil run --board.
type realBench struct {
	cfg        realboard.Config
	desc, arch string
}

// openBench reads the bench configuration, switches the board on, logs
// in to it (as soon as it answers, within timeout_s) and names it and its
// architecture.
func openBench(c *cobra.Command, path string) (*realBench, error) {
	cfg, err := loadBoardConfig(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.CheckRun(); err != nil {
		return nil, err
	}
	if err := realboard.Offline(cfg).Power(c.Context(), true); err != nil {
		return nil, err
	}
	b, err := realboard.DialWait(c.Context(), cfg)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	machine, err := b.Run(c.Context(), "uname", "-m")
	if err != nil {
		return nil, err
	}
	arch := realboard.GOARCH(string(machine))
	if arch == "" {
		return nil, fmt.Errorf("realboard: the board's architecture %q has no Go port here", strings.TrimSpace(string(machine)))
	}
	desc, err := b.Describe(c.Context())
	if err != nil {
		return nil, err
	}
	return &realBench{cfg: cfg, desc: desc, arch: arch}, nil
}

// setup makes env run on the real board: flightd for its architecture,
// the board factory, its name and limits.
func (r *realBench) setup(ctx context.Context, env *scenario.Env, dir string, log *slog.Logger) error {
	if r.arch != env.Arch {
		bin, _, err := board.Build(ctx, dir, r.arch)
		if bin == "" {
			return err
		}
		env.Flightd, env.Arch = bin, r.arch
	}
	env.Emulator = nil
	env.NewBoard = realboard.NewBoards(r.cfg, log)
	env.Board = "real " + r.desc
	env.Limits = r.cfg.Limits()
	return nil
}
