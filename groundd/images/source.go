package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// Options say how to reach and read images.
type Options struct {
	// Platform is the vehicle's: it picks the manifest of a multi-arch
	// index. The zero value means linux on the running architecture.
	Platform oci.Platform
	Registry RegistryOptions
}

func (o Options) platform() oci.Platform {
	if o.Platform.OS == "" && o.Platform.Architecture == "" {
		return oci.DefaultPlatform()
	}
	return o.Platform
}

// source is where images come from: a layout or a registry.
type source interface {
	// head returns the digest the reference names now: for a tag, what it
	// points to (an index or a manifest).
	head(ctx context.Context) (digest.Digest, error)
	// resolve returns the image manifest the reference names for platform
	// p (through an index if need be), its bytes verified.
	resolve(ctx context.Context, p oci.Platform) (oci.Descriptor, []byte, error)
	// blob opens a blob, unverified (callers verify).
	blob(ctx context.Context, d oci.Descriptor) (io.ReadCloser, error)
	// signatures finds the signature artifacts of manifest d.
	signatures(ctx context.Context, d digest.Digest) ([]*artifact, error)
	// attach adds the encoded release signature sig to subject's
	// signature artifact, creating it if need be.
	attach(ctx context.Context, subject oci.Descriptor, sig []byte) (oci.Descriptor, error)
}

func openSource(ctx context.Context, ref Ref, o Options) (source, error) {
	switch ref.Transport {
	case TransportOCI:
		return &layoutSource{ref: ref}, nil
	case TransportDocker:
		ropts, err := o.Registry.remoteOptions(ctx)
		if err != nil {
			return nil, err
		}
		return &registrySource{ref: ref, o: o.Registry, ropts: ropts}, nil
	}
	return nil, fmt.Errorf("%w: transport %q", ErrBadRef, ref.Transport)
}

// layoutSource reads an OCI layout through package oci.
type layoutSource struct{ ref Ref }

func (l *layoutSource) head(ctx context.Context) (digest.Digest, error) {
	if l.ref.Digest != "" {
		return l.ref.Digest, nil
	}
	idx, err := readIndexFile(l.ref.Layout)
	if err != nil {
		return "", err
	}
	var found []digest.Digest
	for _, m := range idx.Manifests {
		if l.ref.Tag == "" || m.Annotations[oci.RefNameAnnotation] == l.ref.Tag {
			found = append(found, m.Digest)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("%w: %s names %d index entries", ErrNotFound, l.ref, len(found))
	}
	return found[0], nil
}

func (l *layoutSource) resolve(ctx context.Context, p oci.Platform) (oci.Descriptor, []byte, error) {
	im, err := oci.Open(oci.Ref{Layout: l.ref.Layout, Tag: l.ref.Tag, Digest: l.ref.Digest}, oci.WithPlatform(p))
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	d := im.ManifestDescriptor
	return oci.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, Platform: d.Platform}, im.ManifestBytes, nil
}

func (l *layoutSource) blob(ctx context.Context, d oci.Descriptor) (io.ReadCloser, error) {
	return openLayoutBlob(l.ref.Layout, d.Digest, "")
}

func (l *layoutSource) signatures(ctx context.Context, d digest.Digest) ([]*artifact, error) {
	return layoutSignatures(ctx, l.ref.Layout, d)
}

