package oci_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/opencontainers/go-digest"
)

// seed returns the test's seed, logged (BOOTORBIT_SEED replays it).
func seed(t *testing.T) uint64 {
	t.Helper()
	return testrand.Seed(t)
}

func readAll(t *testing.T, im *oci.Image, i int) ([]byte, error) {
	t.Helper()
	rc, err := im.OpenLayer(i)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil && cerr != nil {
		t.Fatalf("Close after clean EOF: %v", cerr)
	}
	return b, err
}

func sampleLayers() []ocitest.Layer {
	return []ocitest.Layer{
		{Compression: oci.Gzip, Entries: []ocitest.Entry{
			{Type: ocitest.Dir, Name: "usr"},
			{Type: ocitest.Dir, Name: "usr/bin"},
			{Type: ocitest.File, Name: "usr/bin/tool", Data: bytes.Repeat([]byte("elf!"), 3000), Mode: 0o755},
			{Type: ocitest.Hardlink, Name: "usr/bin/tool2", Link: "usr/bin/tool"},
			{Type: ocitest.Symlink, Name: "usr/bin/t", Link: "tool"},
		}},
		{Compression: oci.Zstd, Entries: []ocitest.Entry{
			{Type: ocitest.Dir, Name: "etc"},
			{Type: ocitest.File, Name: "etc/hostname", Data: []byte("sat1\n")},
			{Type: ocitest.Whiteout, Name: "usr/bin/t"},
		}},
		{Compression: oci.Uncompressed, Entries: []ocitest.Entry{
			{Type: ocitest.OpaqueWhiteout, Name: "etc"},
			{Type: ocitest.File, Name: "etc/motd", Data: []byte("hi\n")},
		}},
	}
}

func TestRoundTripAllCompressions(t *testing.T) {
	dir := t.TempDir()
	want := ocitest.Build(t, dir, "v1", sampleLayers())
	for _, ref := range []oci.Ref{
		{Layout: dir, Tag: "v1"},
		{Layout: dir, Digest: want.ManifestDigest},
		{Layout: dir}, // the only image
	} {
		im, err := oci.Open(ref)
		if err != nil {
			t.Fatalf("Open(%v): %v", ref, err)
		}
		if im.ManifestDigest != want.ManifestDigest {
			t.Fatalf("%v: manifest %s, want %s", ref, im.ManifestDigest, want.ManifestDigest)
		}
		ls := im.Layers()
		if len(ls) != 3 || ls[0].Compression != oci.Gzip || ls[1].Compression != oci.Zstd || ls[2].Compression != oci.Uncompressed {
			t.Fatalf("layers %+v", ls)
		}
		for i := range ls {
			if ls[i].DiffID != want.DiffIDs[i] || im.DiffIDs()[i] != want.DiffIDs[i] {
				t.Fatalf("layer %d diff_id %s, want %s", i, ls[i].DiffID, want.DiffIDs[i])
			}
			b, err := readAll(t, im, i)
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			if !bytes.Equal(b, want.Tars[i]) {
				t.Fatalf("layer %d: tar differs", i)
			}
		}
	}
}

func TestRandomImagesRoundTrip(t *testing.T) {
	s := seed(t)
	rng := rand.New(rand.NewPCG(s, 1))
	dir := t.TempDir()
	for i := range 20 {
		layers := ocitest.RandomLayers(rng, ocitest.GenOptions{})
		want := ocitest.Build(t, dir, "t", layers) // retag: replaces the entry
		im, err := oci.Open(oci.Ref{Layout: dir, Tag: "t"})
		if err != nil {
			t.Fatalf("image %d: %v", i, err)
		}
		for j := range im.Layers() {
			b, err := readAll(t, im, j)
			if err != nil || !bytes.Equal(b, want.Tars[j]) {
				t.Fatalf("image %d layer %d: err %v, equal %v", i, j, err, bytes.Equal(b, want.Tars[j]))
			}
		}
		mod, log := ocitest.Modify(rng, layers, ocitest.ModifyOptions{})
		if len(log) == 0 {
			t.Fatalf("image %d: Modify changed nothing", i)
		}
		if _, err := ocitest.Write(dir, "m", mod); err != nil {
			t.Fatalf("image %d modified (%v): %v", i, log, err)
		}
	}
}

