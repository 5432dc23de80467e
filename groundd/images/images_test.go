package images_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/groundd/images/imagestest"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/opencontainers/go-digest"
)

var arm64 = oci.Platform{OS: "linux", Architecture: "arm64"}

func mustRef(t *testing.T, s string) images.Ref {
	t.Helper()
	r, err := images.ParseRef(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func openStore(t *testing.T) (*images.Store, *bytes.Buffer) {
	t.Helper()
	var log bytes.Buffer
	s, err := images.OpenStore(filepath.Join(t.TempDir(), "store"), slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s, &log
}

func readAll(t *testing.T) func(io.ReadCloser, error) []byte {
	return func(rc io.ReadCloser, err error) []byte { return readAllOf(t, rc, err) }
}

func readAllOf(t *testing.T, rc io.ReadCloser, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func twoLayers() ([]ocitest.Layer, []ocitest.Layer) {
	base := []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "usr/bin/a", Data: bytes.Repeat([]byte("code "), 4000)}}, Compression: oci.Gzip}}
	top := ocitest.Layer{Entries: []ocitest.Entry{{Name: "usr/bin/a", Data: bytes.Repeat([]byte("code!"), 4000)}}, Compression: oci.Zstd}
	return base, append(append([]ocitest.Layer(nil), base...), top)
}

func TestParseRef(t *testing.T) {
	for _, c := range []struct {
		in, out string
		ok      bool
	}{
		{"oci:/x/lay:v1", "oci:/x/lay:v1", true},
		{"oci:lay@sha256:" + strings.Repeat("a", 64), "oci:lay@sha256:" + strings.Repeat("a", 64), true},
		{"docker://reg.example:5000/flight/os:stable", "docker://reg.example:5000/flight/os:stable", true},
		{"docker://127.0.0.1:5000/os@sha256:" + strings.Repeat("b", 64), "docker://127.0.0.1:5000/os@sha256:" + strings.Repeat("b", 64), true},
		{"docker://flight/os:stable", "", false}, // no registry host
		{"docker://reg.example/os", "", false},   // no tag: nothing defaults to latest
		{"docker://reg.example/os@sha256:00", "", false},
		{"lay:v1", "", false},
		{"", "", false},
	} {
		r, err := images.ParseRef(c.in)
		if (err == nil) != c.ok {
			t.Errorf("ParseRef(%q): %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, images.ErrBadRef) {
				t.Errorf("ParseRef(%q): %v does not wrap ErrBadRef", c.in, err)
			}
			continue
		}
		if r.String() != c.out {
			t.Errorf("ParseRef(%q).String() = %q, want %q", c.in, r.String(), c.out)
		}
	}
}

