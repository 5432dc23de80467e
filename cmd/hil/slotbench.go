package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/hil/slotbench"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/slots"
)

func init() {
	commands.Add(cli.Command{
		Name:    "bench slot-write",
		Args:    "[--size 200MiB] [--dir PATH] [--rounds N] [--seed N] [--sync syncfs|fsync] [--drop-caches=false] [--flush-every SIZE] [--tar FILE] [--emulate-disk RATE[,LATENCY] [--emulate-queue N]] [--format-slot [--format-mkfs ARGS]]",
		Summary: "write a root filesystem into a raw and a directory slot vs a plain sequential write + fsync of the same bytes, side by side",
		Run:     runSlotBench,
	})
}

// benchMkfs is the formatted slot's mkfs.ext4 arguments by default: the
// bench's main ext4 is made the same way (see hil/disk's Format), so that
// no row pays for discards or lazy inode-table zeroing that another does
// not.
const benchMkfs = "-E nodiscard,lazy_itable_init=0"

// parseSize accepts a byte count with an optional KiB, MiB, GiB (or K, M,
// G, KB, MB, GB as powers of 1000) suffix.
func parseSize(s string) (int64, error) {
	units := []struct {
		suf string
		mul int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}}
	mul := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suf) {
			s, mul = strings.TrimSuffix(s, u.suf), u.mul
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n > 1<<40/mul {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mul, nil
}

func runSlotBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("bench slot-write", stderr)
	sizeS := fs.String("size", "200MiB", "root filesystem content `SIZE`")
	dir := fs.String("dir", os.TempDir(), "`PATH` on the disk to measure (slots and the reference file go there)")
	rounds := fs.Int("rounds", 5, "interleaved rounds; medians are reported")
	seed := fs.Uint64("seed", 1, "seed of the generated root filesystem")
	syncS := fs.String("sync", "syncfs", "directory slot durability: syncfs (one syncfs(2)) or fsync (every file and directory)")
	tarPath := fs.String("tar", "", "write this root filesystem layer `TAR` (uncompressed; a real image's) instead of a generated one")
	emulate := fs.String("emulate-disk", "", "run on a fresh ext4 on an emulated disk (hil/disk) of this model instead of --dir: `RATE[,LATENCY]`, e.g. 100MB/s,0.2ms (0: unlimited)")
	flushS := fs.String("flush-every", "8MiB", "directory slot early writeback: a syncfs after every `SIZE` of content (0: only the final syncfs)")
	queue := fs.Int("emulate-queue", 4, "requests the emulated disk's server takes at once (asynchronous direct I/O); the device still does one at a time, in its model's time, but more overlap the server's own work with the device's, as a device's command queue does (1: the server's work adds to every request)")
	formatSlot := fs.Bool("format-slot", false, "also measure a directory slot formatted at every install (mkfs.ext4 + mount + extract), on a partition of its own of the same disk; root only. Without --emulate-disk the whole bench then runs on a loop disk: an image file in --dir")
	formatMkfs := fs.String("format-mkfs", benchMkfs, "extra mkfs.ext4 `ARGS` (space-separated) for the formatted slot; the default makes it as the bench's main ext4 is made (no discard, inode tables written by mkfs, not behind the next measurement's back)")
	drop := fs.Bool("drop-caches", true, "sync and drop the page cache before every measurement (root only; otherwise sync only)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	size, err := parseSize(*sizeS)
	if err != nil {
		return cli.Usagef("--size: %v", err)
	}
	if *rounds < 1 || *rounds > 100 {
		return cli.Usagef("--rounds %d: want 1..100", *rounds)
	}
	var mode slots.SyncMode
	switch *syncS {
	case "syncfs":
		mode = slots.SyncFS
	case "fsync":
		mode = slots.SyncEach
	default:
		return cli.Usagef("--sync %q: want syncfs or fsync", *syncS)
	}
	flush := int64(-1) // "0": only the final syncfs
	if *flushS != "0" {
		if flush, err = parseSize(*flushS); err != nil {
			return cli.Usagef("--flush-every: %v", err)
		}
	}
	var layer []byte
	if *tarPath != "" {
		if layer, err = os.ReadFile(*tarPath); err != nil {
			return err
		}
	}
	if *queue < 1 || *queue > 64 {
		return cli.Usagef("--emulate-queue %d: want 1..64", *queue)
	}
	if cli.Given(fs, "emulate-queue") && *emulate == "" {
		return cli.Usagef("--emulate-queue is for --emulate-disk")
	}
	if *formatSlot && os.Geteuid() != 0 {
		return cli.Usagef("--format-slot needs root (loop devices, mkfs, mount)")
	}
	if cli.Given(fs, "format-mkfs") && !*formatSlot {
		return cli.Usagef("--format-mkfs is for --format-slot")
	}
	var formatted slots.Slot
	var counters func() (int64, int64)
	if *emulate != "" || *formatSlot {
		d, err := startBenchDisk(ctx, *emulate, *queue, *dir, max(int64(len(layer)), size+size/8), *formatSlot, stderr)
		if err != nil {
			return err
		}
		defer d.close(stdout)
		*dir = d.Mnt
		if dev := d.Device(); dev != nil {
			counters = func() (int64, int64) { st := dev.Stats(); return st.Writes, st.WriteBytes }
		}
		if d.part != "" {
			formatted = slots.Slot{Backend: slots.BackendDir, Path: d.partMnt, Device: d.part, Format: "ext4", MkfsOptions: strings.Fields(*formatMkfs)}
		}
	}
	res, err := slotbench.Run(ctx, slotbench.Options{Dir: *dir, Size: size, Rounds: *rounds, Seed: *seed, Sync: mode, Log: stderr, DropCaches: *drop, Layer: layer, FlushEvery: flush, Formatted: formatted, Device: counters})
	if err != nil {
		return err
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
	if *tarPath != "" {
		src = *tarPath
	}
	fmt.Fprintf(stdout, "slot write: %s: %d entries, %d files (mean %d bytes), %d content bytes, %d tar bytes; dir %s, sync %s; %d interleaved rounds, %s; medians\n",
		src, res.Entries, res.Files, res.ContentBytes/int64(max(res.Files, 1)), res.ContentBytes, res.TarBytes, *dir, *syncS, *rounds, cond)
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
