//go:build linux

package groundd_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/flightd/uplink"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/slots"
)

// flightVehicle is a vehicle running flightd's uplink engine over directory
// slots: what flightd's daemon does around the engine (events and
// housekeeping as frames, the install run when a bundle is complete), the
// minimum of it.
type flightVehicle struct {
	t      *testing.T
	id     uint32
	e      *uplink.Engine
	inst   *flightInstaller
	auth   *protocol.ReturnAuth
	codec  *protocol.Codec
	link   bool
	lastHK time.Time
	evSeq  uint32
	tmSeq  uint32
	events []string
}

// flightInstaller: slot A runs the old image (its layers are the delta
// base), installs go to slot B.
type flightInstaller struct {
	m     *slots.Manager
	base  delta.MapBase
	label string
	// slotBase: the base is the booted slot itself (slots.Manager.Base),
	// as flightd's, not base.
	slotBase bool
	open     *slots.LayerBase
}

func (i *flightInstaller) Status() slots.Status {
	st := i.m.Status()
	for x := range st.Slots {
		if st.Slots[x].ID == st.Booted && st.Slots[x].Image == "" {
			st.Slots[x].Image, st.Slots[x].State = i.label, slots.Good
		}
	}
	return st
}
func (i *flightInstaller) Base() delta.Base {
	if !i.slotBase {
		return i.base
	}
	if i.open != nil {
		i.open.Close()
		i.open = nil
	}
	b, err := i.m.Base(i.m.Status().Booted)
	if err != nil {
		return nil
	}
	i.open = b
	return b
}
func (i *flightInstaller) Install(ctx context.Context, img slots.Image) (*slots.InstallResult, error) {
	return i.m.Install(ctx, i.m.Status().Booted.Other(), img)
}

func newFlightVehicle(t *testing.T, w *world, base delta.MapBase) *flightVehicle {
	t.Helper()
	dir := filepath.Join(w.dir, "vehicle")
	for _, n := range []string{"a", "b"} {
		if err := os.MkdirAll(filepath.Join(dir, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m, err := slots.Open(slots.Options{StateDir: filepath.Join(dir, "slotstate"), Booted: slots.A, Log: slog.New(slog.DiscardHandler),
		A: slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(dir, "a")}, B: slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(dir, "b")}})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := protocol.NewReturnAuth(vehicleID, w.vcfg.MACKey, 1)
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := w.vcfg.ReleaseKeys.Lookup(releaseKey)
	v := &flightVehicle{t: t, id: vehicleID, auth: auth, codec: w.codec,
		inst: &flightInstaller{m: m, base: base, label: w.v1.ManifestDigest.String()}}
	v.e, err = uplink.Open(uplink.Config{Vehicle: vehicleID, HardwareID: "obc-rev-c", Dir: filepath.Join(dir, "uplink"), StagingQuota: 64 << 20,
		GroundKeys: w.vcfg.GroundKeys, ReleaseKeys: map[uint32]ed25519.PublicKey{releaseKey: rel}, ReturnAuth: auth, MaxFrame: maxFrame, MinVersion: 1},
		v.inst, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.e.Close() })
	return v
}

func (v *flightVehicle) SetLink(now time.Time, up bool) {
	if up != v.link {
		v.link = up
		v.e.SetLink(now, up)
		if up {
			v.lastHK = time.Time{}
		}
	}
}

func (v *flightVehicle) frame(m protocol.ReturnMessage) []byte {
	v.t.Helper()
	if err := v.auth.Sign(m); err != nil {
		v.t.Fatal(err)
	}
	f, err := v.codec.Encode(m)
	if err != nil {
		v.t.Fatal(err)
	}
	return f
}

func (v *flightVehicle) Step(now time.Time, in [][]byte) ([][]byte, error) {
	for _, f := range in {
		_ = v.e.Step(now, f) // refusals are counted and reported
	}
	if err := v.e.Tick(now); err != nil {
		return nil, err
	}
	if _, err := v.e.RunInstall(context.Background()); err != nil {
		v.t.Logf("install: %v", err)
	}
	out := v.e.Outbox()
	for _, ev := range v.e.Events() {
		v.evSeq++
		text := ev.Text
		if len(text) > dict.MaxEventText {
			text = text[:dict.MaxEventText]
		}
		pe, err := ev.Def.NewEvent(v.id, now.UnixMilli(), v.evSeq, text, ev.Args)
		if err != nil {
			return nil, err
		}
		v.events = append(v.events, ev.Def.Name)
		out = append(out, v.frame(pe))
	}
	if v.link && (v.lastHK.IsZero() || now.Sub(v.lastHK) >= 5*time.Second) {
		v.lastHK = now
		hk, err := v.housekeeping(now)
		if err != nil {
			return nil, err
		}
		out = append(out, hk...)
	}
	return out, nil
}

