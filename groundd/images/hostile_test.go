package images_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
)

// hostileRegistry is go-containerregistry's in-memory registry (with the
// referrers API) behind a handler that can tamper with answers.
type hostileRegistry struct {
	srv    *httptest.Server
	tamper func(w http.ResponseWriter, r *http.Request) bool // true: answered
}

func newHostileRegistry(t *testing.T) *hostileRegistry {
	h := &hostileRegistry{}
	inner := registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0)))
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.tamper != nil && h.tamper(w, r) {
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hostileRegistry) host() string { return strings.TrimPrefix(h.srv.URL, "http://") }

// push copies the image d of layout lay to the registry as repo:tag.
func (h *hostileRegistry) push(t *testing.T, lay string, d digest.Digest, repo, tag string) {
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
	ref, err := name.NewTag(h.host()+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
}

var plainHTTP = images.Options{Registry: images.RegistryOptions{PlainHTTP: true}}

// TestHostileRegistry: a registry that sends a corrupted layer, a manifest
// that is not what the digest names, or an oversized manifest is refused,
// naming the blob, and the store keeps nothing of it.
func TestHostileRegistry(t *testing.T) {
	ctx := context.Background()
	lay := filepath.Join(t.TempDir(), "lay")
	_, next := twoLayers()
	im := ocitest.Build(t, lay, "v", next)
	h := newHostileRegistry(t)
	h.push(t, lay, im.ManifestDigest, "flight/os", "v")
	ref := mustRef(t, "docker://"+h.host()+"/flight/os:v")

	s, _ := openStore(t)
	good, err := s.Pull(ctx, ref, plainHTTP)
	if err != nil {
		t.Fatal(err)
	}
	layer := good.Layers[1].Digest
	blob := readAll(t)(good.OpenBlob(1))

	// A corrupted layer blob.
	h.tamper = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+string(layer)) {
			b := bytes.Clone(blob)
			b[len(b)/2] ^= 1
			w.Write(b)
			return true
		}
		return false
	}
	s2, _ := openStore(t)
	_, err = s2.Pull(ctx, ref, plainHTTP)
	if err == nil || !strings.Contains(err.Error(), string(layer)) {
		t.Fatalf("corrupted layer from the registry: %v, want an error naming %s", err, layer)
	}
	if ents, _ := s2.List(); len(ents) != 0 {
		t.Errorf("store lists %v", ents)
	}
	if p, _ := oci.BlobPath(s2.Dir(), layer); fileExists(p) {
		t.Error("the corrupted layer was stored")
	}

	// A manifest that is not the one its digest names.
	h.tamper = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/"+string(im.ManifestDigest)) {
			w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
			w.Write(append(bytes.Clone(good.Manifest), ' '))
			return true
		}
		return false
	}
	if _, err := s2.Pull(ctx, ref.WithDigest(im.ManifestDigest), plainHTTP); err == nil {
		t.Error("a manifest that does not hash to its digest was accepted")
	}

	// An oversized manifest.
	h.tamper = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/big") {
			w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
			w.Write(bytes.Repeat([]byte(" "), oci.MaxIndexSize+1))
			return true
		}
		return false
	}
	if _, err := s2.Pull(ctx, ref.WithTag("big"), plainHTTP); !errors.Is(err, oci.ErrTooLarge) {
		t.Errorf("oversized manifest: %v, want ErrTooLarge", err)
	}
}

// TestImageSizeBound: a manifest whose layers add up to more than
// Options.MaxImageSize is refused before any layer is fetched.
func TestImageSizeBound(t *testing.T) {
	ctx := context.Background()
	lay := filepath.Join(t.TempDir(), "lay")
	_, next := twoLayers()
	im := ocitest.Build(t, lay, "v", next)
	h := newHostileRegistry(t)
	h.push(t, lay, im.ManifestDigest, "flight/os", "v")
	var fetched []string
	h.tamper = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/blobs/") {
			fetched = append(fetched, r.URL.Path)
		}
		return false
	}
	s, _ := openStore(t)
	o := plainHTTP
	o.MaxImageSize = 100
	_, err := s.Pull(ctx, mustRef(t, "docker://"+h.host()+"/flight/os:v"), o)
	if !errors.Is(err, oci.ErrTooLarge) {
		t.Fatalf("pull over the bound: %v, want ErrTooLarge", err)
	}
	for _, p := range fetched {
		if !strings.HasSuffix(p, "/blobs/"+string(mustConfigDigest(t, lay, im.ManifestDigest))) {
			t.Errorf("fetched %s before refusing", p)
		}
	}
	// A lying descriptor (a huge size) is refused by the default bound.
	o.MaxImageSize = 0
	m, _ := oci.Open(oci.Ref{Layout: lay, Digest: im.ManifestDigest})
	mm := m.Manifest
	mm.Layers = append([]oci.Descriptor(nil), mm.Layers...)
	mm.Layers[0].Size = 1 << 50
	mb, _ := json.Marshal(mm)
	h.tamper = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/huge") {
			w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
			w.Write(mb)
			return true
		}
		return false
	}
	if _, err := s.Pull(ctx, mustRef(t, "docker://"+h.host()+"/flight/os:huge"), o); !errors.Is(err, oci.ErrTooLarge) {
		t.Fatalf("a layer of 2^50 bytes: %v, want ErrTooLarge", err)
	}
}

func mustConfigDigest(t *testing.T, lay string, d digest.Digest) digest.Digest {
	m, err := oci.Open(oci.Ref{Layout: lay, Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	return m.Manifest.Config.Digest
}

// TestReferrersAPI: on a registry with the referrers API, a signature
// artifact pushed without any tag is found through the API, beside the
// one under the signature tag.
func TestReferrersAPI(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	lay := filepath.Join(dir, "lay")
	_, next := twoLayers()
	im := ocitest.Build(t, lay, "v", next)
	h := newHostileRegistry(t)
	h.push(t, lay, im.ManifestDigest, "flight/os", "v")
	ref := mustRef(t, "docker://"+h.host()+"/flight/os:v")
	priv1, kr1 := newKey(t, dir, 1)
	if _, _, err := images.Sign(ctx, ref, plainHTTP, 1, priv1, 5, "obc"); err != nil {
		t.Fatal(err)
	}
	// A second signature, as an artifact by digest only, in a layout
	// first (Sign writes it there) and then pushed without its tag.
	priv2, kr2 := newKey(t, dir, 2)
	if _, _, err := images.Sign(ctx, mustRef(t, "oci:"+lay+":v"), images.Options{}, 2, priv2, 5, "obc"); err != nil {
		t.Fatal(err)
	}
	sigTag := images.SignatureTag(im.ManifestDigest)
	ii, _ := layout.ImageIndexFromPath(lay)
	idx, _ := ii.IndexManifest()
	for _, m := range idx.Manifests {
		if m.Annotations[oci.RefNameAnnotation] != sigTag {
			continue
		}
		art, err := ii.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		dref, _ := name.NewDigest(h.host()+"/flight/os@"+m.Digest.String(), name.Insecure)
		if err := remote.Write(dref, art); err != nil {
			t.Fatal(err)
		}
	}
	_, sigs, err := images.Signatures(ctx, ref, plainHTTP)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := images.VerifyReleases(kr1, im.ManifestDigest, sigs); err != nil || len(ok) != 1 {
		t.Errorf("key 1 (by tag): %v %v", ok, err)
	}
	if ok, err := images.VerifyReleases(kr2, im.ManifestDigest, sigs); err != nil || len(ok) != 1 {
		t.Errorf("key 2 (by referrers only): %v %v", ok, err)
	}
}
