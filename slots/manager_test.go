package slots

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/internal/vfs"
)

// testRand returns the test's generator, its seed logged (BOOTORBIT_SEED
// replays it, see internal/testrand).
func testRand(t *testing.T) *rand.Rand {
	t.Helper()
	return testrand.New(t)
}

func fixedClock() func() time.Time {
	return func() time.Time { return time.Unix(1800000000, 0) }
}

func TestTransitionTable(t *testing.T) {
	states := []State{Empty, Writing, Written, Pending, Good, Bad}
	n := 0
	for _, from := range states {
		for _, to := range states {
			if CanTransition(from, to) {
				n++
			}
		}
	}
	if n != 14 {
		t.Fatalf("%d allowed transitions; update docs/slots.md with the table when changing it", n)
	}
	for _, tc := range []struct {
		from, to State
		ok       bool
	}{
		{Empty, Written, false}, {Writing, Pending, false}, {Empty, Pending, false},
		{Bad, Pending, false}, {Bad, Good, false}, {Written, Pending, true}, {Pending, Good, true},
	} {
		if CanTransition(tc.from, tc.to) != tc.ok {
			t.Errorf("%s -> %s: want %v", tc.from, tc.to, tc.ok)
		}
	}
}

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want SlotID
		err  bool
	}{
		{"root=/dev/mmcblk0p2 rauc.slot=A quiet", A, false},
		{"rauc.slot=b", B, false},
		{"rauc.slot=A rauc.slot=B", B, false},
		{"quiet", "", true},
		{"rauc.slot=C", "", true},
		{"quiet -- rauc.slot=A", "", true},
	} {
		got, err := ParseCmdline(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("%q: %q %v", tc.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrCmdline) {
			t.Errorf("%q: error %v does not wrap ErrCmdline", tc.in, err)
		}
	}
}

// memRig is two raw slots and a state dir on a crashable MemFS; slot A is
// booted and holds "image A".
type memRig struct {
	fs     *vfs.MemFS
	o      Options
	aBytes []byte
}

const rigSlotSize = 256 << 10

