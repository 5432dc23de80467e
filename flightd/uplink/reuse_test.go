package uplink

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
)

// shadowedImages is the shape of issue 13's finding: the booted image's
// last layer removes (whiteout) or replaces a file of its first layer, and
// the next release keeps that first layer (a replacement of the same size,
// so that only the layer's digest tells), so the bundle reuses it; the
// booted slot does not hold the file as the first layer has it.
//
// blind: the bundle is computed against the booted image's first layer
// alone, as a ground that does not know the later layers would (groundd's
// planner knows them, and delta then neither reuses the layer nor reads
// the files the later layers removed or replaced): it reuses the layer.
func shadowedImages(t *testing.T, dir, how string, blind bool) *images {
	t.Helper()
	f := func(name, data string) ocitest.Entry { return ocitest.Entry{Name: name, Data: []byte(data)} }
	d := func(name string) ocitest.Entry { return ocitest.Entry{Type: ocitest.Dir, Name: name} }
	l0 := ocitest.Layer{Entries: []ocitest.Entry{d("usr"), d("usr/share"), d("usr/share/doc"),
		f("usr/share/doc/flight-old", string(bytes.Repeat([]byte("old notes\n"), 300))),
		f("usr/share/doc/flight-keep", string(bytes.Repeat([]byte("kept\n"), 200)))}}
	l1 := ocitest.Layer{Entries: []ocitest.Entry{d("etc"), f("etc/flight.conf", "rate=1\n")}}
	var l2 ocitest.Layer
	switch how {
	case "whiteout":
		l2 = ocitest.Layer{Entries: []ocitest.Entry{d("usr"), d("usr/share"), d("usr/share/doc"),
			{Type: ocitest.Whiteout, Name: "usr/share/doc/flight-old"}}}
	case "replaced":
		l2 = ocitest.Layer{Entries: []ocitest.Entry{d("usr"), d("usr/share"), d("usr/share/doc"),
			f("usr/share/doc/flight-old", string(bytes.Repeat([]byte("new notes\n"), 300)))}}
	default:
		t.Fatalf("shape %q", how)
	}
	l1n := ocitest.Layer{Entries: []ocitest.Entry{d("etc"), f("etc/flight.conf", "rate=2\n")}}
	l2n := ocitest.Layer{Entries: []ocitest.Entry{d("opt"), f("opt/app", string(bytes.Repeat([]byte("app v3\n"), 100)))}}
	im := makeImagesFrom(t, dir, []ocitest.Layer{l0, l1, l2}, []ocitest.Layer{l0, l1n, l2n})
	if !blind {
		return im
	}
	first, err := ocitest.Write(filepath.Join(dir, "first"), "v1", []ocitest.Layer{l0})
	if err != nil {
		t.Fatal(err)
	}
	firstIm, err := oci.Open(first.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := delta.ComputeFile(context.Background(), firstIm, im.newIm, im.bundlePath, delta.Options{TempDir: dir}); err != nil {
		t.Fatal(err)
	}
	if im.bundle, err = os.ReadFile(im.bundlePath); err != nil {
		t.Fatal(err)
	}
	return im
}

// bootOld installs im's old image into slot A (with its layer index) and
// boots it: the vehicle's base is then the slot itself, as flightd's.
func bootOld(t *testing.T, v *vehicle, im *images) {
	t.Helper()
	o := v.slotO
	o.Booted = ""
	m, err := slots.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	var rs []io.Reader
	for _, b := range im.old.Tars {
		rs = append(rs, bytes.NewReader(b))
	}
	if _, err := m.Install(context.Background(), slots.A, slots.Image{Label: string(im.old.ManifestDigest), Layers: rs, DiffIDs: im.old.DiffIDs}); err != nil {
		t.Fatal(err)
	}
	v.open()
	b, err := v.inst.m.Base(slots.A)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	v.inst.base = b
}

// TestReusedLayerShadowed: a layer the bundle reuses cannot be rebuilt
// from the booted slot (a later layer of the booted image removed or
// replaced one of its files). The install stops before the slot is
// touched and reports the whole layer as a base mismatch (not
// install_failed), and a supplement carrying the layer completes it.
func TestReusedLayerShadowed(t *testing.T) {
	for _, how := range []string{"whiteout", "replaced"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			im := shadowedImages(t, filepath.Join(dir, "img"), how, true)
			b, err := delta.OpenBundle(bytes.NewReader(im.bundle), int64(len(im.bundle)))
			if err != nil {
				t.Fatal(err)
			}
			if b.Header.Layers[0].Decision != delta.Reuse {
				t.Fatalf("layer 0 is %s: the test wants it reused", b.Header.Layers[0].Decision)
			}
			v := newVehicleNoOpen(t, filepath.Join(dir, "vehicle"), false, nil)
			bootOld(t, v, im)
			defer v.close()
			g := newGround(t)
			if err := v.deliver(g, update.TargetPlan(7), im.plan(t, planOpts{id: 7})); err != nil {
				t.Fatal(err)
			}
			if err := v.deliver(g, update.TargetBundle(7), im.bundle); err != nil {
				t.Fatal(err)
			}
			if _, err := v.e.RunInstall(context.Background()); err != nil {
				t.Fatalf("RunInstall: %v (%s)", err, eventNames(v.e.Events()))
			}
			if st := v.e.Status(); st.StateName != "base_mismatch" || st.LastError != dict.CodeBaseMismatch {
				t.Fatalf("status %+v, want base_mismatch", st)
			}
			if v.inst.installs != 0 || v.inst.m.Status().Slots[1].State != slots.Empty {
				t.Fatal("the slot was touched on a base mismatch")
			}
			evs := v.e.Events()
			checkEvents(t, evs)
			var layers []uint64
			for _, e := range evs {
				if e.Def == dict.EvBaseMismatch {
					layers = append(layers, e.Args["layer"].(uint64))
				}
			}
			if len(layers) != 1 || layers[0] != 0 {
				t.Fatalf("base_mismatch for layers %v, want [0] (events %v)", layers, eventNames(evs))
			}

			// What the ground sends: the new image's layers as full data.
			empty, err := ocitest.Write(filepath.Join(dir, "img", "empty"), "e", nil)
			if err != nil {
				t.Fatal(err)
			}
			emptyIm, err := oci.Open(empty.Ref)
			if err != nil {
				t.Fatal(err)
			}
			suppPath := filepath.Join(dir, "img", "supp")
			if _, err := delta.ComputeFile(context.Background(), emptyIm, im.newIm, suppPath, delta.Options{TempDir: dir}); err != nil {
				t.Fatal(err)
			}
			supp, err := os.ReadFile(suppPath)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.deliver(g, update.TargetPlan(8), im.plan(t, planOpts{id: 8, supplement: 7, bundle: supp})); err != nil {
				t.Fatal(err)
			}
			if err := v.deliver(g, update.TargetBundle(8), supp); err != nil {
				t.Fatal(err)
			}
			if id, err := v.e.RunInstall(context.Background()); err != nil || id != 8 {
				t.Fatalf("RunInstall: %d %v", id, err)
			}
			if st := v.e.Status(); st.StateName != "installed" {
				t.Fatalf("after the supplement: %+v", st)
			}
			checkFiles(t, filepath.Join(v.dir, "b"), im.new.Layers)
		})
	}
}

