package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/opencontainers/go-digest"
)

// The signature artifact (OCI image spec 1.1, "artifacts"): an image
// manifest with artifactType update.MediaTypeRelease, the empty config, one
// layer per release signature (the encoded update.ReleaseSignature) and
// subject = the signed image manifest. It is tagged SignatureTag(manifest)
// so that tools that copy tags carry it (skopeo copy of that tag, skopeo
// sync of the repository copy it verbatim), and a registry with the
// referrers API lists it under its subject.
const (
	MediaTypeEmpty = "application/vnd.oci.empty.v1+json"
	// MaxSignatureArtifacts bounds the artifacts read for one image, and
	// MaxSignatures the signatures in one artifact.
	MaxSignatureArtifacts = 16
	MaxSignatures         = 16
	maxArtifactManifest   = 64 << 10
)

var emptyConfig = []byte("{}")

// artifactManifest is the signature artifact's manifest.
type artifactManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        oci.Descriptor    `json:"config"`
	Layers        []oci.Descriptor  `json:"layers"`
	Subject       *oci.Descriptor   `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// artifact is a signature artifact, read and checked.
type artifact struct {
	desc     oci.Descriptor
	manifest []byte
	blobs    [][]byte // the release signatures, encoded, verified by digest
	sigs     []update.ReleaseSignature
}

// parseArtifact checks a signature artifact's manifest for subject d.
func parseArtifact(b []byte, d digest.Digest) (*artifactManifest, error) {
	if len(b) > maxArtifactManifest {
		return nil, fmt.Errorf("%w: manifest of %d bytes", ErrBadArtifact, len(b))
	}
	var m artifactManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadArtifact, err)
	}
	switch {
	case m.SchemaVersion != 2 || m.MediaType != oci.MediaTypeOCIManifest:
		return nil, fmt.Errorf("%w: not an OCI image manifest", ErrBadArtifact)
	case m.ArtifactType != update.MediaTypeRelease && m.Config.MediaType != update.MediaTypeRelease:
		return nil, fmt.Errorf("%w: artifact type %q", ErrBadArtifact, m.ArtifactType)
	case m.Subject == nil || m.Subject.Digest != d:
		return nil, fmt.Errorf("%w: subject is not %s", ErrBadArtifact, d)
	case len(m.Layers) > MaxSignatures:
		return nil, fmt.Errorf("%w: %d signatures (limit %d)", ErrBadArtifact, len(m.Layers), MaxSignatures)
	}
	for _, l := range m.Layers {
		if l.MediaType != update.MediaTypeRelease {
			return nil, fmt.Errorf("%w: layer media type %q", ErrBadArtifact, l.MediaType)
		}
		if l.Size < 0 || l.Size > update.MaxReleaseSize || l.Digest.Validate() != nil {
			return nil, fmt.Errorf("%w: layer %s of %d bytes", ErrBadArtifact, l.Digest, l.Size)
		}
	}
	return &m, nil
}

// readArtifact reads the artifact desc names through get (a blob opener),
// checking every byte against its digest.
func readArtifact(desc oci.Descriptor, mb []byte, d digest.Digest, get func(oci.Descriptor) (io.ReadCloser, error)) (*artifact, error) {
	m, err := parseArtifact(mb, d)
	if err != nil {
		return nil, err
	}
	a := &artifact{desc: desc, manifest: mb}
	for _, l := range m.Layers {
		rc, err := get(l)
		if err != nil {
			return nil, err
		}
		b, err := readVerified(rc, l.Digest, l.Size, update.MaxReleaseSize, "release signature")
		if err != nil {
			return nil, err
		}
		rs, err := update.DecodeRelease(b)
		if err != nil {
			return nil, fmt.Errorf("%w: signature %s: %w", ErrBadArtifact, l.Digest, err)
		}
		a.blobs = append(a.blobs, b)
		a.sigs = append(a.sigs, *rs)
	}
	return a, nil
}

func decodedSignatures(arts []*artifact) []update.ReleaseSignature {
	var out []update.ReleaseSignature
	seen := map[string]bool{}
	for _, a := range arts {
		for i, rs := range a.sigs {
			if k := string(a.blobs[i]); !seen[k] {
				seen[k] = true
				out = append(out, rs)
			}
		}
	}
	return out
}

// layoutSignatures finds the signature artifacts for manifest d in the
// layout at dir: index.json entries tagged SignatureTag(d), or with the
// release artifact type and d as subject. Unreadable or foreign artifacts
// are skipped (a signature that cannot be read is no signature); blob
// errors are returned.
func layoutSignatures(ctx context.Context, dir string, d digest.Digest) ([]*artifact, error) {
	idx, err := readIndexFile(dir)
	if err != nil {
		return nil, err
	}
	tag := SignatureTag(d)
	var out []*artifact
	for _, m := range idx.Manifests {
		name := m.Annotations[oci.RefNameAnnotation]
		switch {
		case name == tag:
		case m.ArtifactType == update.MediaTypeRelease && (m.Annotations[AnnotationSubject] == "" || m.Annotations[AnnotationSubject] == string(d)) &&
			(name == "" || !strings.HasSuffix(name, ".sig")):
		default:
			continue
		}
		if len(out) >= MaxSignatureArtifacts {
			return out, fmt.Errorf("%w: more than %d signature artifacts for %s", ErrTooMany, MaxSignatureArtifacts, d)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rc, err := openLayoutBlob(dir, m.Digest, "signature artifact")
		if err != nil {
			return nil, err
		}
		mb, err := readVerified(rc, m.Digest, m.Size, maxArtifactManifest, "signature artifact")
		if err != nil {
			return nil, err
		}
		a, err := readArtifact(m, mb, d, func(l oci.Descriptor) (io.ReadCloser, error) {
			return openLayoutBlob(dir, l.Digest, "release signature")
		})
		if errors.Is(err, ErrBadArtifact) && name != tag {
			continue // another subject's, or not ours
		}
		if err != nil {
			return nil, fmt.Errorf("signature artifact %s: %w", m.Digest, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// buildArtifact returns the artifact manifest signing subject with sigs
// (encoded release signatures), and their layer descriptors.
func buildArtifact(subject oci.Descriptor, sigs [][]byte) ([]byte, []oci.Descriptor) {
	m := artifactManifest{
		SchemaVersion: 2,
		MediaType:     oci.MediaTypeOCIManifest,
		ArtifactType:  update.MediaTypeRelease,
		Config:        oci.Descriptor{MediaType: MediaTypeEmpty, Digest: digest.FromBytes(emptyConfig), Size: int64(len(emptyConfig))},
		Subject:       &oci.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
	}
	for _, b := range sigs {
		m.Layers = append(m.Layers, oci.Descriptor{MediaType: update.MediaTypeRelease, Digest: digest.FromBytes(b), Size: int64(len(b))})
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // plain structs always marshal
	}
	return b, m.Layers
}

// mergeSigs appends add to old unless an equal signature is there; it
// keeps at most MaxSignatures, dropping the oldest.
func mergeSigs(old [][]byte, add []byte) [][]byte {
	out := make([][]byte, 0, len(old)+1)
	for _, b := range old {
		if !bytes.Equal(b, add) {
			out = append(out, b)
		}
	}
	out = append(out, add)
	if len(out) > MaxSignatures {
		out = out[len(out)-MaxSignatures:]
	}
	return out
}

// VerifyReleases returns the signatures among sigs that sign manifest d
// and verify with a key of kr. With none it returns ErrUnsigned (sigs is
// empty) or ErrUntrusted, with each signature's reason.
func VerifyReleases(kr *protocol.Keyring, d digest.Digest, sigs []update.ReleaseSignature) ([]update.ReleaseSignature, error) {
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w for %s", ErrUnsigned, d)
	}
	var ok []update.ReleaseSignature
	var why []string
	for _, rs := range sigs {
		if rs.Release.Manifest != d {
			why = append(why, fmt.Sprintf("key %d: signs %s", rs.KeyID, rs.Release.Manifest))
			continue
		}
		if err := update.VerifyRelease(kr, &rs); err != nil {
			why = append(why, fmt.Sprintf("key %d: %v", rs.KeyID, err))
			continue
		}
		ok = append(ok, rs)
	}
	if len(ok) == 0 {
		return nil, fmt.Errorf("%w for %s (%s)", ErrUntrusted, d, strings.Join(why, "; "))
	}
	return ok, nil
}
