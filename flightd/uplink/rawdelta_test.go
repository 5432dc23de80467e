package uplink

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/opencontainers/go-digest"
)

// slotBaseInstaller is the installer with flightd's base: the booted
// slot itself through slots.Manager.Base (a raw slot's device and the
// index kept at install), not a copy of the old image.
type slotBaseInstaller struct {
	*installer
	open *slots.LayerBase
}

func (s *slotBaseInstaller) Base() delta.Base {
	if s.open != nil {
		s.open.Close()
		s.open = nil
	}
	b, err := s.m.Base(s.m.Status().Booted)
	if err != nil {
		return nil
	}
	s.open = b
	return b
}

func (s *slotBaseInstaller) close() {
	if s.open != nil {
		s.open.Close()
	}
}

// fsLikeImage is a 3 MiB stand-in for a filesystem image: blocks of
// structured bytes.
func fsLikeImage(rng *rand.Rand) []byte {
	b := make([]byte, 3<<20)
	for i := 0; i+8 <= len(b); i += 8 {
		b[i], b[i+1], b[i+2] = 0x48, 0x8b, byte(rng.IntN(16))
		a := uint32(i*3 + rng.IntN(64))
		b[i+4], b[i+5], b[i+6] = byte(a), byte(a>>8), byte(a>>16)
	}
	return b
}

