package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/protocol/update"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// The bundle artifact (OCI image spec 1.1, "artifacts"), as the signature
// artifact is built: an image manifest with artifactType
// update.MediaTypeBundle, the empty config, one layer per blob of a planned
// uplink (the encoded signed plan, update.MediaTypePlan, and its delta
// bundle, update.MediaTypeBundle), subject = the target image's manifest,
// and annotations naming the vehicle, the plan and the delta base. It is
// pushed under BundleTag, so that tools that copy tags carry it, and
// go-containerregistry lists it under its subject in the referrers API, or
// in the "sha256-HEX" tag index of registries without that API, so that
// registry tooling finds it beside the image (skopeo inspect --raw,
// skopeo copy, oras discover).
const (
	AnnotationVehicle = "io.bootorbit.vehicle"
	AnnotationPlan    = "io.bootorbit.plan"
	AnnotationBase    = "io.bootorbit.base"
	// MaxBundleBlobs bounds the layers of a bundle artifact.
	MaxBundleBlobs = 4
)

// ErrBadBundle: a manifest is not a bundle artifact, or not a sound one.
var ErrBadBundle = errors.New("images: bad bundle artifact")

// BundleArtifact is a planned uplink as an artifact: what PushBundle
// pushes and FetchBundle reads back.
type BundleArtifact struct {
	// Subject is the target image's manifest.
	Subject oci.Descriptor
	Vehicle uint32
	Plan    uint64
	// Base is the manifest the plan is a delta against ("": none).
	Base digest.Digest
	// Blobs are the plan and the bundle: media type (update.MediaTypePlan
	// or update.MediaTypeBundle), sha256 digest and size.
	Blobs []oci.Descriptor
}

// BundleTag is the tag of the bundle artifact of plan for vehicle whose
// target image manifest is subject: "sha256-HEX.bundle-VEHICLE-PLAN",
// beside the image's signature tag (SignatureTag).
func BundleTag(subject digest.Digest, vehicle uint32, plan uint64) string {
	return fmt.Sprintf("%s-%s.bundle-%d-%d", subject.Algorithm(), subject.Encoded(), vehicle, plan)
}

// maxBlob is the bound of a bundle artifact's blob of media type mt (0:
// not a blob a bundle artifact holds).
func maxBlob(mt string) int64 {
	switch mt {
	case update.MediaTypePlan:
		return update.MaxPlanSize
	case update.MediaTypeBundle:
		return update.MaxBundleSize
	}
	return 0
}

// buildBundle returns the manifest of a.
func buildBundle(a *BundleArtifact) ([]byte, error) {
	if err := checkBundle(a); err != nil {
		return nil, err
	}
	m := artifactManifest{
		SchemaVersion: 2,
		MediaType:     oci.MediaTypeOCIManifest,
		ArtifactType:  update.MediaTypeBundle,
		Config:        oci.Descriptor{MediaType: MediaTypeEmpty, Digest: digest.FromBytes(emptyConfig), Size: int64(len(emptyConfig))},
		Subject:       &oci.Descriptor{MediaType: a.Subject.MediaType, Digest: a.Subject.Digest, Size: a.Subject.Size},
		Annotations: map[string]string{
			AnnotationVehicle: strconv.FormatUint(uint64(a.Vehicle), 10),
			AnnotationPlan:    strconv.FormatUint(a.Plan, 10),
		},
	}
	if a.Base != "" {
		m.Annotations[AnnotationBase] = string(a.Base)
	}
	for _, b := range a.Blobs {
		m.Layers = append(m.Layers, oci.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size})
	}
	return json.Marshal(m)
}