func (l *layoutSource) attach(ctx context.Context, subject oci.Descriptor, sig []byte) (oci.Descriptor, error) {
	dir := l.ref.Layout
	tag := SignatureTag(subject.Digest)
	arts, err := layoutSignatures(ctx, dir, subject.Digest)
	if err != nil {
		return oci.Descriptor{}, err
	}
	var old [][]byte
	for _, a := range arts {
		if a.desc.Annotations[oci.RefNameAnnotation] == tag {
			old = a.blobs
		}
	}
	mb, layers := buildArtifact(subject, mergeSigs(old, sig))
	w, err := oci.Create(dir)
	if err != nil {
		return oci.Descriptor{}, fmt.Errorf("images: sign: %w", err)
	}
	if _, err := w.WriteBlobBytes(MediaTypeEmpty, emptyConfig); err != nil {
		return oci.Descriptor{}, err
	}
	blobs := mergeSigs(old, sig)
	for i := range layers {
		if _, err := w.WriteBlobBytes(update.MediaTypeRelease, blobs[i]); err != nil {
			return oci.Descriptor{}, err
		}
	}
	md, err := w.WriteBlobBytes(oci.MediaTypeOCIManifest, mb)
	if err != nil {
		return oci.Descriptor{}, err
	}
	md.ArtifactType = update.MediaTypeRelease
	md.Annotations = map[string]string{oci.RefNameAnnotation: tag}
	err = updateIndex(dir, nil, func(idx *oci.Index) error {
		out := idx.Manifests[:0]
		for _, m := range idx.Manifests {
			if m.Annotations[oci.RefNameAnnotation] != tag {
				out = append(out, m)
			}
		}
		idx.Manifests = append(out, md)
		return nil
	})
	return md, err
}

// registrySource reads and writes a registry through go-containerregistry.
type registrySource struct {
	ref   Ref
	o     RegistryOptions
	ropts []remote.Option
}

func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

func (r *registrySource) head(ctx context.Context) (digest.Digest, error) {
	if r.ref.Digest != "" {
		return r.ref.Digest, nil
	}
	nr, err := r.o.reference(r.ref)
	if err != nil {
		return "", err
	}
	desc, err := remote.Head(nr, r.ropts...)
	if err != nil {
		if isNotFound(err) {
			return "", fmt.Errorf("%w: %s: %v", ErrNotFound, r.ref, err)
		}
		return "", fmt.Errorf("images: %s: %w", r.ref, err)
	}
	return digest.Parse(desc.Digest.String())
}

// getManifest fetches the manifest or index named by ref and checks its
// bytes against want (if given), its size and the registry's digest.
func (r *registrySource) getManifest(ref Ref, want digest.Digest, size int64) (string, digest.Digest, []byte, error) {
	nr, err := r.o.reference(ref)
	if err != nil {
		return "", "", nil, err
	}
	desc, err := remote.Get(nr, r.ropts...)
	if err != nil {
		if isNotFound(err) {
			return "", "", nil, fmt.Errorf("%w: %s: %v", ErrNotFound, ref, err)
		}
		return "", "", nil, fmt.Errorf("images: %s: %w", ref, err)
	}
	b := desc.Manifest
	if len(b) > oci.MaxIndexSize {
		return "", "", nil, fmt.Errorf("%w: %s: manifest of %d bytes", oci.ErrTooLarge, ref, len(b))
	}
	got := digest.FromBytes(b)
	if want != "" {
		if err := checkBytes(b, want, size, "manifest"); err != nil {
			return "", "", nil, err
		}
	}
	if desc.Digest.String() != string(got) {
		return "", "", nil, &oci.BlobError{Digest: got, What: "manifest", Err: fmt.Errorf("%w: registry says %s", oci.ErrDigestMismatch, desc.Digest)}
	}
	return string(desc.MediaType), got, b, nil
}

