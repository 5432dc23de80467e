// Package deltabench measures layer deltas between two images of an OCI layout
// side by side: full zstd -19 of each changed layer, zstd --patch-from at
// -19 and --ultra -22, xdelta3 -9 and bsdiff against the old image's layer
// tars, and our bundle. Every encoder and every apply runs as a child
// process so that its wall time and peak RSS (rusage Maxrss) are measured
// the same way, and every apply's output is checked against the target
// (sha256 of the rebuilt tar, or the diff_ids of our rebuilt image).
//
// The realistic image pairs come from mkimages.sh in this folder; the
// command is `hil bench delta`.
package deltabench

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/opencontainers/go-digest"
)

// Tool is a reference delta (or compression) tool, run as child processes.
type Tool struct {
	Name  string   // short name for --tools
	Label string   // what the table shows
	Bins  []string // executables it needs
	// Encode and Decode return the argv that writes out from new (and old),
	// and that rebuilds out from patch (and old).
	Encode func(old, new, out string) []string
	Decode func(old, patch, out string) []string
}

// Tools are the reference tools, in table order. "full" is zstd -19 of the
// new layer alone: the cost of sending it whole.
var Tools = []Tool{
	{
		Name: "full", Label: "full zstd -19", Bins: []string{"zstd"},
		Encode: func(_, n, o string) []string { return []string{"zstd", "-q", "-f", "-19", "-T1", n, "-o", o} },
		Decode: func(_, p, o string) []string { return []string{"zstd", "-q", "-f", "-d", p, "-o", o} },
	},
	{
		Name: "zstd19", Label: "zstd -19 --long=31 --patch-from", Bins: []string{"zstd"},
		Encode: func(old, n, o string) []string {
			return []string{"zstd", "-q", "-f", "-19", "-T1", "--long=31", "--patch-from=" + old, n, "-o", o}
		},
		Decode: func(old, p, o string) []string {
			return []string{"zstd", "-q", "-f", "-d", "--long=31", "--patch-from=" + old, p, "-o", o}
		},
	},
	{
		Name: "zstd22", Label: "zstd --ultra -22 --long=31 --patch-from", Bins: []string{"zstd"},
		Encode: func(old, n, o string) []string {
			return []string{"zstd", "-q", "-f", "--ultra", "-22", "-T1", "--long=31", "--patch-from=" + old, n, "-o", o}
		},
		Decode: func(old, p, o string) []string {
			return []string{"zstd", "-q", "-f", "-d", "--long=31", "--patch-from=" + old, p, "-o", o}
		},
	},
	{
		Name: "xdelta3", Label: "xdelta3 -9", Bins: []string{"xdelta3"},
		Encode: func(old, n, o string) []string { return []string{"xdelta3", "-9", "-e", "-f", "-s", old, n, o} },
		Decode: func(old, p, o string) []string { return []string{"xdelta3", "-d", "-f", "-s", old, p, o} },
	},
	{
		Name: "bsdiff", Label: "bsdiff", Bins: []string{"bsdiff", "bspatch"},
		Encode: func(old, n, o string) []string { return []string{"bsdiff", old, n, o} },
		Decode: func(old, p, o string) []string { return []string{"bspatch", old, o, p} },
	},
}

// ToolNames lists the names of Tools.
func ToolNames() []string {
	var s []string
	for _, t := range Tools {
		s = append(s, t.Name)
	}
	return s
}

// Ours runs our delta engine as child processes. ComputeCmd writes the
// bundle for from -> to; ApplyCmd rebuilds the target image from the bundle
// and base (the old image as the vehicle holds it: uncompressed layers) into
// the OCI layout outDir under tag.
type Ours struct {
	Label      string
	ComputeCmd func(from, to oci.Ref, bundle string) *exec.Cmd
	ApplyCmd   func(bundle string, base oci.Ref, outDir, tag string) *exec.Cmd
}

