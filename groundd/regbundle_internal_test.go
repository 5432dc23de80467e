package groundd

import (
	"context"
	"strings"
	"testing"
)

// TestBundleRepo: without a repository in the config, a bundle goes beside
// its image when the image is in the bundle registry, else to the default
// repository.
func TestBundleRepo(t *testing.T) {
	b := &BundlesConfig{Registry: "registry.example:5000"}
	for image, want := range map[string]string{
		"docker://registry.example:5000/flight/os:v2": "registry.example:5000/flight/os",
		"docker://registry.example:5000/flight/os@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": "registry.example:5000/flight/os",
		"docker://other.example/flight/os:v2": "registry.example:5000/" + DefaultBundleRepository,
		"oci:/images:os-2":                    "registry.example:5000/" + DefaultBundleRepository,
	} {
		r, err := b.repo(image)
		if err != nil || r.Repo != want {
			t.Errorf("%s: %s %v, want %s", image, r.Repo, err, want)
		}
	}
	b.Repository = "ops/bundles"
	if r, err := b.repo("docker://registry.example:5000/flight/os:v2"); err != nil || r.Repo != "registry.example:5000/ops/bundles" {
		t.Errorf("configured repository: %s %v", r.Repo, err)
	}
}

// TestFetchOnlyOwnRegistry: an artifact reference read from the shared
// store is fetched only from the station's own bundle registry; another
// host, or a station without a bundle registry, is an error naming it,
// and nothing is asked of the network.
func TestFetchOnlyOwnRegistry(t *testing.T) {
	art := "docker://evil.example/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, b := range []*BundlesConfig{nil, {Registry: "registry.example:5000"}} {
		d := &Daemon{cfg: Config{Bundles: b}}
		_, err := d.fetchBlobs(context.Background(), transferRec{Artifact: art, Vehicle: 7})
		if err == nil || !strings.Contains(err.Error(), "evil.example") {
			t.Errorf("bundles %+v: %v, want an error naming evil.example", b, err)
		}
	}
}
