package uplink

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
)

func eventNames(evs []Event) []string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Def.Name)
	}
	return s
}

func hasEvent(evs []Event, def *dict.Event) bool {
	for _, e := range evs {
		if e.Def == def {
			return true
		}
	}
	return false
}

// checkEvents encodes every event as the daemon would and decodes it as
// the ground does, so that a wrong argument shows here (a nil byte string
// encodes as null, which the ground's decoder refuses: the event is lost).
func checkEvents(t testing.TB, evs []Event) {
	t.Helper()
	c, err := protocol.NewCodec(1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		ev, err := e.Def.NewEvent(testVehicle, 0, 1, e.Text[:min(len(e.Text), 40)], e.Args)
		if err != nil {
			t.Errorf("event %s: %v", e.Def.Name, err)
			continue
		}
		b, err := c.Encode(ev)
		if err != nil {
			t.Errorf("event %s: encode: %v", e.Def.Name, err)
			continue
		}
		m, err := c.Decode(b)
		if err == nil {
			_, err = e.Def.Decode(m.(*protocol.Event).Args)
		}
		if err != nil {
			t.Errorf("event %s %v: the ground cannot decode it: %v", e.Def.Name, e.Args, err)
		}
	}
}

// checkFiles checks that the regular files of the image's top layers are
// in the slot directory with their content.
func checkFiles(t testing.TB, dir string, layers []ocitest.Layer) {
	t.Helper()
	want := map[string][]byte{}
	for _, l := range layers {
		for _, e := range l.Entries {
			if e.Type == ocitest.File {
				want[e.Name] = e.Data
			} else {
				delete(want, e.Name)
			}
		}
	}
	if len(want) == 0 {
		t.Fatal("no files to check")
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("slot file %s: %v", name, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("slot file %s: %d bytes differ from the image's %d", name, len(got), len(data))
		}
	}
}

// TestInstallDirSlot: a plan and its bundle over a lossy link, then the
// install into the inactive directory slot, with the release recorded and
// the staging emptied.
func TestInstallDirSlot(t *testing.T) {
	rng := testrand.New(t)
	dir := t.TempDir()
	im := makeImages(t, rng, filepath.Join(dir, "img"), ocitest.GenOptions{Layers: 2, Files: 20})
	v := newVehicle(t, filepath.Join(dir, "vehicle"), false, im.oldBase())
	defer v.close()
	g := newGround(t)
	r := &relay{rng: rng, loss: 0.2, dup: 0.02}

	s := g.sender(update.TargetPlan(7), im.plan(t, planOpts{id: 7}))
	v.run(s, r, 100000, nil)
	if !s.Done() || s.Err() != nil {
		t.Fatalf("plan transfer: done %v, %v", s.Done(), s.Err())
	}
	if st := v.e.Status(); st.Plan != 7 || st.StateName != "bundle" {
		t.Fatalf("after the plan: %+v", st)
	}
	s = g.sender(update.TargetBundle(7), im.bundle)
	v.run(s, r, 200000, nil)
	if !s.Done() || s.Err() != nil {
		t.Fatalf("bundle transfer: done %v, %v", s.Done(), s.Err())
	}
	if st := v.e.Status(); st.StateName != "installing" {
		t.Fatalf("after the bundle: %+v", st)
	}
	id, err := v.e.RunInstall(context.Background())
	if err != nil || id != 7 {
		t.Fatalf("RunInstall: %d, %v", id, err)
	}
	st := v.e.Status()
	if st.StateName != "installed" || st.StagingUsed != 0 {
		t.Fatalf("after the install: %+v", st)
	}
	ver, man, ok := v.e.Release(slots.B)
	if !ok || ver != 2 || man != im.newIm.ManifestDigest {
		t.Fatalf("slot B release: %d %s %v", ver, man, ok)
	}
	if plan, slot := v.e.Installed(); plan != 7 || slot != slots.B {
		t.Fatalf("Installed: %d %s", plan, slot)
	}
	sb := v.inst.m.Status().Slots[1]
	if sb.State != slots.Written || sb.Image != string(im.newIm.ManifestDigest) {
		t.Fatalf("slot B: %+v", sb)
	}
	checkFiles(t, filepath.Join(v.dir, "b"), im.new.Layers)
	evs := v.e.Events()
	for _, def := range []*dict.Event{dict.EvPlanAccepted, dict.EvTransferComplete, dict.EvInstallStarted, dict.EvInstallDone} {
		if !hasEvent(evs, def) {
			t.Errorf("no %s event in %v", def.Name, eventNames(evs))
		}
	}
	checkEvents(t, evs)
	if ps := v.e.Check(); len(ps) > 0 {
		t.Fatalf("Check: %v", ps)
	}
	// Staging holds nothing once installed.
	if n := dirBytes(t, filepath.Join(v.cfg.Dir, "staging")); n != 0 {
		t.Fatalf("staging holds %d bytes after the install", n)
	}
	// A restart finds the same state.
	v.close()
	v.open()
	if ps := v.e.Check(); len(ps) > 0 {
		t.Fatalf("Check after restart: %v", ps)
	}
	if st := v.e.Status(); st.Plan != 7 || st.StateName != "installed" {
		t.Fatalf("after restart: %+v", st)
	}
}

