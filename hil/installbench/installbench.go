// Package installbench measures what a delta update costs the vehicle: the
// library of `hil bench flightd-install`. It installs an old image into
// directory slot A (recording its layer index), computes the delta bundle
// of a new image against it, and then, in a child process, rebuilds the
// new image's layers from the bundle with slot A itself as the delta's base
// (slots.Manager.Base: no copy of the old image) and installs them into
// slot B, as flightd's install path does. The child reports its peak RSS
// (VmHWM, /proc/self/status); the parent reports the bundle, the layer
// indexes and the storage the update used beside the slots.
package installbench

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/slots/slotstest"
	"github.com/opencontainers/go-digest"
)

// Options configures Run.
type Options struct {
	// Dir is where the work directory goes (slots, state, bundle).
	Dir string
	// Old and New are the images' single layers (uncompressed tars).
	// Without Old, a root filesystem of Size content bytes is generated
	// from Seed (slotstest.GenerateRootfs); without New, the new layer is
	// derived from the old one (Derive).
	Old, New string
	Size     int64
	Seed     uint64
	// PartSize is the bundle's part size (0: delta's default).
	PartSize int64
	// Child is the command line that runs InstallChild in a process of
	// its own (Run appends ChildConfig.Args), and Env what it adds to the
	// child's environment.
	Child []string
	Env   []string
	// Keep leaves the work directory in place.
	Keep bool
	// MemoryLimit, if positive, is the child's Go memory limit (GOMEMLIMIT,
	// bytes): a daemon on a small board sets one so that the collector
	// works harder rather than letting the heap double.
	MemoryLimit int64
	// Log receives progress lines; may be nil.
	Log io.Writer
}

// Result is what Run measured.
type Result struct {
	Generated  bool   `json:"generated"`
	OldLayer   int64  `json:"old_layer_bytes"`
	NewLayer   int64  `json:"new_layer_bytes"`
	OldFiles   int    `json:"old_files"`
	Bundle     int64  `json:"bundle_bytes"`
	IndexOld   int64  `json:"index_old_bytes"`
	IndexNew   int64  `json:"index_new_bytes"`
	StateDir   int64  `json:"state_dir_bytes"`
	Scratch    int64  `json:"scratch_bytes"`
	Storage    int64  `json:"vehicle_storage_bytes"`
	BaseRanges int    `json:"base_ranges"`
	Child      Child  `json:"child"`
	WorkDir    string `json:"work_dir,omitempty"`
}

