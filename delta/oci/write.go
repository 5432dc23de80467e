package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/opencontainers/go-digest"
)

// Writer creates or extends an OCI image layout. Blobs are written first,
// each synced and renamed into place; Commit writes the config and manifest
// blobs and then replaces index.json atomically, so a crash at any point
// leaves a layout whose index names only blobs that are complete.
// A Writer is not safe for concurrent use.
type Writer struct {
	dir string
}

// Create opens the layout at dir for writing, creating the directory, its
// oci-layout marker and blobs/sha256 if needed. An existing layout keeps its
// images; Commit adds or replaces one tag.
func Create(dir string) (*Writer, error) {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("oci: create layout: %w", err)
	}
	marker := filepath.Join(dir, "oci-layout")
	if _, err := os.Stat(marker); errors.Is(err, fs.ErrNotExist) {
		if err := writeFileAtomic(marker, []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
			return nil, fmt.Errorf("oci: create layout: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("oci: create layout: %w", err)
	} else if err := (layout{dir: dir}).checkMarker(); err != nil {
		return nil, err
	}
	for _, d := range []string{filepath.Join(dir, "blobs", "sha256"), filepath.Join(dir, "blobs"), dir} {
		if err := syncDir(d); err != nil {
			return nil, fmt.Errorf("oci: create layout: %w", err)
		}
	}
	return &Writer{dir: dir}, nil
}

// Dir returns the layout directory.
func (w *Writer) Dir() string { return w.dir }

// WriteBlob streams r into a blob and returns its descriptor (with
// mediaType). If want is not empty, the content must hash to it, or the blob
// is discarded and a *BlobError wrapping ErrDigestMismatch is returned.
func (w *Writer) WriteBlob(mediaType string, r io.Reader, want digest.Digest) (Descriptor, error) {
	blobs := filepath.Join(w.dir, "blobs", "sha256")
	tmp, err := os.CreateTemp(blobs, ".tmp-blob-*")
	if err != nil {
		return Descriptor{}, fmt.Errorf("oci: write blob: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
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
	if err := tmp.Chmod(0o644); err != nil {
		return Descriptor{}, fmt.Errorf("oci: write blob: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Descriptor{}, fmt.Errorf("oci: write blob: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(blobs, got.Encoded())); err != nil {
		return Descriptor{}, fmt.Errorf("oci: write blob: %w", err)
	}
	ok = true
	if err := syncDir(blobs); err != nil {
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
		if _, err := layerCompression(l.MediaType); err != nil {
			return Descriptor{}, fmt.Errorf("oci: commit: layer %d: %w", i, err)
		}
		p, err := BlobPath(w.dir, l.Digest)
		if err != nil {
			return Descriptor{}, fmt.Errorf("oci: commit: layer %d: %w", i, err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return Descriptor{}, &BlobError{Digest: l.Digest, What: fmt.Sprintf("layer %d", i), Err: ErrBlobMissing}
		}
		if fi.Size() != l.Size {
			return Descriptor{}, &BlobError{Digest: l.Digest, What: fmt.Sprintf("layer %d", i), Err: fmt.Errorf("%w: file has %d bytes, descriptor says %d", ErrSizeMismatch, fi.Size(), l.Size)}
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
	l := layout{dir: w.dir}
	idx := &Index{SchemaVersion: 2, MediaType: MediaTypeOCIIndex}
	if _, err := os.Stat(filepath.Join(w.dir, "index.json")); err == nil {
		old, err := l.readIndexFile()
		if err != nil {
			return err
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
	b, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("oci: write index.json: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(w.dir, "index.json"), b); err != nil {
		return fmt.Errorf("oci: write index.json: %w", err)
	}
	return nil
}

// writeFileAtomic writes b to path through a synced temporary file renamed
// over it, then syncs the directory.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
