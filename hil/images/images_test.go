package images_test

import (
	"context"
	"path/filepath"
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
	for _, name := range []string{"base", "update", "hang", "unhealthy"} {
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
}
