package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"runtime"

	"github.com/opencontainers/go-digest"
)

// Writer creates or extends an OCI image layout. Blobs are written first,
// each synced, renamed into place and its directory synced; Commit writes
// the config and manifest blobs the same way and then replaces index.json
// (temporary file, sync, rename, directory sync), so that a crash at any
// point leaves a layout whose index names only complete blobs: the images
// it had before, plus the new one if Commit returned.
// A Writer is not safe for concurrent use.
type Writer struct {
	fs  fsys
	dir string
}

// Create opens the layout at dir for writing, creating the directory, its
// oci-layout marker and blobs/sha256 if needed. An existing layout keeps its
// images; Commit adds or replaces one tag.
func Create(dir string) (*Writer, error) { return create(osFS{}, dir) }

// CreateScratch is Create without any fsync, for tests and throwaway
// layouts: much faster, but a crash may leave the layout inconsistent.
// Never use it for what a vehicle keeps.
func CreateScratch(dir string) (*Writer, error) { return create(scratchFS{}, dir) }

func create(f fsys, dir string) (*Writer, error) {
	if err := f.MkdirAll(filepath.Join(dir, "blobs", "sha256")); err != nil {
		return nil, fmt.Errorf("oci: create layout: %w", err)
	}
	// The new directories' entries are made durable before anything in
	// them is relied upon.
	for _, d := range []string{filepath.Join(dir, "blobs"), dir, filepath.Dir(dir)} {
		if err := f.SyncDir(d); err != nil {
			return nil, fmt.Errorf("oci: create layout: %w", err)
		}
	}
	w := &Writer{fs: f, dir: dir}
	marker := filepath.Join(dir, "oci-layout")
	b, err := f.ReadFile(marker, 4096)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := w.writeFileAtomic(marker, []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
			return nil, fmt.Errorf("oci: create layout: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("%w: %s: oci-layout: %w", ErrNotLayout, dir, err)
	default:
		if err := checkMarker(dir, b); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Dir returns the layout directory.
func (w *Writer) Dir() string { return w.dir }

// WriteBlob streams r into a blob and returns its descriptor (with
// mediaType). If want is not empty, the content must hash to it, or the blob
// is discarded and a *BlobError wrapping ErrDigestMismatch is returned.
func (w *Writer) WriteBlob(mediaType string, r io.Reader, want digest.Digest) (Descriptor, error) {
	blobs := filepath.Join(w.dir, "blobs", "sha256")
	tmp, err := w.fs.CreateTemp(blobs, ".tmp-blob-*")
	if err != nil {
		return Descriptor{}, fmt.Errorf("oci: write blob: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			w.fs.Remove(tmp.Name())
		}
	}()
	dg := digest.SHA256.Digester()
	n, err := io.Copy(io.MultiWriter(tmp, dg.Hash()), r)
	if err != nil {
		return Descriptor{}, fmt.Errorf("oci: write blob: %w", err)
	}
	got := dg.Digest()
	if want != "" && got != want {
		return Descriptor{}, &BlobError{Digest: want, Err: fmt.Errorf("%w: content written hashes to %s", ErrDigestMismatch, got)}
	}
	if err := tmp.Sync(); err != nil {
		return Descriptor{}, fmt.Errorf("oci: write blob: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Descriptor{}, fmt.Errorf("oci: write blob: %w", err)
	}
	if err := w.fs.Rename(tmp.Name(), filepath.Join(blobs, got.Encoded())); err != nil {
		return Descriptor{}, fmt.Errorf("oci: write blob: %w", err)
	}
	ok = true
	if err := w.fs.SyncDir(blobs); err != nil {
		return Descriptor{}, fmt.Errorf("oci: write blob: %w", err)
	}
	return Descriptor{MediaType: mediaType, Digest: got, Size: n}, nil
}

// WriteBlobBytes writes b as a blob.
func (w *Writer) WriteBlobBytes(mediaType string, b []byte) (Descriptor, error) {
	return w.WriteBlob(mediaType, bytes.NewReader(b), "")
}

// NewConfig returns a minimal image config for platform p with the given
// diff_ids, for images built from scratch (tests, tools).
func NewConfig(p Platform, diffIDs []digest.Digest) []byte {
	if diffIDs == nil {
		diffIDs = []digest.Digest{}
	}
	c := Config{Architecture: p.Architecture, OS: p.OS, Variant: p.Variant, RootFS: RootFS{Type: "layers", DiffIDs: diffIDs}}
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // a plain struct always marshals
	}
	return b
}

// DefaultPlatform is linux on the running architecture.
func DefaultPlatform() Platform { return Platform{OS: "linux", Architecture: runtime.GOARCH} }

// Commit writes config (the exact bytes of an image config) and an OCI
// manifest listing layers (descriptors of blobs already written), then
// points tag at the manifest in index.json, replacing any entry with that
// tag. The config's diff_ids must be as many as layers.
func (w *Writer) Commit(tag string, config []byte, layers []Descriptor, annotations map[string]string) (Descriptor, error) {
	if err := checkTag(tag); err != nil {
		return Descriptor{}, fmt.Errorf("%w: %v", ErrBadRef, err)
	}
	cfg, err := ParseConfig(config)
	if err != nil {
		return Descriptor{}, fmt.Errorf("oci: commit: %w", err)
	}
	if len(cfg.RootFS.DiffIDs) != len(layers) {
		return Descriptor{}, fmt.Errorf("%w: commit: config has %d diff_ids for %d layers", ErrInvalid, len(cfg.RootFS.DiffIDs), len(layers))
	}
	for i, l := range layers {
		what := fmt.Sprintf("layer %d", i)
		if _, err := layerCompression(l.MediaType); err != nil {
			return Descriptor{}, &BlobError{Digest: l.Digest, What: what, Err: err}
		}
		p, err := BlobPath(w.dir, l.Digest)
		if err != nil {
			return Descriptor{}, fmt.Errorf("oci: commit: %s: %w", what, err)
		}
		fi, err := w.fs.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return Descriptor{}, &BlobError{Digest: l.Digest, What: what, Err: ErrBlobMissing}
		} else if err != nil {
			return Descriptor{}, &BlobError{Digest: l.Digest, What: what, Err: err}
		}
		if fi.Size() != l.Size {
			return Descriptor{}, &BlobError{Digest: l.Digest, What: what, Err: fmt.Errorf("%w: file has %d bytes, descriptor says %d", ErrSizeMismatch, fi.Size(), l.Size)}
		}
	}
	cd, err := w.WriteBlobBytes(MediaTypeOCIConfig, config)
	if err != nil {
		return Descriptor{}, err
	}
	if layers == nil {
		layers = []Descriptor{}
	}
	m := Manifest{SchemaVersion: 2, MediaType: MediaTypeOCIManifest, Config: cd, Layers: layers, Annotations: annotations}
	mb, err := json.Marshal(m)
	if err != nil {
		return Descriptor{}, fmt.Errorf("oci: commit: %w", err)
	}
	md, err := w.WriteBlobBytes(MediaTypeOCIManifest, mb)
	if err != nil {
		return Descriptor{}, err
	}
	if cfg.OS != "" || cfg.Architecture != "" {
		md.Platform = &Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	}
	if err := w.tag(tag, md); err != nil {
		return Descriptor{}, err
	}
	return md, nil
}

// tag points tag at desc in index.json, atomically.
func (w *Writer) tag(tag string, desc Descriptor) error {
	path := filepath.Join(w.dir, "index.json")
	idx := &Index{SchemaVersion: 2, MediaType: MediaTypeOCIIndex}
	b, err := w.fs.ReadFile(path, MaxIndexSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("oci: %s: index.json: %w", w.dir, err)
	default:
		old, err := ParseIndex(b)
		if err != nil {
			return fmt.Errorf("oci: %s: index.json: %w", w.dir, err)
		}
		for _, d := range old.Manifests {
			if d.Annotations[RefNameAnnotation] != tag {
				idx.Manifests = append(idx.Manifests, d)
			}
		}
		idx.Annotations = old.Annotations
	}
	desc.Annotations = map[string]string{RefNameAnnotation: tag}
	idx.Manifests = append(idx.Manifests, desc)
	b, err = json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("oci: write index.json: %w", err)
	}
	if err := w.writeFileAtomic(path, b); err != nil {
		return fmt.Errorf("oci: write index.json: %w", err)
	}
	return nil
}

// writeFileAtomic writes b to path through a synced temporary file renamed
// over it, then syncs the directory.
func (w *Writer) writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := w.fs.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	fail := func(err error) error {
		tmp.Close()
		w.fs.Remove(tmp.Name())
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := w.fs.Rename(tmp.Name(), path); err != nil {
		w.fs.Remove(tmp.Name())
		return err
	}
	return w.fs.SyncDir(dir)
}