// TestInstallRawSlot: an image whose single layer holds a filesystem image
// goes into a raw slot, read back against the bytes.
func TestInstallRawSlot(t *testing.T) {
	rng := testrand.New(t)
	dir := t.TempDir()
	fsImage := func(seed byte) []byte {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = byte(i/4096) ^ seed
		}
		copy(b[100000:], bytes.Repeat([]byte{seed}, 5000))
		return b
	}
	oldL := []ocitest.Layer{{Entries: []ocitest.Entry{{Type: ocitest.File, Name: "rootfs.img", Data: fsImage(1), Mode: 0o644}}, Compression: oci.Gzip}}
	newImg := fsImage(1)
	copy(newImg[300000:], bytes.Repeat([]byte("new"), 3000))
	newL := []ocitest.Layer{{Entries: []ocitest.Entry{{Type: ocitest.File, Name: "rootfs.img", Data: newImg, Mode: 0o644}}, Compression: oci.Zstd}}
	im := makeImagesFrom(t, filepath.Join(dir, "img"), oldL, newL)
	v := newVehicle(t, filepath.Join(dir, "vehicle"), true, im.oldBase())
	defer v.close()
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
	if !bytes.Equal(got[:len(newImg)], newImg) {
		t.Fatal("raw slot B does not hold the new filesystem image")
	}
	if sb := v.inst.m.Status().Slots[1]; sb.State != slots.Written || sb.Image != string(im.newIm.ManifestDigest) {
		t.Fatalf("slot B: %+v", sb)
	}
	if ps := v.e.Check(); len(ps) > 0 {
		t.Fatalf("Check: %v", ps)
	}
}

// TestAuthenticated: only what the ground alone can send first moves
// Engine.Authenticated (flightd answers its sender): an accepted offer, a
// new verified chunk; not a repeated offer, a duplicate chunk, an
// unauthenticated report request or junk.
func TestAuthenticated(t *testing.T) {
	rng := testrand.New(t)
	dir := t.TempDir()
	im := makeImages(t, rng, filepath.Join(dir, "img"), ocitest.GenOptions{Layers: 1, Files: 4})
	v := newVehicle(t, filepath.Join(dir, "v"), false, im.oldBase())
	defer v.close()
	g := newGround(t)
	s := g.sender(update.TargetPlan(7), im.plan(t, planOpts{id: 7, staging: uint64(len(im.bundle))}))
	var offer []byte
	var chunks [][]byte
	// The ground's frames, the vehicle's answers going back, until the
	// sender sends chunks; the vehicle takes only the first offer here.
	for i := 0; i < 100 && len(chunks) == 0; i++ {
		s.Tick(v.now)
		rd := s.Ready()
		s.Advance()
		for _, m := range rd.Messages {
			switch m.Msg.(type) {
			case *protocol.Offer:
				if offer == nil {
					offer = m.Frame
				}
			case *protocol.Chunk:
				chunks = append(chunks, m.Frame)
			}
		}
		v.now = v.now.Add(100 * time.Millisecond)
	}
	if offer == nil || len(chunks) == 0 {
		t.Fatalf("sender's frames: offer %v, %d chunks", offer != nil, len(chunks))
	}
	step := func(what string, f []byte, moves bool) {
		t.Helper()
		before := v.e.Authenticated()
		_ = v.e.Step(v.now, f)
		if got := v.e.Authenticated() != before; got != moves {
			t.Fatalf("%s: Authenticated moved %v, want %v", what, got, moves)
		}
	}
	step("offer", offer, true)
	step("the offer again", offer, false)
	req, err := g.codec.Encode(&protocol.ReportRequest{ID: 1, Seq: 99})
	if err != nil {
		t.Fatal(err)
	}
	step("an unauthenticated report request", req, false)
	step("junk", []byte{1, 2, 3}, false)
	step("a chunk", chunks[0], true)
	step("the chunk again", chunks[0], false)
}

// TestReleaseWhileWritten: between the moment the slot records the new
// image written and the moment the engine journals the install, Release
// already names the release the slot holds: telemetry never shows a
// written slot without its version.
func TestReleaseWhileWritten(t *testing.T) {
	rng := testrand.New(t)
	dir := t.TempDir()
	im := makeImages(t, rng, filepath.Join(dir, "img"), ocitest.GenOptions{Layers: 1, Files: 5})
	v := newVehicle(t, filepath.Join(dir, "vehicle"), false, im.oldBase())
	defer v.close()
	g := newGround(t)
	r := &relay{rng: rng}
	seen := false
	v.inst.written = func() {
		seen = true
		sb := v.inst.Status().Slots[1]
		if sb.State != slots.Written {
			t.Fatalf("slot B: %+v", sb)
		}
		ver, man, ok := v.e.Release(slots.B)
		if !ok || ver != 2 || string(man) != sb.Image {
			t.Fatalf("slot B written with %s, Release says %d %s %v", sb.Image, ver, man, ok)
		}
	}
	for _, x := range []struct {
		target []byte
		data   []byte
	}{{update.TargetPlan(7), im.plan(t, planOpts{id: 7})}, {update.TargetBundle(7), im.bundle}} {
		s := g.sender(x.target, x.data)
		v.run(s, r, 100000, nil)
		if !s.Done() || s.Err() != nil {
			t.Fatalf("transfer: done %v, %v", s.Done(), s.Err())
		}
	}
	if id, err := v.e.RunInstall(context.Background()); err != nil || id != 7 {
		t.Fatalf("RunInstall: %d, %v", id, err)
	}
	if !seen {
		t.Fatal("the slot was never written")
	}
}
