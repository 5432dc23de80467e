package oci_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/opencontainers/go-digest"
)

func seedDocs(f *testing.F) {
	dir := f.TempDir()
	im := ocitest.Build(f, dir, "v1", sampleLayers())
	o, err := oci.Open(im.Ref)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(o.ManifestBytes)
	f.Add(o.ConfigBytes)
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":2,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}`))
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:../x","size":-1}]}`))
	f.Add([]byte(`{"schemaVersion":1}`))
	f.Add([]byte(`{"rootfs":{"type":"layers","diff_ids":["sha256:zz"]}}`))
}

func FuzzParseIndex(f *testing.F) {
	seedDocs(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, err := oci.ParseIndex(b)
		if err != nil {
			if !errors.Is(err, oci.ErrInvalid) && !errors.Is(err, oci.ErrMediaType) && !errors.Is(err, oci.ErrTooLarge) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		for _, d := range idx.Manifests {
			if d.Digest.Validate() != nil || d.Size < 0 {
				t.Fatalf("accepted bad descriptor %+v", d)
			}
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	seedDocs(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := oci.ParseManifest(b)
		if err != nil {
			if !errors.Is(err, oci.ErrInvalid) && !errors.Is(err, oci.ErrMediaType) && !errors.Is(err, oci.ErrTooLarge) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if len(m.Layers) > oci.MaxLayers || m.Config.Digest.Validate() != nil {
			t.Fatalf("accepted bad manifest %+v", m)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	seedDocs(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := oci.ParseConfig(b)
		if err != nil {
			if !errors.Is(err, oci.ErrInvalid) && !errors.Is(err, oci.ErrTooLarge) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		for _, d := range c.RootFS.DiffIDs {
			if d.Validate() != nil {
				t.Fatalf("accepted bad diff_id %q", d)
			}
		}
	})
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"oci:/a/b:v1", "x@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "oci:", "a:b:c", "oci:a/b:c/d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := oci.ParseRef(s)
		if err != nil {
			if !errors.Is(err, oci.ErrBadRef) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		back, err := oci.ParseRef(r.String())
		if err != nil || back != r {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, r, r.String(), back, err)
		}
	})
}

// FuzzLayerBlob stores arbitrary bytes as a gzip, zstd or plain layer blob
// and reads it back: decoding must never panic or run away, and whatever
// reads to a clean EOF must be exactly the bytes the diff_id names.
func FuzzLayerBlob(f *testing.F) {
	tarb, _ := ocitest.Tar(sampleLayers()[0].Entries)
	for c := range 3 {
		b, _ := ocitest.Compress(oci.Compression(c), tarb)
		f.Add(uint8(c), b, true)
		f.Add(uint8(c), b[:len(b)/2], false)
	}
	f.Fuzz(func(t *testing.T, comp uint8, blob []byte, diffIsPlain bool) {
		c := oci.Compression(comp % 3)
		dir := t.TempDir()
		w, err := oci.CreateScratch(dir) // no fsync: the layout is thrown away, and syncs made this the slowest target
		if err != nil {
			t.Fatal(err)
		}
		ld, err := w.WriteBlobBytes(ocitest.MediaType(c), blob)
		if err != nil {
			t.Fatal(err)
		}
		diff := digest.FromBytes(tarb)
		if diffIsPlain {
			diff = ld.Digest
		}
		if _, err := w.Commit("f", oci.NewConfig(oci.DefaultPlatform(), []digest.Digest{diff}), []oci.Descriptor{ld}, nil); err != nil {
			t.Fatal(err)
		}
		im, err := oci.Open(oci.Ref{Layout: dir, Tag: "f"}, oci.WithZstdMaxWindow(1<<20))
		if err != nil {
			t.Fatal(err)
		}
		rc, err := im.OpenLayer(0)
		if err != nil {
			return
		}
		defer rc.Close()
		got, err := io.ReadAll(io.LimitReader(rc, 64<<20))
		if err != nil {
			var be *oci.BlobError
			if !errors.As(err, &be) || be.Digest != ld.Digest {
				t.Fatalf("error does not name the blob: %v", err)
			}
			return
		}
		if digest.FromBytes(got) != diff {
			t.Fatalf("clean EOF with bytes that do not match the diff_id")
		}
		if c == oci.Uncompressed && !bytes.Equal(got, blob) {
			t.Fatal("plain layer changed")
		}
	})
}
