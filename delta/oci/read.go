package oci

import (
	"bufio"
	_ "crypto/sha256" // digest algorithms go-digest looks up
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// Option adjusts Open.
type Option func(*options)

type options struct {
	platform      Platform
	zstdMaxWindow uint64
}

// DefaultZstdMaxWindow bounds the window (and so the memory) of the zstd
// decoder for layer blobs: 128 MiB, enough for `zstd --ultra -22`.
const DefaultZstdMaxWindow = 128 << 20

// WithPlatform selects the manifest for p when the reference names an index
// with several manifests. The default is linux and the running GOARCH; when
// only one image manifest is on offer it is used whatever its platform, so
// that the ground can read images built for the vehicle's architecture.
// An empty Variant matches any variant.
func WithPlatform(p Platform) Option { return func(o *options) { o.platform = p } }

// WithZstdMaxWindow bounds the zstd decoder's window for layer blobs; a layer
// that needs a larger window fails to decode instead of allocating it.
func WithZstdMaxWindow(n uint64) Option { return func(o *options) { o.zstdMaxWindow = n } }

// Layer is one layer of an image, bottom first.
type Layer struct {
	Index       int
	Digest      digest.Digest // of the blob as stored
	DiffID      digest.Digest // of the uncompressed tar, from the config
	Size        int64         // of the blob as stored
	MediaType   string
	Compression Compression
}

// Image is one image manifest of a layout with its config, validated.
type Image struct {
	Layout             string
	ManifestDigest     digest.Digest
	ManifestDescriptor Descriptor // as found (media type may be Docker v2)
	Manifest           Manifest
	ManifestBytes      []byte
	Config             Config
	ConfigBytes        []byte
	layers             []Layer
	opts               options
}

// DiffIDs returns the config's diff_ids, bottom layer first.
func (im *Image) DiffIDs() []digest.Digest {
	return append([]digest.Digest(nil), im.Config.RootFS.DiffIDs...)
}

// Layers returns the image's layers, bottom first.
func (im *Image) Layers() []Layer { return append([]Layer(nil), im.layers...) }

// Open reads and validates the image ref names: the layout marker, index.json,
// any nested indexes, the manifest and the config, each verified by digest
// and size. Layer blobs are not read until OpenLayer.
func Open(ref Ref, opts ...Option) (*Image, error) {
	o := options{
		platform:      Platform{OS: "linux", Architecture: runtime.GOARCH},
		zstdMaxWindow: DefaultZstdMaxWindow,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if ref.Layout == "" {
		return nil, fmt.Errorf("%w: empty layout path", ErrBadRef)
	}
	l := layout{dir: ref.Layout}
	if err := l.checkMarker(); err != nil {
		return nil, err
	}
	idx, err := l.readIndexFile()
	if err != nil {
		return nil, err
	}

	var cands []Descriptor
	switch {
	case ref.Digest != "":
		d := Descriptor{Digest: ref.Digest, Size: -1}
		for _, m := range idx.Manifests {
			if m.Digest == ref.Digest {
				d = m
				break
			}
		}
		cands = []Descriptor{d}
	case ref.Tag != "":
		var tags []string
		for _, m := range idx.Manifests {
			name := m.Annotations[RefNameAnnotation]
			if name == ref.Tag {
				cands = append(cands, m)
			} else if name != "" {
				tags = append(tags, name)
			}
		}
		if len(cands) == 0 {
			sort.Strings(tags)
			return nil, fmt.Errorf("%w: %s: no tag %q (tags: %s)", ErrNotFound, ref.Layout, ref.Tag, strings.Join(tags, ", "))
		}
	default:
		if len(idx.Manifests) != 1 {
			return nil, fmt.Errorf("%w: %s holds %d images: name one with :TAG or @DIGEST", ErrNotFound, ref.Layout, len(idx.Manifests))
		}
		cands = idx.Manifests
	}

	desc, err := l.selectManifest(cands, o.platform, 0)
	if err != nil {
		return nil, err
	}
	return l.openManifest(desc, o)
}

type layout struct{ dir string }

func (l layout) checkMarker() error {
	b, err := readCapped(filepath.Join(l.dir, "oci-layout"), 4096)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s: no oci-layout file", ErrNotLayout, l.dir)
		}
		return fmt.Errorf("%w: %s: %v", ErrNotLayout, l.dir, err)
	}
	return checkMarker(l.dir, b)
}

