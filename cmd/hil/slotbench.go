package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/hil/slotbench"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/spf13/cobra"
)

func init() {
	benchGroup()
	commands.Add("bench", func() *cobra.Command {
		var f slotBenchFlags
		c := &cobra.Command{
			Use:   "slot-write",
			Short: "write a root filesystem into a raw and a directory slot vs a plain sequential write + fsync of the same bytes, side by side",
			Long: `Slot-write measures, interleaved round by round on the same disk, a plain
sequential write of N bytes with a final fsync against installing the same N
bytes into a raw slot and into a directory slot through the Manager.Install
flightd uses, and prints medians and per-round ratio ranges. As root it drops
the page cache before every measurement. --emulate-disk runs it on a fresh
ext4 on an emulated disk of a given speed (hil/disk); --format-slot adds a
directory slot formatted at every install.`,
			Example: `  hil bench slot-write --size 200MiB --rounds 3 --dir /mnt/emmc
  hil bench slot-write --size 200MiB --rounds 3 --emulate-disk 50MB/s,0.2ms
  hil bench slot-write --tar rootfs.tar --emulate-disk 150MB/s,0.2ms --format-slot --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runSlotBench(c, &f) },
		}
		f.register(c)
		return c
	})
}

type slotBenchFlags struct {
	size, flush                     int64
	dir, syncS, tarPath, emulate    string
	formatMkfs                      string
	rounds, queue                   int
	seed                            uint64
	formatSlot, drop, json, verbose bool
}

func (f *slotBenchFlags) register(c *cobra.Command) {
	fs := c.Flags()
	cli.SizeVar(fs, &f.size, "size", 200<<20, "root filesystem content size (bytes or with a unit: 200MiB)")
	fs.StringVar(&f.dir, "dir", os.TempDir(), "`PATH` on the disk to measure (slots and the reference file go there)")
	fs.IntVar(&f.rounds, "rounds", 5, "interleaved rounds; medians are reported")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of the generated root filesystem")
	fs.StringVar(&f.syncS, "sync", "syncfs", "directory slot durability: syncfs (one syncfs(2)) or fsync (every file and directory)")
	fs.StringVar(&f.tarPath, "tar", "", "write this root filesystem layer `TAR` (uncompressed; a real image's) instead of a generated one")
	fs.StringVar(&f.emulate, "emulate-disk", "", "run on a fresh ext4 on an emulated disk (hil/disk) of this model instead of --dir: `RATE[,LATENCY]`, e.g. 100MB/s,0.2ms (0: unlimited)")
	cli.SizeVar(fs, &f.flush, "flush-every", 8<<20, "directory slot early writeback: a syncfs after every this much content (0: only the final syncfs)")
	fs.IntVar(&f.queue, "emulate-queue", 4, "requests the emulated disk's server takes at once (asynchronous direct I/O); the device still does one at a time, in its model's time, but more overlap the server's own work with the device's, as a device's command queue does (1: the server's work adds to every request)")
	fs.BoolVar(&f.formatSlot, "format-slot", false, "also measure a directory slot formatted at every install (mkfs.ext4 + mount + extract), on a partition of its own of the same disk; root only. Without --emulate-disk the whole bench then runs on a loop disk: an image file in --dir")
	fs.StringVar(&f.formatMkfs, "format-mkfs", benchMkfs, "extra mkfs.ext4 `ARGS` (space-separated) for the formatted slot; the default makes it as the bench's main ext4 is made (no discard, inode tables written by mkfs, not behind the next measurement's back)")
	fs.BoolVar(&f.drop, "drop-caches", true, "sync and drop the page cache before every measurement (root only; otherwise sync only)")
	cli.JSONFlag(c, &f.json)
	cli.VerboseFlag(c, &f.verbose)
}

// benchMkfs is the formatted slot's mkfs.ext4 arguments by default: the
// bench's main ext4 is made the same way (see hil/disk's Format), so that
// no row pays for discards or lazy inode-table zeroing that another does
// not.
const benchMkfs = "-E nodiscard,lazy_itable_init=0"

func runSlotBench(c *cobra.Command, f *slotBenchFlags) error {
	ctx, stdout, stderr := c.Context(), c.OutOrStdout(), c.ErrOrStderr()
	size := f.size
	if size <= 0 || size > 1<<40 {
		return cli.Usagef("--size %d: want 1 byte to 1TiB", size)
	}
	var err error
	if f.rounds < 1 || f.rounds > 100 {
		return cli.Usagef("--rounds %d: want 1..100", f.rounds)
	}
	var mode slots.SyncMode
	switch f.syncS {
	case "syncfs":
		mode = slots.SyncFS
	case "fsync":
		mode = slots.SyncEach
	default:
		return cli.Usagef("--sync %q: want syncfs or fsync", f.syncS)
	}
	flush := f.flush
	if flush == 0 {
		flush = -1 // only the final syncfs
	}
	var layer []byte
	if f.tarPath != "" {
		if layer, err = os.ReadFile(f.tarPath); err != nil {
			return err
		}
	}
	if f.queue < 1 || f.queue > 64 {
		return cli.Usagef("--emulate-queue %d: want 1..64", f.queue)
	}
	if cli.Given(c, "emulate-queue") && f.emulate == "" {
		return cli.Usagef("--emulate-queue is for --emulate-disk")
	}
	if f.formatSlot && os.Geteuid() != 0 {
		return cli.Usagef("--format-slot needs root (loop devices, mkfs, mount)")
	}
	if cli.Given(c, "format-mkfs") && !f.formatSlot {
		return cli.Usagef("--format-mkfs is for --format-slot")
	}
	var formatted slots.Slot
	var counters func() (int64, int64)
	if f.emulate != "" || f.formatSlot {
		d, err := startBenchDisk(ctx, f.emulate, f.queue, f.dir, max(int64(len(layer)), size+size/8), f.formatSlot, stderr)
		if err != nil {
			return err
		}
		closeOut := stdout
		if f.json { // keep stdout one JSON document
			closeOut = stderr
		}
		defer d.close(closeOut)
		f.dir = d.Mnt
		if dev := d.Device(); dev != nil {
			counters = func() (int64, int64) { st := dev.Stats(); return st.Writes, st.WriteBytes }
		}
		if d.part != "" {
			formatted = slots.Slot{Backend: slots.BackendDir, Path: d.partMnt, Device: d.part, Format: "ext4", MkfsOptions: strings.Fields(f.formatMkfs)}
		}
	}
	var progress io.Writer
	if f.verbose {
		progress = stderr
	}
	res, err := slotbench.Run(ctx, slotbench.Options{Dir: f.dir, Size: size, Rounds: f.rounds, Seed: f.seed, Sync: mode, Log: progress, DropCaches: f.drop, Layer: layer, FlushEvery: flush, Formatted: formatted, Device: counters})
	if err != nil {
		return err
	}
	if f.json {
		return cli.WriteJSON(stdout, res)
	}
	mbps := func(d time.Duration) float64 { return float64(res.TarBytes) / d.Seconds() / 1e6 }
	cond := "sync before each measurement"
	if res.DroppedCaches {
		cond = "sync + drop_caches before each measurement"
	}
	if formatted.Path != "" {
		mkfs := append([]string{"mkfs.ext4", "-q", "-F"}, formatted.MkfsOptions...)
		fmt.Fprintf(stdout, "formatted slot: %s on %s (its own partition of the same disk)\n", strings.Join(mkfs, " "), formatted.Device)
	}
	src := "generated"
	if f.tarPath != "" {
		src = f.tarPath
	}
	fmt.Fprintf(stdout, "slot write: %s: %d entries, %d files (mean %d bytes), %d content bytes, %d tar bytes; dir %s, sync %s; %d interleaved rounds, %s; medians\n",
		src, res.Entries, res.Files, res.ContentBytes/int64(max(res.Files, 1)), res.ContentBytes, res.TarBytes, f.dir, f.syncS, f.rounds, cond)
	fmt.Fprintf(stdout, "staging (once, not in any write time): raw image sha256 %v, directory expected tree %v\n",
		res.StageRaw.Round(time.Millisecond), res.StageDir.Round(time.Millisecond))
	fmt.Fprintf(stdout, "%-38s %9s %12s\n", "method", "time", "throughput")
	type ref struct {
		name string
		ds   []time.Duration
	}
	refs := []ref{{"new file", res.Plain}, {"overwrite", res.PlainOver}}
	if len(res.PlainDirect) > 0 {
		refs = append(refs, ref{"O_DIRECT overwrite", res.PlainDirect})
	}
	row := func(name string, ds []time.Duration) {
		d := slotbench.Median(ds)
		fmt.Fprintf(stdout, "%-38s %9v %7.1f MB/s\n", name, d.Round(time.Millisecond), mbps(d))
	}
	ratios := func(ds []time.Duration, target string) {
		for _, r := range refs {
			lo, hi := slotbench.RatioRange(r.ds, ds)
			fmt.Fprintf(stdout, "    %6.1f%% of plain %-20s (rounds %.0f-%.0f%%)%s\n",
				100*slotbench.Median(r.ds).Seconds()/slotbench.Median(ds).Seconds(), r.name, 100*lo, 100*hi, target)
			target = ""
		}
	}
	row("plain: new file, write + fsync", res.Plain)
	row("plain: overwrite file, write + fsync", res.PlainOver)
	if len(res.PlainDirect) > 0 {
		row("plain: overwrite, O_DIRECT + fsync", res.PlainDirect)
	}
	row("raw slot: write + fdatasync", res.Raw)
	ratios(res.Raw, " target >= 90%")
	row("dir slot: empty + extract + syncfs", res.Dir)
	ratios(res.Dir, " target >= 60%")
	row("dir slot, 2 small-file workers", res.Dir2)
	ratios(res.Dir2, "")
	if len(res.DirFinalSync) > 0 {
		row("dir slot, no early writeback", res.DirFinalSync)
		ratios(res.DirFinalSync, "")
	}
	if len(res.Floor) > 0 {
		row("floor: create+write+close, same syncfs", res.Floor)
		ratios(res.Floor, "")
	}
	if len(res.DirFormatted) > 0 {
		row("dir slot, formatted: mkfs+extract+sync", res.DirFormatted)
		ratios(res.DirFormatted, " target >= 60%")
	}
	row("dir slot: emptied beforehand (Prepare)", res.DirEmpty)
	row("dir slot: extract + syncfs after that", res.DirPrepared)
	ratios(res.DirPrepared, "")
	row("raw slot incl. read-back verify", res.RawTotal)
	row("dir slot incl. read-back verify", res.DirTotal)
	if len(res.DeviceWrites) > 0 {
		fmt.Fprintf(stdout, "device requests per measurement (median; prepared: emptying + install):\n")
		names := slices.Sorted(maps.Keys(res.DeviceWrites))
		for _, name := range names {
			cs := res.DeviceWrites[name]
			ws, bs := make([]int64, len(cs)), make([]int64, len(cs))
			for i, c := range cs {
				ws[i], bs[i] = c.Writes, c.Bytes
			}
			fmt.Fprintf(stdout, "  %-28s %7d writes %8.1f MB\n", name, medianInt(ws), float64(medianInt(bs))/1e6)
		}
	}
	return nil
}

// medianInt is the median of vs (the lower middle of an even count).
func medianInt(vs []int64) int64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
