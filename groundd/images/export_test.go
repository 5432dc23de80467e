package images

import "github.com/opencontainers/go-digest"

// ParseArtifact exposes the signature artifact parser to the fuzz test.
func ParseArtifact(b []byte, subject string) error {
	_, err := parseArtifact(b, digestOf(subject))
	return err
}

func digestOf(s string) digest.Digest { return digest.Digest(s) }
