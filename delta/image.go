package delta

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/opencontainers/go-digest"
)

// Compute writes to w a bundle that turns image from (what the vehicle holds)
// into image to.
func Compute(ctx context.Context, from, to *oci.Image, w io.Writer, opts Options) (Stats, error) {
	var base []LayerSource
	for i, l := range from.Layers() {
		base = append(base, LayerSource{DiffID: l.DiffID, Open: func() (io.ReadCloser, error) { return from.OpenLayer(i) }})
	}
	t := Target{Config: to.ConfigBytes, Annotations: to.Manifest.Annotations}
	for i, l := range to.Layers() {
		t.Layers = append(t.Layers, LayerSource{DiffID: l.DiffID, Open: func() (io.ReadCloser, error) { return to.OpenLayer(i) }})
	}
	return ComputeLayers(ctx, base, t, w, opts)
}

// ComputeFile is Compute into the file at path, written durably: a
// temporary file in the same directory, synced, renamed into place, and the
// directory synced. On error nothing is left at path.
func ComputeFile(ctx context.Context, from, to *oci.Image, path string, opts Options) (Stats, error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".delta-bundle-*")
	if err != nil {
		return Stats{}, fmt.Errorf("delta: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) (Stats, error) {
		f.Close()
		os.Remove(tmp)
		return Stats{}, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	st, err := Compute(ctx, from, to, bw, opts)
	if err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(fmt.Errorf("delta: write %s: %w", path, err))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("delta: sync %s: %w", path, err))
	}
	if err := f.Close(); err != nil {
		return fail(fmt.Errorf("delta: close %s: %w", path, err))
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return Stats{}, fmt.Errorf("delta: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return Stats{}, fmt.Errorf("delta: sync %s: %w", dir, err)
		}
	}
	return st, nil
}

// ApplyOptions tune ApplyImage.
type ApplyOptions struct {
	// TempDir holds decompressed copies of base layers that are stored
	// compressed ("" means os.TempDir()). Uncompressed base layers are read
	// in place.
	TempDir string
	Log     *slog.Logger
}

// ApplyResult says what ApplyImage did, layer by layer.
type ApplyResult struct {
	Layers   []LayerResult
	Manifest digest.Digest // of the written image; "" unless every layer was rebuilt
}

// LayerResult is the outcome for one target layer.
type LayerResult struct {
	DiffID   digest.Digest
	Decision string
	Size     int64
	Err      error // nil when the layer was written and matches its diff_id
}