// Config is one benchmark run.
type Config struct {
	From, To oci.Ref
	// Tools names the reference tools to run (nil: all of Tools).
	Tools []string
	// Ours, when set, adds our bundle's row.
	Ours *Ours
	// WorkDir holds the layer tars and outputs ("": a temporary directory,
	// removed afterwards).
	WorkDir string
	// Timeout bounds each child process (0: 1 hour).
	Timeout time.Duration
	// Progress receives a line per step (nil: silent).
	Progress io.Writer
	// Shim, when set, is the argv prefix of a program that runs ShimMain
	// (such as `hil bench rss-exec`): every measured command is started
	// through it so that its peak RSS is not floored at this process's
	// (see shim.go). Without it, RSS figures are at least this process's
	// own peak.
	Shim []string
}

// Row is the measurement of one tool over all changed layers.
type Row struct {
	Name, Label string
	Skipped     string        // why the tool did not run ("" when it ran)
	Err         error         // a failure while running
	Size        int64         // output bytes, summed over changed layers
	Compute     time.Duration // wall clock
	ComputeCPU  time.Duration // user + system, all threads
	ComputeRSS  int64         // bytes, the largest over changed layers
	Apply       time.Duration
	ApplyRSS    int64
	RoundTrip   bool // every applied output equals its target
}

// Result is a finished run.
type Result struct {
	From, To     oci.Ref
	Layers       int   // layers in the target image
	Changed      []int // indexes of target layers not in the old image
	NewBytes     int64 // uncompressed bytes of the changed layers
	OldBytes     int64 // the old reference: all old layers' tars concatenated
	Rows         []Row
	OursRow      int // index of our row in Rows, -1 if none
	ReferenceFor string
}

