package images

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/opencontainers/go-digest"
)

// Pull fetches the image ref names (for the platform in o) and its
// signatures into the store, and returns it. Blobs already stored intact
// are not fetched again; a stored blob found corrupted is reported, moved
// aside and fetched again. Every blob is verified by digest and size as it
// is stored, every layer against its diff_id before the image is listed in
// the store; a failure leaves the store without the image and names the
// blob.
func (s *Store) Pull(ctx context.Context, ref Ref, o Options) (*Image, error) {
	src, err := openSource(ctx, ref, o)
	if err != nil {
		return nil, err
	}
	desc, mb, err := src.resolve(ctx, o.platform())
	if err != nil {
		return nil, err
	}
	m, err := oci.ParseManifest(mb)
	if err != nil {
		return nil, &oci.BlobError{Digest: desc.Digest, What: "manifest", Err: err}
	}
	if m.Config.Size > oci.MaxConfigSize {
		return nil, &oci.BlobError{Digest: m.Config.Digest, What: "config", Err: fmt.Errorf("%w: %d bytes", oci.ErrTooLarge, m.Config.Size)}
	}
	open := func(d oci.Descriptor) func() (io.ReadCloser, error) {
		return func() (io.ReadCloser, error) { return src.blob(ctx, d) }
	}
	if err := s.putBlob(ctx, m.Config, "config", open(m.Config)); err != nil {
		return nil, err
	}
	for i, l := range m.Layers {
		if len(l.URLs) > 0 || strings.Contains(l.MediaType, "nondistributable") || strings.Contains(l.MediaType, "foreign") {
			return nil, &oci.BlobError{Digest: l.Digest, What: fmt.Sprintf("layer %d", i), Err: fmt.Errorf("%w: %s", oci.ErrForeignLayer, l.MediaType)}
		}
		if err := s.putBlob(ctx, l, fmt.Sprintf("layer %d", i), open(l)); err != nil {
			return nil, err
		}
	}
	if err := s.putBytes(ctx, desc.MediaType, mb, desc.Digest); err != nil {
		return nil, err
	}
	oim, err := oci.Open(oci.Ref{Layout: s.dir, Digest: desc.Digest})
	if err != nil {
		return nil, err
	}
	if err := verifyLayers(ctx, oim); err != nil {
		return nil, err
	}
	arts, err := src.signatures(ctx, desc.Digest)
	if err != nil {
		return nil, err
	}
	for _, a := range arts {
		if err := s.putArtifact(ctx, a, desc.Digest); err != nil {
			return nil, err
		}
	}
	entry := oci.Descriptor{
		MediaType: desc.MediaType, Digest: desc.Digest, Size: int64(len(mb)),
		Platform:    manifestPlatform(oim.ConfigBytes),
		Annotations: map[string]string{AnnotationSource: ref.String(), AnnotationPulled: s.now().UTC().Format(time.RFC3339)},
	}
	if err := s.record(entry); err != nil {
		return nil, err
	}
	im := newImage(oim, ref.String())
	im.Signatures = decodedSignatures(arts)
	return im, nil
}

// putArtifact stores a signature artifact read from a source.
func (s *Store) putArtifact(ctx context.Context, a *artifact, subject digest.Digest) error {
	if err := s.putBytes(ctx, MediaTypeEmpty, emptyConfig, digest.FromBytes(emptyConfig)); err != nil {
		return err
	}
	for _, b := range a.blobs {
		if err := s.putBytes(ctx, update.MediaTypeRelease, b, digest.FromBytes(b)); err != nil {
			return err
		}
	}
	d := digest.FromBytes(a.manifest)
	if err := s.putBytes(ctx, oci.MediaTypeOCIManifest, a.manifest, d); err != nil {
		return err
	}
	return s.record(oci.Descriptor{
		MediaType: oci.MediaTypeOCIManifest, Digest: d, Size: int64(len(a.manifest)),
		ArtifactType: update.MediaTypeRelease,
		Annotations:  map[string]string{AnnotationSubject: string(subject)},
	})
}

// Signatures returns the image manifest ref names (for o's platform) and
// the release signatures found beside it, decoded but not verified.
func Signatures(ctx context.Context, ref Ref, o Options) (oci.Descriptor, []update.ReleaseSignature, error) {
	src, err := openSource(ctx, ref, o)
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	desc, _, err := src.resolve(ctx, o.platform())
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	arts, err := src.signatures(ctx, desc.Digest)
	if err != nil {
		return desc, nil, err
	}
	return desc, decodedSignatures(arts), nil
}

// Sign signs the image manifest ref names (for o's platform) as release
// version for hardware with the release key priv named keyID, and attaches
// the signature beside the image: in a layout, as the artifact tagged
// SignatureTag(manifest) in index.json; in a registry, as that artifact
// pushed under that tag (go-containerregistry also lists it in the
// referrers API, or in its "sha256-HEX" tag fallback). Signatures already
// there are kept. The key is never logged.
func Sign(ctx context.Context, ref Ref, o Options, keyID uint32, priv ed25519.PrivateKey, version uint64, hardware string) (update.ReleaseSignature, oci.Descriptor, error) {
	src, err := openSource(ctx, ref, o)
	if err != nil {
		return update.ReleaseSignature{}, oci.Descriptor{}, err
	}
	desc, _, err := src.resolve(ctx, o.platform())
	if err != nil {
		return update.ReleaseSignature{}, oci.Descriptor{}, err
	}
	rs, err := update.SignRelease(priv, keyID, update.Release{Manifest: desc.Digest, Version: version, HardwareID: hardware})
	if err != nil {
		return update.ReleaseSignature{}, oci.Descriptor{}, err
	}
	b, err := update.EncodeRelease(&rs)
	if err != nil {
		return update.ReleaseSignature{}, oci.Descriptor{}, err
	}
	if _, err := src.attach(ctx, desc, b); err != nil {
		return update.ReleaseSignature{}, oci.Descriptor{}, err
	}
	return rs, desc, nil
}
