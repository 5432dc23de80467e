package images_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/groundd/images/imagestest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/internal/testtool"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
)

// testBundle is a planned uplink's blobs for the bundle tests: an image
// pushed to the registry at host (if any) as its subject, a plan and a bundle (seeded random
// bytes: the artifact does not look inside).
type testBundle struct {
	a     *images.BundleArtifact
	blobs map[digest.Digest][]byte
}

func newTestBundle(t *testing.T, host string, bundleSize int) *testBundle {
	t.Helper()
	rng := testrand.New(t)
	lay := filepath.Join(t.TempDir(), "lay")
	_, next := twoLayers()
	im := ocitest.Build(t, lay, "v2", next)
	if host != "" {
		pushImage(t, host, lay, im.ManifestDigest, "flight/os", "v2")
	}
	m, err := oci.Open(oci.Ref{Layout: lay, Digest: im.ManifestDigest})
	if err != nil {
		t.Fatal(err)
	}
	tb := &testBundle{blobs: map[digest.Digest][]byte{}}
	tb.a = &images.BundleArtifact{
		Subject: oci.Descriptor{MediaType: oci.MediaTypeOCIManifest, Digest: im.ManifestDigest, Size: int64(len(m.ManifestBytes))},
		Vehicle: 7, Plan: 42, Base: digest.FromString("the base image"),
	}
	for _, b := range []struct {
		mt string
		n  int
	}{{update.MediaTypePlan, 3000}, {update.MediaTypeBundle, bundleSize}} {
		data := make([]byte, b.n)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		d := digest.FromBytes(data)
		tb.blobs[d] = data
		tb.a.Blobs = append(tb.a.Blobs, oci.Descriptor{MediaType: b.mt, Digest: d, Size: int64(len(data))})
	}
	return tb
}

