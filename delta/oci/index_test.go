package oci_test

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/opencontainers/go-digest"
)

// multiArch builds images for three platforms in dir and returns their
// manifest descriptors (with platform set), tagged nowhere.
func multiArch(t *testing.T, dir string) map[string]oci.Descriptor {
	t.Helper()
	w, err := oci.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]oci.Descriptor{}
	for _, p := range []oci.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
		{OS: "linux", Architecture: "arm", Variant: "v7"},
	} {
		tarb, err := ocitest.Tar([]ocitest.Entry{{Type: ocitest.File, Name: "arch", Data: []byte(p.String())}})
		if err != nil {
			t.Fatal(err)
		}
		ld, err := w.WriteBlobBytes(oci.MediaTypeOCILayer, tarb)
		if err != nil {
			t.Fatal(err)
		}
		md, err := w.Commit("tmp", oci.NewConfig(p, []digest.Digest{ld.Digest}), []oci.Descriptor{ld}, nil)
		if err != nil {
			t.Fatal(err)
		}
		md.Platform = &p
		md.Annotations = nil
		out[p.String()] = md
	}
	return out
}

func writeIndex(t *testing.T, w *oci.Writer, mediaType string, ds ...oci.Descriptor) oci.Descriptor {
	t.Helper()
	b, err := json.Marshal(oci.Index{SchemaVersion: 2, MediaType: mediaType, Manifests: ds})
	if err != nil {
		t.Fatal(err)
	}
	d, err := w.WriteBlobBytes(mediaType, b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func setIndexJSON(t *testing.T, dir string, ds ...oci.Descriptor) {
	t.Helper()
	b, _ := json.Marshal(oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeOCIIndex, Manifests: ds})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func tagged(d oci.Descriptor, tag string) oci.Descriptor {
	d.Annotations = map[string]string{oci.RefNameAnnotation: tag}
	return d
}

func archOf(t *testing.T, im *oci.Image) string {
	t.Helper()
	rc, err := im.OpenLayer(0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, a := range []string{"linux/amd64", "linux/arm64/v8", "linux/arm/v7"} {
		if strings.Contains(s, a) {
			return a
		}
	}
	return "?"
}

func TestNestedIndexPlatformSelection(t *testing.T) {
	dir := t.TempDir()
	ms := multiArch(t, dir)
	w, _ := oci.Create(dir)
	// index.json -> OCI index (tag "multi") -> Docker manifest list (arm*) + amd64 manifest.
	inner := writeIndex(t, w, oci.MediaTypeDockerManifestList, ms["linux/arm64/v8"], ms["linux/arm/v7"])
	attest := ms["linux/amd64"]
	attest.Platform = &oci.Platform{OS: "unknown", Architecture: "unknown"}
	outer := writeIndex(t, w, oci.MediaTypeOCIIndex, attest, inner, ms["linux/amd64"])
	setIndexJSON(t, dir, tagged(outer, "multi"), tagged(ms["linux/arm/v7"], "armonly"))

	for _, c := range []struct {
		p    oci.Platform
		want string
	}{
		{oci.Platform{OS: "linux", Architecture: "amd64"}, "linux/amd64"},
		{oci.Platform{OS: "linux", Architecture: "arm64"}, "linux/arm64/v8"},
		{oci.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, "linux/arm64/v8"},
		{oci.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "linux/arm/v7"},
	} {
		im, err := oci.Open(oci.Ref{Layout: dir, Tag: "multi"}, oci.WithPlatform(c.p))
		if err != nil {
			t.Fatalf("%s: %v", c.p, err)
		}
		if got := archOf(t, im); got != c.want {
			t.Errorf("platform %s: got image %s, want %s", c.p, got, c.want)
		}
	}
	_, err := oci.Open(oci.Ref{Layout: dir, Tag: "multi"}, oci.WithPlatform(oci.Platform{OS: "linux", Architecture: "riscv64"}))
	if !errors.Is(err, oci.ErrNoPlatform) {
		t.Fatalf("riscv64: %v", err)
	}
	t.Log(err)
	// The only manifest is used whatever its platform (the ground reads
	// images built for the vehicle).
	im, err := oci.Open(oci.Ref{Layout: dir, Tag: "armonly"}, oci.WithPlatform(oci.Platform{OS: "linux", Architecture: "riscv64"}))
	if err != nil || archOf(t, im) != "linux/arm/v7" {
		t.Fatalf("single manifest: %v", err)
	}
	// By digest of the outer index, and of a manifest inside it.
	if im, err := oci.Open(oci.Ref{Layout: dir, Digest: outer.Digest}, oci.WithPlatform(oci.Platform{OS: "linux", Architecture: "arm", Variant: "v7"})); err != nil || archOf(t, im) != "linux/arm/v7" {
		t.Fatalf("by index digest: %v", err)
	}
	if im, err := oci.Open(oci.Ref{Layout: dir, Digest: ms["linux/arm64/v8"].Digest}); err != nil || archOf(t, im) != "linux/arm64/v8" {
		t.Fatalf("by manifest digest: %v", err)
	}
}

func TestIndexLoopBounded(t *testing.T) {
	dir := t.TempDir()
	ms := multiArch(t, dir)
	w, _ := oci.Create(dir)
	d := ms["linux/amd64"]
	for range oci.MaxIndexDepth + 1 {
		d = writeIndex(t, w, oci.MediaTypeOCIIndex, d)
	}
	setIndexJSON(t, dir, tagged(d, "deep"))
	if _, err := oci.Open(oci.Ref{Layout: dir, Tag: "deep"}); !errors.Is(err, oci.ErrInvalid) {
		t.Fatalf("deep nesting: %v", err)
	}
}

func TestDocumentSizeCaps(t *testing.T) {
	dir := t.TempDir()
	ocitest.Build(t, dir, "v1", sampleLayers())
	im, _ := oci.Open(oci.Ref{Layout: dir, Tag: "v1"})
	// A descriptor that claims a huge manifest is refused before reading.
	d := im.ManifestDescriptor
	d.Size = oci.MaxManifestSize + 1
	setIndexJSON(t, dir, tagged(d, "huge"))
	if _, err := oci.Open(oci.Ref{Layout: dir, Tag: "huge"}); !errors.Is(err, oci.ErrTooLarge) {
		t.Fatalf("huge manifest: %v", err)
	}
	// A size that understates the blob is a size mismatch, named by digest.
	d.Size = im.ManifestDescriptor.Size - 1
	setIndexJSON(t, dir, tagged(d, "short"))
	_, err := oci.Open(oci.Ref{Layout: dir, Tag: "short"})
	var be *oci.BlobError
	if !errors.Is(err, oci.ErrSizeMismatch) || !errors.As(err, &be) || be.Digest != d.Digest {
		t.Fatalf("short manifest: %v", err)
	}
	// An index.json over the cap.
	big := make([]byte, oci.MaxIndexSize+10)
	os.WriteFile(filepath.Join(dir, "index.json"), big, 0o644)
	if _, err := oci.Open(oci.Ref{Layout: dir, Tag: "v1"}); !errors.Is(err, oci.ErrTooLarge) {
		t.Fatalf("huge index.json: %v", err)
	}
}

func TestWriterLeavesNothingOnFailure(t *testing.T) {
	dir := t.TempDir()
	first := ocitest.Build(t, dir, "v1", sampleLayers())
	before, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	w, err := oci.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A stream that fails midway leaves no temporary file.
	_, err = w.WriteBlob(oci.MediaTypeOCILayer, io.MultiReader(strings.NewReader("partial"), errReader{}), "")
	if err == nil {
		t.Fatal("WriteBlob of a failing stream succeeded")
	}
	// Content that does not match the expected digest is discarded.
	_, err = w.WriteBlob(oci.MediaTypeOCILayer, strings.NewReader("abc"), digest.FromString("abd"))
	if !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("wrong digest: %v", err)
	}
	// Commit with a layer that is not in the layout changes nothing.
	_, err = w.Commit("v2", oci.NewConfig(oci.DefaultPlatform(), []digest.Digest{digest.FromString("x")}),
		[]oci.Descriptor{{MediaType: oci.MediaTypeOCILayer, Digest: digest.FromString("x"), Size: 1}}, nil)
	if !errors.Is(err, oci.ErrBlobMissing) {
		t.Fatalf("commit of missing layer: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	if string(before) != string(after) {
		t.Fatal("index.json changed by failed operations")
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Fatalf("temporary file left: %s", e.Name())
		}
		if e.Name() == digest.FromString("abc").Encoded() {
			t.Fatal("blob with a wrong digest kept")
		}
	}
	if _, err := oci.Open(first.Ref); err != nil {
		t.Fatal(err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("link lost") }
