package groundd_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/opencontainers/go-digest"
)

// TestPlanShadowedLayer: issue 13's finding at the planner. The booted
// image's last layer removes (whiteout) a file of its first layer, which
// the update keeps: the vehicle's base is its slot, which no longer holds
// that file, so a plan that reuses the first layer (or reads the file) is
// a base mismatch and a supplement round trip. groundd plans the layer as
// a delta against what the slot holds, and the vehicle (checking the
// bundle against a real slot-backed base, as flightd does) installs it
// from the first plan.
func TestPlanShadowedLayer(t *testing.T) {
	rng := testrand.New(t)
	f := func(name, data string) ocitest.Entry { return ocitest.Entry{Name: name, Data: []byte(data)} }
	d := func(name string) ocitest.Entry { return ocitest.Entry{Type: ocitest.Dir, Name: name} }
	big := make([]byte, 64<<10)
	for i := range big {
		big[i] = byte(rng.IntN(256))
	}
	l0 := ocitest.Layer{Entries: []ocitest.Entry{d("usr"), d("usr/share"), d("usr/share/doc"), d("usr/lib"),
		f("usr/share/doc/flight-old", string(bytes.Repeat([]byte("old notes\n"), 300))),
		f("usr/share/doc/flight-keep", string(bytes.Repeat([]byte("kept\n"), 200))),
		f("usr/lib/libflight.so", string(big))}}
	l1 := ocitest.Layer{Entries: []ocitest.Entry{d("etc"), f("etc/flight.conf", "rate=1\n")}}
	l2 := ocitest.Layer{Entries: []ocitest.Entry{d("usr"), d("usr/share"), d("usr/share/doc"),
		{Type: ocitest.Whiteout, Name: "usr/share/doc/flight-old"}}}
	l1n := ocitest.Layer{Entries: []ocitest.Entry{d("etc"), f("etc/flight.conf", "rate=2\n")}}

	// The vehicle's booted slot: the old image installed with its layer
	// index. The vehicle stand-in checks every plan's bundle against it
	// as flightd does before writing: a reused layer must hash to its
	// diff_id, every base range must verify.
	var base *slots.LayerBase
	var mismatched []int
	onBundle := func(p *update.Plan, bundle []byte) []int {
		if p.Supplement != 0 {
			return nil
		}
		b, err := delta.OpenBundle(bytes.NewReader(bundle), int64(len(bundle)))
		if err != nil {
			t.Errorf("bundle: %v", err)
			return nil
		}
		var bad []int
		for li, lp := range b.Header.Layers {
			if lp.Decision == delta.Reuse {
				h := sha256.New()
				ra := base.Layer(lp.DiffID)
				if ra == nil {
					bad = append(bad, li)
					continue
				}
				if _, err := io.Copy(h, io.NewSectionReader(ra, 0, lp.Size)); err != nil || digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)) != lp.DiffID {
					bad = append(bad, li)
				}
				continue
			}
			if errs := b.VerifyBase(context.Background(), li, base); len(errs) > 0 {
				t.Logf("layer %d: %v", li, errs[0])
				bad = append(bad, li)
			}
		}
		mismatched = append(mismatched, bad...)
		return bad
	}
	w := newWorldOf(t, rng, 0, onBundle, []ocitest.Layer{l0, l1, l2}, []ocitest.Layer{l0, l1n})
	sdir := filepath.Join(w.dir, "slots")
	o := slots.Options{StateDir: filepath.Join(sdir, "state"), Log: slog.New(slog.DiscardHandler),
		A: slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(sdir, "a")}, B: slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(sdir, "b")}}
	for _, p := range []string{o.A.Path, o.B.Path} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m, err := slots.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	var rs []io.Reader
	for _, tb := range w.v1.Tars {
		rs = append(rs, bytes.NewReader(tb))
	}
	if _, err := m.Install(context.Background(), slots.A, slots.Image{Label: string(w.v1.ManifestDigest), Layers: rs, DiffIDs: w.v1.DiffIDs}); err != nil {
		t.Fatal(err)
	}
	if base, err = m.Base(slots.A); err != nil {
		t.Fatal(err)
	}
	defer base.Close()

	ctx := context.Background()
	dm := w.open()
	defer func() { dm.Close() }()
	if _, err := dm.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := dm.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	dm, _ = w.run(dm, u.ID, 0, nil)
	if u, err = dm.QueueShow(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	t.Logf("uplink %s, plans %v, layers %+v", u.State, u.Plans, u.Layers)
	if u.State != groundd.UplinkDone {
		t.Fatalf("uplink %s (%s)", u.State, u.Error)
	}
	if len(mismatched) > 0 || len(u.Plans) != 1 {
		t.Fatalf("the vehicle reported base mismatches in layers %v (plans %v): the plan read what the slot does not hold", mismatched, u.Plans)
	}
	if len(u.Layers) == 0 || u.Layers[0].Decision == delta.Reuse {
		t.Fatalf("layer decisions %+v: layer 0 must not be reused", u.Layers)
	}
}