// TestPullLayout: gzip and zstd layers from a layout land in the store, are
// verified, and the stored image feeds delta.Compute.
func TestPullLayout(t *testing.T) {
	dir := t.TempDir()
	lay := filepath.Join(dir, "lay")
	base, next := twoLayers()
	old := ocitest.Build(t, lay, "old", base)
	want := ocitest.Build(t, lay, "new", next)
	s, _ := openStore(t)
	ctx := context.Background()
	im, err := s.Pull(ctx, mustRef(t, "oci:"+lay+":new"), images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if im.Digest != want.ManifestDigest || len(im.Layers) != 2 {
		t.Fatalf("pulled %s with %d layers, want %s with 2", im.Digest, len(im.Layers), want.ManifestDigest)
	}
	for i, l := range im.Layers {
		if l.DiffID != want.DiffIDs[i] {
			t.Errorf("layer %d diff_id %s, want %s", i, l.DiffID, want.DiffIDs[i])
		}
		got := readAll(t)(im.OpenLayer(i))
		if !bytes.Equal(got, want.Tars[i]) {
			t.Errorf("layer %d: uncompressed tar differs", i)
		}
		blob := readAll(t)(im.OpenBlob(i))
		if digest.FromBytes(blob) != l.Digest {
			t.Errorf("layer %d: blob reads as %s, want %s", i, digest.FromBytes(blob), l.Digest)
		}
	}
	if im.Layers[0].Compression != oci.Gzip || im.Layers[1].Compression != oci.Zstd {
		t.Errorf("compressions %v %v, want gzip zstd", im.Layers[0].Compression, im.Layers[1].Compression)
	}
	if digest.FromBytes(im.Manifest) != im.Digest || len(im.Config) == 0 {
		t.Errorf("manifest bytes do not hash to the digest")
	}
	ents, err := s.List()
	if err != nil || len(ents) != 1 || ents[0].Digest != im.Digest || ents[0].Source != "oci:"+lay+":new" {
		t.Fatalf("List = %+v, %v", ents, err)
	}
	// The planner's view: the stored images are oci.Images delta.Compute takes.
	oldIm, err := s.Pull(ctx, mustRef(t, "oci:"+lay+"@"+string(old.ManifestDigest)), images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Image(ctx, im.Digest)
	if err != nil {
		t.Fatal(err)
	}
	var bundle bytes.Buffer
	st, err := delta.Compute(ctx, oldIm.OCI(), again.OCI(), &bundle, delta.Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if st.Layers[0].Decision != delta.Reuse || bundle.Len() == 0 {
		t.Errorf("delta from the store: %+v", st.Layers)
	}
}

// TestPullMultiArch: an index (OCI or Docker manifest list) gives the
// vehicle's platform's manifest; an absent platform is refused by name.
func TestPullMultiArch(t *testing.T) {
	for _, mt := range []string{oci.MediaTypeOCIIndex, oci.MediaTypeDockerManifestList} {
		lay := filepath.Join(t.TempDir(), "lay")
		ms, _ := imagestest.MultiArch(t, lay, "multi", mt)
		s, _ := openStore(t)
		for _, p := range []oci.Platform{{OS: "linux", Architecture: "arm64"}, {OS: "linux", Architecture: "arm", Variant: "v7"}, {OS: "linux", Architecture: "amd64"}} {
			im, err := s.Pull(context.Background(), mustRef(t, "oci:"+lay+":multi"), images.Options{Platform: p})
			if err != nil {
				t.Fatalf("%s %s: %v", mt, p, err)
			}
			var want oci.Descriptor
			for k, d := range ms {
				if strings.HasPrefix(k, p.String()) {
					want = d
				}
			}
			if im.Digest != want.Digest || im.Platform.Architecture != p.Architecture {
				t.Errorf("%s %s: pulled %s (%s), want %s", mt, p, im.Digest, im.Platform, want.Digest)
			}
			tarb := readAll(t)(im.OpenLayer(0))
			if !bytes.Contains(tarb, []byte(p.String())) {
				t.Errorf("%s %s: layer is not the %s one", mt, p, p)
			}
		}
		_, err := s.Pull(context.Background(), mustRef(t, "oci:"+lay+":multi"), images.Options{Platform: oci.Platform{OS: "linux", Architecture: "riscv64"}})
		if !errors.Is(err, oci.ErrNoPlatform) {
			t.Errorf("riscv64: %v, want ErrNoPlatform", err)
		}
	}
}

// TestPullDockerMediaTypes: a Docker schema 2 image (manifest, config and
// gzip layer media types) is pulled and kept verbatim.
func TestPullDockerMediaTypes(t *testing.T) {
	lay := filepath.Join(t.TempDir(), "lay")
	md := imagestest.DockerImage(t, lay, "d", []ocitest.Entry{{Name: "etc/os-release", Data: []byte("ID=flight\n")}}, []ocitest.Entry{{Name: "usr/bin/x", Data: []byte("x")}})
	s, _ := openStore(t)
	im, err := s.Pull(context.Background(), mustRef(t, "oci:"+lay+":d"), images.Options{Platform: arm64})
	if err != nil {
		t.Fatal(err)
	}
	if im.Digest != md.Digest || im.MediaType != oci.MediaTypeDockerManifest || im.Layers[1].MediaType != oci.MediaTypeDockerLayerGzip {
		t.Errorf("pulled %s %s, want %s (Docker schema 2)", im.Digest, im.MediaType, md.Digest)
	}
	if !bytes.Contains(readAll(t)(im.OpenLayer(0)), []byte("ID=flight")) {
		t.Error("layer 0 content")
	}
}

// corrupt flips a byte in the middle of a file.
func corrupt(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptedBlob: a corrupted blob is reported by digest and never
// used, in the source layout and in the store.
func TestCorruptedBlob(t *testing.T) {
	ctx := context.Background()
	lay := filepath.Join(t.TempDir(), "lay")
	_, next := twoLayers()
	want := ocitest.Build(t, lay, "new", next)
	s, log := openStore(t)
	im, err := s.Pull(ctx, mustRef(t, "oci:"+lay+":new"), images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bad := im.Layers[1].Digest
	stored, _ := oci.BlobPath(s.Dir(), bad)
	corrupt(t, stored)

	// Reading it fails, naming the blob.
	rc, err := im.OpenBlob(1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	var be *oci.BlobError
	if !errors.As(err, &be) || be.Digest != bad || !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("read of corrupted blob: %v, want a digest mismatch naming %s", err, bad)
	}
	if _, err := io.ReadAll(mustOpen(t)(im.OpenLayer(1))); !errors.As(err, &be) || be.Digest != bad {
		t.Fatalf("uncompressed read of corrupted blob: %v, want an error naming %s", err, bad)
	}
	// Check finds it, reports it and moves it out of blobs/.
	found, err := s.Check(ctx)
	if err != nil || len(found) != 1 || !errors.As(found[0], &be) || be.Digest != bad {
		t.Fatalf("Check = %v, %v; want one error naming %s", found, err, bad)
	}
	if _, err := os.Stat(stored); !os.IsNotExist(err) {
		t.Errorf("corrupted blob still in blobs/: %v", err)
	}
	if !strings.Contains(log.String(), string(bad)) {
		t.Errorf("the log does not name %s:\n%s", bad, log.String())
	}
	// A pull repairs it from the source.
	if _, err := s.Pull(ctx, mustRef(t, "oci:"+lay+":new"), images.Options{}); err != nil {
		t.Fatal(err)
	}
	if b := readAll(t)(im.OpenLayer(1)); !bytes.Equal(b, want.Tars[1]) {
		t.Error("repaired layer differs")
	}
	// A corrupted blob found by Pull itself is reported and fetched again.
	corrupt(t, stored)
	log.Reset()
	if _, err := s.Pull(ctx, mustRef(t, "oci:"+lay+":new"), images.Options{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "corrupted blob") || !strings.Contains(log.String(), string(bad)) {
		t.Errorf("Pull did not report the corrupted blob %s:\n%s", bad, log.String())
	}
	if b := readAll(t)(im.OpenBlob(1)); digest.FromBytes(b) != bad {
		t.Error("blob not repaired")
	}

	// A corrupted blob in the source is refused by digest; the store
	// does not list the image.
	s2, _ := openStore(t)
	src, _ := oci.BlobPath(lay, bad)
	corrupt(t, src)
	_, err = s2.Pull(ctx, mustRef(t, "oci:"+lay+":new"), images.Options{})
	if !errors.As(err, &be) || be.Digest != bad || !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("pull of a corrupted source: %v, want a digest mismatch naming %s", err, bad)
	}
	if ents, _ := s2.List(); len(ents) != 0 {
		t.Errorf("store lists %v after a failed pull", ents)
	}
	if p, _ := oci.BlobPath(s2.Dir(), bad); fileExists(p) {
		t.Error("the corrupted blob was stored")
	}
}

func mustOpen(t *testing.T) func(io.ReadCloser, error) io.ReadCloser {
	return func(rc io.ReadCloser, err error) io.ReadCloser { return mustOpenOf(t, rc, err) }
}

func mustOpenOf(t *testing.T, rc io.ReadCloser, err error) io.ReadCloser {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	return rc
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestDiffIDMismatch: a layer whose blob is intact but whose uncompressed
// content does not match the config's diff_id is refused at pull.
func TestDiffIDMismatch(t *testing.T) {
	lay := filepath.Join(t.TempDir(), "lay")
	w, err := oci.CreateScratch(lay)
	if err != nil {
		t.Fatal(err)
	}
	tarb, _ := ocitest.Tar([]ocitest.Entry{{Name: "a", Data: []byte("a")}})
	ld, _ := w.WriteBlobBytes(oci.MediaTypeOCILayer+"+gzip", mustGzip(t, tarb))
	lie := digest.FromString("not the tar")
	if _, err := w.Commit("v", oci.NewConfig(oci.DefaultPlatform(), []digest.Digest{lie}), []oci.Descriptor{ld}, nil); err != nil {
		t.Fatal(err)
	}
	s, _ := openStore(t)
	_, err = s.Pull(context.Background(), mustRef(t, "oci:"+lay+":v"), images.Options{})
	if !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("pull: %v, want a diff_id mismatch", err)
	}
	if ents, _ := s.List(); len(ents) != 0 {
		t.Errorf("store lists %v", ents)
	}
}

func mustGzip(t *testing.T, b []byte) []byte {
	t.Helper()
	z, err := ocitest.Compress(oci.Gzip, b)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

func newKey(t *testing.T, dir string, id uint32) (ed25519.PrivateKey, *protocol.Keyring) {
	t.Helper()
	kf, err := images.GenerateKey(filepath.Join(dir, "release-"+string(rune('a'+id))), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, priv, err := images.ReadPrivateKey(kf.Private)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := images.LoadKeyring(kf.Public)
	if err != nil {
		t.Fatal(err)
	}
	return priv, kr
}

// TestSignLayout: a signature lands beside the image in the layout (an
// artifact whose subject is the manifest, tagged sha256-HEX.sig), is found
// and verified, travels into the store on pull, and a second signature
// joins the first.
func TestSignLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	lay := filepath.Join(dir, "lay")
	_, next := twoLayers()
	im := ocitest.Build(t, lay, "v2", next)
	ref := mustRef(t, "oci:"+lay+":v2")
	priv, kr := newKey(t, dir, 1)
	priv2, _ := newKey(t, dir, 2)

	_, sigs, err := images.Signatures(ctx, ref, images.Options{})
	if err != nil || len(sigs) != 0 {
		t.Fatalf("unsigned image: %v %v", sigs, err)
	}
	if _, err := images.VerifyReleases(kr, im.ManifestDigest, sigs); !errors.Is(err, images.ErrUnsigned) {
		t.Errorf("unsigned: %v, want ErrUnsigned", err)
	}
	rs, desc, err := images.Sign(ctx, ref, images.Options{}, 1, priv, 7, "obc-rev-c")
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != im.ManifestDigest || rs.Release.Version != 7 {
		t.Fatalf("signed %s v%d", desc.Digest, rs.Release.Version)
	}
	// The layout's index.json lists the artifact under the signature tag,
	// and the image is still read by tag as before.
	idx, _ := os.ReadFile(filepath.Join(lay, "index.json"))
	if !bytes.Contains(idx, []byte(images.SignatureTag(im.ManifestDigest))) {
		t.Errorf("index.json lacks the signature tag:\n%s", idx)
	}
	if _, err := oci.Open(oci.Ref{Layout: lay, Tag: "v2"}); err != nil {
		t.Fatal(err)
	}
	_, sigs, err = images.Signatures(ctx, ref, images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ok, err := images.VerifyReleases(kr, im.ManifestDigest, sigs)
	if err != nil || len(ok) != 1 || ok[0].Release.HardwareID != "obc-rev-c" {
		t.Fatalf("verify: %v %v", ok, err)
	}
	// A second key's signature joins the first.
	if _, _, err := images.Sign(ctx, ref, images.Options{}, 2, priv2, 7, "obc-rev-c"); err != nil {
		t.Fatal(err)
	}
	_, sigs, _ = images.Signatures(ctx, ref, images.Options{})
	if len(sigs) != 2 {
		t.Fatalf("%d signatures after two signings", len(sigs))
	}
	if ok, err := images.VerifyReleases(kr, im.ManifestDigest, sigs); err != nil || len(ok) != 1 {
		t.Errorf("keyring of key 1 only: %v %v", ok, err)
	}
	// The store keeps them.
	s, _ := openStore(t)
	pulled, err := s.Pull(ctx, ref, images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pulled.Signatures) != 2 {
		t.Errorf("pulled %d signatures, want 2", len(pulled.Signatures))
	}
	again, err := s.Image(ctx, pulled.Digest)
	if err != nil || len(again.Signatures) != 2 {
		t.Fatalf("store image: %d signatures, %v", len(again.Signatures), err)
	}
	if ents, _ := s.List(); len(ents) != 1 {
		t.Errorf("List shows signature artifacts as images: %v", ents)
	}
	// An untrusted key only: ErrUntrusted.
	_, other := newKey(t, dir, 3)
	if _, err := images.VerifyReleases(other, im.ManifestDigest, sigs); !errors.Is(err, images.ErrUntrusted) {
		t.Errorf("untrusted: %v", err)
	}
}

// TestSignatureForAnotherImage: a signature artifact that claims to be for
// this image but signs another manifest does not verify.
func TestSignatureForAnotherImage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	lay := filepath.Join(dir, "lay")
	base, next := twoLayers()
	a := ocitest.Build(t, lay, "a", base)
	b := ocitest.Build(t, lay, "b", next)
	priv, kr := newKey(t, dir, 1)
	rs, _, err := images.Sign(ctx, mustRef(t, "oci:"+lay+":a"), images.Options{}, 1, priv, 1, "obc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := images.VerifyReleases(kr, b.ManifestDigest, []update.ReleaseSignature{rs}); !errors.Is(err, images.ErrUntrusted) {
		t.Errorf("a's signature verified for b: %v", err)
	}
	_ = a
}