func (v *flightVehicle) housekeeping(now time.Time) ([][]byte, error) {
	st := v.inst.Status()
	slotVals := dict.Values{}
	for _, s := range st.Slots {
		n := "a"
		if s.ID == slots.B {
			n = "b"
		}
		state, _ := dict.EnumSlotState.Value(string(s.State))
		short := make([]byte, dict.ShortDigestLen)
		if len(s.Image) >= 7+2*dict.ShortDigestLen {
			short, _ = hex.DecodeString(s.Image[7 : 7+2*dict.ShortDigestLen])
		}
		ver, _, _ := v.e.Release(s.ID)
		if s.ID == st.Booted && ver == 0 {
			ver = 1
		}
		slotVals["slot_"+n+"_state"], slotVals["slot_"+n+"_version"] = state, ver
		slotVals["slot_"+n+"_digest"], slotVals["slot_"+n+"_attempts"] = short, uint64(0)
	}
	us := v.e.Status()
	packets := []struct {
		p    *dict.Packet
		vals dict.Values
	}{
		{dict.HKBoot, dict.Values{"booted_slot": uint64(1), "next_slot": uint64(1), "trial": false, "reset_cause": uint64(1), "boot_count": uint64(1), "last_outcome": uint64(0)}},
		{dict.HKSlots, slotVals},
		{dict.HKTransfer, dict.Values{"plan_id": us.Plan, "transfer_id": us.Transfer, "chunks_held": uint64(us.ChunksHeld), "chunks_total": uint64(us.Total),
			"bytes_staged": uint64(us.BytesStaged), "state": uint64(us.State)}},
	}
	var out [][]byte
	for _, p := range packets {
		v.tmSeq++
		tm, err := p.p.NewTelemetry(v.id, now.UnixMilli(), v.tmSeq, p.vals)
		if err != nil {
			return nil, err
		}
		out = append(out, v.frame(tm))
	}
	return out, nil
}

// TestEndToEndFlightd: the uplink to a vehicle running flightd's uplink
// engine (plan verification, staging, delta install into a directory slot)
// over loopback UDP through a lossy relay in passes, with groundd restarted
// every few dozen polls: the image is installed in slot B and groundd knows
// it from the vehicle's telemetry.
func TestEndToEndFlightd(t *testing.T) {
	rng := testrand.New(t)
	w := newWorld(t, rng, 0.1, nil)
	base := delta.MapBase{}
	for i, d := range w.v1.DiffIDs {
		base[d] = bytes.NewReader(w.v1.Tars[i])
	}
	fv := newFlightVehicle(t, w, base)
	w.alt = fv
	w.restartEvery = 60 + rng.IntN(40)
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
	d, st := w.run(d, u.ID, 0, slotB)
	u, _ = d.QueueShow(ctx, u.ID)
	if u.State != groundd.UplinkDone {
		t.Fatalf("uplink %s (%s); vehicle events %v; status %+v", u.State, u.Error, fv.events, fv.e.Status())
	}
	if st.resentReported != 0 {
		t.Errorf("%d chunks reported held were sent again after a restart", st.resentReported)
	}
	plan, slot := fv.e.Installed()
	if plan != u.Plans[len(u.Plans)-1] || slot != slots.B {
		t.Fatalf("flightd installed plan %d in %s, want plan %v in B", plan, slot, u.Plans)
	}
	if _, m, ok := fv.e.Release(slots.B); !ok || m != w.v2.ManifestDigest {
		t.Fatalf("slot B release %s %v", m, ok)
	}
	v, _ := d.VehicleShow(ctx, vehicleID)
	t.Logf("installed by flightd after %d passes and %d restarts of groundd; slot B %s %s v%d; vehicle events %v",
		len(st.passesUsed), w.restarts, v.Slots[1].State, v.Slots[1].Manifest, v.Slots[1].Version, fv.events)
}

// TestBaseMismatchFlightd: the vehicle's copy of the layers the delta
// reads is damaged (bit rot): flightd stops before writing the slot and
// reports the mismatch; groundd sends a supplement plan with those layers as
// full data, which flightd installs.
func TestBaseMismatchFlightd(t *testing.T) {
	rng := testrand.New(t)
	w := newWorld(t, rng, 0.05, nil)
	inV2 := map[string]bool{}
	for _, d := range w.v2.DiffIDs {
		inV2[d.String()] = true
	}
	rotten := delta.MapBase{}
	for i, d := range w.v1.DiffIDs {
		b := bytes.Clone(w.v1.Tars[i])
		if !inV2[d.String()] { // reused layers stay intact: only what deltas read rots
			for x := 700; x < len(b); x += 1500 {
				b[x] ^= 0x55
			}
		}
		rotten[d] = bytes.NewReader(b)
	}
	fv := newFlightVehicle(t, w, rotten)
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
	d, _ = w.run(d, u.ID, 0, nil)
	u, _ = d.QueueShow(ctx, u.ID)
	if u.State != groundd.UplinkDone {
		t.Fatalf("uplink %s (%s); vehicle events %v; status %+v", u.State, u.Error, fv.events, fv.e.Status())
	}
	mismatched := false
	for _, e := range fv.events {
		mismatched = mismatched || e == "base_mismatch"
	}
	if mismatched != (len(u.Plans) >= 2) {
		t.Fatalf("base mismatch reported: %v; plans %v", mismatched, u.Plans)
	}
	if _, m, ok := fv.e.Release(slots.B); !ok || m != w.v2.ManifestDigest {
		t.Fatalf("slot B release %s %v", m, ok)
	}
	t.Logf("plans %v, vehicle events %v", u.Plans, fv.events)
}
