//go:build linux

package groundd_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/flightd/uplink"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/opencontainers/go-digest"
)

// rawFS is a stand-in for a 3 MiB filesystem image: structured bytes.
func rawFS(rng *rand.Rand) []byte {
	b := make([]byte, 3<<20)
	for i := 0; i+8 <= len(b); i += 8 {
		b[i], b[i+1], b[i+2] = 0x48, 0x8b, byte(rng.IntN(16))
		a := uint32(i*3 + rng.IntN(64))
		b[i+4], b[i+5], b[i+6] = byte(a), byte(a>>8), byte(a>>16)
	}
	return b
}

// rawImages puts versions 1 and 2 of a raw image (one layer that is the
// filesystem image itself, as hil/vm's A/B board builds them) into the
// world's layout, signed with its release key, and makes them the world's
// v1 and v2.
func (w *world) rawImages(v1, v2 []byte) {
	t := w.t
	layout := filepath.Join(w.dir, "images")
	ow, err := oci.Create(layout)
	if err != nil {
		t.Fatal(err)
	}
	_, relPriv, err := images.ReadPrivateKey(filepath.Join(w.dir, "release.key"))
	if err != nil {
		t.Fatal(err)
	}
	for i, raw := range [][]byte{v1, v2} {
		d, err := ow.WriteBlobBytes(oci.MediaTypeOCILayer, raw)
		if err != nil {
			t.Fatal(err)
		}
		tag := []string{"raw-1", "raw-2"}[i]
		diff := digest.FromBytes(raw)
		md, err := ow.Commit(tag, oci.NewConfig(oci.Platform{OS: "linux", Architecture: "arm64"}, []digest.Digest{diff}), []oci.Descriptor{d}, nil)
		if err != nil {
			t.Fatal(err)
		}
		im := ocitest.Image{Ref: oci.Ref{Layout: layout, Tag: tag}, ManifestDigest: md.Digest, DiffIDs: []digest.Digest{diff}, Tars: [][]byte{raw}}
		r, err := images.ParseRef(im.Ref.String())
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := images.Sign(context.Background(), r, images.Options{}, releaseKey, relPriv, uint64(i+1), "obc-rev-c"); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			w.v1 = im
		} else {
			w.v2 = im
		}
	}
	w.vcfg.Booted = w.v1.ManifestDigest
}

// newRawFlightVehicle is newFlightVehicle with raw slots (flightd's
// RawImage): slot A holds v1 as the factory installs it (with its layer
// index, recorded good), and the delta base is slot A itself, read from
// its device through slots.Manager.Base as flightd does.
func newRawFlightVehicle(t *testing.T, w *world) *flightVehicle {
	t.Helper()
	dir := filepath.Join(w.dir, "vehicle")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	so := slots.Options{StateDir: filepath.Join(dir, "slotstate"), Log: slog.New(slog.DiscardHandler),
		A: slots.Slot{Backend: slots.BackendRaw, Path: filepath.Join(dir, "rawA")}, B: slots.Slot{Backend: slots.BackendRaw, Path: filepath.Join(dir, "rawB")}}
	for _, p := range []string{so.A.Path, so.B.Path} {
		if err := os.WriteFile(p, make([]byte, 4<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fm, err := slots.Open(so)
	if err != nil {
		t.Fatal(err)
	}
	v1 := w.v1.Tars[0]
	if _, err := fm.Install(context.Background(), slots.A, slots.Image{Label: w.v1.ManifestDigest.String(), RawStream: true,
		Digest: w.v1.DiffIDs[0].String(), Layers: []io.Reader{bytes.NewReader(v1)}}); err != nil {
		t.Fatal(err)
	}
	if err := fm.MarkPending(slots.A); err != nil {
		t.Fatal(err)
	}
	if err := fm.MarkGood(slots.A); err != nil {
		t.Fatal(err)
	}
	so.Booted = slots.A
	m, err := slots.Open(so)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := protocol.NewReturnAuth(vehicleID, w.vcfg.MACKey, 1)
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := w.vcfg.ReleaseKeys.Lookup(releaseKey)
	inst := &flightInstaller{m: m, label: w.v1.ManifestDigest.String(), slotBase: true}
	v := &flightVehicle{t: t, id: vehicleID, auth: auth, codec: w.codec, inst: inst}
	v.e, err = uplink.Open(uplink.Config{Vehicle: vehicleID, HardwareID: "obc-rev-c", Dir: filepath.Join(dir, "uplink"), StagingQuota: 64 << 20,
		GroundKeys: w.vcfg.GroundKeys, ReleaseKeys: map[uint32]ed25519.PublicKey{releaseKey: rel}, ReturnAuth: auth, MaxFrame: maxFrame, MinVersion: 1,
		RawImage: true}, inst, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		v.e.Close()
		if inst.open != nil {
			inst.open.Close()
		}
	})
	return v
}

// TestEndToEndFlightdRawSlots: the A/B board's real path on raw slots.
// groundd learns from hk.slots that the vehicle booted raw version 1,
// plans version 2 as a delta of the raw layer against it (kilobytes, not
// the image), and flightd's engine rebuilds it into raw slot B from the
// booted slot's device, checked against the diff_id.
func TestEndToEndFlightdRawSlots(t *testing.T) {
	rng := testrand.New(t)
	w := newWorld(t, rng, 0.05, nil)
	v1 := rawFS(rand.New(rand.NewPCG(1, 1)))
	v2 := bytes.Clone(v1)
	copy(v2[1024+56:], "v2 superblock fields")
	copy(v2[(1<<20)+4321:], "version=2\nbuild=4711\n")
	copy(v2[700<<10:], v1[2<<20:2<<20+64<<10])
	w.rawImages(v1, v2)
	fv := newRawFlightVehicle(t, w)
	w.alt = fv
	ctx := context.Background()
	d := w.open()
	defer func() { d.Close() }()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	slotB := func(d *groundd.Daemon) bool {
		v, err := d.VehicleShow(ctx, vehicleID)
		return err == nil && len(v.Slots) == 2 && v.Slots[1].State == "written" && v.Slots[1].Digest == w.v2.ManifestDigest.Encoded()[:16]
	}
	d, _ = w.run(d, u.ID, 0, slotB)
	u, _ = d.QueueShow(ctx, u.ID)
	if u.State != groundd.UplinkDone {
		t.Fatalf("uplink %s (%s); vehicle events %v; status %+v", u.State, u.Error, fv.events, fv.e.Status())
	}
	if len(u.Layers) != 1 || u.Layers[0].Decision != delta.Delta || u.Layers[0].Payload > 8<<10 {
		t.Fatalf("planned %+v, want the raw layer as a delta of a few kilobytes", u.Layers)
	}
	if u.Base != w.v1.ManifestDigest.String() {
		t.Fatalf("planned against %s, want the booted %s", u.Base, w.v1.ManifestDigest)
	}
	got, err := os.ReadFile(filepath.Join(w.dir, "vehicle", "rawB"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(v2)], v2) {
		t.Fatal("raw slot B does not hold version 2")
	}
	if _, m, ok := fv.e.Release(slots.B); !ok || m != w.v2.ManifestDigest {
		t.Fatalf("slot B release %s %v", m, ok)
	}
	t.Logf("raw layer of %d bytes planned as %s with %d bytes of payload; plans %v; vehicle events %v", u.Layers[0].Size, u.Layers[0].Decision, u.Layers[0].Payload, u.Plans, fv.events)
}