func newMemRig(t *testing.T) *memRig {
	m := vfs.NewMem()
	for _, d := range []string{"state", "dev"} {
		if err := m.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	aBytes := bytes.Repeat([]byte("image A "), rigSlotSize/8)
	for _, dev := range []struct {
		name string
		data []byte
	}{{"dev/a", aBytes}, {"dev/b", make([]byte, rigSlotSize)}} {
		f, err := m.Create(dev.name, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(dev.data)
		f.Sync()
		f.Close()
	}
	vfs.SyncDir(m, "dev")
	vfs.SyncDir(m, "/")
	return &memRig{fs: m, aBytes: aBytes, o: Options{
		FS: m, StateDir: "state", Booted: A, Now: fixedClock(),
		A: Slot{Backend: BackendRaw, Path: "dev/a", Size: rigSlotSize},
		B: Slot{Backend: BackendRaw, Path: "dev/b", Size: rigSlotSize},
	}}
}

func readMem(t *testing.T, fsys vfs.FS, name string) []byte {
	f, err := fsys.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	return b
}

func TestRawInstallAndTransitions(t *testing.T) {
	rig := newMemRig(t)
	m, err := Open(rig.o)
	if err != nil {
		t.Fatal(err)
	}
	if s := m.Status(); s.Slots[0].State != Good || s.Slots[1].State != Empty || !s.Slots[0].Booted {
		t.Fatalf("fresh status %+v", s)
	}
	img := bytes.Repeat([]byte("new image B!"), 10000)
	_, err = m.Install(context.Background(), A, Image{Layers: []io.Reader{bytes.NewReader(img)}, RawStream: true})
	if !errors.Is(err, ErrActiveSlot) {
		t.Fatalf("writing the booted slot: %v", err)
	}
	layer := newTB().file("rootfs.ext4", string(img)).bytes()
	sum := sha256.Sum256(img)
	res, err := m.Install(context.Background(), B, Image{Label: "sha256:feed", Layers: readers(layer), Digest: fmt.Sprintf("sha256:%x", sum)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != int64(len(img)) {
		t.Fatalf("wrote %d bytes", res.Bytes)
	}
	if got := readMem(t, rig.fs, "dev/b")[:len(img)]; !bytes.Equal(got, img) {
		t.Fatal("slot B content differs")
	}
	if err := m.MarkGood(B); !errors.Is(err, ErrTransition) {
		t.Fatalf("marking a non-booted slot good: %v", err)
	}
	if err := m.MarkPending(B); err != nil {
		t.Fatal(err)
	}
	v, err := m.Verify(context.Background(), B)
	if err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
	// Reboot into B: the state file says pending; B passes and is good.
	rig.o.Booted = B
	m2, err := Open(rig.o)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.MarkGood(B); err != nil {
		t.Fatal(err)
	}
	st := m2.Status()
	if st.Slots[1].State != Good || st.Slots[1].Image != "sha256:feed" || st.Slots[1].Size != int64(len(img)) {
		t.Fatalf("after mark good: %+v", st.Slots[1])
	}
	// Bit rot in the idle slot A is found by Verify... A has no digest
	// (it was never installed by us), so it says so.
	if _, err := m2.Verify(context.Background(), A); !errors.Is(err, ErrVerify) {
		t.Fatalf("verify of an unrecorded slot: %v", err)
	}
	// Corrupt B's medium (as seen from a reboot into A), then verify.
	f, _ := rig.fs.OpenRW("dev/b")
	f.WriteAt([]byte{0xff}, 1234)
	f.Close()
	v, err = m2.Verify(context.Background(), B)
	if err != nil || v.OK {
		t.Fatalf("bit flip not detected: %+v %v", v, err)
	}
}

func TestRawInstallRefusals(t *testing.T) {
	rig := newMemRig(t)
	m, _ := Open(rig.o)
	ctx := context.Background()
	big := newTB().file("rootfs.img", string(make([]byte, rigSlotSize+1))).bytes()
	two := newTB().file("a", "x").file("b", "y").bytes()
	dir := newTB().dir("x").bytes()
	for name, tc := range map[string]struct {
		img  Image
		want error
	}{
		"too large":        {Image{Layers: readers(big)}, ErrTooLarge},
		"two files":        {Image{Layers: readers(two)}, ErrRawLayer},
		"not a file":       {Image{Layers: readers(dir)}, ErrRawLayer},
		"stream too large": {Image{Layers: readers(make([]byte, rigSlotSize+1)), RawStream: true}, ErrTooLarge},
		"digest mismatch":  {Image{Layers: readers([]byte("abc")), RawStream: true, Digest: "sha256:00"}, ErrVerify},
	} {
		_, err := m.Install(ctx, B, Image{Layers: tc.img.Layers, RawStream: tc.img.RawStream, Digest: tc.img.Digest})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
		if s := m.Status().Slots[1].State; s != Writing && s != Bad {
			t.Errorf("%s: slot B is %s after a failed install", name, s)
		}
	}
}

// TestInstallRefusesWrongShape checks that an image whose shape the slot's
// backend cannot take is refused before anything changes: the slot keeps
// its state and its content (it may hold the previous good release).
func TestInstallRefusesWrongShape(t *testing.T) {
	ctx := context.Background()
	rig := newMemRig(t)
	m, err := Open(rig.o)
	if err != nil {
		t.Fatal(err)
	}
	img := []byte("filesystem image")
	if _, err := m.Install(ctx, B, Image{Layers: readers(img), RawStream: true}); err != nil {
		t.Fatal(err)
	}
	before := m.Status().Slots[1]
	layer := newTB().file("rootfs.img", "x").bytes()
	for name, bad := range map[string]Image{
		"no layers":  {},
		"nil layer":  {Layers: []io.Reader{nil}},
		"two layers": {Layers: readers(layer, layer)},
	} {
		if _, err := m.Install(ctx, B, bad); !errors.Is(err, ErrImageShape) {
			t.Errorf("raw slot, %s: %v, want %v", name, err, ErrImageShape)
		}
		if after := m.Status().Slots[1]; after.State != before.State || after.Digest != before.Digest {
			t.Errorf("raw slot, %s: slot B went from %s to %s", name, before.State, after.State)
		}
		if err := m.CheckImage(B, bad); !errors.Is(err, ErrImageShape) {
			t.Errorf("CheckImage, %s: %v", name, err)
		}
	}
	if !bytes.Equal(readMem(t, rig.fs, "dev/b")[:len(img)], img) {
		t.Error("raw slot content changed by a refused install")
	}

	// A raw stream into a directory slot: the old tree stays.
	base := t.TempDir()
	o := Options{StateDir: filepath.Join(base, "state"), Booted: A, Now: fixedClock(),
		A: Slot{Backend: BackendDir, Path: filepath.Join(base, "a")}, B: Slot{Backend: BackendDir, Path: filepath.Join(base, "b")}}
	os.MkdirAll(o.B.Path, 0o755)
	old := filepath.Join(o.B.Path, "previous-release")
	if err := os.WriteFile(old, []byte("good"), 0o644); err != nil {
		t.Fatal(err)
	}
	dm, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	st := dm.Status().Slots[1].State
	_, err = dm.Install(ctx, B, Image{Layers: readers(img), RawStream: true})
	if !errors.Is(err, ErrImageShape) || !strings.Contains(err.Error(), "directory slot") {
		t.Fatalf("raw stream into a directory slot: %v", err)
	}
	if b, err := os.ReadFile(old); err != nil || string(b) != "good" {
		t.Fatalf("directory slot emptied by a refused install: %v", err)
	}
	if got := dm.Status().Slots[1].State; got != st {
		t.Fatalf("directory slot went from %s to %s", st, got)
	}
}

// checkConsistent asserts the invariants after a power cut: the state file
// is readable, the booted slot A is good and untouched, and slot B is never
// "written" (or later) with content that does not match its digest.
func checkConsistent(t *testing.T, rig *memRig, after *vfs.MemFS, img []byte, step string) State {
	t.Helper()
	o := rig.o
	o.FS = after
	m, err := Open(o)
	if err != nil {
		t.Fatalf("%s: state unreadable after power cut: %v", step, err)
	}
	st := m.Status()
	if st.Slots[0].State != Good {
		t.Fatalf("%s: booted slot is %s", step, st.Slots[0].State)
	}
	if !bytes.Equal(readMem(t, after, "dev/a"), rig.aBytes) {
		t.Fatalf("%s: booted slot content changed", step)
	}
	b := st.Slots[1]
	switch b.State {
	case Empty, Writing:
	case Written, Pending, Good:
		want := fmt.Sprintf("sha256:%x", sha256.Sum256(img))
		got := fmt.Sprintf("sha256:%x", sha256.Sum256(readMem(t, after, "dev/b")[:b.Size]))
		if b.Digest != want || got != want || b.Size != int64(len(img)) {
			t.Fatalf("%s: slot B %s with digest %s, content %s, image %s", step, b.State, b.Digest, got, want)
		}
	default:
		t.Fatalf("%s: slot B in state %s", step, b.State)
	}
	return b.State
}

// TestRawInstallPowerCut cuts the power at every write and sync of a raw
// slot install followed by arming, in turn, once keeping only synced data
// and once keeping a random subset of the unsynced writes.
func TestRawInstallPowerCut(t *testing.T) {
	r := testRand(t)
	img := make([]byte, 200<<10+123)
	for i := range img {
		img[i] = byte(r.IntN(256))
	}
	defer func(c int) { rawChunk = c }(rawChunk)
	rawChunk = 16 << 10 // many writes, so that many crash points land inside the data
	digest := fmt.Sprintf("sha256:%x", sha256.Sum256(img))
	// Without an expected digest the writer hashes on the way; with one
	// (the layer's diff_id) it does not, and the read-back decides.
	for _, v := range []struct{ random, expected bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		random := v.random
		want := ""
		if v.expected {
			want = digest
		}
		seen := map[State]int{}
		for n := 0; ; n++ {
			rig := newMemRig(t)
			m, err := Open(rig.o)
			if err != nil {
				t.Fatal(err)
			}
			var cr *rand.Rand
			if random {
				cr = r
			}
			rig.fs.SetCrashAfter(n, cr)
			_, err = m.Install(context.Background(), B, Image{Layers: readers(img), RawStream: true, Digest: want})
			if err == nil {
				err = m.MarkPending(B)
			}
			after := rig.fs.Crashed()
			if after == nil {
				if err != nil {
					t.Fatal(err)
				}
				if n < 10 {
					t.Fatalf("only %d operations: the crash points did not cover the install", n)
				}
				seen[checkConsistent(t, rig, rig.fs, img, "no crash")]++
				break
			}
			if !errors.Is(err, vfs.ErrCrashed) {
				t.Fatalf("op %d: error %v does not report the power cut", n, err)
			}
			seen[checkConsistent(t, rig, after, img, fmt.Sprintf("cut at op %d (random %v, expected digest %v)", n, random, v.expected))]++
		}
		t.Logf("random=%v expected digest=%v: states after power cuts: %v", random, v.expected, seen)
		if seen[Writing] == 0 || seen[Written] == 0 || seen[Pending] == 0 {
			t.Errorf("power cuts did not land in every phase: %v", seen)
		}
	}
}

// TestTransitionPowerCut cuts the power at every operation of a sequence of
// transitions: after each cut the state is the one before or after the
// transition that was cut, never anything else.
func TestTransitionPowerCut(t *testing.T) {
	r := testRand(t)
	type step struct {
		name string
		do   func(m *Manager) error
		want State // B's state after the step
	}
	steps := []step{
		{"pending", func(m *Manager) error { return m.MarkPending(B) }, Pending},
		{"bad", func(m *Manager) error { return m.MarkBad(B, "trial boot failed") }, Bad},
		{"writing", func(m *Manager) error { return m.set(B, SlotInfo{State: Writing}) }, Writing},
		{"written", func(m *Manager) error { return m.set(B, SlotInfo{State: Written, Digest: "sha256:x"}) }, Written},
	}
	for _, random := range []bool{false, true} {
		for n := 0; ; n++ {
			rig := newMemRig(t)
			m, _ := Open(rig.o)
			if err := m.set(B, SlotInfo{State: Writing}); err != nil {
				t.Fatal(err)
			}
			if err := m.set(B, SlotInfo{State: Written, Digest: "sha256:x"}); err != nil {
				t.Fatal(err)
			}
			var cr *rand.Rand
			if random {
				cr = r
			}
			rig.fs.SetCrashAfter(n, cr)
			prev := Written
			cut := -1
			for i, s := range steps {
				if err := s.do(m); err != nil {
					if !errors.Is(err, vfs.ErrCrashed) {
						t.Fatal(err)
					}
					cut = i
					break
				}
				prev = s.want
			}
			after := rig.fs.Crashed()
			if after == nil {
				break
			}
			o := rig.o
			o.FS = after
			m2, err := Open(o)
			if err != nil {
				t.Fatalf("cut %d: %v", n, err)
			}
			got := m2.Status().Slots[1].State
			if got != prev && got != steps[cut].want {
				t.Fatalf("cut at op %d during %q: state %s, want %s or %s", n, steps[cut].name, got, prev, steps[cut].want)
			}
		}
	}
}

func TestStateFileErrors(t *testing.T) {
	for name, doc := range map[string]string{
		"garbage":   "{not json",
		"bad state": `{"version":1,"seq":1,"slots":{"A":{"state":"happy","changed":"2020-01-01T00:00:00Z"}}}`,
		"bad slot":  `{"version":1,"seq":1,"slots":{"C":{"state":"good","changed":"2020-01-01T00:00:00Z"}}}`,
		"version":   `{"version":7,"seq":1,"slots":{}}`,
	} {
		m := vfs.NewMem()
		m.MkdirAll("s", 0o755)
		vfs.WriteFileAtomic(m, "s/slots.json", []byte(doc), 0o644)
		_, err := Open(Options{FS: m, StateDir: "s", A: Slot{Backend: "raw", Path: "a"}, B: Slot{Backend: "raw", Path: "b"}})
		if !errors.Is(err, ErrStateFile) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestStateFileNewerFields: a state file written by a newer release (a
// field this one does not know, here and in a slot record) loads, as a
// rollback needs, and the fields this one knows keep their values.
func TestStateFileNewerFields(t *testing.T) {
	m := vfs.NewMem()
	m.MkdirAll("s", 0o755)
	doc := `{"version":1,"seq":4,"extra":1,"slots":{"B":{"state":"written","digest":"sha256:ab","hint":true,"changed":"2020-01-01T00:00:00Z"}}}`
	vfs.WriteFileAtomic(m, "s/slots.json", []byte(doc), 0o644)
	mgr, err := Open(Options{FS: m, StateDir: "s", A: Slot{Backend: "raw", Path: "a"}, B: Slot{Backend: "raw", Path: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	st := mgr.Status()
	if st.Seq != 4 || st.Slots[1].State != Written || st.Slots[1].Digest != "sha256:ab" {
		t.Errorf("status %+v", st)
	}
}

// TestDirInstall installs two images into directory slots in turn,
// carrying /etc changes and keeping /var outside the slots.
func TestDirInstall(t *testing.T) {
	base := t.TempDir()
	o := Options{StateDir: filepath.Join(base, "state"), Booted: A, Now: fixedClock(), VarDir: filepath.Join(base, "var"),
		A: Slot{Backend: BackendDir, Path: filepath.Join(base, "a")}, B: Slot{Backend: BackendDir, Path: filepath.Join(base, "b")}}
	for _, d := range []string{o.A.Path, o.B.Path, o.VarDir} {
		os.MkdirAll(d, 0o755)
	}
	ctx := context.Background()
	img1 := newTB().dir("etc").file("etc/hostname", "sat").file("etc/app.conf", "v1").file("etc/keep", "k").
		dir("usr").file("usr/bin", "bin1").dir("var").file("var/seed", "s").bytes()
	img2 := newTB().dir("etc").file("etc/hostname", "sat").file("etc/app.conf", "v2").file("etc/keep", "k").
		file("etc/new.conf", "n").dir("usr").file("usr/bin", "bin2").dir("var").file("var/seed", "s2").bytes()

	// Bootstrap: the factory wrote image 1 into A. Simulate by booting
	// from B (unknown) while installing A, then reboot into A.
	o.Booted = B
	mB, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mB.Install(ctx, A, Image{Label: "img1", Layers: readers(img1)}); err != nil {
		t.Fatal(err)
	}
	if seeded, err := mB.SeedVar(ctx, A); err != nil || !seeded {
		t.Fatalf("seed var: %v %v", seeded, err)
	}
	o.Booted = A
	m, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	// Local changes on the running slot A.
	os.WriteFile(filepath.Join(o.A.Path, "etc/hostname"), []byte("sat-7"), 0o644)  // local only
	os.WriteFile(filepath.Join(o.A.Path, "etc/app.conf"), []byte("tuned"), 0o644)  // both: conflict
	os.Remove(filepath.Join(o.A.Path, "etc/keep"))                                 // deleted locally
	os.WriteFile(filepath.Join(o.A.Path, "etc/local.conf"), []byte("mine"), 0o600) // added locally
	os.WriteFile(filepath.Join(o.VarDir, "log"), []byte("history"), 0o644)

	res, err := m.Install(ctx, B, Image{Label: "img2", Layers: readers(img2)})
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(o.B.Path, p))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	for p, want := range map[string]string{"etc/hostname": "sat-7", "etc/app.conf": "tuned", "etc/new.conf": "n",
		"etc/local.conf": "mine", "usr/bin": "bin2", "var/seed": "s2"} {
		if got := read(p); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(o.B.Path, "etc/keep")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("locally deleted etc/keep came back")
	}
	if res.Etc == nil || fmt.Sprint(res.Etc.Conflicts) != "[app.conf]" || fmt.Sprint(res.Etc.Kept) != "[hostname local.conf]" || fmt.Sprint(res.Etc.Deleted) != "[keep]" {
		t.Errorf("merge report %+v", res.Etc)
	}
	if b, _ := os.ReadFile(filepath.Join(o.VarDir, "log")); string(b) != "history" {
		t.Error("persistent /var changed by an install")
	}
	// The static digest ignores the merged /etc: verify passes.
	v, err := m.Verify(ctx, B)
	if err != nil || !v.OK {
		t.Fatalf("verify after merge: %+v %v", v, err)
	}
	// Bit rot in /usr is found.
	os.WriteFile(filepath.Join(o.B.Path, "usr/bin"), []byte("bin3"), 0o644)
	if v, err := m.Verify(ctx, B); err != nil || v.OK {
		t.Fatalf("corruption not found: %+v %v", v, err)
	}
	// Factory reset of B: /etc back to the image's, /var emptied.
	if err := m.FactoryReset(ctx, A, true); !errors.Is(err, ErrActiveSlot) {
		t.Fatalf("factory reset of the booted slot: %v", err)
	}
	if err := m.FactoryReset(ctx, B, true); err != nil {
		t.Fatal(err)
	}
	if got := read("etc/hostname") + read("etc/app.conf") + read("etc/keep"); got != "satv2k" {
		t.Errorf("after factory reset /etc holds %q", got)
	}
	if _, err := os.Lstat(filepath.Join(o.B.Path, "etc/local.conf")); !errors.Is(err, os.ErrNotExist) {
		t.Error("local file survived the factory reset")
	}
	if names, _ := os.ReadDir(o.VarDir); len(names) != 0 {
		t.Errorf("/var not wiped: %v", names)
	}
}

// TestDirInstallFailsHalfway: an archive that fails in the middle leaves
// the slot writing, never written.
func TestDirInstallFailsHalfway(t *testing.T) {
	base := t.TempDir()
	o := Options{StateDir: filepath.Join(base, "state"), Booted: A, Now: fixedClock(),
		A: Slot{Backend: BackendDir, Path: filepath.Join(base, "a")}, B: Slot{Backend: BackendDir, Path: filepath.Join(base, "b")}}
	os.MkdirAll(o.B.Path, 0o755)
	m, _ := Open(o)
	good := newTB().file("a", "1").file("b", "2").bytes()
	if _, err := m.Install(context.Background(), B, Image{Layers: readers(good)}); err != nil {
		t.Fatal(err)
	}
	bad := newTB().file("c", "3").file("../escape", "x").bytes()
	_, err := m.Install(context.Background(), B, Image{Layers: readers(good, bad)})
	if !errors.Is(err, ErrEscape) {
		t.Fatalf("got %v", err)
	}
	if s := m.Status().Slots[1]; s.State != Writing || s.Digest != "" {
		t.Fatalf("slot B after a failed write: %+v", s)
	}
	if _, err := m.Verify(context.Background(), B); !errors.Is(err, ErrVerify) {
		t.Fatalf("verify of a half-written slot: %v", err)
	}
	if err := m.MarkPending(B); !errors.Is(err, ErrTransition) {
		t.Fatalf("arming a half-written slot: %v", err)
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"version":1,"seq":3,"slots":{"A":{"state":"good","changed":"2020-01-01T00:00:00Z"},"B":{"state":"writing","changed":"2020-01-01T00:00:00Z"}}}`))
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeState(data)
		if err != nil {
			if !errors.Is(err, ErrStateFile) {
				t.Fatalf("error %v does not wrap ErrStateFile", err)
			}
			return
		}
		for id, info := range st.Slots {
			if (id != A && id != B) || !info.State.valid() {
				t.Fatalf("accepted slot %q state %q", id, info.State)
			}
		}
	})
}

// TestDirInstallStatePowerCut cuts the power at every operation on the
// state storage during a directory slot install (the slot itself is on the
// real filesystem): after each cut the state parses, and a slot recorded
// written holds exactly the recorded tree.
func TestDirInstallStatePowerCut(t *testing.T) {
	base := t.TempDir()
	img := newTB().dir("usr").file("usr/a", "1").symlink("usr/l", "a").file("b", "2").bytes()
	for n := 0; ; n++ {
		mfs := vfs.NewMem()
		state := filepath.Join(base, "state")
		mfs.MkdirAll(state, 0o755)
		vfs.SyncDir(mfs, filepath.Dir(state))
		slotB := filepath.Join(base, fmt.Sprint("b", n))
		os.Mkdir(slotB, 0o755)
		o := Options{FS: mfs, StateDir: state, Booted: A, Now: fixedClock(),
			A: Slot{Backend: BackendDir, Path: filepath.Join(base, "a")}, B: Slot{Backend: BackendDir, Path: slotB}}
		m, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		mfs.SetCrashAfter(n, nil)
		_, err = m.Install(context.Background(), B, Image{Layers: readers(img)})
		after := mfs.Crashed()
		if after == nil {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		o.FS = after
		m2, err := Open(o)
		if err != nil {
			t.Fatalf("cut %d: %v", n, err)
		}
		b := m2.Status().Slots[1]
		switch b.State {
		case Empty, Writing:
		case Written:
			es, err := ReadTree(context.Background(), slotB, ReadTreeOptions{})
			if err != nil || TreeDigest(es, DigestOptions{}) != b.Digest {
				t.Fatalf("cut %d: written slot does not match its digest (%v)", n, err)
			}
		default:
			t.Fatalf("cut %d: state %s", n, b.State)
		}
	}
}

// TestDirInstallExpected installs with the expected tree or digest computed
// beforehand (the writer does not hash): the read-back must match it, and
// a wrong expectation makes the slot bad, naming the path when the tree is
// known.
func TestDirInstallExpected(t *testing.T) {
	base := t.TempDir()
	o := Options{StateDir: filepath.Join(base, "state"), Booted: A, Now: fixedClock(),
		A: Slot{Backend: BackendDir, Path: filepath.Join(base, "a")}, B: Slot{Backend: BackendDir, Path: filepath.Join(base, "b")}}
	os.MkdirAll(o.B.Path, 0o755)
	m, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	img := newTB().dir("usr").file("usr/a", "1").symlink("usr/l", "a").link("usr/h", "usr/a").file("etc/c", "2").bytes()
	other := newTB().dir("usr").file("usr/a", "X").symlink("usr/l", "a").link("usr/h", "usr/a").file("etc/c", "2").bytes()
	want, err := ExpectedTree(ctx, readers(img), ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	digest := TreeDigest(want.Entries, DigestOptions{})
	wrong, err := ExpectedTree(ctx, readers(other), ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		img    Image
		detail string // "" for success
	}{
		{"tree", Image{Tree: want.Entries}, ""},
		{"digest", Image{Digest: digest}, ""},
		{"tree and digest", Image{Tree: want.Entries, Digest: digest}, ""},
		{"wrong tree", Image{Tree: wrong.Entries}, "usr/a: want"},
		{"wrong digest", Image{Digest: TreeDigest(wrong.Entries, DigestOptions{})}, "file contents differ"},
	} {
		tc.img.Layers = readers(img)
		res, err := m.Install(ctx, B, tc.img)
		s := m.Status().Slots[1]
		if tc.detail == "" {
			if err != nil || res.Digest != digest || s.State != Written || s.Digest != digest {
				t.Fatalf("%s: %v, state %+v", tc.name, err, s)
			}
			if res.Files != want.Files || res.Bytes != want.Bytes {
				t.Errorf("%s: %d files %d bytes, want %d %d", tc.name, res.Files, res.Bytes, want.Files, want.Bytes)
			}
			continue
		}
		if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), tc.detail) || s.State != Bad {
			t.Fatalf("%s: %v, state %s", tc.name, err, s.State)
		}
	}
	// A tree and a digest that disagree are refused before anything is
	// written.
	before := m.Status().Slots[1]
	_, err = m.Install(ctx, B, Image{Layers: readers(img), Tree: want.Entries, Digest: TreeDigest(wrong.Entries, DigestOptions{})})
	if !errors.Is(err, ErrVerify) || m.Status().Slots[1].State != before.State {
		t.Fatalf("tree and digest disagree: %v, state %s", err, m.Status().Slots[1].State)
	}
}

// TestPrepare: emptying the inactive slot ahead of an install records it
// writing and leaves only lost+found; the booted slot is refused.
func TestPrepare(t *testing.T) {
	base := t.TempDir()
	o := Options{StateDir: filepath.Join(base, "state"), Booted: A, Now: fixedClock(),
		A: Slot{Backend: BackendDir, Path: filepath.Join(base, "a")}, B: Slot{Backend: BackendDir, Path: filepath.Join(base, "b")}}
	os.MkdirAll(filepath.Join(o.B.Path, "lost+found"), 0o700)
	os.WriteFile(filepath.Join(o.B.Path, "lost+found", "#12"), []byte("fsck"), 0o600)
	m, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	img := newTB().dir("usr").file("usr/a", "1").symlink("usr/l", "/").file("b", "2").bytes()
	if _, err := m.Install(ctx, B, Image{Layers: readers(img)}); err != nil {
		t.Fatal(err)
	}
	if err := m.Prepare(ctx, A); !errors.Is(err, ErrActiveSlot) {
		t.Fatalf("prepare of the booted slot: %v", err)
	}
	if err := m.Prepare(ctx, B); err != nil {
		t.Fatal(err)
	}
	if s := m.Status().Slots[1]; s.State != Writing || s.Digest != "" {
		t.Fatalf("after prepare: %+v", s)
	}
	names, _ := os.ReadDir(o.B.Path)
	if len(names) != 1 || names[0].Name() != "lost+found" {
		t.Fatalf("slot holds %v after prepare", names)
	}
	if b, err := os.ReadFile(filepath.Join(o.B.Path, "lost+found", "#12")); err != nil || string(b) != "fsck" {
		t.Fatalf("lost+found touched: %q %v", b, err)
	}
	want, err := ExpectedTree(ctx, readers(img), ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Install(ctx, B, Image{Layers: readers(img), Tree: want.Entries}); err != nil || m.Status().Slots[1].State != Written {
		t.Fatalf("install after prepare: %v", err)
	}
}