// Child is what the child process reports.
type Child struct {
	PeakRSS    int64         `json:"peak_rss_bytes"` // VmHWM
	Install    time.Duration `json:"install_ns"`
	Bytes      int64         `json:"content_bytes"`
	Files      int           `json:"files"`
	IndexBytes int64         `json:"index_bytes"`
	Layers     int           `json:"layers"`
	Rebuilt    int           `json:"rebuilt"`
}

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// Run prepares the slots and the bundle and runs the child.
func Run(ctx context.Context, o Options) (*Result, error) {
	if len(o.Child) == 0 {
		return nil, errors.New("installbench: no child command")
	}
	work, err := os.MkdirTemp(o.Dir, "flightd-install-")
	if err != nil {
		return nil, err
	}
	res := &Result{}
	if o.Keep {
		res.WorkDir = work
	} else {
		defer os.RemoveAll(work)
	}
	pre, err := prepare(ctx, &o, work, res)
	if err != nil {
		return nil, err
	}
	oldPath, oldID, bundlePath := pre.oldPath, pre.oldID, pre.bundle
	cfg := ChildConfig{State: filepath.Join(work, "state"), A: filepath.Join(work, "a"), B: filepath.Join(work, "b"), Bundle: bundlePath}
	for _, d := range []string{cfg.State, cfg.A, cfg.B, filepath.Join(work, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	o.logf("installing the old image into slot A")
	m, err := slots.Open(cfg.options(""))
	if err != nil {
		return nil, err
	}
	f, err := os.Open(oldPath)
	if err != nil {
		return nil, err
	}
	ir, err := m.Install(ctx, slots.A, slots.Image{Label: "old", Layers: []io.Reader{bufio.NewReaderSize(f, 1<<20)}, DiffIDs: []digest.Digest{oldID}})
	f.Close()
	if err != nil {
		return nil, err
	}
	res.IndexOld, res.OldFiles = ir.IndexBytes, ir.Files
	if ir.IndexBytes == 0 {
		return nil, fmt.Errorf("installbench: no index for the old image: %s", ir.IndexSkipped)
	}

	o.logf("child: rebuilding the new image from the bundle and slot A into slot B")
	args := append(append([]string(nil), o.Child[1:]...), cfg.Args()...)
	cmd := exec.CommandContext(ctx, o.Child[0], args...)
	cmd.Env = append(append(os.Environ(), o.Env...), "TMPDIR="+filepath.Join(work, "tmp"))
	if o.MemoryLimit > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("GOMEMLIMIT=%d", o.MemoryLimit))
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("installbench: child: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	if err := json.Unmarshal(out.Bytes(), &res.Child); err != nil {
		return nil, fmt.Errorf("installbench: child output %q: %v", out.String(), err)
	}
	res.IndexNew = res.Child.IndexBytes
	if res.StateDir, err = dirSize(cfg.State); err != nil {
		return nil, err
	}
	if res.Scratch, err = dirSize(filepath.Join(work, "tmp")); err != nil {
		return nil, err
	}
	res.Storage = res.Bundle + res.StateDir + res.Scratch
	return res, nil
}

// prepared is what prepare made: the two layers and the bundle.
type prepared struct {
	oldPath, newPath, bundle string
	oldID, newID             digest.Digest
}

// prepare writes (or takes) the old and the new layer into work and
// computes the bundle, filling the layer and bundle figures of res.
func prepare(ctx context.Context, o *Options, work string, res *Result) (*prepared, error) {
	oldPath, newPath := o.Old, o.New
	if oldPath == "" {
		res.Generated = true
		o.logf("generating a root filesystem of %d content bytes (seed %d)", o.Size, o.Seed)
		b, _, err := slotstest.GenerateRootfs(o.Seed, o.Size)
		if err != nil {
			return nil, err
		}
		oldPath = filepath.Join(work, "old.tar")
		if err := os.WriteFile(oldPath, b, 0o644); err != nil {
			return nil, err
		}
	}
	if newPath == "" {
		newPath = filepath.Join(work, "new.tar")
		o.logf("deriving the new layer from the old one")
		if err := deriveFile(oldPath, newPath, o.Seed); err != nil {
			return nil, err
		}
	}
	oldID, oldSize, err := hashFile(oldPath)
	if err != nil {
		return nil, err
	}
	newID, newSize, err := hashFile(newPath)
	if err != nil {
		return nil, err
	}
	res.OldLayer, res.NewLayer = oldSize, newSize

	bundlePath := filepath.Join(work, "bundle")
	o.logf("computing the bundle (%s -> %s)", oldID, newID)
	if err := computeBundle(ctx, oldPath, oldID, newPath, newID, bundlePath, work, o.PartSize); err != nil {
		return nil, err
	}
	if res.Bundle, err = fileSize(bundlePath); err != nil {
		return nil, err
	}
	if res.BaseRanges, err = countRanges(bundlePath); err != nil {
		return nil, err
	}

	return &prepared{oldPath: oldPath, newPath: newPath, bundle: bundlePath, oldID: oldID, newID: newID}, nil
}

// ChildConfig is where the child finds the slots and the bundle.
type ChildConfig struct {
	State, A, B, Bundle string
}

// Args are the child command's flags for c.
func (c ChildConfig) Args() []string {
	return []string{"--state", c.State, "--slot-a", c.A, "--slot-b", c.B, "--bundle", c.Bundle}
}

func (c ChildConfig) options(booted slots.SlotID) slots.Options {
	return slots.Options{StateDir: c.State, Booted: booted, Log: slog.New(slog.DiscardHandler),
		A: slots.Slot{Backend: slots.BackendDir, Path: c.A}, B: slots.Slot{Backend: slots.BackendDir, Path: c.B}}
}

// InstallChild is the child's work, what flightd does when a bundle is
// complete: with slot A booted, open it as the delta base, check every
// layer's base ranges before anything is written, then install slot B
// from the layers rebuilt as they stream (one at a time, never stored),
// and report the peak RSS.
func InstallChild(ctx context.Context, c ChildConfig) (*Child, error) {
	start := time.Now()
	m, err := slots.Open(c.options(slots.A))
	if err != nil {
		return nil, err
	}
	base, err := m.Base(slots.A)
	if err != nil {
		return nil, err
	}
	defer base.Close()
	f, err := os.Open(c.Bundle)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b, err := delta.OpenBundle(f, fi.Size())
	if err != nil {
		return nil, err
	}
	res := &Child{Layers: len(b.Header.Layers)}
	var layers []io.Reader
	var ids []digest.Digest
	for li, lp := range b.Header.Layers {
		if lp.Decision != delta.Reuse {
			res.Rebuilt++
			if errs := b.VerifyBase(ctx, li, base); len(errs) > 0 {
				return nil, fmt.Errorf("installbench: %d base ranges do not match: %w", len(errs), errors.Join(errs...))
			}
		}
		layers = append(layers, &lazyLayer{start: layerSource(ctx, b, li, base)})
		ids = append(ids, lp.DiffID)
	}
	ir, err := m.Install(ctx, slots.B, slots.Image{Label: "new", Layers: layers, DiffIDs: ids})
	if err != nil {
		return nil, err
	}
	res.Install = time.Since(start)
	res.Bytes, res.Files, res.IndexBytes = ir.Bytes, ir.Files, ir.IndexBytes
	res.PeakRSS, err = VmHWM()
	return res, err
}

// layerSource writes layer li's tar: rebuilt from the bundle, or, for a
// reused layer, read from the base and checked against its diff_id.
func layerSource(ctx context.Context, b *delta.Bundle, li int, base *slots.LayerBase) func(w io.Writer) error {
	lp := b.Header.Layers[li]
	return func(w io.Writer) error {
		if lp.Decision != delta.Reuse {
			return b.ApplyLayer(ctx, li, base, w)
		}
		size, ok := base.Size(lp.DiffID)
		if !ok {
			return fmt.Errorf("installbench: reused layer %s not in the base", lp.DiffID)
		}
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(w, h), io.NewSectionReader(base.Layer(lp.DiffID), 0, size)); err != nil {
			return err
		}
		if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != lp.DiffID {
			return fmt.Errorf("installbench: reused layer reads as %s, want %s", got, lp.DiffID)
		}
		return nil
	}
}