func blobPath(t *testing.T, dir string, d digest.Digest) string {
	t.Helper()
	p, err := oci.BlobPath(dir, d)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCorruptLayerNamedByDigest(t *testing.T) {
	for _, comp := range []oci.Compression{oci.Uncompressed, oci.Gzip, oci.Zstd} {
		t.Run(comp.String(), func(t *testing.T) {
			dir := t.TempDir()
			layers := sampleLayers()[:1]
			layers[0].Compression = comp
			ocitest.Build(t, dir, "v1", layers)
			im, err := oci.Open(oci.Ref{Layout: dir, Tag: "v1"})
			if err != nil {
				t.Fatal(err)
			}
			l := im.Layers()[0]
			p := blobPath(t, dir, l.Digest)
			b, _ := os.ReadFile(p)
			b[len(b)-5] ^= 0x40 // in the trailer: gzip crc/size, zstd checksum, tar padding
			os.WriteFile(p, b, 0o644)
			_, err = readAll(t, im, 0)
			var be *oci.BlobError
			if !errors.As(err, &be) || be.Digest != l.Digest {
				t.Fatalf("error %v, want a BlobError naming %s", err, l.Digest)
			}
			if !errors.Is(err, oci.ErrDigestMismatch) && !errors.Is(err, oci.ErrDecompress) {
				t.Fatalf("error %v: want digest mismatch or decompression error", err)
			}
			t.Log(err)
		})
	}
}

func TestMissingAndTruncatedBlobs(t *testing.T) {
	dir := t.TempDir()
	ocitest.Build(t, dir, "v1", sampleLayers())
	im, err := oci.Open(oci.Ref{Layout: dir, Tag: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	l := im.Layers()[1]
	p := blobPath(t, dir, l.Digest)
	b, _ := os.ReadFile(p)
	os.WriteFile(p, b[:len(b)-1], 0o644)
	if _, err := im.OpenLayer(1); !errors.Is(err, oci.ErrSizeMismatch) {
		t.Fatalf("truncated: %v", err)
	}
	os.Remove(p)
	_, err = im.OpenLayer(1)
	var be *oci.BlobError
	if !errors.Is(err, oci.ErrBlobMissing) || !errors.As(err, &be) || be.Digest != l.Digest {
		t.Fatalf("missing: %v", err)
	}
	// A missing config fails Open, naming the config digest.
	os.Remove(blobPath(t, dir, im.Manifest.Config.Digest))
	_, err = oci.Open(oci.Ref{Layout: dir, Tag: "v1"})
	if !errors.Is(err, oci.ErrBlobMissing) || !errors.As(err, &be) || be.Digest != im.Manifest.Config.Digest {
		t.Fatalf("missing config: %v", err)
	}
}

// rewriteConfig replaces the image's config and manifest with edited ones and
// retags, returning the reopened error.
func rewrite(t *testing.T, dir string, editCfg func(map[string]any), editMan func(map[string]any)) error {
	t.Helper()
	im, err := oci.Open(oci.Ref{Layout: dir, Tag: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg, man map[string]any
	json.Unmarshal(im.ConfigBytes, &cfg)
	json.Unmarshal(im.ManifestBytes, &man)
	if editCfg != nil {
		editCfg(cfg)
	}
	cb, _ := json.Marshal(cfg)
	w, err := oci.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	cd, err := w.WriteBlobBytes(oci.MediaTypeOCIConfig, cb)
	if err != nil {
		t.Fatal(err)
	}
	man["config"] = cd
	if editMan != nil {
		editMan(man)
	}
	mb, _ := json.Marshal(man)
	md, err := w.WriteBlobBytes(oci.MediaTypeOCIManifest, mb)
	if err != nil {
		t.Fatal(err)
	}
	if mt, ok := man["mediaType"].(string); ok {
		md.MediaType = mt
	}
	idx := oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeOCIIndex}
	md.Annotations = map[string]string{oci.RefNameAnnotation: "v2"}
	idx.Manifests = []oci.Descriptor{md}
	ib, _ := json.Marshal(idx)
	os.WriteFile(filepath.Join(dir, "index.json"), ib, 0o644)
	_, err = oci.Open(oci.Ref{Layout: dir, Tag: "v2"})
	return err
}

func TestBadDocuments(t *testing.T) {
	cases := []struct {
		name    string
		cfg     func(map[string]any)
		man     func(map[string]any)
		wantErr error
	}{
		{"diff_ids count", func(c map[string]any) {
			r := c["rootfs"].(map[string]any)
			r["diff_ids"] = r["diff_ids"].([]any)[:1]
		}, nil, oci.ErrInvalid},
		{"rootfs type", func(c map[string]any) { c["rootfs"].(map[string]any)["type"] = "x" }, nil, oci.ErrInvalid},
		{"bad diff_id", func(c map[string]any) { c["rootfs"].(map[string]any)["diff_ids"].([]any)[0] = "sha256:zz" }, nil, oci.ErrInvalid},
		{"foreign layer", nil, func(m map[string]any) {
			m["layers"].([]any)[0].(map[string]any)["mediaType"] = oci.MediaTypeDockerForeign
		}, oci.ErrForeignLayer},
		{"unknown layer type", nil, func(m map[string]any) {
			m["layers"].([]any)[0].(map[string]any)["mediaType"] = "application/x-tar"
		}, oci.ErrMediaType},
		{"schema1", nil, func(m map[string]any) {
			m["mediaType"] = "application/vnd.docker.distribution.manifest.v1+json"
		}, oci.ErrMediaType},
		{"artifact config", nil, func(m map[string]any) {
			d := m["config"].(oci.Descriptor)
			d.MediaType = "application/vnd.example+json"
			m["config"] = d
		}, oci.ErrMediaType},
		{"layer path escape", nil, func(m map[string]any) {
			m["layers"].([]any)[0].(map[string]any)["digest"] = "sha256:../../../../etc/passwd"
		}, oci.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ocitest.Build(t, dir, "v1", sampleLayers())
			err := rewrite(t, dir, c.cfg, c.man)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("error %v, want %v", err, c.wantErr)
			}
			t.Log(err)
		})
	}
}

func TestDockerMediaTypes(t *testing.T) {
	dir := t.TempDir()
	layers := sampleLayers()[:1] // gzip
	ocitest.Build(t, dir, "v1", layers)
	err := rewrite(t, dir, nil, func(m map[string]any) {
		m["mediaType"] = oci.MediaTypeDockerManifest
		d := m["config"].(oci.Descriptor)
		d.MediaType = oci.MediaTypeDockerConfig
		m["config"] = d
		m["layers"].([]any)[0].(map[string]any)["mediaType"] = oci.MediaTypeDockerLayerGzip
	})
	if err != nil {
		t.Fatal(err)
	}
	im, err := oci.Open(oci.Ref{Layout: dir, Tag: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(t, im, 0); err != nil {
		t.Fatal(err)
	}
}

func TestTagsAndRefsNotFound(t *testing.T) {
	dir := t.TempDir()
	ocitest.Build(t, dir, "a", sampleLayers()[:1])
	ocitest.Build(t, dir, "b", sampleLayers()[:2])
	if _, err := oci.Open(oci.Ref{Layout: dir, Tag: "c"}); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("unknown tag: %v", err)
	}
	if _, err := oci.Open(oci.Ref{Layout: dir}); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("ambiguous: %v", err)
	}
	if _, err := oci.Open(oci.Ref{Layout: dir, Digest: digest.FromString("nope")}); !errors.Is(err, oci.ErrBlobMissing) {
		t.Fatalf("unknown digest: %v", err)
	}
	if _, err := oci.Open(oci.Ref{Layout: t.TempDir(), Tag: "a"}); !errors.Is(err, oci.ErrNotLayout) {
		t.Fatalf("empty dir: %v", err)
	}
}

func TestParseRef(t *testing.T) {
	d := digest.FromString("x")
	cases := []struct {
		in   string
		want oci.Ref
		bad  bool
	}{
		{in: "oci:/a/b:v1", want: oci.Ref{Layout: "/a/b", Tag: "v1"}},
		{in: "/a/b:v1", want: oci.Ref{Layout: "/a/b", Tag: "v1"}},
		{in: "oci:rel/dir", want: oci.Ref{Layout: "rel/dir"}},
		{in: "oci:./x:new-layered", want: oci.Ref{Layout: "./x", Tag: "new-layered"}},
		{in: "oci:/a/b@" + string(d), want: oci.Ref{Layout: "/a/b", Digest: d}},
		{in: "oci:/a:b/c", want: oci.Ref{Layout: "/a:b/c"}},
		{in: "oci:", bad: true},
		{in: "oci::v1", bad: true},
		{in: "oci:/a@sha256:123", bad: true},
		{in: "oci:/a:t$g", bad: true},
		{in: "oci:/a:", bad: true},
	}
	for _, c := range cases {
		got, err := oci.ParseRef(c.in)
		if c.bad {
			if !errors.Is(err, oci.ErrBadRef) {
				t.Errorf("ParseRef(%q) = %v, %v; want ErrBadRef", c.in, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
			continue
		}
		if back, err := oci.ParseRef(got.String()); err != nil || back != got {
			t.Errorf("ParseRef(String(%+v)) = %+v, %v", got, back, err)
		}
	}
}