func checkMarker(dir string, b []byte) error {
	var m struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%w: %s: oci-layout: %v", ErrNotLayout, dir, err)
	}
	if m.Version != "1.0.0" {
		return fmt.Errorf("%w: %s: imageLayoutVersion %q (want 1.0.0)", ErrNotLayout, dir, m.Version)
	}
	return nil
}

func (l layout) readIndexFile() (*Index, error) {
	b, err := readCapped(filepath.Join(l.dir, "index.json"), MaxIndexSize)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s: no index.json", ErrNotLayout, l.dir)
		}
		return nil, fmt.Errorf("%s: index.json: %w", l.dir, err)
	}
	idx, err := ParseIndex(b)
	if err != nil {
		return nil, fmt.Errorf("%s: index.json: %w", l.dir, err)
	}
	return idx, nil
}

// readCapped reads a whole file if it is at most max bytes.
func readCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
	}
	return b, nil
}

// BlobPath returns the path of blob d in the layout at dir, or an error if d
// is not a valid digest (so a hostile digest cannot name a path outside).
func BlobPath(dir string, d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("%w: digest %q: %v", ErrInvalid, d, err)
	}
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded()), nil
}

// readBlob reads a whole blob of at most max bytes and verifies it. size < 0
// means the size is not known (a reference by digest alone).
func (l layout) readBlob(d digest.Digest, size, max int64, what string) ([]byte, error) {
	if size > max {
		return nil, &BlobError{Digest: d, What: what, Err: fmt.Errorf("%w: descriptor says %d bytes, limit %d", ErrTooLarge, size, max)}
	}
	path, err := BlobPath(l.dir, d)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &BlobError{Digest: d, What: what, Err: ErrBlobMissing}
		}
		return nil, &BlobError{Digest: d, What: what, Err: err}
	}
	defer f.Close()
	vr, err := newVerifyReader(f, d, size, what)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(vr, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, &BlobError{Digest: d, What: what, Err: fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)}
	}
	return b, nil
}

