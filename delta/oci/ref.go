package oci

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Ref names an image in a layout: "oci:PATH:TAG", "oci:PATH@sha256:HEX", or
// the same without the "oci:" prefix. With neither tag nor digest, the layout
// must hold exactly one image.
type Ref struct {
	Layout string        // the layout directory
	Tag    string        // the org.opencontainers.image.ref.name, or ""
	Digest digest.Digest // a manifest (or index) digest, or ""
}

// String formats r so that ParseRef reads it back.
func (r Ref) String() string {
	switch {
	case r.Digest != "":
		return "oci:" + r.Layout + "@" + string(r.Digest)
	case r.Tag != "":
		return "oci:" + r.Layout + ":" + r.Tag
	}
	return "oci:" + r.Layout
}

// ParseRef parses an image reference. The tag is what follows the last ':'
// when that part contains no '/', so a path may itself contain ':' only if a
// tag follows.
func ParseRef(s string) (Ref, error) {
	orig := s
	s = strings.TrimPrefix(s, "oci:")
	if s == "" {
		return Ref{}, fmt.Errorf("%w: %q: no layout path", ErrBadRef, orig)
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		d, err := digest.Parse(s[i+1:])
		if err != nil {
			return Ref{}, fmt.Errorf("%w: %q: digest: %v", ErrBadRef, orig, err)
		}
		if s[:i] == "" {
			return Ref{}, fmt.Errorf("%w: %q: no layout path", ErrBadRef, orig)
		}
		return Ref{Layout: s[:i], Digest: d}, nil
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 && !strings.Contains(s[i+1:], "/") {
		tag := s[i+1:]
		if err := checkTag(tag); err != nil {
			return Ref{}, fmt.Errorf("%w: %q: %v", ErrBadRef, orig, err)
		}
		if s[:i] == "" {
			return Ref{}, fmt.Errorf("%w: %q: no layout path", ErrBadRef, orig)
		}
		return Ref{Layout: s[:i], Tag: tag}, nil
	}
	return Ref{Layout: s}, nil
}

// checkTag accepts the characters the OCI spec allows in a ref name
// component (alphanumerics and -._:), bounded in length.
func checkTag(tag string) error {
	if tag == "" {
		return fmt.Errorf("empty tag")
	}
	if len(tag) > 256 {
		return fmt.Errorf("tag longer than 256 bytes")
	}
	for _, c := range tag {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_', c == '+':
		default:
			return fmt.Errorf("tag %q: character %q not allowed", tag, c)
		}
	}
	return nil
}
