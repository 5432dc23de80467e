package groundd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bootorbit/bootorbit/delta/oci"

	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
	digest "github.com/opencontainers/go-digest"
)

// Image is an image the planner can send: the verified OCI image and the
// release authority's signature over it.
type Image struct {
	Ref     string
	OCI     *oci.Image
	Release update.ReleaseSignature
	// Releases are every release signature of the image that verified
	// (an image may be released for several hardware revisions); Release
	// is the highest version among them. Empty: Release alone.
	Releases []update.ReleaseSignature
}

// ReleaseFor returns the release of im for hardware: the highest version
// among its releases for that hardware.
func (im *Image) ReleaseFor(hardware string) (update.ReleaseSignature, bool) {
	rs := im.Releases
	if len(rs) == 0 {
		rs = []update.ReleaseSignature{im.Release}
	}
	var best *update.ReleaseSignature
	for i := range rs {
		if rs[i].Release.HardwareID == hardware && (best == nil || rs[i].Release.Version > best.Release.Version) {
			best = &rs[i]
		}
	}
	if best == nil {
		return update.ReleaseSignature{}, false
	}
	return *best, true
}

// ImageSource resolves image references for the planner: StoreSource, over
// groundd/images, is the daemon's.
type ImageSource interface {
	Resolve(ctx context.Context, ref string) (*Image, error)
}

// Lookuper is an ImageSource that finds an image it holds by manifest
// digest, without going back to where it came from.
type Lookuper interface {
	Lookup(ctx context.Context, manifest digest.Digest) (*Image, error)
}

// StoreSource resolves references through groundd/images: it pulls the
// image (an OCI layout or a registry) into the image store, verified by
// digest and diff_id, and takes the release signature found beside it that
// verifies with the release keyring (the highest version if several).
// An image without one is refused (images.ErrUnsigned, ErrUntrusted).
type StoreSource struct {
	Store       *images.Store
	Options     images.Options
	ReleaseKeys *protocol.Keyring
}

// Resolve implements ImageSource.
func (s StoreSource) Resolve(ctx context.Context, ref string) (*Image, error) {
	r, err := images.ParseRef(ref)
	if err != nil {
		return nil, err
	}
	im, err := s.Store.Pull(ctx, r, s.Options)
	if err != nil {
		return nil, err
	}
	return s.image(ref, im)
}

// Lookup implements Lookuper.
func (s StoreSource) Lookup(ctx context.Context, m digest.Digest) (*Image, error) {
	im, err := s.Store.Image(ctx, m)
	if err != nil {
		return nil, err
	}
	return s.image(im.Source, im)
}

func (s StoreSource) image(ref string, im *images.Image) (*Image, error) {
	sigs, err := images.VerifyReleases(s.ReleaseKeys, im.Digest, im.Signatures)
	if err != nil {
		return nil, fmt.Errorf("groundd: %s (%s): %w", ref, im.Digest, err)
	}
	best := slices.MaxFunc(sigs, func(a, b update.ReleaseSignature) int {
		return cmpUint(a.Release.Version, b.Release.Version)
	})
	return &Image{Ref: ref, OCI: im.OCI(), Release: best, Releases: sigs}, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ErrHardware: the image's release is for other hardware than the vehicle's.
var ErrHardware = errors.New("groundd: release is for other hardware")

// checkRelease checks what the ground can check of a release before
// planning it, so that a refusal the vehicle would make shows on the ground
// first: the signature covers this manifest.
func (d *Daemon) checkRelease(im *Image) error {
	if im.Release.Release.Manifest != im.OCI.ManifestDigest {
		return fmt.Errorf("groundd: the release signature of %s is for %s", im.OCI.ManifestDigest, im.Release.Release.Manifest)
	}
	return nil
}

// openImages is the daemon's default image source: the image store of
// cfg (ImageStore, default StateDir/images) with its release keyring.
func openImages(cfg Config, log *slog.Logger) (ImageSource, error) {
	if cfg.ReleaseKeys == "" {
		return nil, errors.New("groundd: config: release_keys is required to plan images (or give Options.Images)")
	}
	kr, err := images.LoadKeyring(cfg.ReleaseKeys)
	if err != nil {
		return nil, err
	}
	dir := cfg.ImageStore
	if dir == "" {
		dir = filepath.Join(cfg.StateDir, "images")
	}
	st, err := images.OpenStore(dir, log)
	if err != nil {
		return nil, err
	}
	o := images.Options{Registry: images.RegistryOptions{AuthFile: cfg.Registry.AuthFile, CAFile: cfg.Registry.CAFile, PlainHTTP: cfg.Registry.PlainHTTP}}
	if cfg.Platform != "" {
		if o.Platform, err = parsePlatform(cfg.Platform); err != nil {
			return nil, err
		}
	}
	return StoreSource{Store: st, Options: o, ReleaseKeys: kr}, nil
}

// parsePlatform reads "os/arch[/variant]" ("linux/arm64/v8").
func parsePlatform(s string) (oci.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return oci.Platform{}, fmt.Errorf("groundd: config: platform %q: want os/arch[/variant]", s)
	}
	p := oci.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}