// checkBundle checks what a bundle artifact must be, pushed or fetched.
func checkBundle(a *BundleArtifact) error {
	s := a.Subject
	switch {
	case s.Digest.Validate() != nil || s.Size <= 0 || s.Size > oci.MaxIndexSize:
		return fmt.Errorf("%w: subject %s of %d bytes", ErrBadBundle, s.Digest, s.Size)
	case s.MediaType != oci.MediaTypeOCIManifest && s.MediaType != oci.MediaTypeDockerManifest:
		return fmt.Errorf("%w: subject of media type %q, not an image manifest", ErrBadBundle, s.MediaType)
	case a.Base != "" && a.Base.Validate() != nil:
		return fmt.Errorf("%w: base %q", ErrBadBundle, a.Base)
	case len(a.Blobs) == 0 || len(a.Blobs) > MaxBundleBlobs:
		return fmt.Errorf("%w: %d blobs (1..%d)", ErrBadBundle, len(a.Blobs), MaxBundleBlobs)
	}
	for _, b := range a.Blobs {
		max := maxBlob(b.MediaType)
		if max == 0 {
			return fmt.Errorf("%w: blob %s of media type %q", ErrBadBundle, b.Digest, b.MediaType)
		}
		// sha256 only: the ground keeps bundles under their sha256.
		if b.Digest.Validate() != nil || b.Digest.Algorithm() != digest.SHA256 || len(b.URLs) > 0 {
			return fmt.Errorf("%w: blob %q", ErrBadBundle, b.Digest)
		}
		if b.Size < 0 || b.Size > max {
			return &oci.BlobError{Digest: b.Digest, What: b.MediaType, Err: fmt.Errorf("%w: %d bytes, limit %d", oci.ErrTooLarge, b.Size, max)}
		}
	}
	return nil
}

// parseBundle reads a bundle artifact's manifest.
func parseBundle(b []byte, d digest.Digest) (*BundleArtifact, error) {
	if len(b) > maxArtifactManifest {
		return nil, fmt.Errorf("%w: %s: manifest of %d bytes", ErrBadBundle, d, len(b))
	}
	var m artifactManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadBundle, d, err)
	}
	switch {
	case m.SchemaVersion != 2 || m.MediaType != oci.MediaTypeOCIManifest:
		return nil, fmt.Errorf("%w: %s: not an OCI image manifest", ErrBadBundle, d)
	case m.ArtifactType != update.MediaTypeBundle:
		return nil, fmt.Errorf("%w: %s: artifact type %q", ErrBadBundle, d, m.ArtifactType)
	case m.Subject == nil:
		return nil, fmt.Errorf("%w: %s: no subject", ErrBadBundle, d)
	}
	a := &BundleArtifact{Subject: *m.Subject, Blobs: m.Layers, Base: digest.Digest(m.Annotations[AnnotationBase])}
	v, err := strconv.ParseUint(m.Annotations[AnnotationVehicle], 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: vehicle %q", ErrBadBundle, d, m.Annotations[AnnotationVehicle])
	}
	a.Vehicle = uint32(v)
	if a.Plan, err = strconv.ParseUint(m.Annotations[AnnotationPlan], 10, 64); err != nil {
		return nil, fmt.Errorf("%w: %s: plan %q", ErrBadBundle, d, m.Annotations[AnnotationPlan])
	}
	if err := checkBundle(a); err != nil {
		return nil, fmt.Errorf("%s: %w", d, err)
	}
	return a, nil
}

// blobLayer streams a blob from a file to the registry, verified against
// its descriptor as it is read: a blob altered on disk is never pushed.
type blobLayer struct {
	desc oci.Descriptor
	open func(oci.Descriptor) (io.ReadCloser, error)
}