// Run measures cfg's pair.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Hour
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	from, err := oci.Open(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("bench: from: %w", err)
	}
	to, err := oci.Open(cfg.To)
	if err != nil {
		return nil, fmt.Errorf("bench: to: %w", err)
	}
	work := cfg.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "deltabench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}

	res := &Result{From: cfg.From, To: cfg.To, Layers: len(to.Layers()), OursRow: -1}
	have := map[digest.Digest]bool{}
	for _, d := range from.DiffIDs() {
		have[d] = true
	}
	for i, l := range to.Layers() {
		if !have[l.DiffID] {
			res.Changed = append(res.Changed, i)
		}
	}

	// The old reference: every old layer's tar, concatenated (one layer's
	// tar for a single-layer image). A vehicle holds all of them.
	fmt.Fprintf(progress, "extracting %d old layer(s)\n", len(from.Layers()))
	oldPath := filepath.Join(work, "old.tar")
	if res.OldBytes, err = extract(from, nil, oldPath); err != nil {
		return nil, err
	}
	newPaths := map[int]string{}
	newSums := map[int]digest.Digest{}
	for _, i := range res.Changed {
		p := filepath.Join(work, fmt.Sprintf("new-%d.tar", i))
		fmt.Fprintf(progress, "extracting new layer %d\n", i)
		n, err := extract(to, []int{i}, p)
		if err != nil {
			return nil, err
		}
		res.NewBytes += n
		newPaths[i] = p
		newSums[i] = to.Layers()[i].DiffID
	}

	want := map[string]bool{}
	for _, n := range cfg.Tools {
		want[n] = true
	}
	for _, t := range Tools {
		if cfg.Tools != nil && !want[t.Name] {
			continue
		}
		row := Row{Name: t.Name, Label: t.Label, RoundTrip: true}
		if missing := missingBins(t.Bins); missing != "" {
			row.Skipped = "skipped: " + missing + " not installed"
			row.RoundTrip = false
			res.Rows = append(res.Rows, row)
			continue
		}
		for _, i := range res.Changed {
			out := filepath.Join(work, fmt.Sprintf("%s-%d.out", t.Name, i))
			dec := filepath.Join(work, fmt.Sprintf("%s-%d.dec", t.Name, i))
			fmt.Fprintf(progress, "%s: encode layer %d\n", t.Label, i)
			m, err := runChild(ctx, cfg, t.Encode(oldPath, newPaths[i], out))
			if err != nil {
				row.Err = err
				break
			}
			fi, err := os.Stat(out)
			if err != nil {
				row.Err = err
				break
			}
			row.Size += fi.Size()
			row.Compute += m.wall
			row.ComputeCPU += m.cpu
			row.ComputeRSS = max(row.ComputeRSS, m.maxRSS)
			fmt.Fprintf(progress, "%s: apply layer %d\n", t.Label, i)
			m, err = runChild(ctx, cfg, t.Decode(oldPath, out, dec))
			if err != nil {
				row.Err = err
				break
			}
			row.Apply += m.wall
			row.ApplyRSS = max(row.ApplyRSS, m.maxRSS)
			sum, err := fileDigest(dec)
			if err != nil {
				row.Err = err
				break
			}
			if sum != newSums[i] {
				row.RoundTrip = false
			}
			os.Remove(dec)
		}
		if row.Err != nil {
			row.RoundTrip = false
		}
		res.Rows = append(res.Rows, row)
	}

	if cfg.Ours != nil {
		row, err := runOurs(ctx, cfg, from, to, work, progress)
		if err != nil {
			return nil, err
		}
		res.OursRow = len(res.Rows)
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

// runOurs measures our bundle: compute, then apply onto an uncompressed copy
// of the old image (what the vehicle holds), then checks the rebuilt image.
func runOurs(ctx context.Context, cfg Config, from, to *oci.Image, work string, progress io.Writer) (Row, error) {
	o := cfg.Ours
	row := Row{Name: "ours", Label: o.Label}
	if row.Label == "" {
		row.Label = "ours (bundle)"
	}
	// The tools read uncompressed tars extracted beforehand; ours gets the
	// same: both images with uncompressed layers (the bundle is the same
	// either way, as it depends on diff_ids and content only). The base is
	// also what the vehicle holds.
	fmt.Fprintf(progress, "%s: preparing uncompressed copies of both images\n", row.Label)
	base, err := Uncompressed(from, filepath.Join(work, "vehicle-base"), "base")
	if err != nil {
		return row, err
	}
	target, err := Uncompressed(to, filepath.Join(work, "target-plain"), "target")
	if err != nil {
		return row, err
	}
	bundle := filepath.Join(work, "ours.bundle")
	fmt.Fprintf(progress, "%s: compute\n", row.Label)
	m, err := runCmd(ctx, cfg, o.ComputeCmd(base, target, bundle))
	if err != nil {
		row.Err = err
		return row, nil
	}
	fi, err := os.Stat(bundle)
	if err != nil {
		row.Err = err
		return row, nil
	}
	row.Size, row.Compute, row.ComputeCPU, row.ComputeRSS = fi.Size(), m.wall, m.cpu, m.maxRSS

	outDir := filepath.Join(work, "ours-out")
	os.RemoveAll(outDir)
	fmt.Fprintf(progress, "%s: apply\n", row.Label)
	m, err = runCmd(ctx, cfg, o.ApplyCmd(bundle, base, outDir, "rebuilt"))
	if err != nil {
		row.Err = err
		return row, nil
	}
	row.Apply, row.ApplyRSS = m.wall, m.maxRSS
	if err := checkRebuilt(oci.Ref{Layout: outDir, Tag: "rebuilt"}, to); err != nil {
		row.Err = err
		return row, nil
	}
	row.RoundTrip = true
	return row, nil
}

// checkRebuilt reads every layer of the rebuilt image to its end (OpenLayer
// verifies blob digests and diff_ids) and compares its diff_ids with want's.
func checkRebuilt(ref oci.Ref, want *oci.Image) error {
	im, err := oci.Open(ref)
	if err != nil {
		return fmt.Errorf("bench: rebuilt image: %w", err)
	}
	got, exp := im.DiffIDs(), want.DiffIDs()
	if len(got) != len(exp) {
		return fmt.Errorf("bench: rebuilt image has %d layers, want %d", len(got), len(exp))
	}
	for i := range got {
		if got[i] != exp[i] {
			return fmt.Errorf("bench: rebuilt layer %d diff_id %s, want %s", i, got[i], exp[i])
		}
		rc, err := im.OpenLayer(i)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("bench: rebuilt layer %d: %w", i, err)
		}
	}
	return nil
}