func (r *registrySource) resolve(ctx context.Context, p oci.Platform) (oci.Descriptor, []byte, error) {
	mt, d, b, err := r.getManifest(r.ref, r.ref.Digest, -1)
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	switch mt {
	case oci.MediaTypeOCIIndex, oci.MediaTypeDockerManifestList:
		idx, err := oci.ParseIndex(b)
		if err != nil {
			return oci.Descriptor{}, nil, &oci.BlobError{Digest: d, What: "index", Err: err}
		}
		desc, err := selectPlatform(idx, p, d)
		if err != nil {
			return oci.Descriptor{}, nil, err
		}
		mt, _, b, err = r.getManifest(r.ref.WithDigest(desc.Digest), desc.Digest, desc.Size)
		if err != nil {
			return oci.Descriptor{}, nil, err
		}
		if mt != oci.MediaTypeOCIManifest && mt != oci.MediaTypeDockerManifest {
			return oci.Descriptor{}, nil, &oci.BlobError{Digest: desc.Digest, What: "manifest", Err: fmt.Errorf("%w: %q in an index", oci.ErrMediaType, mt)}
		}
		return oci.Descriptor{MediaType: mt, Digest: desc.Digest, Size: int64(len(b)), Platform: desc.Platform}, b, nil
	case oci.MediaTypeOCIManifest, oci.MediaTypeDockerManifest:
		return oci.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}, b, nil
	}
	return oci.Descriptor{}, nil, &oci.BlobError{Digest: d, What: "manifest", Err: fmt.Errorf("%w: %q", oci.ErrMediaType, mt)}
}

// selectPlatform picks p's manifest from idx (as package oci does for
// layouts): the only image manifest, else the one whose os and
// architecture match (and variant, when both name one).
func selectPlatform(idx *oci.Index, p oci.Platform, d digest.Digest) (oci.Descriptor, error) {
	var cands []oci.Descriptor
	for _, m := range idx.Manifests {
		if m.Annotations["vnd.docker.reference.type"] == "attestation-manifest" ||
			m.Platform != nil && m.Platform.OS == "unknown" && m.Platform.Architecture == "unknown" {
			continue
		}
		if m.MediaType != oci.MediaTypeOCIManifest && m.MediaType != oci.MediaTypeDockerManifest {
			continue // nested indexes and artifacts: not images
		}
		cands = append(cands, m)
	}
	if len(cands) == 1 {
		return cands[0], nil
	}
	best := -1
	var have []string
	for i, c := range cands {
		cp := c.Platform
		if cp == nil {
			have = append(have, "unknown")
			continue
		}
		have = append(have, cp.String())
		if cp.OS != p.OS || cp.Architecture != p.Architecture || p.Variant != "" && cp.Variant != "" && cp.Variant != p.Variant {
			continue
		}
		if best < 0 || p.Variant != "" && cp.Variant == p.Variant {
			best = i
		}
	}
	if best < 0 {
		return oci.Descriptor{}, fmt.Errorf("%w: index %s: want %s, have %s", oci.ErrNoPlatform, d, p, strings.Join(have, ", "))
	}
	return cands[best], nil
}