// lazyLayer starts its producer on the first Read, so that only the layer
// being installed holds a delta applier.
type lazyLayer struct {
	start func(w io.Writer) error
	pr    *io.PipeReader
}

func (l *lazyLayer) Read(p []byte) (int, error) {
	if l.pr == nil {
		pr, pw := io.Pipe()
		l.pr = pr
		go func() { pw.CloseWithError(l.start(pw)) }()
	}
	return l.pr.Read(p)
}

// VmHWM returns the process's peak resident set size (VmHWM of
// /proc/self/status): what the kernel counted, Go heap, stacks, the
// binary's pages and the page tables' owners alike.
func VmHWM() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("installbench: no VmHWM in /proc/self/status")
}

func computeBundle(ctx context.Context, oldPath string, oldID digest.Digest, newPath string, newID digest.Digest, out, tmp string, part int64) error {
	src := func(p string, d digest.Digest) delta.LayerSource {
		return delta.LayerSource{DiffID: d, Open: func() (io.ReadCloser, error) { return os.Open(p) }}
	}
	config, err := benchConfig(newID)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	_, err = delta.ComputeLayers(ctx, []delta.LayerSource{src(oldPath, oldID)},
		delta.Target{Config: config, Layers: []delta.LayerSource{src(newPath, newID)}}, bw, delta.Options{TempDir: tmp, PartSize: part})
	if err == nil {
		err = bw.Flush()
	}
	return errors.Join(err, f.Close())
}

// benchConfig is the new image's config: one layer, newID.
func benchConfig(newID digest.Digest) ([]byte, error) {
	return json.Marshal(map[string]any{"architecture": "arm64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []digest.Digest{newID}}})
}

func countRanges(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	b, err := delta.OpenBundle(f, fi.Size())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range b.Header.Layers {
		for _, p := range l.Parts {
			n += len(p.Ranges)
		}
	}
	return n, nil
}

// Derive writes to w a new layer made from the old layer r, as an update
// would change it: about one regular file in 40 gets a few bytes changed in
// place (as a rebuilt binary), one in 200 grows by 1 KiB, and a new 4 MiB
// file is added. Headers are rewritten by archive/tar.
func Derive(r io.Reader, w io.Writer, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 0xde1))
	tr, tw := tar.NewReader(r), tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		h := fnv.New32a()
		h.Write([]byte(hdr.Name))
		k := h.Sum32()
		if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 || (k%40 != 0 && k%200 != 1) || hdr.Size > 64<<20 {
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if _, err := io.Copy(tw, tr); err != nil {
				return err
			}
			continue
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		if k%40 == 0 {
			for i := 0; i < 16; i++ {
				body[rng.IntN(len(body))] ^= byte(1 + rng.IntN(255))
			}
		} else {
			grow := make([]byte, 1024)
			for i := range grow {
				grow[i] = byte(rng.IntN(256))
			}
			body = append(body, grow...)
		}
		hdr.Size = int64(len(body))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(body); err != nil {
			return err
		}
	}
	added := make([]byte, 4<<20)
	for i := range added {
		added[i] = byte(rng.IntN(256))
	}
	if err := tw.WriteHeader(&tar.Header{Name: "usr/share/bench-added.bin", Typeflag: tar.TypeReg, Mode: 0o644,
		Size: int64(len(added)), ModTime: time.Unix(1700000000, 0)}); err != nil {
		return err
	}
	if _, err := tw.Write(added); err != nil {
		return err
	}
	return tw.Close()
}

func deriveFile(oldPath, newPath string, seed uint64) error {
	in, err := os.Open(oldPath)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(newPath)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	err = Derive(bufio.NewReaderSize(in, 1<<20), bw, seed)
	if err == nil {
		err = bw.Flush()
	}
	return errors.Join(err, out.Close())
}

func hashFile(p string) (digest.Digest, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), n, err
}

func fileSize(p string) (int64, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// dirSize is the bytes of the regular files below dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}