// ApplyImage applies the bundle in the file bundlePath to base, the old image
// as the vehicle holds it, and writes the target image as an OCI layout in
// outDir under tag (default: the tag recorded in the bundle, else "latest"),
// with uncompressed layers. Every layer is checked against
// the diff_id of the target config as it streams. A layer whose base ranges do
// not match is reported (its MismatchErrors name part, file and digests) and
// not written, the other layers still are, and the image is committed only
// when every layer was rebuilt; the error then names the failed layers.
func ApplyImage(ctx context.Context, bundlePath string, base *oci.Image, outDir, tag string, opts ApplyOptions) (ApplyResult, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := os.Open(bundlePath)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("delta: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ApplyResult{}, fmt.Errorf("delta: %w", err)
	}
	b, err := OpenBundle(f, fi.Size())
	if err != nil {
		return ApplyResult{}, err
	}
	h := b.Header
	cfg, err := oci.ParseConfig(h.Config)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("%w: target config: %v", ErrFormat, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(h.Layers) {
		return ApplyResult{}, formatf("config lists %d diff_ids, bundle %d layers", len(cfg.RootFS.DiffIDs), len(h.Layers))
	}
	for i, d := range cfg.RootFS.DiffIDs {
		if h.Layers[i].DiffID != d {
			return ApplyResult{}, formatf("layer %d: bundle rebuilds %s, config says %s", i, h.Layers[i].DiffID, d)
		}
	}

	bl := base.Layers()
	byDiff := map[digest.Digest]int{}
	for i, l := range bl {
		byDiff[l.DiffID] = i
	}
	// Base layers the parts read: uncompressed blobs in place, others
	// decompressed once into temporary files.
	readers := MapBase{}
	var cleanup []func()
	defer func() {
		for _, c := range cleanup {
			c()
		}
	}()
	needed := map[digest.Digest]bool{}
	for _, lp := range h.Layers {
		for _, p := range lp.Parts {
			for _, r := range p.Ranges {
				needed[h.Base[r.Layer]] = true
			}
		}
	}
	for d := range needed {
		i, ok := byDiff[d]
		if !ok {
			continue // reported per part by VerifyBase
		}
		ra, done, err := openBaseLayer(base, i, opts.TempDir)
		if err != nil {
			return ApplyResult{}, err
		}
		cleanup = append(cleanup, done)
		readers[d] = ra
	}

	if tag == "" {
		tag = h.Tag
	}
	if tag == "" {
		tag = "latest"
	}
	// The tag (perhaps the bundle's) is checked now, not when the image is
	// committed after every layer has been rebuilt.
	if r, err := oci.ParseRef("oci:.:" + tag); err != nil || r.Tag != tag {
		return ApplyResult{}, fmt.Errorf("delta: tag %q is not a valid OCI tag", tag)
	}
	w, err := oci.Create(outDir)
	if err != nil {
		return ApplyResult{}, err
	}
	var res ApplyResult
	var descs []oci.Descriptor
	var failed []error
	for li := range h.Layers {
		lp := &h.Layers[li]
		lr := LayerResult{DiffID: lp.DiffID, Decision: lp.Decision, Size: lp.Size}
		var desc oci.Descriptor
		if lp.Decision == Reuse {
			desc, lr.Err = copyBaseLayer(base, byDiff, lp.DiffID, w)
		} else {
			desc, lr.Err = writeLayer(ctx, b, li, readers, w)
		}
		if lr.Err != nil {
			failed = append(failed, fmt.Errorf("layer %d (%s): %w", li, lp.DiffID, lr.Err))
			log.Error("delta: layer not rebuilt", "layer", li, "diff_id", lp.DiffID, "err", lr.Err)
		} else {
			log.Info("delta: layer rebuilt", "layer", li, "diff_id", lp.DiffID, "decision", lp.Decision, "size", lp.Size)
		}
		res.Layers = append(res.Layers, lr)
		descs = append(descs, desc)
	}
	if len(failed) > 0 {
		return res, fmt.Errorf("delta: %d of %d layers not rebuilt: %w", len(failed), len(h.Layers), errors.Join(failed...))
	}
	md, err := w.Commit(tag, h.Config, descs, h.Annotations)
	if err != nil {
		return res, err
	}
	res.Manifest = md.Digest
	return res, nil
}

// FailedLayers lists the indexes of the layers that were not rebuilt.
func (r ApplyResult) FailedLayers() []int {
	var out []int
	for i, l := range r.Layers {
		if l.Err != nil {
			out = append(out, i)
		}
	}
	return slices.Clip(out)
}

func openBaseLayer(im *oci.Image, i int, tmp string) (io.ReaderAt, func(), error) {
	l := im.Layers()[i]
	if l.Compression == oci.Uncompressed {
		p, err := oci.BlobPath(im.Layout, l.Digest)
		if err != nil {
			return nil, nil, err
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, nil, fmt.Errorf("delta: base layer %d: %w", i, err)
		}
		return f, func() { f.Close() }, nil
	}
	rc, err := im.OpenLayer(i)
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	f, err := os.CreateTemp(tmp, "delta-base-*")
	if err != nil {
		return nil, nil, fmt.Errorf("delta: %w", err)
	}
	done := func() {
		f.Close()
		os.Remove(f.Name())
	}
	if _, err := io.CopyBuffer(f, rc, make([]byte, 256<<10)); err != nil {
		done()
		return nil, nil, fmt.Errorf("delta: base layer %d: %w", i, err)
	}
	return f, done, nil
}

func copyBaseLayer(im *oci.Image, byDiff map[digest.Digest]int, d digest.Digest, w *oci.Writer) (oci.Descriptor, error) {
	i, ok := byDiff[d]
	if !ok {
		return oci.Descriptor{}, fmt.Errorf("%w: reused layer %s not in the base image", ErrBaseMissing, d)
	}
	rc, err := im.OpenLayer(i)
	if err != nil {
		return oci.Descriptor{}, err
	}
	defer rc.Close()
	return w.WriteBlob(oci.MediaTypeOCILayer, rc, d)
}

// writeLayer streams the rebuilt layer into a blob; the writer checks the
// diff_id too, and discards the blob if anything fails.
func writeLayer(ctx context.Context, b *Bundle, li int, base Base, w *oci.Writer) (oci.Descriptor, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := b.ApplyLayer(ctx, li, base, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	desc, werr := w.WriteBlob(oci.MediaTypeOCILayer, pr, b.Header.Layers[li].DiffID)
	pr.CloseWithError(errWriterStopped)
	aerr := <-done
	if werr != nil && (aerr == nil || errors.Is(aerr, errWriterStopped)) {
		// The blob writer failed first (a full disk, say): its error is
		// the cause, the applier's is only the closed pipe.
		return oci.Descriptor{}, werr
	}
	if aerr != nil {
		return oci.Descriptor{}, aerr
	}
	return desc, nil
}

var errWriterStopped = errors.New("delta: blob writer stopped")