func (r *registrySource) blob(ctx context.Context, d oci.Descriptor) (io.ReadCloser, error) {
	nd, err := r.o.digestRef(r.ref, string(d.Digest))
	if err != nil {
		return nil, err
	}
	l, err := remote.Layer(nd, r.ropts...)
	if err != nil {
		return nil, fmt.Errorf("images: blob %s: %w", d.Digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		if isNotFound(err) {
			return nil, &oci.BlobError{Digest: d.Digest, Err: oci.ErrBlobMissing}
		}
		return nil, fmt.Errorf("images: blob %s: %w", d.Digest, err)
	}
	return rc, nil
}

func (r *registrySource) readArtifactAt(ref Ref, desc oci.Descriptor, d digest.Digest) (*artifact, error) {
	mt, got, mb, err := r.getManifest(ref, desc.Digest, -1)
	if err != nil {
		return nil, err
	}
	if mt != oci.MediaTypeOCIManifest {
		return nil, fmt.Errorf("%w: %s is a %s", ErrBadArtifact, ref, mt)
	}
	desc.Digest, desc.Size, desc.MediaType = got, int64(len(mb)), mt
	return readArtifact(desc, mb, d, func(l oci.Descriptor) (io.ReadCloser, error) {
		return r.blob(context.Background(), l)
	})
}

func (r *registrySource) signatures(ctx context.Context, d digest.Digest) ([]*artifact, error) {
	var out []*artifact
	seen := map[digest.Digest]bool{}
	// The tag first: what skopeo copies.
	a, err := r.readArtifactAt(r.ref.WithTag(SignatureTag(d)), oci.Descriptor{}, d)
	switch {
	case err == nil:
		a.desc.Annotations = map[string]string{oci.RefNameAnnotation: SignatureTag(d)}
		out = append(out, a)
		seen[a.desc.Digest] = true
	case errors.Is(err, ErrNotFound):
	default:
		return nil, fmt.Errorf("images: signature tag of %s: %w", d, err)
	}
	// Then the referrers API, or its tag fallback (sha256-HEX).
	nd, err := r.o.digestRef(r.ref, string(d))
	if err != nil {
		return nil, err
	}
	ii, err := remote.Referrers(nd, append(r.ropts, remote.WithFilter("artifactType", update.MediaTypeRelease))...)
	if err != nil {
		return nil, fmt.Errorf("images: referrers of %s: %w", d, err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("images: referrers of %s: %w", d, err)
	}
	for _, m := range im.Manifests {
		md, err := digest.Parse(m.Digest.String())
		if err != nil || seen[md] || m.ArtifactType != update.MediaTypeRelease {
			continue
		}
		if len(out) >= MaxSignatureArtifacts {
			return out, fmt.Errorf("%w: more than %d signature artifacts for %s", ErrTooMany, MaxSignatureArtifacts, d)
		}
		seen[md] = true
		a, err := r.readArtifactAt(r.ref.WithDigest(md), oci.Descriptor{Digest: md}, d)
		if errors.Is(err, ErrBadArtifact) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("images: signature artifact %s: %w", md, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// rawManifest is a manifest to push verbatim.
type rawManifest struct {
	b  []byte
	mt string
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.b, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return types.MediaType(m.mt), nil }

func (r *registrySource) attach(ctx context.Context, subject oci.Descriptor, sig []byte) (oci.Descriptor, error) {
	tag := SignatureTag(subject.Digest)
	var old [][]byte
	a, err := r.readArtifactAt(r.ref.WithTag(tag), oci.Descriptor{}, subject.Digest)
	switch {
	case err == nil:
		old = a.blobs
	case errors.Is(err, ErrNotFound):
	default:
		return oci.Descriptor{}, fmt.Errorf("images: existing signatures of %s: %w", subject.Digest, err)
	}
	blobs := mergeSigs(old, sig)
	mb, _ := buildArtifact(subject, blobs)
	nr, err := r.o.reference(r.ref.WithTag(tag))
	if err != nil {
		return oci.Descriptor{}, err
	}
	repo := nr.Context()
	if err := remote.WriteLayer(repo, static.NewLayer(emptyConfig, MediaTypeEmpty), r.ropts...); err != nil {
		return oci.Descriptor{}, fmt.Errorf("images: push signature: %w", err)
	}
	for _, b := range blobs {
		if err := remote.WriteLayer(repo, static.NewLayer(b, update.MediaTypeRelease), r.ropts...); err != nil {
			return oci.Descriptor{}, fmt.Errorf("images: push signature: %w", err)
		}
	}
	if err := remote.Put(nr, rawManifest{mb, oci.MediaTypeOCIManifest}, r.ropts...); err != nil {
		return oci.Descriptor{}, fmt.Errorf("images: push signature: %w", err)
	}
	return oci.Descriptor{MediaType: oci.MediaTypeOCIManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb)), ArtifactType: update.MediaTypeRelease}, nil
}

// manifestPlatform is the platform an image config names.
func manifestPlatform(config []byte) *oci.Platform {
	var c struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	}
	if json.Unmarshal(config, &c) != nil || c.OS == "" && c.Architecture == "" {
		return nil
	}
	return &oci.Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant}
}
