package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bootorbit/bootorbit/hil/disk"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func init() {
	commands.Group("disk", "the emulated block device (eMMC speed, real power cuts under the kernel's ext4)",
		`The disk commands run hil/disk: our own FUSE server serving a disk image from
memory in 4 KiB blocks with a bandwidth/latency model and a volatile write
cache, under a loop device with a fresh ext4. Root only; needs /dev/fuse,
losetup and mkfs.ext4.`)
	commands.Add("disk", func() *cobra.Command {
		var f diskServeFlags
		c := &cobra.Command{
			Use:   "serve",
			Short: "serve an emulated disk (in memory, bandwidth/latency model) as a loop device with ext4 on it, until SIGINT",
			Long: `Serve starts an emulated disk of --size with the --rate model, puts a loop
device over it, makes an ext4 and mounts it (unless told not to), prints
where, and serves until SIGINT or SIGTERM; then it prints the device's
counters and tears everything down.`,
			Example: `  hil disk serve --size 1GiB --rate 100MB/s,0.2ms
  hil disk serve --size 256MiB --mkfs=false --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runDiskServe(c, &f) },
		}
		fs := c.Flags()
		cli.SizeVar(fs, &f.size, "size", 1<<30, "device size (bytes or with a unit: 1GiB), a multiple of 4KiB")
		fs.StringVar(&f.rate, "rate", "0", "device model `RATE[,LATENCY]`: bytes per second and per-request latency (e.g. 100MB/s,0.2ms; 0: unlimited)")
		fs.BoolVar(&f.mkfs, "mkfs", true, "make an ext4 filesystem on it")
		fs.BoolVar(&f.mount, "mount", true, "mount the ext4 (needs --mkfs)")
		fs.BoolVar(&f.dio, "loop-direct-io", true, "losetup --direct-io=on (no page cache between the loop device and the emulated disk)")
		fs.BoolVar(&f.trace, "trace", false, "print every FUSE request to stderr")
		cli.VerboseFlag(c, &f.verbose)
		cli.JSONFlag(c, &f.json)
		return c
	})
}

type diskServeFlags struct {
	size                                   int64
	rate                                   string
	mkfs, mount, dio, trace, verbose, json bool
}

// diskServeDoc is the --json document of disk serve: one when serving
// starts, one with the counters when it ends.
type diskServeDoc struct {
	Size   int64       `json:"size"`
	Model  string      `json:"model"`
	File   string      `json:"file"`
	Loop   string      `json:"loop"`
	Mount  string      `json:"mount,omitempty"`
	Served *disk.Stats `json:"served,omitempty"`
}

func runDiskServe(c *cobra.Command, f *diskServeFlags) error {
	ctx, stdout, stderr := c.Context(), c.OutOrStdout(), c.ErrOrStderr()
	size := f.size
	if size <= 0 || size%disk.BlockSize != 0 {
		return cli.Usagef("--size %d: want a multiple of %d bytes", size, disk.BlockSize)
	}
	m, err := disk.ParseModel(f.rate)
	if err != nil {
		return cli.Usagef("--rate: %v", err)
	}
	o := disk.Options{Size: size, Model: m, Format: f.mkfs, Mount: f.mkfs && f.mount, LoopDirectIO: f.dio,
		Server: disk.ServerOptions{DirectIO: true}, Log: cli.Logger(stderr, f.verbose)}
	if f.trace {
		o.Server.Trace = stderr
	}
	d, err := disk.Start(ctx, o)
	if err != nil {
		return err
	}
	doc := diskServeDoc{Size: size, Model: m.String(), File: d.Server.Path(), Loop: d.Loop}
	if o.Mount {
		doc.Mount = d.Mnt
	}
	if f.json {
		if err := cli.WriteJSON(stdout, doc); err != nil {
			d.Close()
			return err
		}
	} else {
		fmt.Fprintf(stdout, "emulated disk: %d bytes, %v\nfile:   %s\nloop:   %s\n", size, m, d.Server.Path(), d.Loop)
		if o.Mount {
			fmt.Fprintf(stdout, "mount:  %s (ext4)\n", d.Mnt)
		}
		fmt.Fprintln(stdout, "serving until SIGINT")
	}
	start := time.Now()
	<-ctx.Done()
	st := d.Device().Stats()
	if f.json {
		doc.Served = &st
		if err := cli.WriteJSON(stdout, doc); err != nil {
			d.Close()
			return err
		}
	} else {
		fmt.Fprintf(stdout, "served %v: %d writes (%d bytes), %d flushes, %d reads (%d bytes), device busy %v; fuse requests: %s\n",
			time.Since(start).Round(time.Millisecond), st.Writes, st.WriteBytes, st.Flushes, st.Reads, st.ReadBytes, st.Busy.Round(time.Millisecond), d.Server.OpsString())
	}
	return d.Close()
}

// benchDisk is a fresh ext4 for `bench slot-write` on a disk of its own:
// an emulated disk (--emulate-disk), or a loop device over an image file
// on the disk measured (--format-slot without --emulate-disk). It is sized
// for the bench's files: the two slots, the raw slot image and the
// reference files of about tarBytes each, with room; with a formatted slot
// it has a second partition for that slot.
type benchDisk struct {
	*disk.Disk
	start disk.Stats
	image string // the loop disk's image file, removed by close
	queue int    // requests the emulated disk's server takes at once
	// part and partMnt are the formatted slot's partition and mount point
	// ("" without one).
	part, partMnt string
}

// benchDiskSizes returns the sizes of the bench's main partition and of
// the formatted slot's (0 without one) for a root filesystem layer of
// about tarBytes.
func benchDiskSizes(tarBytes int64, formatted bool) (main, slot int64) {
	main = (6*tarBytes + 256<<20) / disk.BlockSize * disk.BlockSize
	if formatted {
		slot = (2*tarBytes + 128<<20) / disk.BlockSize * disk.BlockSize
	}
	return main, slot
}

// startBenchDisk builds the bench's disk: with spec, an emulated disk of
// that model; otherwise a loop device over an image file made in dir.
func startBenchDisk(ctx context.Context, spec string, queue int, dir string, tarBytes int64, formatted bool, stderr io.Writer) (_ *benchDisk, err error) {
	mainSize, slotSize := benchDiskSizes(tarBytes, formatted)
	o := disk.Options{Size: mainSize + slotSize, Format: true, Mount: true, LoopDirectIO: true,
		Server: disk.ServerOptions{DirectIO: true, Workers: queue}}
	if slotSize > 0 {
		o.LoopSize = mainSize
	}
	b := &benchDisk{queue: max(queue, 1)}
	what := ""
	if spec != "" {
		if o.Model, err = disk.ParseModel(spec); err != nil {
			return nil, cli.Usagef("--emulate-disk: %v", err)
		}
		what = fmt.Sprintf("emulated disk: %d bytes, %v, %d request(s) served at once", o.Size, o.Model, max(queue, 1))
	} else {
		if b.image, err = makeImage(dir, o.Size); err != nil {
			return nil, err
		}
		o.File = b.image
		what = fmt.Sprintf("loop disk: %s, %d bytes", b.image, o.Size)
	}
	if b.Disk, err = disk.Start(ctx, o); err != nil {
		b.removeImage()
		return nil, err
	}
	if slotSize > 0 {
		if b.part, b.partMnt, err = b.Partition(ctx, mainSize, slotSize); err != nil {
			b.Close()
			b.removeImage()
			return nil, err
		}
		what += fmt.Sprintf("; formatted slot's partition %s (%d bytes at %d)", b.part, slotSize, mainSize)
	}
	fmt.Fprintf(stderr, "%s; ext4 on %s mounted on %s\n", what, b.Loop, b.Mnt)
	if dev := b.Device(); dev != nil {
		b.start = dev.Stats()
	}
	return b, nil
}

// makeImage makes an image file of size bytes, allocated (fallocate), in
// dir.
func makeImage(dir string, size int64) (string, error) {
	f, err := os.CreateTemp(dir, "slotbench-disk-*.img")
	if err != nil {
		return "", err
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("loop disk image %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}

func (b *benchDisk) removeImage() {
	if b.image != "" {
		os.Remove(b.image)
	}
}

func (b *benchDisk) close(w io.Writer) error {
	if dev := b.Device(); dev != nil {
		st := dev.Stats()
		fmt.Fprintf(w, "emulated disk (%v; %d request(s) served at once): %d writes (%d bytes), %d flushes during the bench, device busy %v; fuse requests: %s\n",
			dev.Model(), b.queue, st.Writes-b.start.Writes, st.WriteBytes-b.start.WriteBytes, st.Flushes-b.start.Flushes,
			(st.Busy - b.start.Busy).Round(time.Millisecond), b.Server.OpsString())
	}
	err := b.Close()
	if err != nil {
		fmt.Fprintf(w, "bench disk teardown: %v\n", err)
	} else {
		b.removeImage()
	}
	return err
}
