package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/bootorbit/bootorbit/hil/disk"
	"github.com/bootorbit/bootorbit/internal/cli"
)

func init() {
	commands.Add(cli.Command{
		Name:    "disk serve",
		Args:    "[--size 1GiB] [--rate 100MB/s,0.2ms] [--mkfs=true] [--mount=true] [--loop-direct-io=true] [--trace]",
		Summary: "serve an emulated disk (in memory, bandwidth/latency model) as a loop device with ext4 on it, until SIGINT",
		Run:     runDiskServe,
	})
}

func runDiskServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("disk serve", stderr)
	sizeS := fs.String("size", "1GiB", "device `SIZE`")
	rate := fs.String("rate", "0", "device model `RATE[,LATENCY]`: bytes per second and per-request latency (e.g. 100MB/s,0.2ms; 0: unlimited)")
	mkfs := fs.Bool("mkfs", true, "make an ext4 filesystem on it")
	mount := fs.Bool("mount", true, "mount the ext4 (needs --mkfs)")
	dio := fs.Bool("loop-direct-io", true, "losetup --direct-io=on (no page cache between the loop device and the emulated disk)")
	trace := fs.Bool("trace", false, "print every FUSE request to stderr")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	size, err := parseSize(*sizeS)
	if err != nil || size%disk.BlockSize != 0 {
		return cli.Usagef("--size %q: want a multiple of %d bytes", *sizeS, disk.BlockSize)
	}
	m, err := disk.ParseModel(*rate)
	if err != nil {
		return cli.Usagef("--rate: %v", err)
	}
	o := disk.Options{Size: size, Model: m, Format: *mkfs, Mount: *mkfs && *mount, LoopDirectIO: *dio,
		Server: disk.ServerOptions{DirectIO: true}, Log: slog.New(slog.NewTextHandler(stderr, nil))}
	if *trace {
		o.Server.Trace = stderr
	}
	d, err := disk.Start(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "emulated disk: %d bytes, %v\nfile:   %s\nloop:   %s\n", size, m, d.Server.Path(), d.Loop)
	if o.Mount {
		fmt.Fprintf(stdout, "mount:  %s (ext4)\n", d.Mnt)
	}
	fmt.Fprintln(stdout, "serving until SIGINT")
	start := time.Now()
	<-ctx.Done()
	st := d.Device().Stats()
	fmt.Fprintf(stdout, "served %v: %d writes (%d bytes), %d flushes, %d reads (%d bytes), device busy %v; fuse requests: %s\n",
		time.Since(start).Round(time.Millisecond), st.Writes, st.WriteBytes, st.Flushes, st.Reads, st.ReadBytes, st.Busy.Round(time.Millisecond), d.Server.OpsString())
	return d.Close()
}

// benchDisk is a fresh ext4 on an emulated disk for `bench slot-write
// --emulate-disk`, sized for the bench's files: the two slots, the raw
// slot image and the reference files of about tarBytes each, with room.
type benchDisk struct {
	*disk.Disk
	start disk.Stats
}

func startBenchDisk(ctx context.Context, spec string, tarBytes int64, stderr io.Writer) (*benchDisk, error) {
	m, err := disk.ParseModel(spec)
	if err != nil {
		return nil, cli.Usagef("--emulate-disk: %v", err)
	}
	size := (6*tarBytes + 256<<20) / disk.BlockSize * disk.BlockSize
	d, err := disk.Start(ctx, disk.Options{Size: size, Model: m, Format: true, Mount: true, LoopDirectIO: true,
		Server: disk.ServerOptions{DirectIO: true}})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "emulated disk: %d bytes, %v; ext4 on %s mounted on %s\n", size, m, d.Loop, d.Mnt)
	return &benchDisk{Disk: d, start: d.Device().Stats()}, nil
}

func (b *benchDisk) close(w io.Writer) error {
	st := b.Device().Stats()
	fmt.Fprintf(w, "emulated disk (%v): %d writes (%d bytes), %d flushes during the bench, device busy %v; fuse requests: %s\n",
		b.Device().Model(), st.Writes-b.start.Writes, st.WriteBytes-b.start.WriteBytes, st.Flushes-b.start.Flushes,
		(st.Busy - b.start.Busy).Round(time.Millisecond), b.Server.OpsString())
	err := b.Close()
	if err != nil {
		fmt.Fprintf(w, "emulated disk teardown: %v\n", err)
	}
	return err
}