// Uncompressed writes im with uncompressed layers into the layout dir under
// tag (reusing it if it is already there) and returns its reference.
func Uncompressed(im *oci.Image, dir, tag string) (oci.Ref, error) {
	ref := oci.Ref{Layout: dir, Tag: tag}
	if got, err := oci.Open(ref); err == nil && string(got.ConfigBytes) == string(im.ConfigBytes) {
		return ref, nil
	}
	w, err := oci.Create(dir)
	if err != nil {
		return ref, err
	}
	var descs []oci.Descriptor
	for i, l := range im.Layers() {
		rc, err := im.OpenLayer(i)
		if err != nil {
			return ref, err
		}
		d, err := w.WriteBlob(oci.MediaTypeOCILayer, rc, l.DiffID)
		rc.Close()
		if err != nil {
			return ref, err
		}
		descs = append(descs, d)
	}
	_, err = w.Commit(tag, im.ConfigBytes, descs, nil)
	return ref, err
}

// extract writes the uncompressed tars of layers (nil: all) of im,
// concatenated, to path and returns the byte count.
func extract(im *oci.Image, layers []int, path string) (int64, error) {
	if layers == nil {
		for i := range im.Layers() {
			layers = append(layers, i)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	for _, i := range layers {
		rc, err := im.OpenLayer(i)
		if err != nil {
			return 0, err
		}
		n, err := io.Copy(f, rc)
		rc.Close()
		if err != nil {
			return 0, fmt.Errorf("bench: layer %d: %w", i, err)
		}
		total += n
	}
	return total, f.Close()
}

func fileDigest(path string) (digest.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return digest.NewDigest(digest.SHA256, h), nil
}

func missingBins(bins []string) string {
	var miss []string
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			miss = append(miss, b)
		}
	}
	return strings.Join(miss, ", ")
}

type measure struct {
	wall   time.Duration
	cpu    time.Duration // user + system
	maxRSS int64         // bytes
}

func runChild(ctx context.Context, cfg Config, argv []string) (measure, error) {
	return runCmd(ctx, cfg, exec.Command(argv[0], argv[1:]...))
}

// runCmd runs cmd to completion under cfg.Timeout (through cfg.Shim if set)
// and returns its wall time and peak resident set size.
func runCmd(ctx context.Context, cfg Config, cmd *exec.Cmd) (measure, error) {
	timeout := cfg.Timeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rssFile string
	if len(cfg.Shim) > 0 {
		f, err := os.CreateTemp("", "bench-rss-*")
		if err != nil {
			return measure{}, err
		}
		rssFile = f.Name()
		f.Close()
		os.Remove(rssFile)
		defer os.Remove(rssFile)
		argv := append(append(append([]string(nil), cfg.Shim[1:]...), "--rss-out", rssFile, "--"), cmd.Args...)
		argv[len(cfg.Shim)-1+3] = cmd.Path
		shim := exec.Command(cfg.Shim[0], argv...)
		shim.Env, shim.Dir, shim.Stdout, shim.Stdin = cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stdin
		cmd = shim
	}
	var stderr strings.Builder
	cmd.Stderr = &limitWriter{w: &stderr, n: 4096}
	if cmd.Stdout == nil {
		cmd.Stdout = io.Discard
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return measure{}, fmt.Errorf("bench: %s: %w", cmd.Path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		err = ctx.Err()
	}
	m := measure{wall: time.Since(start)}
	if rssFile != "" {
		if err == nil {
			rss, cpu, rerr := readShim(rssFile)
			if rerr != nil {
				return m, rerr
			}
			m.maxRSS, m.cpu = rss, cpu
		}
	} else if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			m.maxRSS = ru.Maxrss * 1024 // Linux reports KiB
			m.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if errors.Is(err, context.DeadlineExceeded) {
			msg = fmt.Sprintf("timed out after %v", timeout)
		}
		return m, fmt.Errorf("bench: %s: %v: %s", strings.Join(cmd.Args, " "), err, msg)
	}
	return m, nil
}

type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