// kind tells an index from a manifest.
func docKind(mediaType string, b []byte) (string, error) {
	switch mediaType {
	case MediaTypeOCIIndex, MediaTypeDockerManifestList:
		return "index", nil
	case MediaTypeOCIManifest, MediaTypeDockerManifest:
		return "manifest", nil
	case mediaTypeDockerSchema1, mediaTypeDockerSchema1Signed:
		return "", fmt.Errorf("%w: Docker schema 1 manifests are not supported (%s)", ErrMediaType, mediaType)
	case "":
	default:
		return "", fmt.Errorf("%w: %q is neither an image index nor an image manifest", ErrMediaType, mediaType)
	}
	var probe struct {
		MediaType string          `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Config    json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if probe.MediaType != "" {
		return docKind(probe.MediaType, nil)
	}
	switch {
	case probe.Manifests != nil:
		return "index", nil
	case probe.Config != nil:
		return "manifest", nil
	}
	return "", fmt.Errorf("%w: neither an image index nor an image manifest", ErrInvalid)
}

type candidate struct {
	desc  Descriptor
	bytes []byte // the manifest, already read and verified
}

// selectManifest expands indexes among cands (to MaxIndexDepth) and picks
// the image manifest for platform p. It returns the descriptor of the
// manifest, possibly with its bytes already verified.
func (l layout) selectManifest(cands []Descriptor, p Platform, depth int) (candidate, error) {
	var flat []candidate
	if err := l.expand(cands, depth, &flat); err != nil {
		return candidate{}, err
	}
	if len(flat) == 0 {
		return candidate{}, fmt.Errorf("%w: %s: the index lists no image manifest", ErrNotFound, l.dir)
	}
	if len(flat) == 1 {
		return flat[0], nil
	}
	best := -1
	for i, c := range flat {
		cp := c.desc.Platform
		if cp == nil || cp.OS != p.OS || cp.Architecture != p.Architecture {
			continue
		}
		if p.Variant != "" && cp.Variant != "" && cp.Variant != p.Variant {
			continue
		}
		if best < 0 || (p.Variant != "" && cp.Variant == p.Variant) {
			best = i
		}
	}
	if best < 0 {
		var have []string
		for _, c := range flat {
			if c.desc.Platform != nil {
				have = append(have, c.desc.Platform.String())
			} else {
				have = append(have, "unknown")
			}
		}
		return candidate{}, fmt.Errorf("%w: %s: want %s, have %s", ErrNoPlatform, l.dir, p, strings.Join(have, ", "))
	}
	return flat[best], nil
}

func (l layout) expand(cands []Descriptor, depth int, out *[]candidate) error {
	for _, d := range cands {
		if isAttestation(d) {
			continue
		}
		if d.MediaType != "" {
			k, err := docKind(d.MediaType, nil)
			if err != nil {
				return &BlobError{Digest: d.Digest, What: "index entry", Err: err}
			}
			if k == "manifest" {
				*out = append(*out, candidate{desc: d})
				if len(*out) > MaxManifests {
					return fmt.Errorf("%w: more than %d manifests", ErrTooLarge, MaxManifests)
				}
				continue
			}
		}
		if depth >= MaxIndexDepth {
			return &BlobError{Digest: d.Digest, What: "index", Err: fmt.Errorf("%w: indexes nested deeper than %d", ErrInvalid, MaxIndexDepth)}
		}
		b, err := l.readBlob(d.Digest, d.Size, MaxIndexSize, "index")
		if err != nil {
			return err
		}
		k, err := docKind(d.MediaType, b)
		if err != nil {
			return &BlobError{Digest: d.Digest, What: "index", Err: err}
		}
		if k == "manifest" {
			*out = append(*out, candidate{desc: d, bytes: b})
			continue
		}
		idx, err := ParseIndex(b)
		if err != nil {
			return &BlobError{Digest: d.Digest, What: "index", Err: err}
		}
		if err := l.expand(idx.Manifests, depth+1, out); err != nil {
			return err
		}
	}
	return nil
}

// isAttestation reports index entries that are not runnable images:
// BuildKit attestation manifests (platform unknown/unknown).
func isAttestation(d Descriptor) bool {
	if d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
		return true
	}
	return d.Platform != nil && d.Platform.OS == "unknown" && d.Platform.Architecture == "unknown"
}

func (l layout) openManifest(c candidate, o options) (*Image, error) {
	d := c.desc
	b := c.bytes
	if b == nil {
		var err error
		if b, err = l.readBlob(d.Digest, d.Size, MaxManifestSize, "manifest"); err != nil {
			return nil, err
		}
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, &BlobError{Digest: d.Digest, What: "manifest", Err: err}
	}
	if d.MediaType != "" && m.MediaType != "" && d.MediaType != m.MediaType {
		return nil, &BlobError{Digest: d.Digest, What: "manifest", Err: fmt.Errorf("%w: descriptor says %s, manifest says %s", ErrInvalid, d.MediaType, m.MediaType)}
	}
	if d.Size < 0 {
		d.Size = int64(len(b))
	}
	if d.MediaType == "" {
		d.MediaType = m.MediaType
	}
	cb, err := l.readBlob(m.Config.Digest, m.Config.Size, MaxConfigSize, "config")
	if err != nil {
		return nil, err
	}
	cfg, err := ParseConfig(cb)
	if err != nil {
		return nil, &BlobError{Digest: m.Config.Digest, What: "config", Err: err}
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, &BlobError{Digest: m.Config.Digest, What: "config", Err: fmt.Errorf("%w: %d diff_ids for %d layers in manifest %s", ErrInvalid, len(cfg.RootFS.DiffIDs), len(m.Layers), d.Digest)}
	}
	im := &Image{
		Layout:             l.dir,
		ManifestDigest:     d.Digest,
		ManifestDescriptor: d,
		Manifest:           *m,
		ManifestBytes:      b,
		Config:             *cfg,
		ConfigBytes:        cb,
		opts:               o,
	}
	for i, ld := range m.Layers {
		comp, err := layerCompression(ld.MediaType)
		if err != nil {
			return nil, &BlobError{Digest: ld.Digest, What: fmt.Sprintf("layer %d", i), Err: err}
		}
		im.layers = append(im.layers, Layer{
			Index: i, Digest: ld.Digest, DiffID: cfg.RootFS.DiffIDs[i], Size: ld.Size,
			MediaType: ld.MediaType, Compression: comp,
		})
	}
	return im, nil
}

// ParseIndex parses and validates an image index (or Docker manifest list).
func ParseIndex(b []byte) (*Index, error) {
	if len(b) > MaxIndexSize {
		return nil, fmt.Errorf("%w: index of %d bytes", ErrTooLarge, len(b))
	}
	var idx Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%w: index: %v", ErrInvalid, err)
	}
	if idx.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: index schemaVersion %d (want 2)", ErrInvalid, idx.SchemaVersion)
	}
	switch idx.MediaType {
	case "", MediaTypeOCIIndex, MediaTypeDockerManifestList:
	default:
		return nil, fmt.Errorf("%w: index mediaType %q", ErrMediaType, idx.MediaType)
	}
	if len(idx.Manifests) > MaxManifests {
		return nil, fmt.Errorf("%w: index lists %d manifests (limit %d)", ErrTooLarge, len(idx.Manifests), MaxManifests)
	}
	for i, d := range idx.Manifests {
		if err := checkDescriptor(d); err != nil {
			return nil, fmt.Errorf("index entry %d: %w", i, err)
		}
	}
	return &idx, nil
}

// ParseManifest parses and validates an image manifest (OCI or Docker v2
// schema 2). Layer media types are checked by Open, not here.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest of %d bytes", ErrTooLarge, len(b))
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrInvalid, err)
	}
	switch m.MediaType {
	case "", MediaTypeOCIManifest, MediaTypeDockerManifest:
	case mediaTypeDockerSchema1, mediaTypeDockerSchema1Signed:
		return nil, fmt.Errorf("%w: Docker schema 1 manifests are not supported", ErrMediaType)
	default:
		return nil, fmt.Errorf("%w: manifest mediaType %q", ErrMediaType, m.MediaType)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: manifest schemaVersion %d (want 2)", ErrInvalid, m.SchemaVersion)
	}
	switch m.Config.MediaType {
	case MediaTypeOCIConfig, MediaTypeDockerConfig:
	default:
		return nil, fmt.Errorf("%w: config mediaType %q is not an image config", ErrMediaType, m.Config.MediaType)
	}
	if err := checkDescriptor(m.Config); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(m.Layers) > MaxLayers {
		return nil, fmt.Errorf("%w: %d layers (limit %d)", ErrTooLarge, len(m.Layers), MaxLayers)
	}
	for i, d := range m.Layers {
		if err := checkDescriptor(d); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return &m, nil
}

// ParseConfig parses an image config and validates its rootfs.
func ParseConfig(b []byte) (*Config, error) {
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("%w: config of %d bytes", ErrTooLarge, len(b))
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: config: %v", ErrInvalid, err)
	}
	if c.RootFS.Type != "layers" {
		return nil, fmt.Errorf("%w: config rootfs.type %q (want layers)", ErrInvalid, c.RootFS.Type)
	}
	if len(c.RootFS.DiffIDs) > MaxLayers {
		return nil, fmt.Errorf("%w: %d diff_ids (limit %d)", ErrTooLarge, len(c.RootFS.DiffIDs), MaxLayers)
	}
	for i, d := range c.RootFS.DiffIDs {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("%w: config diff_id %d %q: %v", ErrInvalid, i, d, err)
		}
	}
	return &c, nil
}

func checkDescriptor(d Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("%w: digest %q: %v", ErrInvalid, d.Digest, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("%w: blob %s: negative size %d", ErrInvalid, d.Digest, d.Size)
	}
	return nil
}

// OpenLayer opens layer i as its uncompressed tar stream. The stream is
// verified as it is read: the stored blob against its digest and size, the
// uncompressed bytes against the config's diff_id. A mismatch is returned by
// Read in place of io.EOF (and again by Close) as a *BlobError naming the
// layer's digest; a reader closed before EOF has verified nothing.
func (im *Image) OpenLayer(i int) (io.ReadCloser, error) {
	if i < 0 || i >= len(im.layers) {
		return nil, fmt.Errorf("oci: layer %d out of range (image has %d)", i, len(im.layers))
	}
	ly := im.layers[i]
	what := fmt.Sprintf("layer %d", i)
	path, err := BlobPath(im.Layout, ly.Digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &BlobError{Digest: ly.Digest, What: what, Err: ErrBlobMissing}
		}
		return nil, &BlobError{Digest: ly.Digest, What: what, Err: err}
	}
	if fi, err := f.Stat(); err == nil && fi.Size() != ly.Size {
		f.Close()
		return nil, &BlobError{Digest: ly.Digest, What: what, Err: fmt.Errorf("%w: file has %d bytes, descriptor says %d", ErrSizeMismatch, fi.Size(), ly.Size)}
	}
	blob, err := newVerifyReader(bufio.NewReaderSize(f, 64<<10), ly.Digest, ly.Size, what)
	if err != nil {
		f.Close()
		return nil, err
	}
	lr := &layerReader{f: f, blob: blob, digest: ly.Digest, what: what}
	var plain io.Reader
	switch ly.Compression {
	case Uncompressed:
		plain = blob
	case Gzip:
		gz, err := gzip.NewReader(blob)
		if err != nil {
			f.Close()
			return nil, lr.wrap(err)
		}
		lr.closeDec = gz.Close
		plain = gz
	case Zstd:
		zd, err := zstd.NewReader(blob,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(im.opts.zstdMaxWindow),
			zstd.WithDecoderMaxMemory(im.opts.zstdMaxWindow))
		if err != nil {
			f.Close()
			return nil, lr.wrap(err)
		}
		lr.closeDec = func() error { zd.Close(); return nil }
		plain = zd
	}
	if ly.Compression == Uncompressed && ly.DiffID == ly.Digest {
		lr.plain = blob // the same bytes with the same digest: hash once
		return lr, nil
	}
	lr.plain, err = newVerifyReader(plain, ly.DiffID, -1, what+" uncompressed")
	if err != nil {
		f.Close()
		return nil, err
	}
	lr.plain.blob = ly.Digest
	return lr, nil
}

type layerReader struct {
	f        *os.File
	blob     *verifyReader
	plain    *verifyReader
	closeDec func() error
	digest   digest.Digest
	what     string
	err      error
}

func (lr *layerReader) wrap(err error) error {
	var be *BlobError
	if errors.As(err, &be) {
		return err
	}
	return &BlobError{Digest: lr.digest, What: lr.what, Err: fmt.Errorf("%w: %v", ErrDecompress, err)}
}

func (lr *layerReader) Read(p []byte) (int, error) {
	if lr.err != nil {
		return 0, lr.err
	}
	n, err := lr.plain.Read(p)
	if err == io.EOF {
		// The decompressor may stop short of the blob's end (trailing
		// bytes); the blob is only verified once all of it is read.
		if !lr.blob.done {
			if _, derr := io.Copy(io.Discard, lr.blob); derr != nil {
				lr.err = lr.wrap(derr)
				return n, lr.err
			}
		}
		lr.err = io.EOF
		return n, io.EOF
	}
	if err != nil {
		lr.err = lr.wrap(err)
		return n, lr.err
	}
	return n, nil
}

// Close releases the layer; it returns the verification error if Read met one.
func (lr *layerReader) Close() error {
	if lr.closeDec != nil {
		lr.closeDec()
		lr.closeDec = nil
	}
	if lr.f != nil {
		lr.f.Close()
		lr.f = nil
	}
	if lr.err != nil && lr.err != io.EOF {
		return lr.err
	}
	return nil
}

// ReadBlob reads a whole blob of at most max bytes from the layout, verified
// against d and size (size < 0: unknown).
func (im *Image) ReadBlob(d digest.Digest, size, max int64) ([]byte, error) {
	return layout{dir: im.Layout}.readBlob(d, size, max, "")
}
