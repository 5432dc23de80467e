package imagestest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/opencontainers/go-digest"
)

// Platforms are the platforms MultiArch builds for.
var Platforms = []oci.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64", Variant: "v8"},
	{OS: "linux", Architecture: "arm", Variant: "v7"},
}

// MultiArch writes, in the layout at dir, one image per platform of
// Platforms (a file "arch" naming it, zstd-compressed) and an index of them
// tagged tag, of media type indexType (OCI index or Docker manifest list).
// It returns the manifests' descriptors by platform string and the index's.
func MultiArch(t testing.TB, dir, tag, indexType string) (map[string]oci.Descriptor, oci.Descriptor) {
	t.Helper()
	w, err := oci.CreateScratch(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]oci.Descriptor{}
	var ds []oci.Descriptor
	for _, p := range Platforms {
		tarb, err := ocitest.Tar([]ocitest.Entry{{Type: ocitest.File, Name: "arch", Data: []byte(p.String())}})
		if err != nil {
			t.Fatal(err)
		}
		zb, err := ocitest.Compress(oci.Zstd, tarb)
		if err != nil {
			t.Fatal(err)
		}
		ld, err := w.WriteBlobBytes(oci.MediaTypeOCILayerZstd, zb)
		if err != nil {
			t.Fatal(err)
		}
		md, err := w.Commit("tmp-"+tag, oci.NewConfig(p, []digest.Digest{digest.FromBytes(tarb)}), []oci.Descriptor{ld}, nil)
		if err != nil {
			t.Fatal(err)
		}
		p := p
		md.Platform = &p
		md.Annotations = nil
		out[p.String()] = md
		ds = append(ds, md)
	}
	b, err := json.Marshal(oci.Index{SchemaVersion: 2, MediaType: indexType, Manifests: ds})
	if err != nil {
		t.Fatal(err)
	}
	id, err := w.WriteBlobBytes(indexType, b)
	if err != nil {
		t.Fatal(err)
	}
	SetTags(t, dir, map[string]oci.Descriptor{tag: id}, "tmp-"+tag)
	return out, id
}

// SetTags points each tag at its descriptor in dir's index.json and drops
// the tags in drop.
func SetTags(t testing.TB, dir string, tags map[string]oci.Descriptor, drop ...string) {
	t.Helper()
	p := filepath.Join(dir, "index.json")
	idx := oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeOCIIndex}
	if b, err := os.ReadFile(p); err == nil {
		if err := json.Unmarshal(b, &idx); err != nil {
			t.Fatal(err)
		}
	}
	gone := map[string]bool{}
	for _, d := range drop {
		gone[d] = true
	}
	for tag := range tags {
		gone[tag] = true
	}
	var keep []oci.Descriptor
	for _, m := range idx.Manifests {
		if !gone[m.Annotations[oci.RefNameAnnotation]] {
			keep = append(keep, m)
		}
	}
	for tag, d := range tags {
		d.Annotations = map[string]string{oci.RefNameAnnotation: tag}
		keep = append(keep, d)
	}
	idx.Manifests = keep
	b, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// DockerImage writes, in the layout at dir, an image with Docker schema 2
// media types (manifest, config, gzip layers) tagged tag, with one layer
// per entry list, and returns its manifest descriptor.
func DockerImage(t testing.TB, dir, tag string, layers ...[]ocitest.Entry) oci.Descriptor {
	t.Helper()
	w, err := oci.CreateScratch(dir)
	if err != nil {
		t.Fatal(err)
	}
	var lds []oci.Descriptor
	var diffs []digest.Digest
	for _, es := range layers {
		tarb, err := ocitest.Tar(es)
		if err != nil {
			t.Fatal(err)
		}
		gz, err := ocitest.Compress(oci.Gzip, tarb)
		if err != nil {
			t.Fatal(err)
		}
		ld, err := w.WriteBlobBytes(oci.MediaTypeDockerLayerGzip, gz)
		if err != nil {
			t.Fatal(err)
		}
		lds = append(lds, ld)
		diffs = append(diffs, digest.FromBytes(tarb))
	}
	cd, err := w.WriteBlobBytes(oci.MediaTypeDockerConfig, oci.NewConfig(oci.Platform{OS: "linux", Architecture: "arm64"}, diffs))
	if err != nil {
		t.Fatal(err)
	}
	m := oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeDockerManifest, Config: cd, Layers: lds}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	md, err := w.WriteBlobBytes(oci.MediaTypeDockerManifest, mb)
	if err != nil {
		t.Fatal(err)
	}
	SetTags(t, dir, map[string]oci.Descriptor{tag: md})
	return md
}
