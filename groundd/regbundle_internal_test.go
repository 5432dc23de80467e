package groundd

import (
	"context"
	"slices"
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

// TestForgetEnded: the fetch states and waiting pushes of a vehicle are
// dropped once no open uplink names them (the uplink ended, or was
// planned again); those under way, another vehicle's and those still named
// stay.
func TestForgetEnded(t *testing.T) {
	d := &Daemon{}
	d.fetch.init()
	d.fetch.state["a"] = &fetchState{vehicle: 7}
	d.fetch.state["b"] = &fetchState{vehicle: 7}
	d.fetch.state["c"] = &fetchState{vehicle: 7, running: true}
	d.fetch.state["d"] = &fetchState{vehicle: 8}
	d.pushes.init()
	d.pushes.m[1] = &pendingPush{pl: &planned{}, vehicle: 7}
	d.pushes.m[2] = &pendingPush{pl: &planned{}, vehicle: 7}
	d.pushes.m[3] = &pendingPush{pl: &planned{}, vehicle: 7, running: true}
	d.pushes.m[4] = &pendingPush{pl: &planned{}, vehicle: 8}
	us := []Uplink{{ID: 1, UplinkRequest: UplinkRequest{Vehicle: 7}, State: UplinkActive, Bundles: []string{"b"}}, {ID: 2, UplinkRequest: UplinkRequest{Vehicle: 7}, State: UplinkCancelled, Bundles: []string{"a"}}}
	d.forgetFetches(7, us)
	d.pushes.forget(7, us)
	var fs []string
	for k := range d.fetch.state {
		fs = append(fs, k)
	}
	var ps []uint64
	for k := range d.pushes.m {
		ps = append(ps, k)
	}
	slices.Sort(fs)
	slices.Sort(ps)
	if !slices.Equal(fs, []string{"b", "c", "d"}) || !slices.Equal(ps, []uint64{1, 3, 4}) {
		t.Fatalf("fetches kept %v, pushes kept %v", fs, ps)
	}
}