func (tb *testBundle) open(d oci.Descriptor) (io.ReadCloser, error) {
	b, ok := tb.blobs[d.Digest]
	if !ok {
		return nil, os.ErrNotExist
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// pushImage copies the image d of layout lay to the registry at host as
// repo:tag.
func pushImage(t *testing.T, host, lay string, d digest.Digest, repo, tag string) {
	t.Helper()
	ii, err := layout.ImageIndexFromPath(lay)
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := v1.NewHash(string(d))
	img, err := ii.Image(hash)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
}

// fetchAll fetches ref and returns the blobs put received, each kept only
// when it was read to its end without error.
func fetchAll(ctx context.Context, ref images.Ref) (*images.BundleArtifact, map[digest.Digest][]byte, error) {
	got := map[digest.Digest][]byte{}
	a, err := images.FetchBundle(ctx, ref, plainHTTP, func(d oci.Descriptor, open func() (io.Reader, error)) error {
		r, err := open()
		if err != nil {
			return err
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		got[d.Digest] = b
		return nil
	})
	return a, got, err
}

// TestBundleRegistry runs against a real registry (Debian's
// docker-registry on loopback): a bundle artifact pushed beside its image
// is fetched back by digest, byte for byte, with its annotations; pushing
// it again gives the same digest; skopeo sees it (by digest, and in the
// referrers tag index of its subject) and copies it to an OCI layout.
func TestBundleRegistry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	reg := imagestest.StartRegistry(t, imagestest.RegistryConfig{})
	tb := newTestBundle(t, reg.Host, 3<<20)
	repo := mustRef(t, "docker://"+reg.Host+"/flight/os:v2")
	ref, err := images.PushBundle(ctx, repo, plainHTTP, tb.a, tb.open)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pushed %s", ref)
	if ref.Repo != repo.Repo || ref.Digest == "" {
		t.Fatalf("pushed as %s", ref)
	}
	again, err := images.PushBundle(ctx, repo, plainHTTP, tb.a, tb.open)
	if err != nil || again != ref {
		t.Fatalf("pushed again: %s %v, want %s", again, err, ref)
	}
	a, got, err := fetchAll(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if a.Vehicle != 7 || a.Plan != 42 || a.Base != tb.a.Base || a.Subject.Digest != tb.a.Subject.Digest || len(a.Blobs) != 2 {
		t.Fatalf("fetched %+v", a)
	}
	for d, b := range tb.blobs {
		if !bytes.Equal(got[d], b) {
			t.Errorf("blob %s: %d bytes back, want %d", d, len(got[d]), len(b))
		}
	}
	// A put that holds a blob already need not open it.
	if _, err := images.FetchBundle(ctx, ref, plainHTTP, func(oci.Descriptor, func() (io.Reader, error)) error { return nil }); err != nil {
		t.Errorf("fetch opening nothing: %v", err)
	}
	// By tag too: what tools that copy tags carry.
	tagged := repo.WithTag(images.BundleTag(tb.a.Subject.Digest, 7, 42))
	if _, err := images.FetchBundle(ctx, tagged, plainHTTP, nil); !errors.Is(err, images.ErrBadRef) {
		t.Errorf("fetch by tag: %v, want ErrBadRef (by digest only)", err)
	}

	// Registry tooling: skopeo (skipped here without it, unless tools
	// are required).
	testtool.Need(t, "skopeo")
	raw := skopeo(t, "inspect", "--raw", "--tls-verify=false", "docker://"+ref.Repo+"@"+string(ref.Digest))
	var m struct {
		ArtifactType string           `json:"artifactType"`
		Subject      oci.Descriptor   `json:"subject"`
		Layers       []oci.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal([]byte(raw), &m); err != nil || m.ArtifactType != update.MediaTypeBundle || m.Subject.Digest != tb.a.Subject.Digest || len(m.Layers) != 2 {
		t.Fatalf("skopeo inspect --raw: %v\n%s", err, raw)
	}
	// The subject's referrers tag index (registries without the
	// referrers API) lists the artifact.
	idx := skopeo(t, "inspect", "--raw", "--tls-verify=false", "docker://"+ref.Repo+":"+strings.Replace(string(tb.a.Subject.Digest), ":", "-", 1))
	if !strings.Contains(idx, string(ref.Digest)) || !strings.Contains(idx, update.MediaTypeBundle) {
		t.Errorf("referrers tag index of %s does not list %s:\n%s", tb.a.Subject.Digest, ref.Digest, idx)
	}
	// skopeo copies it to an OCI layout, blobs and all, digest kept.
	out := filepath.Join(t.TempDir(), "copy")
	skopeo(t, "copy", "--preserve-digests", "--src-tls-verify=false", "docker://"+ref.Repo+"@"+string(ref.Digest), "oci:"+out+":bundle")
	for d, b := range tb.blobs {
		p, _ := oci.BlobPath(out, d)
		if c, err := os.ReadFile(p); err != nil || !bytes.Equal(c, b) {
			t.Errorf("skopeo copy: blob %s: %v", d, err)
		}
	}
	if p, _ := oci.BlobPath(out, ref.Digest); !fileExists(p) {
		t.Errorf("skopeo copy changed the artifact's digest")
	}
}

// TestBundleRegistryAuthTLS: bundle artifacts go through a registry with
// htpasswd credentials and TLS from a private CA, as images do; without
// the credentials the push is refused.
func TestBundleRegistryAuthTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reg := imagestest.StartRegistry(t, imagestest.RegistryConfig{User: "ops", Password: "s3cret", TLS: true})
	tb := newTestBundle(t, "", 100<<10)
	repo := mustRef(t, "docker://"+reg.Host+"/flight/bundles:x")
	o := images.Options{Registry: images.RegistryOptions{AuthFile: reg.AuthFile, CAFile: reg.CAFile}}
	ref, err := images.PushBundle(ctx, repo, o, tb.a, tb.open)
	if err != nil {
		t.Fatal(err)
	}
	got := map[digest.Digest][]byte{}
	if _, err := images.FetchBundle(ctx, ref, o, func(d oci.Descriptor, open func() (io.Reader, error)) error {
		r, err := open()
		if err != nil {
			return err
		}
		got[d.Digest], err = io.ReadAll(r)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for d, b := range tb.blobs {
		if !bytes.Equal(got[d], b) {
			t.Errorf("blob %s differs", d)
		}
	}
	noCreds := images.Options{Registry: images.RegistryOptions{AuthFile: filepath.Join(t.TempDir(), "none.json"), CAFile: reg.CAFile}}
	os.WriteFile(noCreds.Registry.AuthFile, []byte(`{}`), 0o600)
	if _, err := images.PushBundle(ctx, repo, noCreds, tb.a, tb.open); err == nil {
		t.Error("pushed without credentials")
	}
}

// TestBundleHostileRegistry: a registry that corrupts, truncates or
// lengthens a bundle blob, or serves manifests that are not sound bundle
// artifacts, is refused with an error naming the blob or the artifact,
// and put keeps nothing of a bad blob; sizes over the bounds are refused
// before any blob is fetched.
func TestBundleHostileRegistry(t *testing.T) {
	ctx := context.Background()
	h := newHostileRegistry(t)
	tb := newTestBundle(t, h.host(), 64<<10)
	repo := mustRef(t, "docker://"+h.host()+"/flight/os:v2")
	ref, err := images.PushBundle(ctx, repo, plainHTTP, tb.a, tb.open)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := fetchAll(ctx, ref); err != nil {
		t.Fatal(err)
	}
	bd := tb.a.Blobs[1].Digest
	good := tb.blobs[bd]
	serveBlob := func(b []byte) {
		h.tamper = func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+string(bd)) {
				w.Write(b)
				return true
			}
			return false
		}
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)/3] ^= 0x40
	for what, b := range map[string][]byte{
		"corrupted":  flipped,
		"truncated":  good[:len(good)-1],
		"lengthened": append(bytes.Clone(good), 0),
	} {
		serveBlob(b)
		_, got, err := fetchAll(ctx, ref)
		if err == nil || !strings.Contains(err.Error(), string(bd)) {
			t.Errorf("%s bundle blob: %v, want an error naming %s", what, err, bd)
		}
		if _, ok := got[bd]; ok {
			t.Errorf("%s bundle blob: put kept it", what)
		}
	}
	h.tamper = nil

	// A put that does not read an opened blob to its end is an error: a
	// short read must not pass for a verified blob.
	_, err = images.FetchBundle(ctx, ref, plainHTTP, func(d oci.Descriptor, open func() (io.Reader, error)) error {
		r, err := open()
		if err != nil {
			return err
		}
		_, err = io.ReadFull(r, make([]byte, 10))
		return err
	})
	if err == nil {
		t.Error("a blob read in part passed")
	}

	// Manifests served at their own digest (so the digest check passes),
	// each unsound in one way.
	var fetched []string
	serveManifest := func(mb []byte) images.Ref {
		d := digest.FromBytes(mb)
		fetched = nil
		h.tamper = func(w http.ResponseWriter, r *http.Request) bool {
			if strings.Contains(r.URL.Path, "/blobs/") {
				fetched = append(fetched, r.URL.Path)
			}
			if strings.HasSuffix(r.URL.Path, "/manifests/"+string(d)) {
				w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
				w.Header().Set("Docker-Content-Digest", string(d))
				w.Write(mb)
				return true
			}
			return false
		}
		return ref.WithDigest(d)
	}
	var orig map[string]any
	mb := readManifest(t, ctx, ref)
	if err := json.Unmarshal(mb, &orig); err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(mb, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	layers := func(m map[string]any) []any { return m["layers"].([]any) }
	cases := []struct {
		name string
		mb   []byte
		want error
	}{
		{"a signature artifact", edit(func(m map[string]any) { m["artifactType"] = update.MediaTypeRelease }), images.ErrBadBundle},
		{"no subject", edit(func(m map[string]any) { delete(m, "subject") }), images.ErrBadBundle},
		{"no vehicle", edit(func(m map[string]any) { delete(m["annotations"].(map[string]any), images.AnnotationVehicle) }), images.ErrBadBundle},
		{"a foreign layer", edit(func(m map[string]any) { layers(m)[0].(map[string]any)["mediaType"] = oci.MediaTypeOCILayerGzip }), images.ErrBadBundle},
		{"a layer with URLs", edit(func(m map[string]any) { layers(m)[1].(map[string]any)["urls"] = []string{"http://example.invalid/x"} }), images.ErrBadBundle},
		{"too many layers", edit(func(m map[string]any) {
			m["layers"] = append(layers(m), layers(m)[0], layers(m)[0], layers(m)[0])
		}), images.ErrBadBundle},
		{"a bundle over its bound", edit(func(m map[string]any) { layers(m)[1].(map[string]any)["size"] = update.MaxBundleSize + 1 }), oci.ErrTooLarge},
		{"a plan over its bound", edit(func(m map[string]any) { layers(m)[0].(map[string]any)["size"] = update.MaxPlanSize + 1 }), oci.ErrTooLarge},
		{"a huge manifest", append(bytes.Clone(mb), bytes.Repeat([]byte(" "), 64<<10)...), images.ErrBadBundle},
	}
	for _, c := range cases {
		_, got, err := fetchAll(ctx, serveManifest(c.mb))
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if len(got) > 0 || len(fetched) > 0 {
			t.Errorf("%s: fetched %v before refusing", c.name, fetched)
		}
	}
	// A manifest that is not the one its digest names.
	h.tamper = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/manifests/"+string(ref.Digest)) {
			w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
			w.Write(append(bytes.Clone(mb), ' '))
			return true
		}
		return false
	}
	if _, _, err := fetchAll(ctx, ref); err == nil {
		t.Error("a manifest that does not hash to its digest was accepted")
	}
}

// readManifest returns the manifest bytes ref names.
func readManifest(t *testing.T, ctx context.Context, ref images.Ref) []byte {
	t.Helper()
	nd, err := name.NewDigest(ref.Repo+"@"+string(ref.Digest), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(nd, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	return desc.Manifest
}

// TestBundleRegistryLarge (-long): a 128 MiB bundle goes to the real
// registry and back streamed, not held in memory: the process's memory
// from the system stays well under the bundle's size. It logs the rates.
func TestBundleRegistryLarge(t *testing.T) {
	if !testrand.Long() {
		t.Skip("-long only (128 MiB through the registry)")
	}
	const size = 128 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	reg := imagestest.StartRegistry(t, imagestest.RegistryConfig{})
	tb := newTestBundle(t, reg.Host, 1)
	// The bundle, streamed to a file from the seeded generator.
	rng := testrand.New(t)
	path := filepath.Join(t.TempDir(), "bundle")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := digest.SHA256.Digester()
	buf := make([]byte, 1<<20)
	for range size / len(buf) {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		f.Write(buf)
		h.Hash().Write(buf)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	delete(tb.blobs, tb.a.Blobs[1].Digest)
	tb.a.Blobs[1] = oci.Descriptor{MediaType: update.MediaTypeBundle, Digest: h.Digest(), Size: size}
	open := func(d oci.Descriptor) (io.ReadCloser, error) {
		if d.Digest == h.Digest() {
			return os.Open(path)
		}
		return tb.open(d)
	}
	buf = nil
	runtime.GC()
	start := time.Now()
	ref, err := images.PushBundle(ctx, mustRef(t, "docker://"+reg.Host+"/flight/bundles:x"), plainHTTP, tb.a, open)
	if err != nil {
		t.Fatal(err)
	}
	push := time.Since(start)
	start = time.Now()
	var n int64
	_, err = images.FetchBundle(ctx, ref, plainHTTP, func(d oci.Descriptor, open func() (io.Reader, error)) error {
		r, err := open()
		if err != nil {
			return err
		}
		c, err := io.Copy(io.Discard, r)
		n += c
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	fetch := time.Since(start)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	t.Logf("128 MiB bundle: push %v (%.0f MiB/s), fetch %v (%.0f MiB/s), %d bytes back; memory from the system %.0f MiB",
		push.Round(time.Millisecond), mib(size)/push.Seconds(), fetch.Round(time.Millisecond), mib(uint64(n))/fetch.Seconds(), n, mib(ms.Sys))
	if n != size+tb.a.Blobs[0].Size {
		t.Errorf("fetched %d bytes", n)
	}
	if ms.Sys > size/2 {
		t.Errorf("memory from the system %.0f MiB: the bundle was held in memory", mib(ms.Sys))
	}
}
