package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/opencontainers/go-digest"
)

// Annotations the store puts on its index.json entries.
const (
	// AnnotationSource is the reference an image was pulled from.
	AnnotationSource = "io.bootorbit.source"
	// AnnotationPulled is when it was (RFC 3339, UTC).
	AnnotationPulled = "io.bootorbit.pulled"
	// AnnotationSubject is the manifest a signature artifact signs.
	AnnotationSubject = "io.bootorbit.subject"
)

// Store is a content-addressed image store on disk. It is an OCI image
// layout: blobs/sha256/HEX holds every blob, written through a synced
// temporary file that is renamed into place only when its content hashes
// to the digest; index.json lists the images (and the signature artifacts
// beside them) and is replaced atomically, only after an image's every blob
// is in and verified. A Store is safe for concurrent use by one process;
// two processes must not share one.
type Store struct {
	dir string
	w   *oci.Writer
	log *slog.Logger
	mu  sync.Mutex // index.json
	now func() time.Time
}

// OpenStore opens (creating if need be) the store at dir. log receives the
// reports of corrupted blobs (nil: discarded).
func OpenStore(dir string, log *slog.Logger) (*Store, error) {
	w, err := oci.Create(dir)
	if err != nil {
		return nil, fmt.Errorf("images: store: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{dir: dir, w: w, log: log, now: time.Now}
	if _, err := os.Stat(filepath.Join(dir, "index.json")); errors.Is(err, fs.ErrNotExist) {
		// An empty store is a valid (empty) layout.
		if err := updateIndex(dir, &s.mu, func(*oci.Index) error { return nil }); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Dir returns the store's directory (an OCI layout: "oci:DIR@DIGEST" names
// a stored image to every OCI tool).
func (s *Store) Dir() string { return s.dir }

// corruptDir is where blobs that failed verification are moved, for
// inspection: outside blobs/, so that nothing reads them as content.
const corruptDir = "corrupt"

// haveBlob reports whether blob d is stored intact. A stored blob whose
// content does not match is reported, moved out of blobs/ and treated as
// absent, so that it is fetched again and never used.
func (s *Store) haveBlob(ctx context.Context, d digest.Digest, size int64) (bool, error) {
	f, err := openLayoutBlob(s.dir, d, "")
	if errors.Is(err, oci.ErrBlobMissing) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	vr, err := newVerifyReader(f, d, size, "stored")
	if err != nil {
		return false, err
	}
	_, err = io.Copy(io.Discard, ctxReader{ctx, vr})
	vr.Close()
	if err == nil {
		return true, nil
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	var be *oci.BlobError
	if !errors.As(err, &be) {
		return false, err
	}
	if qerr := s.quarantine(d, err); qerr != nil {
		return false, qerr
	}
	return false, nil
}

// quarantine reports blob d as corrupted and moves it out of blobs/.
func (s *Store) quarantine(d digest.Digest, cause error) error {
	s.log.Warn("corrupted blob in image store: moved aside, will not be used", "digest", d, "err", cause)
	p, err := oci.BlobPath(s.dir, d)
	if err != nil {
		return err
	}
	qdir := filepath.Join(s.dir, corruptDir)
	if err := os.MkdirAll(qdir, 0o755); err != nil {
		return fmt.Errorf("images: quarantine %s: %w", d, err)
	}
	q := filepath.Join(qdir, d.Encoded()+"."+s.now().UTC().Format("20060102T150405.000000000"))
	if err := os.Rename(p, q); err != nil {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("images: quarantine %s: %w", d, err)
		}
	}
	return syncDir(filepath.Dir(p))
}

// putBlob stores blob desc from open unless it is stored intact already.
// The content must hash to desc.Digest and have desc.Size bytes, or nothing
// is stored and a *oci.BlobError names the digest.
func (s *Store) putBlob(ctx context.Context, desc oci.Descriptor, what string, open func() (io.ReadCloser, error)) error {
	ok, err := s.haveBlob(ctx, desc.Digest, desc.Size)
	if err != nil || ok {
		return err
	}
	rc, err := open()
	if err != nil {
		return err
	}
	vr, err := newVerifyReader(rc, desc.Digest, desc.Size, what)
	if err != nil {
		return err
	}
	defer vr.Close()
	if _, err := s.w.WriteBlob(desc.MediaType, ctxReader{ctx, vr}, desc.Digest); err != nil {
		return err
	}
	return nil
}

// putBytes stores b, which the caller has verified, as a blob.
func (s *Store) putBytes(ctx context.Context, mediaType string, b []byte, d digest.Digest) error {
	if err := checkBytes(b, d, -1, mediaType); err != nil {
		return err
	}
	ok, err := s.haveBlob(ctx, d, int64(len(b)))
	if err != nil || ok {
		return err
	}
	_, err = s.w.WriteBlobBytes(mediaType, b)
	return err
}

// readIndex reads the store's index.json (an empty index if none).
func readIndexFile(dir string) (*oci.Index, error) {
	p := filepath.Join(dir, "index.json")
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeOCIIndex}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("images: %s: %w", p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, oci.MaxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("images: %s: %w", p, err)
	}
	idx, err := oci.ParseIndex(b)
	if err != nil {
		return nil, fmt.Errorf("images: %s: %w", p, err)
	}
	return idx, nil
}

// updateIndex applies change to the layout's index.json and replaces it
// atomically. mu serializes writers in this process.
func updateIndex(dir string, mu *sync.Mutex, change func(*oci.Index) error) error {
	if mu != nil {
		mu.Lock()
		defer mu.Unlock()
	}
	idx, err := readIndexFile(dir)
	if err != nil {
		return err
	}
	if err := change(idx); err != nil {
		return err
	}
	if len(idx.Manifests) > oci.MaxManifests {
		return fmt.Errorf("%w: index.json would list %d manifests (limit %d)", ErrTooMany, len(idx.Manifests), oci.MaxManifests)
	}
	if idx.Manifests == nil {
		idx.Manifests = []oci.Descriptor{}
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("images: index.json: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		return fmt.Errorf("images: write %s/index.json: %w", dir, err)
	}
	return nil
}

// record lists desc in index.json, replacing an entry of the same digest.
func (s *Store) record(desc oci.Descriptor) error {
	return updateIndex(s.dir, &s.mu, func(idx *oci.Index) error {
		out := idx.Manifests[:0]
		for _, m := range idx.Manifests {
			if m.Digest != desc.Digest {
				out = append(out, m)
			}
		}
		idx.Manifests = append(out, desc)
		return nil
	})
}

// Entry is an image in the store.
type Entry struct {
	Digest   digest.Digest `json:"digest"`
	Size     int64         `json:"size"`
	Platform string        `json:"platform,omitempty"`
	Source   string        `json:"source,omitempty"`
	Pulled   string        `json:"pulled,omitempty"`
}

// List returns the stored images, oldest pull first.
func (s *Store) List() ([]Entry, error) {
	s.mu.Lock()
	idx, err := readIndexFile(s.dir)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, m := range idx.Manifests {
		if m.ArtifactType != "" {
			continue
		}
		e := Entry{Digest: m.Digest, Size: m.Size, Source: m.Annotations[AnnotationSource], Pulled: m.Annotations[AnnotationPulled]}
		if m.Platform != nil {
			e.Platform = m.Platform.String()
		}
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pulled < out[j].Pulled })
	return out, nil
}

// Image opens the stored image with manifest digest d. Its manifest and
// config are verified again; its layers are verified as they are read.
func (s *Store) Image(ctx context.Context, d digest.Digest) (*Image, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("%w: digest %q: %v", ErrBadRef, d, err)
	}
	oim, err := oci.Open(oci.Ref{Layout: s.dir, Digest: d})
	if err != nil {
		if errors.Is(err, oci.ErrBlobMissing) {
			return nil, fmt.Errorf("%w: image %s is not in the store: %w", ErrNotFound, d, err)
		}
		return nil, err
	}
	im := newImage(oim, "")
	s.mu.Lock()
	idx, err := readIndexFile(s.dir)
	s.mu.Unlock()
	if err == nil {
		for _, m := range idx.Manifests {
			if m.Digest == d {
				im.Source = m.Annotations[AnnotationSource]
			}
		}
	}
	arts, err := layoutSignatures(ctx, s.dir, d)
	if err != nil {
		return nil, err
	}
	im.Signatures = decodedSignatures(arts)
	return im, nil
}

// Check verifies every stored blob and moves the corrupted ones aside,
// returning each as an *oci.BlobError naming its digest.
func (s *Store) Check(ctx context.Context) ([]error, error) {
	dir := filepath.Join(s.dir, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("images: check: %w", err)
	}
	var bad []error
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if d.Validate() != nil {
			continue // a temporary file
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return bad, fmt.Errorf("images: check: %w", err)
		}
		vr, err := newVerifyReader(f, d, -1, "stored")
		if err != nil {
			return bad, err
		}
		_, err = io.Copy(io.Discard, ctxReader{ctx, vr})
		vr.Close()
		if ctx.Err() != nil {
			return bad, ctx.Err()
		}
		var be *oci.BlobError
		if errors.As(err, &be) {
			bad = append(bad, err)
			if qerr := s.quarantine(d, err); qerr != nil {
				return bad, qerr
			}
		} else if err != nil {
			return bad, fmt.Errorf("images: check %s: %w", d, err)
		}
	}
	return bad, nil
}

// Image is a verified image: its manifest and config bytes, verbatim, and
// its layers, which the planner reads through OpenBlob (the stored,
// compressed blob) or OpenLayer (the uncompressed tar), both verified.
type Image struct {
	Digest    digest.Digest // of the image manifest
	MediaType string        // of the manifest (OCI or Docker schema 2)
	Manifest  []byte
	Config    []byte
	Platform  oci.Platform // from the config
	Layers    []oci.Layer  // bottom first, with their diff_ids
	Source    string       // the reference it was pulled from, if known
	// Signatures found beside the image, decoded but NOT verified: see
	// VerifyReleases.
	Signatures []update.ReleaseSignature

	oci *oci.Image
}

func newImage(oim *oci.Image, source string) *Image {
	return &Image{
		Digest:    oim.ManifestDigest,
		MediaType: oim.ManifestDescriptor.MediaType,
		Manifest:  oim.ManifestBytes,
		Config:    oim.ConfigBytes,
		Platform:  oci.Platform{OS: oim.Config.OS, Architecture: oim.Config.Architecture, Variant: oim.Config.Variant},
		Layers:    oim.Layers(),
		Source:    source,
		oci:       oim,
	}
}

// OCI returns the image as package oci reads it, for delta.Compute.
func (im *Image) OCI() *oci.Image { return im.oci }

// DiffIDs returns the layers' diff_ids, bottom first.
func (im *Image) DiffIDs() []digest.Digest { return im.oci.DiffIDs() }

// OpenBlob opens layer i's blob as stored (compressed as its media type
// says). The digest and size are checked at the end: a mismatch is returned
// by Read in place of io.EOF, as an *oci.BlobError naming the blob.
func (im *Image) OpenBlob(i int) (io.ReadCloser, error) {
	if i < 0 || i >= len(im.Layers) {
		return nil, fmt.Errorf("images: layer %d out of range (image has %d)", i, len(im.Layers))
	}
	l := im.Layers[i]
	what := fmt.Sprintf("layer %d", i)
	f, err := openLayoutBlob(im.oci.Layout, l.Digest, what)
	if err != nil {
		return nil, err
	}
	return newVerifyReader(f, l.Digest, l.Size, what)
}

// OpenLayer opens layer i as its uncompressed tar, verified against the
// blob digest and the diff_id (see oci.Image.OpenLayer).
func (im *Image) OpenLayer(i int) (io.ReadCloser, error) { return im.oci.OpenLayer(i) }

// verifyLayers reads every layer to its end: blob digest, size and diff_id.
func verifyLayers(ctx context.Context, oim *oci.Image) error {
	for i := range oim.Layers() {
		rc, err := oim.OpenLayer(i)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, ctxReader{ctx, rc})
		cerr := rc.Close()
		if err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
