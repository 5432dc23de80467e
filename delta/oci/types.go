package oci

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// Media types this package understands.
const (
	MediaTypeOCIIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIConfig   = "application/vnd.oci.image.config.v1+json"

	MediaTypeOCILayer     = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeOCILayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeOCILayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"

	MediaTypeOCIForeignLayer     = "application/vnd.oci.image.layer.nondistributable.v1.tar"
	MediaTypeOCIForeignLayerGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	MediaTypeOCIForeignLayerZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerLayerZstd    = "application/vnd.docker.image.rootfs.diff.tar.zstd"
	MediaTypeDockerForeign      = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

	mediaTypeDockerSchema1       = "application/vnd.docker.distribution.manifest.v1+json"
	mediaTypeDockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// RefNameAnnotation is the index.json annotation that holds an image's tag.
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// Limits on what is read into memory. A layout that exceeds them is refused
// with ErrTooLarge rather than trusted.
const (
	MaxIndexSize    = 4 << 20 // index.json and image indexes
	MaxManifestSize = 4 << 20
	MaxConfigSize   = 8 << 20
	MaxLayers       = 4096 // layers in one manifest
	MaxManifests    = 4096 // descriptors in one index
	MaxIndexDepth   = 4    // nesting of image indexes
)

// Errors. Errors returned by this package wrap one of these (match with
// errors.Is); blob problems come as a *BlobError naming the digest.
var (
	ErrBadRef         = errors.New("oci: bad image reference")
	ErrNotLayout      = errors.New("oci: not an OCI image layout")
	ErrNotFound       = errors.New("oci: image not found in layout")
	ErrNoPlatform     = errors.New("oci: no manifest for the platform")
	ErrInvalid        = errors.New("oci: invalid document")
	ErrMediaType      = errors.New("oci: unsupported media type")
	ErrForeignLayer   = errors.New("oci: foreign (non-distributable) layer refused")
	ErrTooLarge       = errors.New("oci: document too large")
	ErrBlobMissing    = errors.New("oci: blob missing")
	ErrDigestMismatch = errors.New("oci: digest mismatch")
	ErrSizeMismatch   = errors.New("oci: size mismatch")
	ErrDecompress     = errors.New("oci: decompression failed")
)

// BlobError reports a problem with one blob, named by its digest.
type BlobError struct {
	Digest digest.Digest
	What   string // "manifest", "config", "layer 3", ...
	Err    error
}

func (e *BlobError) Error() string {
	if e.What != "" {
		return fmt.Sprintf("%s blob %s: %v", e.What, e.Digest, e.Err)
	}
	return fmt.Sprintf("blob %s: %v", e.Digest, e.Err)
}

func (e *BlobError) Unwrap() error { return e.Err }

// Descriptor points to a blob (OCI image spec, descriptor.md).
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
}

// Platform is the platform an index entry is for.
type Platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
}

func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Index is an image index (index.json, or a manifest list).
type Index struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	Manifests     []Descriptor      `json:"manifests"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Manifest is an image manifest (OCI or Docker v2 schema 2).
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Config is the part of an image config this package needs. The config's
// exact bytes are kept in Image.ConfigBytes.
type Config struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
	RootFS       RootFS `json:"rootfs"`
}

// RootFS lists the diff_ids of an image's layers, bottom first.
type RootFS struct {
	Type    string          `json:"type"`
	DiffIDs []digest.Digest `json:"diff_ids"`
}

// Compression is how a layer blob is compressed.
type Compression int

const (
	Uncompressed Compression = iota
	Gzip
	Zstd
)

func (c Compression) String() string {
	switch c {
	case Uncompressed:
		return "none"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// layerCompression maps a layer media type to its compression, refusing
// foreign and unknown layers.
func layerCompression(mediaType string) (Compression, error) {
	switch mediaType {
	case MediaTypeOCILayer, MediaTypeDockerLayer:
		return Uncompressed, nil
	case MediaTypeOCILayerGzip, MediaTypeDockerLayerGzip:
		return Gzip, nil
	case MediaTypeOCILayerZstd, MediaTypeDockerLayerZstd:
		return Zstd, nil
	case MediaTypeOCIForeignLayer, MediaTypeOCIForeignLayerGzip, MediaTypeOCIForeignLayerZstd, MediaTypeDockerForeign:
		return 0, fmt.Errorf("%w: media type %s", ErrForeignLayer, mediaType)
	}
	return 0, fmt.Errorf("%w: layer media type %q", ErrMediaType, mediaType)
}