func (l blobLayer) Digest() (v1.Hash, error) { return v1.NewHash(string(l.desc.Digest)) }
func (l blobLayer) DiffID() (v1.Hash, error) { return l.Digest() } // stored as is, not compressed
func (l blobLayer) Size() (int64, error)     { return l.desc.Size, nil }
func (l blobLayer) MediaType() (types.MediaType, error) {
	return types.MediaType(l.desc.MediaType), nil
}
func (l blobLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
func (l blobLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.open(l.desc)
	if err != nil {
		return nil, err
	}
	return newVerifyReader(rc, l.desc.Digest, l.desc.Size, l.desc.MediaType)
}

// PushBundle pushes a as a bundle artifact to the registry repository repo
// names (a "docker" reference; its tag or digest is ignored), reading each
// blob through open, and returns the artifact's reference by digest: what
// FetchBundle takes. Blobs the registry holds already are not sent again.
func PushBundle(ctx context.Context, repo Ref, o Options, a *BundleArtifact, open func(oci.Descriptor) (io.ReadCloser, error)) (Ref, error) {
	mb, err := buildBundle(a)
	if err != nil {
		return Ref{}, err
	}
	tag := repo.WithTag(BundleTag(a.Subject.Digest, a.Vehicle, a.Plan))
	nr, err := o.Registry.reference(tag)
	if err != nil {
		return Ref{}, err
	}
	ropts, err := o.Registry.remoteOptions(ctx)
	if err != nil {
		return Ref{}, err
	}
	r := nr.Context()
	if err := remote.WriteLayer(r, static.NewLayer(emptyConfig, MediaTypeEmpty), ropts...); err != nil {
		return Ref{}, fmt.Errorf("images: push bundle to %s: %w", repo.Repo, err)
	}
	for _, b := range a.Blobs {
		if err := remote.WriteLayer(r, blobLayer{desc: b, open: open}, ropts...); err != nil {
			return Ref{}, fmt.Errorf("images: push bundle blob %s to %s: %w", b.Digest, repo.Repo, err)
		}
	}
	if err := remote.Put(nr, rawManifest{mb, oci.MediaTypeOCIManifest}, ropts...); err != nil {
		return Ref{}, fmt.Errorf("images: push bundle artifact to %s: %w", tag, err)
	}
	return repo.WithDigest(digest.FromBytes(mb)), nil
}

// FetchBundle reads the bundle artifact ref names by digest (a "docker"
// reference) and hands each of its blobs to put, with a function that
// opens it (put need not open a blob it holds). What open returns is
// verified as it is read: more bytes than the descriptor's size, fewer,
// or content that does not hash to the digest end the read with an error
// naming the blob, in place of io.EOF, so that put stores nothing of it;
// put must read an opened blob to its end. The manifest is checked against
// the digest and bounded before it is parsed; every blob against its
// media type's bound before anything is fetched.
func FetchBundle(ctx context.Context, ref Ref, o Options, put func(desc oci.Descriptor, open func() (io.Reader, error)) error) (*BundleArtifact, error) {
	if ref.Digest == "" {
		return nil, fmt.Errorf("%w: %s: a bundle is fetched by digest", ErrBadRef, ref)
	}
	src, err := openSource(ctx, ref, o)
	if err != nil {
		return nil, err
	}
	rs, ok := src.(*registrySource)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a registry reference", ErrBadRef, ref)
	}
	mt, _, mb, err := rs.getManifest(ref, ref.Digest, -1)
	if err != nil {
		return nil, err
	}
	if mt != oci.MediaTypeOCIManifest {
		return nil, fmt.Errorf("%w: %s is a %q", ErrBadBundle, ref, mt)
	}
	a, err := parseBundle(mb, ref.Digest)
	if err != nil {
		return nil, err
	}
	for _, b := range a.Blobs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var vr *verifyReader
		open := func() (io.Reader, error) {
			if vr != nil {
				return nil, fmt.Errorf("images: bundle blob %s opened twice", b.Digest)
			}
			rc, err := rs.blob(ctx, b)
			if err != nil {
				return nil, err
			}
			if vr, err = newVerifyReader(rc, b.Digest, b.Size, "bundle blob"); err != nil {
				return nil, err
			}
			return ctxReader{ctx, vr}, nil
		}
		err := put(b, open)
		if vr != nil {
			vr.Close()
			if err == nil && vr.err != io.EOF {
				err = &oci.BlobError{Digest: b.Digest, What: "bundle blob", Err: errors.New("not read to its end")}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("images: bundle %s: %w", ref, err)
		}
	}
	return a, nil
}