// TestShadowedBaseDelta: the bundle delta computes knowing the booted
// image's layers (as groundd plans it) does not reuse the layer the later
// layers shadow, and installs from the slot-backed base without a base
// mismatch.
func TestShadowedBaseDelta(t *testing.T) {
	for _, how := range []string{"whiteout", "replaced"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			im := shadowedImages(t, filepath.Join(dir, "img"), how, false)
			b, err := delta.OpenBundle(bytes.NewReader(im.bundle), int64(len(im.bundle)))
			if err != nil {
				t.Fatal(err)
			}
			if b.Header.Layers[0].Decision == delta.Reuse {
				t.Fatal("layer 0 reused")
			}
			t.Logf("bundle %d bytes; layer 0 (%d bytes): %s", len(im.bundle), b.Header.Layers[0].Size, b.Header.Layers[0].Decision)
			v := newVehicleNoOpen(t, filepath.Join(dir, "vehicle"), false, nil)
			bootOld(t, v, im)
			defer v.close()
			g := newGround(t)
			if err := v.deliver(g, update.TargetPlan(7), im.plan(t, planOpts{id: 7})); err != nil {
				t.Fatal(err)
			}
			if err := v.deliver(g, update.TargetBundle(7), im.bundle); err != nil {
				t.Fatal(err)
			}
			if _, err := v.e.RunInstall(context.Background()); err != nil {
				t.Fatalf("RunInstall: %v (%s)", err, eventNames(v.e.Events()))
			}
			if st := v.e.Status(); st.StateName != "installed" {
				t.Fatalf("status %+v, want installed (events %v)", st, eventNames(v.e.Events()))
			}
			checkFiles(t, filepath.Join(v.dir, "b"), im.new.Layers)
		})
	}
}
