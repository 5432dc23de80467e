package uplink

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
)

// TestBaseMismatchSupplement: the booted slot does not hold what the delta
// references (bit rot): the install stops before the slot is touched and
// reports the parts; a supplement plan carrying the layer as full data
// completes the install.
func TestBaseMismatchSupplement(t *testing.T) {
	// The supplement's parts have the original's boundaries (part by part
	// substitutes) or not (the supplement's whole layer replaces it).
	t.Run("parts", func(t *testing.T) { baseMismatch(t, 16<<10) })
	t.Run("layer", func(t *testing.T) { baseMismatch(t, 40<<10) })
}

// TestBaseMismatchOriginalBusy: while a supplement installs, it reads the
// original plan's staged bundle; transfer_abort or delete_staged of the
// original (or of everything) must not pull that bundle from under it.
func TestBaseMismatchOriginalBusy(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  func(e *Engine) error
	}{
		{"abort", func(e *Engine) error { return e.Abort(7) }},
		{"delete_staged_plan", func(e *Engine) error { _, err := e.DeleteStaged(7); return err }},
		{"delete_staged_all", func(e *Engine) error { _, err := e.DeleteStaged(0); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			baseMismatchWith(t, 16<<10, func(v *vehicle) {
				v.inst.during = func() {
					v.inst.during = nil
					if err := tc.cmd(v.e); err != nil && !errors.Is(err, ErrBusy) {
						t.Errorf("%s during the supplement's install: %v, want nil or ErrBusy", tc.name, err)
					}
				}
			})
		})
	}
}

func baseMismatch(t *testing.T, suppPart int64) { baseMismatchWith(t, suppPart, nil) }

// baseMismatchWith runs baseMismatch; beforeSupp, if set, runs before the
// supplement's install.
func baseMismatchWith(t *testing.T, suppPart int64, beforeSupp func(v *vehicle)) {
	rng := testrand.New(t)
	dir := t.TempDir()
	im := makeImages(t, rng, filepath.Join(dir, "img"), ocitest.GenOptions{Layers: 1, Files: 30, MaxFileSize: 32 << 10})
	// The vehicle's copy of the old layer is damaged in its first third:
	// some parts mismatch, the others are rebuilt from the base as planned.
	rotten := delta.MapBase{}
	for i, d := range im.old.DiffIDs {
		b := bytes.Clone(im.old.Tars[i])
		for x := 700; x < len(b)/3; x += 1500 {
			b[x] ^= 0x55
		}
		rotten[d] = bytes.NewReader(b)
	}
	v := newVehicle(t, filepath.Join(dir, "vehicle"), false, rotten)
	defer v.close()
	g := newGround(t)
	r := &relay{rng: rng, loss: 0.1, dup: 0.02}
	send := func(target, data []byte) {
		t.Helper()
		s := g.sender(target, data)
		v.run(s, r, 200000, nil)
		if !s.Done() || s.Err() != nil {
			t.Fatalf("transfer %q: %v", target, s.Err())
		}
	}
	send(update.TargetPlan(7), im.plan(t, planOpts{id: 7}))
	send(update.TargetBundle(7), im.bundle)
	if _, err := v.e.RunInstall(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := v.e.Status(); st.StateName != "base_mismatch" || st.LastError != dict.CodeBaseMismatch {
		t.Fatalf("status %+v", st)
	}
	if v.inst.installs != 0 || v.inst.m.Status().Slots[1].State != slots.Empty {
		t.Fatal("the slot was touched on a base mismatch")
	}
	evs := v.e.Events()
	checkEvents(t, evs)
	var parts []int
	for _, e := range evs {
		if e.Def == dict.EvBaseMismatch {
			b := e.Args["parts"].([]byte)
			for i := 0; i+4 <= len(b); i += 4 {
				parts = append(parts, int(binary.BigEndian.Uint32(b[i:])))
			}
		}
	}
	if len(parts) == 0 {
		t.Fatalf("no base_mismatch parts in %v", eventNames(evs))
	}
	b, _ := delta.OpenBundle(bytes.NewReader(im.bundle), int64(len(im.bundle)))
	t.Logf("%d of %d parts do not match", len(parts), len(b.Header.Layers[0].Parts))
	if len(parts) == len(b.Header.Layers[0].Parts) {
		t.Fatal("every part mismatches: the test wants some that match")
	}
	if ps := v.e.Check(); len(ps) > 0 {
		t.Fatalf("Check: %v", ps)
	}
	// The staged bundle is kept for the supplement; a restart keeps the state.
	v.close()
	v.open()
	if st := v.e.Status(); st.StateName != "base_mismatch" || st.StagingUsed != int64(len(im.bundle)) {
		t.Fatalf("after restart: %+v", st)
	}

	// The supplement: the new image's layers as full data (a bundle from
	// an empty image, whose parts have the same boundaries): its parts
	// replace the mismatching ones, part by part.
	empty, err := ocitest.Write(filepath.Join(dir, "img", "empty"), "e", nil)
	if err != nil {
		t.Fatal(err)
	}
	emptyIm, err := oci.Open(empty.Ref)
	if err != nil {
		t.Fatal(err)
	}
	suppPath := filepath.Join(dir, "img", "supp")
	if _, err := delta.ComputeFile(context.Background(), emptyIm, im.newIm, suppPath, delta.Options{TempDir: dir, PartSize: suppPart}); err != nil {
		t.Fatal(err)
	}
	supp, err := os.ReadFile(suppPath)
	if err != nil {
		t.Fatal(err)
	}
	send(update.TargetPlan(8), im.plan(t, planOpts{id: 8, supplement: 7, bundle: supp}))
	send(update.TargetBundle(8), supp)
	if beforeSupp != nil {
		beforeSupp(v)
	}
	if id, err := v.e.RunInstall(context.Background()); err != nil || id != 8 {
		t.Fatalf("RunInstall: %d %v", id, err)
	}
	if st := v.e.Status(); st.StateName != "installed" || st.StagingUsed != 0 {
		t.Fatalf("after the supplement: %+v", st)
	}
	checkFiles(t, filepath.Join(v.dir, "b"), im.new.Layers)
	if ps := v.e.Check(); len(ps) > 0 {
		t.Fatalf("Check: %v", ps)
	}
}
