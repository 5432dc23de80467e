package images_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/protocol"
)

// TestKeys: key files round-trip with their ids; a private key is created
// 0600 and never overwritten; loose modes, wrong types and duplicate ids
// are refused without printing key material.
func TestKeys(t *testing.T) {
	dir := t.TempDir()
	kf, err := images.GenerateKey(filepath.Join(dir, "k1"), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		if fi, _ := os.Stat(kf.Private); fi.Mode().Perm() != 0o600 {
			t.Errorf("private key mode %v", fi.Mode().Perm())
		}
	}
	id, priv, err := images.ReadPrivateKey(kf.Private)
	if err != nil || id != 1 {
		t.Fatalf("read private: %d %v", id, err)
	}
	pub, err := images.ReadPublicKey(kf.Public)
	if err != nil || pub.ID != 1 || !bytes.Equal(pub.Pub, priv[32:]) {
		t.Fatalf("read public: %v %v", pub, err)
	}
	before, _ := os.ReadFile(kf.Private)
	if _, err := images.GenerateKey(filepath.Join(dir, "k1"), 2, nil); !errors.Is(err, images.ErrKey) {
		t.Errorf("overwrite: %v", err)
	}
	if after, _ := os.ReadFile(kf.Private); !bytes.Equal(before, after) {
		t.Error("private key overwritten")
	}
	// The public key is not a private key and vice versa.
	if _, _, err := images.ReadPrivateKey(kf.Public); !errors.Is(err, images.ErrKey) {
		t.Errorf("public as private: %v", err)
	}
	if _, err := images.ReadPublicKey(kf.Private); !errors.Is(err, images.ErrKey) {
		t.Errorf("private as public: %v", err)
	}
	if runtime.GOOS != "windows" {
		loose := filepath.Join(dir, "loose.key")
		os.WriteFile(loose, before, 0o640)
		_, _, err := images.ReadPrivateKey(loose)
		if !errors.Is(err, images.ErrKey) || bytes.Contains([]byte(err.Error()), before[40:60]) {
			t.Errorf("loose mode: %v", err)
		}
	}
	// Two keys with the same id in one directory: refused.
	if _, err := images.GenerateKey(filepath.Join(dir, "k1bis"), 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := images.LoadKeyring(dir); !errors.Is(err, images.ErrKey) {
		t.Errorf("duplicate ids: %v", err)
	}
	os.Remove(filepath.Join(dir, "k1bis.pub"))
	if _, err := images.GenerateKey(filepath.Join(dir, "k2"), 2, nil); err != nil {
		t.Fatal(err)
	}
	kr, err := images.LoadKeyring(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint32{1, 2} {
		if _, ok := kr.Lookup(protocolKeyID(id)); !ok {
			t.Errorf("keyring lacks key %d", id)
		}
	}
	if _, err := images.LoadKeyring(t.TempDir()); !errors.Is(err, images.ErrKey) {
		t.Errorf("empty directory: %v", err)
	}
}

// TestConcurrentPulls: pulls of images sharing blobs, at once, leave every
// image listed once and intact (run with -race).
func TestConcurrentPulls(t *testing.T) {
	lay := filepath.Join(t.TempDir(), "lay")
	base, next := twoLayers()
	ocitest.Build(t, lay, "a", base)
	ocitest.Build(t, lay, "b", next)
	s, _ := openStore(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Pull(context.Background(), mustRef(t, "oci:"+lay+":"+[]string{"a", "b"}[i%2]), images.Options{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ents, err := s.List()
	if err != nil || len(ents) != 2 {
		t.Fatalf("List = %v, %v; want 2 images", ents, err)
	}
	if bad, err := s.Check(context.Background()); err != nil || len(bad) != 0 {
		t.Fatalf("Check: %v %v", bad, err)
	}
}

func protocolKeyID(id uint32) protocol.KeyID { return protocol.KeyID(id) }
