package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/slots"
)

func init() {
	commands.Add(cli.Command{
		Name:    "bench slot-write",
		Args:    "[--size 200MiB] [--dir PATH] [--rounds N] [--seed N] [--sync syncfs|fsync]",
		Summary: "write a root filesystem into a raw and a directory slot vs a plain sequential write + fsync of the same bytes, side by side",
		Run:     runSlotBench,
	})
}

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
	rounds := fs.Int("rounds", 3, "interleaved rounds; medians are reported")
	seed := fs.Uint64("seed", 1, "seed of the generated root filesystem")
	syncS := fs.String("sync", "syncfs", "directory slot durability: syncfs (one syncfs(2)) or fsync (every file and directory)")
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
	res, err := slots.BenchSlotWrite(ctx, slots.BenchOptions{Dir: *dir, Size: size, Rounds: *rounds, Seed: *seed, Sync: mode, Log: stderr})
	if err != nil {
		return err
	}
	plainNew, plainOver, plainDirect := slots.Median(res.Plain), slots.Median(res.PlainOver), slots.Median(res.PlainDirect)
	// The raw slot is compared with the faster of the two overwrites.
	rawRef, rawRefName := plainOver, "overwrite"
	if plainDirect > 0 && plainDirect < plainOver {
		rawRef, rawRefName = plainDirect, "direct overwrite"
	}
	mbps := func(d time.Duration) float64 { return float64(res.TarBytes) / d.Seconds() / 1e6 }
	fmt.Fprintf(stdout, "slot write: %d files, %d content bytes, %d tar bytes, %d interleaved rounds (medians), dir %s, sync %s\n",
		res.Files, res.ContentBytes, res.TarBytes, *rounds, *dir, *syncS)
	fmt.Fprintf(stdout, "%-36s %10s %12s %10s\n", "method", "time", "throughput", "vs ref")
	row := func(name string, d, ref time.Duration, refName string) {
		ratio := ""
		if ref > 0 {
			ratio = fmt.Sprintf("%6.1f%% of %s", 100*ref.Seconds()/d.Seconds(), refName)
		}
		fmt.Fprintf(stdout, "%-36s %10v %7.1f MB/s  %s\n", name, d.Round(time.Millisecond), mbps(d), ratio)
	}
	row("plain: new file, write + fsync", plainNew, 0, "")
	row("plain: overwrite file, write + fsync", plainOver, 0, "")
	if plainDirect > 0 {
		row("plain: overwrite, O_DIRECT + fsync", plainDirect, 0, "")
	}
	row("raw slot: write + fdatasync", slots.Median(res.Raw), rawRef, rawRefName+" (target >= 90%)")
	row("dir slot: empty + extract + sync", slots.Median(res.Dir), plainNew, "new file (target >= 60%)")
	row("raw slot incl. read-back verify", slots.Median(res.RawTotal), rawRef, rawRefName)
	row("dir slot incl. read-back verify", slots.Median(res.DirTotal), plainNew, "new file")
	row("cpu floor: sha256 in memory, no I/O", slots.Median(res.Hash), rawRef, rawRefName)
	return nil
}
