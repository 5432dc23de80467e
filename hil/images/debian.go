package images

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/opencontainers/go-digest"
)

// Pairs of images a scenario can run on.
const (
	PairSynthetic = "synthetic" // Generate: a few MB, built in Go, the default
	PairDebian    = "debian"    // Debian: the realistic pair of hil/deltabench/mkimages.sh
)

// DebianLayoutEnv names the OCI layout mkimages.sh wrote when no flag
// does (hil run --debian-layout).
const DebianLayoutEnv = "BOOTORBIT_DEBIAN_LAYOUT"

// DefaultDebianLayout is where mkimages.sh puts its layout when run from
// the repository as its usage says (`hil/deltabench/mkimages.sh
// testdata-gen`).
const DefaultDebianLayout = "testdata-gen/oci"

// DebianOptions configures Debian.
type DebianOptions struct {
	// Source is the OCI layout mkimages.sh wrote (OUTDIR/oci). It is
	// only read: the images are linked (or copied) into Dir's layout and
	// signed there.
	Source string
	// From and To are the tags of the factory image and of the update
	// (default old and new: Debian bookworm's point release, and the same
	// root upgraded with bookworm-security and -updates).
	From, To string
	// Dir, Seed, Hardware, KeyID and Platform are as in Options: the
	// release key is the one Generate makes from the same seed.
	Dir      string
	Seed     uint64
	Hardware string
	KeyID    uint32
	Platform oci.Platform
}

// ErrNoDebianPair is returned by Debian when the source layout is not
// there: build it first (as root) with hil/deltabench/mkimages.sh.
var ErrNoDebianPair = errors.New("images: no Debian pair: build it as root with `hil/deltabench/mkimages.sh testdata-gen` (a few minutes, needs debootstrap, umoci and deb.debian.org) and name its oci layout")

// Debian makes the bench's set from the realistic Debian pair of
// hil/deltabench/mkimages.sh: base (version 1) is the From image, update
// (2) the To image, and hang and unhealthy (3) the update with one more
// small layer holding the behaviour file (BehaviourFile) the virtual board
// reads. Each image is committed into o.Dir's layout with a minimal config
// for o.Platform over the source's layer blobs (hard links when the two
// are on one filesystem, else copies) and signed with the set's release
// key, as Generate signs the synthetic set. The set holds no layer in
// memory: Image.OpenLayers streams them from the layout.
func Debian(ctx context.Context, o DebianOptions) (*Set, error) {
	if o.Source == "" || o.Dir == "" || o.Hardware == "" {
		return nil, errors.New("images: Source, Dir and Hardware are required")
	}
	if _, err := os.Stat(filepath.Join(o.Source, "index.json")); err != nil {
		return nil, fmt.Errorf("%w (%s: %v)", ErrNoDebianPair, o.Source, err)
	}
	if o.From == "" {
		o.From = "old"
	}
	if o.To == "" {
		o.To = "new"
	}
	if o.KeyID == 0 {
		o.KeyID = 1
	}
	if o.Platform.OS == "" {
		o.Platform = oci.DefaultPlatform()
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	opt := Options{Dir: o.Dir, Seed: o.Seed, Hardware: o.Hardware, KeyID: o.KeyID, Platform: o.Platform}
	s, priv, err := newSet(opt)
	if err != nil {
		return nil, err
	}
	w, err := oci.Create(s.Layout)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	from, err := importLayers(w, o.Source, o.From)
	if err != nil {
		return nil, err
	}
	to, err := importLayers(w, o.Source, o.To)
	if err != nil {
		return nil, err
	}
	for _, x := range []struct {
		im      *Image
		name    string
		version uint64
		ls      []imported
		beh     string
	}{
		{&s.Base, "base", 1, from, BehaviourOK},
		{&s.Update, "update", 2, to, BehaviourOK},
		{&s.Hang, "hang", 3, nil, BehaviourHang},
		{&s.Unhealthy, "unhealthy", 3, nil, BehaviourUnhealthy},
	} {
		ls := x.ls
		if ls == nil {
			b, err := behaviourLayer(w, x.beh)
			if err != nil {
				return nil, err
			}
			ls = append(append([]imported(nil), to...), b)
		}
		var descs []oci.Descriptor
		var diffIDs []digest.Digest
		for _, l := range ls {
			descs, diffIDs = append(descs, l.desc), append(diffIDs, l.diffID)
		}
		md, err := w.Commit(x.name, oci.NewConfig(o.Platform, diffIDs), descs, nil)
		if err != nil {
			return nil, fmt.Errorf("images: %s: %w", x.name, err)
		}
		im := Image{Name: x.name, Tag: x.name, Ref: "oci:" + s.Layout + ":" + x.name, Version: x.version, Behaviour: x.beh,
			Manifest: md.Digest, DiffIDs: diffIDs}
		if err := sign(ctx, im, opt, priv); err != nil {
			return nil, err
		}
		*x.im = im
	}
	return s, nil
}

// imported is a layer blob in the set's layout with its diff_id.
type imported struct {
	desc   oci.Descriptor
	diffID digest.Digest
}

// importLayers puts the layer blobs of src's image tag into w's layout.
// A linked blob is not re-hashed here: every reader of the layout
// (oci.Image.OpenLayer) verifies a blob against its digest as it reads.
func importLayers(w *oci.Writer, src, tag string) ([]imported, error) {
	im, err := oci.Open(oci.Ref{Layout: src, Tag: tag})
	if err != nil {
		return nil, fmt.Errorf("images: Debian pair %s:%s: %w", src, tag, err)
	}
	diffIDs := im.DiffIDs()
	var out []imported
	for i, l := range im.Layers() {
		from, err := oci.BlobPath(src, l.Digest)
		if err != nil {
			return nil, fmt.Errorf("images: %w", err)
		}
		to, err := oci.BlobPath(w.Dir(), l.Digest)
		if err != nil {
			return nil, fmt.Errorf("images: %w", err)
		}
		d := oci.Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size}
		if _, err := os.Stat(to); err != nil {
			if err := os.Link(from, to); err != nil {
				f, err := os.Open(from)
				if err != nil {
					return nil, fmt.Errorf("images: %w", err)
				}
				d, err = w.WriteBlob(l.MediaType, f, l.Digest)
				f.Close()
				if err != nil {
					return nil, fmt.Errorf("images: %s:%s layer %d: %w", src, tag, i, err)
				}
			}
		}
		out = append(out, imported{desc: d, diffID: diffIDs[i]})
	}
	return out, nil
}

// behaviourLayer writes a one-file layer saying how the board models the
// image.
func behaviourLayer(w *oci.Writer, beh string) (imported, error) {
	dir, _ := filepath.Split(BehaviourFile)
	t, err := tarOf(append(dirs("etc", filepath.Clean(dir)), entry{typ: tar.TypeReg, name: BehaviourFile, data: []byte(beh + "\n")}))
	if err != nil {
		return imported{}, fmt.Errorf("images: %w", err)
	}
	blob, err := compress(oci.Gzip, t)
	if err != nil {
		return imported{}, fmt.Errorf("images: %w", err)
	}
	d, err := w.WriteBlobBytes(mediaType(oci.Gzip), blob)
	if err != nil {
		return imported{}, fmt.Errorf("images: %w", err)
	}
	return imported{desc: d, diffID: digest.FromBytes(t)}, nil
}
