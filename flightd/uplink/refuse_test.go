package uplink

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
)

// nothingWritten checks that no plan was recorded, no staged data is left
// and the inactive slot is untouched.
func nothingWritten(t *testing.T, v *vehicle, plan uint64) {
	t.Helper()
	if p := v.e.plans[plan]; p != nil && p.State != stFailed {
		t.Errorf("plan %d recorded %s", plan, stateName(p.State))
	}
	if n := dirBytes(t, filepath.Join(v.cfg.Dir, "staging")); n != 0 {
		t.Errorf("staging holds %d bytes", n)
	}
	ents, _ := os.ReadDir(filepath.Join(v.cfg.Dir, "staging"))
	if len(ents) != 0 {
		t.Errorf("staging holds %d files", len(ents))
	}
	if sb := v.inst.m.Status().Slots[1]; sb.State != slots.Empty {
		t.Errorf("slot B is %s", sb.State)
	}
	if v.inst.installs != 0 {
		t.Errorf("%d installs", v.inst.installs)
	}
	if ps := v.e.Check(); len(ps) > 0 {
		t.Errorf("Check: %v", ps)
	}
}

// refusedWith checks the counter, the last error and the event of a refusal.
func refusedWith(t *testing.T, v *vehicle, code protocol.Code) {
	t.Helper()
	st := v.e.Status()
	if st.Refusals[code] == 0 || st.LastError != code {
		t.Errorf("refusals %v, last error %d (%s), want code %d (%s)", st.Refusals, st.LastError, st.LastErrorText, code, dict.EnumReason.NameOf(uint64(code)))
	}
	evs := v.e.Events()
	checkEvents(t, evs)
	for _, e := range evs {
		if e.Def == dict.EvPlanRefused && e.Args["code"] == uint64(code) {
			return
		}
	}
	t.Errorf("no plan_refused event with code %d in %v", code, eventNames(evs))
}

// TestRefusals: every plan the vehicle must refuse is refused before a
// bundle byte, with its reason code, a counter and an event, and nothing
// is written; its bundle is then refused too.
func TestRefusals(t *testing.T) {
	rng := testrand.New(t)
	dir := t.TempDir()
	im := makeImages(t, rng, filepath.Join(dir, "img"), ocitest.GenOptions{Layers: 1, Files: 5})
	unsignedRelease := func() []byte {
		p := im.planStruct(t, planOpts{id: 9})
		p.Release.Sig = nil
		return rawPlan(t, p, groundPriv)
	}
	cases := []struct {
		name string
		plan func() []byte
		code protocol.Code
	}{
		{"unsigned plan", func() []byte { return rawPlan(t, im.planStruct(t, planOpts{id: 9}), nil) }, dict.CodeBadPlan},
		{"wrongly signed plan", func() []byte { return im.plan(t, planOpts{id: 9, groundKey: strangerKey, groundID: groundKeyID}) }, dict.CodeBadPlanSignature},
		{"plan of an unknown ground key", func() []byte { return im.plan(t, planOpts{id: 9, groundKey: strangerKey, groundID: 8}) }, protocol.CodeOf(protocol.ReasonUnknownKey)},
		{"unsigned image", unsignedRelease, dict.CodeBadPlan},
		{"wrongly signed image", func() []byte { return im.plan(t, planOpts{id: 9, releaseKey: strangerKey, releaseID: releaseKeyID}) }, dict.CodeBadReleaseSignature},
		{"untrusted release key", func() []byte { return im.plan(t, planOpts{id: 9, releaseKey: strangerKey, releaseID: 77}) }, dict.CodeUntrustedReleaseKey},
		{"downgrade", func() []byte { return im.plan(t, planOpts{id: 9, version: 1}) }, dict.CodeDowngrade},
		{"wrong hardware", func() []byte { return im.plan(t, planOpts{id: 9, hardware: "obc-rev-b"}) }, dict.CodeWrongHardware},
		{"another vehicle", func() []byte { return im.plan(t, planOpts{id: 9, vehicle: testVehicle + 1}) }, protocol.CodeOf(protocol.ReasonWrongVehicle)},
		{"over quota", func() []byte { return im.plan(t, planOpts{id: 9, staging: 65 << 20}) }, dict.CodeOverQuota},
		{"base not booted", func() []byte { return im.plan(t, planOpts{id: 9, base: im.oldIm.ManifestDigest}) }, dict.CodeBaseMismatch},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newVehicle(t, filepath.Join(dir, "v", string(rune('a'+i))), false, im.oldBase())
			defer v.close()
			g := newGround(t)
			if err := v.deliver(g, update.TargetPlan(9), c.plan()); err != nil {
				t.Fatalf("plan transfer: %v", err)
			}
			refusedWith(t, v, c.code)
			nothingWritten(t, v, 9)
			// The bundle that follows is refused at its offer.
			err := v.deliver(g, update.TargetBundle(9), im.bundle)
			if !errors.Is(err, transfer.ErrRefused) {
				t.Fatalf("bundle of a refused plan: %v", err)
			}
			refusedWith(t, v, dict.CodeUnknownPlan)
			nothingWritten(t, v, 9)
		})
	}

	t.Run("replayed plan", func(t *testing.T) {
		v := newVehicle(t, filepath.Join(dir, "v", "replay"), false, im.oldBase())
		defer v.close()
		g := newGround(t)
		plan := im.plan(t, planOpts{id: 9})
		if err := v.deliver(g, update.TargetPlan(9), plan); err != nil {
			t.Fatal(err)
		}
		v.e.Events()
		// The same plan in a new transfer: refused at its offer.
		if err := v.deliver(g, update.TargetPlan(9), plan); !errors.Is(err, transfer.ErrRefused) {
			t.Fatalf("replayed plan transfer: %v", err)
		}
		refusedWith(t, v, protocol.CodeOf(protocol.ReasonReplayed))
		// An older plan id of the same ground key: refused when checked.
		if err := v.deliver(g, update.TargetPlan(8), im.plan(t, planOpts{id: 8})); err != nil {
			t.Fatal(err)
		}
		refusedWith(t, v, protocol.CodeOf(protocol.ReasonReplayed))
		if st := v.e.Status(); st.Plan != 9 || st.StateName != "bundle" {
			t.Fatalf("status %+v", st)
		}
	})

	t.Run("bundle of the wrong size", func(t *testing.T) {
		v := newVehicle(t, filepath.Join(dir, "v", "size"), false, im.oldBase())
		defer v.close()
		g := newGround(t)
		if err := v.deliver(g, update.TargetPlan(9), im.plan(t, planOpts{id: 9})); err != nil {
			t.Fatal(err)
		}
		if err := v.deliver(g, update.TargetBundle(9), append(im.bundle, 0)); !errors.Is(err, transfer.ErrRefused) {
			t.Fatalf("bundle of the wrong size: %v", err)
		}
		refusedWith(t, v, dict.CodeBundleMismatch)
		if n := dirBytes(t, filepath.Join(v.cfg.Dir, "staging")); n != 0 {
			t.Errorf("staging holds %d bytes", n)
		}
	})

	t.Run("downgrade allowed", func(t *testing.T) {
		v := newVehicle(t, filepath.Join(dir, "v", "down"), false, im.oldBase())
		defer v.close()
		g := newGround(t)
		if err := v.deliver(g, update.TargetPlan(9), im.plan(t, planOpts{id: 9, version: 1, downgrade: true})); err != nil {
			t.Fatal(err)
		}
		if st := v.e.Status(); st.Plan != 9 || st.StateName != "bundle" {
			t.Fatalf("status %+v", st)
		}
	})
}
