package images_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/groundd/images/imagestest"
	"github.com/bootorbit/bootorbit/internal/testtool"
	"github.com/opencontainers/go-digest"
)

// tool runs a real tool and fails the test on error.
func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	bin := testtool.Need(t, name)
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// skopeo runs skopeo with a permissive policy of its own, so that the
// machine's /etc/containers/policy.json does not matter.
func skopeo(t *testing.T, args ...string) string {
	t.Helper()
	pol := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(pol, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return tool(t, "skopeo", append([]string{"--policy", pol}, args...)...)
}

// umociImage builds an image with umoci in the layout lay (gzip layers,
// umoci's defaults): one layer per map of files.
func umociImage(t *testing.T, lay, tag string, layers ...map[string]string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(lay, "oci-layout")); err != nil {
		tool(t, "umoci", "init", "--layout", lay)
	}
	tool(t, "umoci", "new", "--image", lay+":"+tag)
	for i, files := range layers {
		bundle := filepath.Join(t.TempDir(), "bundle")
		tool(t, "umoci", "unpack", "--rootless", "--image", lay+":"+tag, bundle)
		for name, content := range files {
			p := filepath.Join(bundle, "rootfs", name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		tool(t, "umoci", "repack", "--image", lay+":"+tag, bundle)
		_ = i
	}
}

// TestRealLayouts: layouts written by umoci (gzip) and by skopeo (zstd,
// converted on copy) are pulled and verified; a signature made in the umoci
// layout survives skopeo copying the image and its signature tag.
func TestRealLayouts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	um := filepath.Join(dir, "umoci")
	umociImage(t, um, "v1", map[string]string{"etc/os-release": "ID=flight\nVERSION_ID=1\n"}, map[string]string{"usr/bin/app": strings.Repeat("app ", 1000)})
	s, _ := openStore(t)
	a, err := s.Pull(ctx, mustRef(t, "oci:"+um+":v1"), images.Options{Platform: oci.DefaultPlatform()})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Layers) != 2 || a.Layers[0].Compression != oci.Gzip {
		t.Fatalf("umoci image: %d layers, %v", len(a.Layers), a.Layers)
	}
	zs := filepath.Join(dir, "zstd")
	skopeo(t, "copy", "--dest-compress-format", "zstd", "oci:"+um+":v1", "oci:"+zs+":v1")
	b, err := s.Pull(ctx, mustRef(t, "oci:"+zs+":v1"), images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range b.Layers {
		if l.Compression != oci.Zstd || l.MediaType != oci.MediaTypeOCILayerZstd {
			t.Errorf("skopeo layer %d: %s", i, l.MediaType)
		}
		if l.DiffID != a.Layers[i].DiffID {
			t.Errorf("layer %d: diff_id %s after recompression, want %s", i, l.DiffID, a.Layers[i].DiffID)
		}
	}
	if b.Digest == a.Digest {
		t.Error("zstd copy has the gzip manifest digest")
	}

	// Sign in the umoci layout; skopeo copies image and signature tag.
	priv, kr := newKey(t, dir, 4)
	if _, _, err := images.Sign(ctx, mustRef(t, "oci:"+um+":v1"), images.Options{}, 4, priv, 12, "obc"); err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(dir, "copy")
	skopeo(t, "copy", "oci:"+um+":v1", "oci:"+cp+":v1")
	sigTag := images.SignatureTag(a.Digest)
	skopeo(t, "copy", "oci:"+um+":"+sigTag, "oci:"+cp+":"+sigTag)
	desc, sigs, err := images.Signatures(ctx, mustRef(t, "oci:"+cp+":v1"), images.Options{})
	if err != nil || desc.Digest != a.Digest {
		t.Fatalf("copied layout: %s %v", desc.Digest, err)
	}
	if ok, err := images.VerifyReleases(kr, a.Digest, sigs); err != nil || ok[0].Release.Version != 12 {
		t.Fatalf("signature after skopeo copy: %v %v", ok, err)
	}
	// umoci still reads the signed layout (the artifact is one more entry).
	tool(t, "umoci", "ls", "--layout", um)
}

// pushSigned copies image tag of layout lay, with its signature tag, to
// repo (docker://HOST/REPO) as dest.
func pushSigned(t *testing.T, lay, tag string, d digest.Digest, repo, dest string, extra ...string) {
	t.Helper()
	args := append([]string{"copy", "--dest-tls-verify=false"}, extra...)
	skopeo(t, append(args, "oci:"+lay+":"+tag, repo+":"+dest)...)
	if d != "" {
		sig := images.SignatureTag(d)
		skopeo(t, "copy", "--dest-tls-verify=false", "oci:"+lay+":"+sig, repo+":"+sig)
	}
}

// TestRegistry runs against a real registry (Debian's docker-registry on
// loopback): skopeo pushes a signed image, groundd pulls it by tag and by
// digest; plain HTTP is refused unless asked for; the watcher reports the
// tag moving to another signed image, and an unsigned image on the tag
// with its reason; Docker media types and a multi-arch index come through
// the registry; groundd signs an image in the registry (artifact tag and
// the referrers tag fallback).
func TestRegistry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	reg := imagestest.StartRegistry(t, imagestest.RegistryConfig{})
	dir := t.TempDir()
	lay := filepath.Join(dir, "lay")
	umociImage(t, lay, "v1", map[string]string{"etc/version": "1"})
	umociImage(t, lay, "v2", map[string]string{"etc/version": "2"}, map[string]string{"usr/bin/new": "new"})
	umociImage(t, lay, "v3", map[string]string{"etc/version": "3"})
	priv, kr := newKey(t, dir, 1)
	plat := images.Options{Registry: images.RegistryOptions{PlainHTTP: true}}
	digests := map[string]digest.Digest{}
	for i, tag := range []string{"v1", "v2"} {
		_, desc, err := images.Sign(ctx, mustRef(t, "oci:"+lay+":"+tag), images.Options{}, 1, priv, uint64(i+1), "obc")
		if err != nil {
			t.Fatal(err)
		}
		digests[tag] = desc.Digest
	}
	d3, _, err := images.Signatures(ctx, mustRef(t, "oci:"+lay+":v3"), images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	digests["v3"] = d3.Digest
	repo := "docker://" + reg.Host + "/flight/os"
	pushSigned(t, lay, "v1", digests["v1"], repo, "stable")

	// Pull by tag: the image and its signature.
	s, _ := openStore(t)
	stable := mustRef(t, repo+":stable")
	im, err := s.Pull(ctx, stable, plat)
	if err != nil {
		t.Fatal(err)
	}
	if im.Digest != digests["v1"] {
		t.Fatalf("pulled %s, want %s", im.Digest, digests["v1"])
	}
	if ok, err := images.VerifyReleases(kr, im.Digest, im.Signatures); err != nil || ok[0].Release.Version != 1 {
		t.Fatalf("pulled signature: %v %v", ok, err)
	}
	if _, err := s.Pull(ctx, mustRef(t, repo+"@"+string(digests["v1"])), plat); err != nil {
		t.Fatalf("pull by digest: %v", err)
	}
	// Plain HTTP only when asked.
	if _, err := s.Pull(ctx, stable, images.Options{}); !errors.Is(err, images.ErrPlainHTTP) {
		t.Fatalf("pull over plain HTTP not asked for: %v, want ErrPlainHTTP", err)
	}

	// The watcher: first the tag as it is, then a move to signed v2,
	// then unsigned v3.
	clk := newFakeClock()
	w, err := images.NewWatcher(images.WatchConfig{Ref: stable, Options: plat, Interval: time.Minute, Keys: kr, HardwareID: "obc", Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	check := func(want digest.Digest) images.TagEvent {
		t.Helper()
		ev, moved, err := w.Check(ctx)
		if err != nil || !moved || ev.Manifest.Digest != want {
			t.Fatalf("watch: %v moved=%v %v, want a move to %s", ev, moved, err, want)
		}
		return ev
	}
	if ev := check(digests["v1"]); !ev.Follow() || ev.Release.Release.Version != 1 {
		t.Fatalf("first: %v", ev)
	}
	if _, moved, err := w.Check(ctx); moved || err != nil {
		t.Fatalf("no move: moved=%v %v", moved, err)
	}
	pushSigned(t, lay, "v2", digests["v2"], repo, "stable")
	if ev := check(digests["v2"]); !ev.Follow() || ev.Release.Release.Version != 2 || ev.Previous == "" {
		t.Fatalf("move to v2: %v", ev)
	}
	// The queue pulls what the watcher reported.
	if im, err := s.Pull(ctx, stable.WithDigest(digests["v2"]), plat); err != nil || len(im.Layers) != 2 {
		t.Fatalf("pull v2: %v", err)
	}
	pushSigned(t, lay, "v3", "", repo, "stable")
	ev := check(digests["v3"])
	if ev.Follow() || ev.Reason != "unsigned image on tag" {
		t.Fatalf("unsigned v3: %v", ev)
	}
	t.Logf("unsigned: %v", ev)

	// groundd signs in the registry: the artifact tag and the referrers
	// tag fallback (sha256-HEX), both found.
	if _, _, err := images.Sign(ctx, stable, plat, 1, priv, 3, "obc"); err != nil {
		t.Fatal(err)
	}
	if ev := check(digests["v3"]); !ev.Follow() || ev.Release.Release.Version != 3 {
		t.Fatalf("v3 signed in the registry: %v", ev)
	}
	fallback := skopeo(t, "inspect", "--raw", "--tls-verify=false", repo+":"+strings.Replace(string(digests["v3"]), ":", "-", 1))
	if !strings.Contains(fallback, "application/vnd.bootorbit.release.v1+cbor") {
		t.Errorf("referrers tag fallback:\n%s", fallback)
	}

	// Docker media types through the registry (skopeo converts on push).
	pushSigned(t, lay, "v1", "", repo, "docker", "--format", "v2s2")
	dim, err := s.Pull(ctx, mustRef(t, repo+":docker"), plat)
	if err != nil {
		t.Fatal(err)
	}
	if dim.MediaType != oci.MediaTypeDockerManifest || dim.Layers[0].MediaType != oci.MediaTypeDockerLayerGzip {
		t.Errorf("docker push: %s %s", dim.MediaType, dim.Layers[0].MediaType)
	}

	// A multi-arch index (zstd layers) through the registry.
	multi := filepath.Join(dir, "multi")
	ms, _ := imagestest.MultiArch(t, multi, "m", oci.MediaTypeOCIIndex)
	skopeo(t, "copy", "--all", "--dest-tls-verify=false", "oci:"+multi+":m", repo+":multi")
	for _, p := range imagestest.Platforms {
		mim, err := s.Pull(ctx, mustRef(t, repo+":multi"), images.Options{Platform: p, Registry: plat.Registry})
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if mim.Digest != ms[p.String()].Digest || mim.Layers[0].Compression != oci.Zstd {
			t.Errorf("%s: pulled %s, want %s", p, mim.Digest, ms[p.String()].Digest)
		}
	}
}

// TestRegistryAuthTLS: a registry behind TLS with a private CA and htpasswd
// authentication is reached with the CA file and a docker config.json, and
// refused without either.
func TestRegistryAuthTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reg := imagestest.StartRegistry(t, imagestest.RegistryConfig{User: "ops", Password: "s3cret", TLS: true})
	dir := t.TempDir()
	lay := filepath.Join(dir, "lay")
	umociImage(t, lay, "v1", map[string]string{"etc/version": "1"})
	certs := filepath.Join(dir, "certs")
	os.MkdirAll(certs, 0o755)
	ca, _ := os.ReadFile(reg.CAFile)
	os.WriteFile(filepath.Join(certs, "ca.crt"), ca, 0o644)
	skopeo(t, "copy", "--dest-cert-dir", certs, "--dest-creds", "ops:s3cret", "oci:"+lay+":v1", "docker://"+reg.Host+"/flight/os:v1")
	ref := mustRef(t, "docker://"+reg.Host+"/flight/os:v1")
	s, _ := openStore(t)
	if _, err := s.Pull(ctx, ref, images.Options{Registry: images.RegistryOptions{CAFile: reg.CAFile, AuthFile: reg.AuthFile}}); err != nil {
		t.Fatalf("with CA and credentials: %v", err)
	}
	if _, err := s.Pull(ctx, ref, images.Options{Registry: images.RegistryOptions{AuthFile: reg.AuthFile}}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: %v, want a certificate error", err)
	}
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // the default keychain: no credentials
	if _, err := s.Pull(ctx, ref, images.Options{Registry: images.RegistryOptions{CAFile: reg.CAFile}}); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("without credentials: %v, want unauthorized", err)
	}
	// The default keychain reads $DOCKER_CONFIG/config.json.
	b, _ := os.ReadFile(reg.AuthFile)
	cfgDir := t.TempDir()
	os.WriteFile(filepath.Join(cfgDir, "config.json"), b, 0o600)
	t.Setenv("DOCKER_CONFIG", cfgDir)
	if _, err := s.Pull(ctx, ref, images.Options{Registry: images.RegistryOptions{CAFile: reg.CAFile}}); err != nil {
		t.Errorf("default keychain: %v", err)
	}
}
