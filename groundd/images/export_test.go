package images

import "github.com/opencontainers/go-digest"

// ParseArtifact exposes the signature artifact parser to the fuzz test.
func ParseArtifact(b []byte, subject string) error {
	_, err := parseArtifact(b, digestOf(subject))
	return err
}

func digestOf(s string) digest.Digest { return digest.Digest(s) }

// ParseBundle exposes the bundle artifact parser to the fuzz test: what it
// accepts builds back to a manifest it accepts the same.
func ParseBundle(b []byte) (*BundleArtifact, []byte, error) {
	a, err := parseBundle(b, digest.FromBytes(b))
	if err != nil {
		return nil, nil, err
	}
	mb, err := buildBundle(a)
	return a, mb, err
}

// BuildBundle exposes the bundle artifact builder.
func BuildBundle(a *BundleArtifact) ([]byte, error) { return buildBundle(a) }