// rawImagePair writes version 1 and 2 of a raw image (one layer that is
// the filesystem image itself, as hil/vm's A/B board builds them) into an
// OCI layout and returns them with the delta bundle from 1 to 2.
func rawImagePair(t *testing.T, dir string, v1, v2 []byte) *images {
	t.Helper()
	layout := filepath.Join(dir, "oci")
	w, err := oci.CreateScratch(layout)
	if err != nil {
		t.Fatal(err)
	}
	var ims [2]*oci.Image
	for i, raw := range [][]byte{v1, v2} {
		d, err := w.WriteBlobBytes(oci.MediaTypeOCILayer, raw)
		if err != nil {
			t.Fatal(err)
		}
		tag := []string{"v1", "v2"}[i]
		if _, err := w.Commit(tag, oci.NewConfig(oci.Platform{OS: "linux", Architecture: "arm64"}, []digest.Digest{digest.FromBytes(raw)}), []oci.Descriptor{d}, nil); err != nil {
			t.Fatal(err)
		}
		if ims[i], err = oci.Open(oci.Ref{Layout: layout, Tag: tag}); err != nil {
			t.Fatal(err)
		}
	}
	im := &images{oldIm: ims[0], newIm: ims[1], bundlePath: filepath.Join(dir, "bundle")}
	if _, err := delta.ComputeFile(context.Background(), im.oldIm, im.newIm, im.bundlePath, delta.Options{TempDir: dir, PartSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if im.bundle, err = os.ReadFile(im.bundlePath); err != nil {
		t.Fatal(err)
	}
	return im
}

// rawVehicle is a raw-slot vehicle (RawImage) booted from slot A, which
// holds v1 as the factory installs it (with its layer index, recorded
// good), and whose engine reads the delta base from slot A.
func rawVehicle(t *testing.T, dir string, im *images, v1 []byte) (*vehicle, *slotBaseInstaller) {
	t.Helper()
	v := newVehicleNoOpen(t, dir, true, nil)
	v.cfg.RawImage = true
	fo := v.slotO
	fo.Booted = ""
	fm, err := slots.Open(fo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fm.Install(context.Background(), slots.A, slots.Image{Label: string(im.oldIm.ManifestDigest), RawStream: true,
		Digest: string(digest.FromBytes(v1)), Layers: []io.Reader{bytes.NewReader(v1)}}); err != nil {
		t.Fatalf("factory install: %v", err)
	}
	if err := fm.MarkPending(slots.A); err != nil {
		t.Fatal(err)
	}
	if err := fm.MarkGood(slots.A); err != nil {
		t.Fatal(err)
	}
	if v.inst.m, err = slots.Open(v.slotO); err != nil {
		t.Fatal(err)
	}
	si := &slotBaseInstaller{installer: v.inst}
	v.epoch++
	if v.cfg.ReturnAuth, err = protocol.NewReturnAuth(testVehicle, macKey, v.epoch); err != nil {
		t.Fatal(err)
	}
	if v.e, err = Open(v.cfg, si, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return v, si
}

// TestRawSlotDeltaFromBootedSlot is the raw A/B board's update path: the
// ground's bundle for version 2 is a delta against the raw layer of
// version 1 (kilobytes, not the image), flightd receives it over a lossy
// link and rebuilds version 2 into raw slot B reading the base from the
// booted raw slot A's device, checked against the diff_id.
func TestRawSlotDeltaFromBootedSlot(t *testing.T) {
	rng := testrand.New(t)
	dir := t.TempDir()
	v1 := fsLikeImage(rand.New(rand.NewPCG(1, 1)))
	v2 := bytes.Clone(v1)
	copy(v2[1024+56:], "v2 superblock fields")         // metadata edited in place
	copy(v2[700<<10:], v1[2<<20:2<<20+64<<10])         // blocks moved
	copy(v2[(1<<20)+4321:], "version=2\nbuild=4711\n") // a small file's content
	im := rawImagePair(t, filepath.Join(dir, "img"), v1, v2)
	b, err := delta.OpenBundle(bytes.NewReader(im.bundle), int64(len(im.bundle)))
	if err != nil {
		t.Fatal(err)
	}
	if d := b.Header.Layers[0].Decision; d != delta.Delta {
		t.Fatalf("the raw layer is planned %q, want %q", d, delta.Delta)
	}
	t.Logf("raw image %d bytes, bundle %d bytes", len(v2), len(im.bundle))
	if len(im.bundle) > 16<<10 {
		t.Errorf("bundle of %d bytes for a few edits of a %d-byte raw image", len(im.bundle), len(v2))
	}

	v, si := rawVehicle(t, filepath.Join(dir, "vehicle"), im, v1)
	defer v.close()
	defer si.close()
	g := newGround(t)
	r := &relay{rng: rng, loss: 0.1, dup: 0.02}
	for _, tr := range []struct {
		target []byte
		data   []byte
	}{{update.TargetPlan(3), im.plan(t, planOpts{id: 3})}, {update.TargetBundle(3), im.bundle}} {
		s := g.sender(tr.target, tr.data)
		v.run(s, r, 200000, nil)
		if !s.Done() || s.Err() != nil {
			t.Fatalf("transfer %q: %v", tr.target, s.Err())
		}
	}
	if _, err := v.e.RunInstall(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(v.dir, "rawB"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(v2)], v2) {
		t.Fatal("raw slot B does not hold version 2")
	}
	sb := v.inst.m.Status().Slots[1]
	if sb.State != slots.Written || sb.Image != string(im.newIm.ManifestDigest) || sb.Digest != string(digest.FromBytes(v2)) {
		t.Fatalf("slot B: %+v", sb)
	}
	if st := v.e.Status(); st.StateName != "installed" {
		t.Fatalf("status after install: %+v", st)
	}
	if ps := v.e.Check(); len(ps) > 0 {
		t.Fatalf("Check: %v", ps)
	}
	// Slot B is the next update's base: its index gives version 2's raw
	// layer back from the device.
	nb, err := v.inst.m.Base(slots.B)
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()
	ra := nb.Layer(digest.FromBytes(v2))
	if ra == nil {
		t.Fatalf("slot B's base lacks version 2's layer: %v", nb.Layers())
	}
	back := make([]byte, len(v2))
	if _, err := ra.ReadAt(back, 0); err != nil || !bytes.Equal(back, v2) {
		t.Fatalf("slot B's base reads version 2's layer back wrong: %v", err)
	}
}

// TestRawSlotDeltaBootedSlotChanged: a block of the booted raw slot no
// longer holds what version 1 wrote there: the install stops on a base
// mismatch naming the part, before slot B is touched.
func TestRawSlotDeltaBootedSlotChanged(t *testing.T) {
	dir := t.TempDir()
	v1 := fsLikeImage(rand.New(rand.NewPCG(1, 1)))
	v2 := bytes.Clone(v1)
	copy(v2[(1<<20)+4321:], "version=2\n")
	im := rawImagePair(t, filepath.Join(dir, "img"), v1, v2)
	v, si := rawVehicle(t, filepath.Join(dir, "vehicle"), im, v1)
	defer v.close()
	defer si.close()
	// Bit rot in the booted slot, after install.
	f, err := os.OpenFile(filepath.Join(v.dir, "rawA"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, 2<<20+77); err != nil {
		t.Fatal(err)
	}
	f.Close()
	g := newGround(t)
	if err := v.deliver(g, update.TargetPlan(4), im.plan(t, planOpts{id: 4})); err != nil {
		t.Fatal(err)
	}
	if err := v.deliver(g, update.TargetBundle(4), im.bundle); err != nil {
		t.Fatal(err)
	}
	if _, err := v.e.RunInstall(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := v.e.Status()
	if st.StateName != "base_mismatch" {
		t.Fatalf("status: %+v, want base_mismatch", st)
	}
	t.Logf("status: %s: %s", st.StateName, st.LastErrorText)
	got, err := os.ReadFile(filepath.Join(v.dir, "rawB"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("slot B was written despite the base mismatch")
	}
}
