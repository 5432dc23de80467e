package images_test

import (
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/opencontainers/go-digest"
)

// FuzzParseRef: any string parses or is refused with ErrBadRef, never
// panics, and what parses prints back to something that parses the same.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{
		"oci:lay:v1", "oci:/a/b@sha256:" + strings.Repeat("a", 64), "docker://reg.example:5000/flight/os:stable",
		"docker://127.0.0.1/os@sha256:" + strings.Repeat("0", 64), "docker://os", "docker://a/b:c:d", "oci:", "docker://[::1]:5000/x:y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := images.ParseRef(s)
		if err != nil {
			return
		}
		r2, err := images.ParseRef(r.String())
		if err != nil {
			t.Fatalf("%q -> %q does not parse: %v", s, r.String(), err)
		}
		if r2 != r {
			t.Fatalf("%q -> %+v -> %q -> %+v", s, r, r.String(), r2)
		}
	})
}

// FuzzParseArtifact: a hostile signature artifact manifest is refused
// with an error, never a panic.
func FuzzParseArtifact(f *testing.F) {
	subj := "sha256:" + strings.Repeat("a", 64)
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"`+oci.MediaTypeOCIManifest+`","artifactType":"application/vnd.bootorbit.release.v1+cbor","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.bootorbit.release.v1+cbor","digest":"sha256:`+strings.Repeat("b", 64)+`","size":120}],"subject":{"mediaType":"`+oci.MediaTypeOCIManifest+`","digest":"`+subj+`","size":300}}`), subj)
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"size":-1}]}`), subj)
	f.Add([]byte(`[]`), "")
	f.Fuzz(func(t *testing.T, b []byte, subject string) {
		images.ParseArtifact(b, subject)
	})
}

// FuzzParseBundle: a hostile bundle artifact manifest is refused with an
// error, never a panic; one accepted builds back to a manifest that reads
// the same.
func FuzzParseBundle(f *testing.F) {
	a := &images.BundleArtifact{
		Subject: oci.Descriptor{MediaType: oci.MediaTypeOCIManifest, Digest: digest.Digest("sha256:" + strings.Repeat("a", 64)), Size: 300},
		Vehicle: 7, Plan: 12, Base: digest.Digest("sha256:" + strings.Repeat("c", 64)),
		Blobs: []oci.Descriptor{
			{MediaType: update.MediaTypePlan, Digest: digest.Digest("sha256:" + strings.Repeat("b", 64)), Size: 1641},
			{MediaType: update.MediaTypeBundle, Digest: digest.Digest("sha256:" + strings.Repeat("d", 64)), Size: 69279},
		},
	}
	_, seed, err := images.ParseBundle(mustBuild(f, a))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"size":-1}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, mb, err := images.ParseBundle(b)
		if err != nil {
			return
		}
		again, _, err := images.ParseBundle(mb)
		if err != nil {
			t.Fatalf("rebuilt manifest refused: %v\n%s", err, mb)
		}
		if again.Vehicle != got.Vehicle || again.Plan != got.Plan || again.Base != got.Base || again.Subject.Digest != got.Subject.Digest || len(again.Blobs) != len(got.Blobs) {
			t.Fatalf("%+v rebuilt as %+v", got, again)
		}
	})
}

// mustBuild is the manifest PushBundle would push for a.
func mustBuild(f *testing.F, a *images.BundleArtifact) []byte {
	b, err := images.BuildBundle(a)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
