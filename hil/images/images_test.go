package images_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"path/filepath"
	"slices"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	gimages "github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// TestGenerate: the set is deterministic from its seed, every image opens
// as an OCI image whose layers match their diff_ids, and carries a release
// signature the generated key verifies, for its version and hardware.
func TestGenerate(t *testing.T) {
	seed := testrand.New(t).Uint64()
	ctx := context.Background()
	gen := func(dir string) *images.Set {
		s, err := images.Generate(ctx, images.Options{Dir: dir, Seed: seed, Hardware: "obc-rev-c", Size: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := gen(filepath.Join(t.TempDir(), "a")), gen(filepath.Join(t.TempDir(), "b"))
	kr, err := gimages.LoadKeyring(a.ReleasePub)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"base", "update", "hang", "unhealthy", "shadowed", "reuse"} {
		ia, _ := a.ByName(name)
		ib, _ := b.ByName(name)
		if ia.Manifest != ib.Manifest || ia.Manifest == "" {
			t.Errorf("%s: manifests %s and %s from one seed", name, ia.Manifest, ib.Manifest)
		}
		r, err := oci.ParseRef(ia.Ref)
		if err != nil {
			t.Fatal(err)
		}
		im, err := oci.Open(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if im.ManifestDigest != ia.Manifest || len(im.Layers()) != 4 {
			t.Fatalf("%s: manifest %s, %d layers", name, im.ManifestDigest, len(im.Layers()))
		}
		ref, _ := gimages.ParseRef(ia.Ref)
		_, sigs, err := gimages.Signatures(ctx, ref, gimages.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ok, err := gimages.VerifyReleases(kr, ia.Manifest, sigs)
		if err != nil || len(ok) != 1 || ok[0].Release.Version != ia.Version || ok[0].Release.HardwareID != "obc-rev-c" {
			t.Fatalf("%s: signatures %+v: %v", name, ok, err)
		}
	}
	if a.Base.Manifest == a.Update.Manifest || a.Update.Manifest == a.Hang.Manifest {
		t.Fatal("the images are not distinct")
	}
	if a.Base.DiffIDs[0] != a.Update.DiffIDs[0] || a.Base.DiffIDs[3] == a.Update.DiffIDs[3] {
		t.Fatal("the update should keep layer 0 and change layer 3")
	}
	// Issue 13's finding: Reuse keeps the layer 0 of Shadowed, whose last
	// layer removes a file of that layer.
	if a.Shadowed.DiffIDs[0] != a.Reuse.DiffIDs[0] || a.Shadowed.DiffIDs[2] == a.Reuse.DiffIDs[2] || a.Shadowed.DiffIDs[3] == a.Reuse.DiffIDs[3] {
		t.Fatal("reuse should keep layer 0 of shadowed and change layers 2 and 3")
	}
	if !slices.Contains(names(t, a.Shadowed.Tars[3]), "usr/share/doc/.wh.flight-old") || !slices.Contains(names(t, a.Shadowed.Tars[0]), "usr/share/doc/flight-old/README") {
		t.Fatal("shadowed's last layer should remove the documentation of its layer 0")
	}
}

func names(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
	}
}

// TestDemoImagesStable: the images the demo and the scenarios run are the
// same bytes from a seed as before the shadowed pair was added (its own
// random stream), on a fixed platform.
func TestDemoImagesStable(t *testing.T) {
	s, err := images.Generate(context.Background(), images.Options{Dir: t.TempDir(), Seed: 1, Hardware: "obc-rev-c", Platform: oci.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"base":      "sha256:1e5b4136d002b1a08f4c423eed01a0e4a3aef2230ca50189e709d2c8b2b2ed29",
		"update":    "sha256:89a9f167b8833afc3d332e232a397db07d128a10aacdbcca7596290a6c3b01e6",
		"hang":      "sha256:b4692cbd78eb6500196fb435b3c50312acf7af1b8ca0c2e0282eb6e170312344",
		"unhealthy": "sha256:839b89b5d1b3eb2b95d3290e4e6c521339941f423bbd6750e36e3189ba4ee8d3",
	} {
		if im, _ := s.ByName(name); im.Manifest.String() != want {
			t.Errorf("%s: manifest %s, was %s", name, im.Manifest, want)
		}
	}
}
