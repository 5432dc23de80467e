package images_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gimages "github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// TestDebian: Debian makes a signed set from a source layout (here a
// synthetic one standing in for mkimages.sh's, tags base and update):
// base and update keep the source's layers, hang and unhealthy are the
// update plus a layer holding the behaviour file, every image verifies
// under the set's release key (the one Generate makes from the same
// seed), the layers stream from the layout, and the source layout is
// left as it was. A missing layout names mkimages.sh.
func TestDebian(t *testing.T) {
	seed := testrand.New(t).Uint64()
	ctx := context.Background()
	dir := t.TempDir()
	src, err := images.Generate(ctx, images.Options{Dir: filepath.Join(dir, "src"), Seed: seed, Hardware: "obc", Size: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	index, _ := os.ReadFile(filepath.Join(src.Layout, "index.json"))
	set, err := images.Debian(ctx, images.DebianOptions{Source: src.Layout, From: "base", To: "update", Dir: filepath.Join(dir, "debian"), Seed: seed, Hardware: "obc"})
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(src.Layout, "index.json")); !bytes.Equal(index, after) {
		t.Fatal("the source layout was changed")
	}
	pub := func(p string) []byte { b, _ := os.ReadFile(p); return b }
	if !bytes.Equal(pub(set.ReleasePub), pub(src.ReleasePub)) {
		t.Fatal("the Debian set's release key is not the bench's key of the same seed")
	}
	kr, err := gimages.LoadKeyring(set.ReleasePub)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		version uint64
		diffIDs int
	}{{"base", 1, 4}, {"update", 2, 4}, {"hang", 3, 5}, {"unhealthy", 3, 5}} {
		im, ok := set.ByName(c.name)
		if !ok || im.Version != c.version || len(im.DiffIDs) != c.diffIDs {
			t.Fatalf("%s: %+v", c.name, im)
		}
		ref, _ := gimages.ParseRef(im.Ref)
		_, sigs, err := gimages.Signatures(ctx, ref, gimages.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := gimages.VerifyReleases(kr, im.Manifest, sigs); err != nil || len(ok) != 1 || ok[0].Release.Version != c.version {
			t.Fatalf("%s: signatures %+v: %v", c.name, ok, err)
		}
		rs, err := im.OpenLayers()
		if err != nil {
			t.Fatal(err)
		}
		var last []byte
		for _, r := range rs {
			if last, err = io.ReadAll(r); err != nil { // verified against the diff_id at EOF
				t.Fatalf("%s: %v", c.name, err)
			}
			r.Close()
		}
		if c.diffIDs == 5 && !strings.Contains(behaviour(t, last), c.name) {
			t.Fatalf("%s: last layer says %q", c.name, behaviour(t, last))
		}
	}
	if set.Base.DiffIDs[0] != src.Base.DiffIDs[0] || set.Update.DiffIDs[3] != src.Update.DiffIDs[3] || set.Hang.DiffIDs[3] != src.Update.DiffIDs[3] {
		t.Fatal("the layers are not the source's")
	}

	_, err = images.Debian(ctx, images.DebianOptions{Source: filepath.Join(dir, "nowhere"), Dir: filepath.Join(dir, "x"), Hardware: "obc"})
	if !errors.Is(err, images.ErrNoDebianPair) || !strings.Contains(err.Error(), "mkimages.sh") {
		t.Fatalf("a missing layout: %v", err)
	}
}

// behaviour returns the behaviour file's content in a layer tar.
func behaviour(t *testing.T, layer []byte) string {
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no behaviour file: %v", err)
		}
		if h.Name == images.BehaviourFile {
			b, _ := io.ReadAll(tr)
			return string(b)
		}
	}
}
