package images

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

// Errors. Errors returned by this package wrap one of these, or one of
// package oci's (blob problems come as an *oci.BlobError naming the digest).
var (
	ErrBadRef      = errors.New("images: bad image reference")
	ErrNotFound    = errors.New("images: not found")
	ErrCorrupt     = errors.New("images: corrupted blob")
	ErrUnsigned    = errors.New("images: no release signature")
	ErrUntrusted   = errors.New("images: no valid release signature by a trusted key")
	ErrPlainHTTP   = errors.New("images: plain HTTP refused (not asked for)")
	ErrTooMany     = errors.New("images: too many")
	ErrBadArtifact = errors.New("images: bad signature artifact")
)

// Transports of a Ref.
const (
	TransportOCI    = "oci"
	TransportDocker = "docker"
)

// Ref names an image: in an OCI layout (Transport "oci", Layout set) or in
// a registry (Transport "docker", Repo set). Exactly one of Tag and Digest
// is set for a registry; a layout reference may have neither when the
// layout holds one image.
type Ref struct {
	Transport string
	Layout    string // the layout directory ("oci")
	Repo      string // HOST/REPO ("docker"), with the registry explicit
	Tag       string
	Digest    digest.Digest
}

// ParseRef parses "oci:PATH:TAG", "oci:PATH@sha256:HEX",
// "docker://HOST/REPO:TAG" or "docker://HOST/REPO@sha256:HEX". A registry
// reference must name its tag or digest: nothing defaults to "latest",
// because what flies must be named.
func ParseRef(s string) (Ref, error) {
	switch {
	case strings.HasPrefix(s, "oci:"):
		r, err := oci.ParseRef(s)
		if err != nil {
			return Ref{}, fmt.Errorf("%w: %w", ErrBadRef, err)
		}
		return Ref{Transport: TransportOCI, Layout: r.Layout, Tag: r.Tag, Digest: r.Digest}, nil
	case strings.HasPrefix(s, "docker://"):
		rest := strings.TrimPrefix(s, "docker://")
		if len(rest) > 512 {
			return Ref{}, fmt.Errorf("%w: %.40q...: longer than 512 bytes", ErrBadRef, s)
		}
		nr, err := name.ParseReference(rest, name.StrictValidation)
		if err != nil {
			return Ref{}, fmt.Errorf("%w: %q: %v", ErrBadRef, s, err)
		}
		// The registry must be explicit: a flight image is never pulled
		// from a default registry by accident.
		if i := strings.IndexByte(rest, '/'); i < 0 || !strings.ContainsAny(rest[:i], ".:") && rest[:i] != "localhost" {
			return Ref{}, fmt.Errorf("%w: %q: name the registry host (docker://HOST/REPO:TAG)", ErrBadRef, s)
		}
		r := Ref{Transport: TransportDocker, Repo: nr.Context().Name()}
		switch v := nr.(type) {
		case name.Tag:
			r.Tag = v.TagStr()
		case name.Digest:
			d, err := digest.Parse(v.DigestStr())
			if err != nil {
				return Ref{}, fmt.Errorf("%w: %q: %v", ErrBadRef, s, err)
			}
			r.Digest = d
		}
		return r, nil
	}
	return Ref{}, fmt.Errorf("%w: %q: want oci:PATH:TAG, oci:PATH@sha256:..., docker://HOST/REPO:TAG or docker://HOST/REPO@sha256:...", ErrBadRef, s)
}

// String formats r so that ParseRef reads it back.
func (r Ref) String() string {
	if r.Transport == TransportOCI {
		return oci.Ref{Layout: r.Layout, Tag: r.Tag, Digest: r.Digest}.String()
	}
	if r.Digest != "" {
		return "docker://" + r.Repo + "@" + string(r.Digest)
	}
	return "docker://" + r.Repo + ":" + r.Tag
}

// WithDigest returns r naming digest d instead of its tag.
func (r Ref) WithDigest(d digest.Digest) Ref {
	r.Tag, r.Digest = "", d
	return r
}

// WithTag returns r naming tag instead of its digest.
func (r Ref) WithTag(tag string) Ref {
	r.Tag, r.Digest = tag, ""
	return r
}

// SignatureTag is the tag of the signature artifact of manifest d:
// "sha256-HEX.sig", as cosign names its signature tags.
func SignatureTag(d digest.Digest) string {
	return d.Algorithm().String() + "-" + d.Encoded() + ".sig"
}
