package flightd

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
)

// updateRand returns the test's generator, its seed logged (BOOTORBIT_SEED
// replays it; every subtest has its own, see internal/testrand).
func updateRand(t *testing.T) *rand.Rand {
	t.Helper()
	return testrand.New(t)
}

func fixedNow() time.Time { return time.Unix(1800000000, 0).UTC() }

var discard = slog.New(slog.DiscardHandler)

// envFS is watchdog's storage on a vfs.FS: the bootloader environment on
// the same crashable disk as the slots and their state.
type envFS struct{ fs vfs.FS }

func (e envFS) Open(path string, writable bool) (watchdog.File, error) {
	var f vfs.File
	var err error
	if writable {
		f, err = e.fs.OpenRW(path)
	} else {
		f, err = e.fs.Open(path)
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

// envKind is one bootloader environment backend on a MemFS.
type envKind struct {
	name  string
	files map[string]int // file -> size, created zeroed (GRUB: an empty block)
	open  func(fsys vfs.FS) watchdog.Env
}

func envKinds() []envKind {
	const n = 4096
	return []envKind{
		{"uboot-redundant", map[string]int{"boot/env1": n, "boot/env2": n}, func(fsys vfs.FS) watchdog.Env {
			return &watchdog.UBootEnv{Copies: []watchdog.UBootLocation{{Path: "boot/env1", Size: n}, {Path: "boot/env2", Size: n}}, FS: envFS{fsys}}
		}},
		{"uboot-single", map[string]int{"boot/env": n}, func(fsys vfs.FS) watchdog.Env {
			return &watchdog.UBootEnv{Copies: []watchdog.UBootLocation{{Path: "boot/env", Size: n}}, FS: envFS{fsys}}
		}},
		{"grub", map[string]int{"boot/grubenv": watchdog.GRUBEnvSize}, func(fsys vfs.FS) watchdog.Env {
			return &watchdog.GRUBEnv{Path: "boot/grubenv", FS: envFS{fsys}}
		}},
	}
}

const attempts = 3

// factoryEnv is what a board leaves the factory with: its own boot
// commands and no protocol variables, so the scripts' defaults apply
// (BOOT_ORDER "A B": the empty slot B is bootable until flightd first
// starts and drops it).
var factoryEnv = watchdog.Vars{"bootcmd": "run bootorbit", "bootdelay": "0"}

// updateRig describes one power-cut campaign: where the slots live, the
// environment backend, what slot B holds at the start, and whether the new
// image comes up healthy or hangs.
type updateRig struct {
	t      *testing.T
	kind   envKind
	img    []byte // the new image (raw bytes, or a layer tar for dir slots)
	oldB   []byte // nil: B starts empty; else B starts good with this image
	hang   bool
	dir    bool   // directory slots on the real filesystem
	base   string // dir: where the slot directories live
	aBytes []byte // raw: slot A's content; dir: A's tree digest as bytes
	slotSz int64

	newDigest, oldDigest string
	slotB                string // dir: this run's slot B directory

	bootsB     int             // boots of slot B since the counter was reset
	recordEnvs bool            // record every environment saved in envs
	envs       []watchdog.Vars // the initial one and every one the reference run saved
}

func (r *updateRig) slotOptions(fsys vfs.FS, booted slots.SlotID) slots.Options {
	o := slots.Options{FS: fsys, StateDir: "state", Booted: booted, Now: fixedNow, Log: discard}
	if r.dir {
		o.A = slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(r.base, "a")}
		o.B = slots.Slot{Backend: slots.BackendDir, Path: r.slotB}
		o.Extract.Sync = slots.SyncNone // the real filesystem does not crash here; keep it fast
	} else {
		o.A = slots.Slot{Backend: slots.BackendRaw, Path: "dev/a", Size: r.slotSz}
		o.B = slots.Slot{Backend: slots.BackendRaw, Path: "dev/b", Size: r.slotSz}
	}
	return o
}

// recordingEnv records every environment a successful Save wrote.
type recordingEnv struct {
	watchdog.Env
	saved *[]watchdog.Vars
}

func (e recordingEnv) Save(v watchdog.Vars) error {
	if err := e.Env.Save(v); err != nil {
		return err
	}
	*e.saved = append(*e.saved, v.Clone())
	return nil
}

// env opens the environment on fsys; during the reference run every
// environment written is recorded in r.envs.
func (r *updateRig) env(fsys vfs.FS) watchdog.Env {
	e := r.kind.open(fsys)
	if r.recordEnvs {
		return recordingEnv{e, &r.envs}
	}
	return e
}

func (r *updateRig) updater(fsys vfs.FS, booted slots.SlotID) (*Updater, error) {
	m, err := slots.Open(r.slotOptions(fsys, booted))
	if err != nil {
		return nil, err
	}
	return &Updater{Slots: m, Boot: &watchdog.BootControl{Env: r.env(fsys), Attempts: attempts}, Booted: booted, Log: discard}, nil
}

// snapshot reads both stores of fsys as an updater booted from booted
// sees them; where names the moment in a failure.
func (r *updateRig) snapshot(t *testing.T, fsys vfs.FS, booted slots.SlotID, where string) (map[slots.SlotID]slots.SlotInfo, watchdog.Status) {
	t.Helper()
	u, err := r.updater(fsys, booted)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	st, ws, err := u.snapshot()
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return st, ws
}

func (r *updateRig) image() slots.Image {
	if r.dir {
		return slots.Image{Label: "v2", Layers: []io.Reader{bytes.NewReader(r.img)}, Digest: r.newDigest}
	}
	return slots.Image{Label: "v2", Layers: []io.Reader{bytes.NewReader(r.img)}, RawStream: true, Digest: r.newDigest}
}

func mustT(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeMem(t *testing.T, m vfs.FS, name string, data []byte) {
	t.Helper()
	f, err := m.Create(name, 0o600)
	mustT(t, err)
	_, err = f.Write(data)
	mustT(t, err)
	mustT(t, f.Sync())
	mustT(t, f.Close())
}

func readAllMem(t *testing.T, m vfs.FS, name string) []byte {
	t.Helper()
	f, err := m.Open(name)
	mustT(t, err)
	defer f.Close()
	fi, err := f.Stat()
	mustT(t, err)
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

// newDisk builds the board's storage: slots, slot state, environment, all
// durable. Slot A is booted and good; B is empty or good with oldB.
func (r *updateRig) newDisk(n int) *vfs.MemFS {
	t := r.t
	m := vfs.NewMem()
	for _, d := range []string{"state", "dev", "boot"} {
		mustT(t, m.MkdirAll(d, 0o755))
	}
	if r.dir {
		r.slotB = filepath.Join(r.base, fmt.Sprint("b", n))
		mustT(t, os.MkdirAll(r.slotB, 0o755))
		if r.oldB != nil {
			mustT(t, extractTar(r.slotB, r.oldB))
		}
	} else {
		writeMem(t, m, "dev/a", padTo(r.aBytes, r.slotSz))
		b := make([]byte, r.slotSz)
		copy(b, r.oldB)
		writeMem(t, m, "dev/b", b)
	}
	for name, size := range r.kind.files {
		block := make([]byte, size)
		if r.kind.name == "grub" {
			blk, err := watchdog.NewGRUBBlock(size)
			mustT(t, err)
			block, err = blk.Bytes()
			mustT(t, err)
		}
		writeMem(t, m, name, block)
	}
	for _, d := range []string{"state", "dev", "boot", "/"} {
		mustT(t, vfs.SyncDir(m, d))
	}
	env := r.kind.open(m)
	v := factoryEnv.Clone()
	if r.oldB != nil {
		// B holds the previous release, proven good: both slots bootable.
		v[watchdog.VarBootOrder] = "A B"
		v[watchdog.LeftVar("A")], v[watchdog.LeftVar("B")] = "3", "3"
		info := slots.SlotInfo{State: slots.Good, Image: "v1", Changed: fixedNow()}
		if r.dir {
			info.Digest = r.oldDigest
			info.StaticDigest = r.oldDigest
		} else {
			info.Digest, info.Size = r.oldDigest, int64(len(r.oldB))
		}
		doc := fmt.Sprintf(`{"version": 1, "seq": 1, "slots": {"A": {"state": "good", "changed": "2027-01-15T08:00:00Z"}, "B": %s}}`, mustJSON(t, info))
		mustT(t, vfs.WriteFileAtomic(m, "state/slots.json", []byte(doc), 0o644))
	}
	for range 2 { // both redundant copies valid
		mustT(t, env.Save(v))
	}
	if r.recordEnvs {
		r.envs = append(r.envs, v)
	}
	return m
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	mustT(t, err)
	return string(b)
}

func padTo(b []byte, n int64) []byte {
	out := make([]byte, n)
	copy(out, b)
	return out
}

// board is the virtual flight computer: its disk, the running slot, and
// flightd's policy at every start (Reconcile; Commit when the running image
// is healthy; install the new image from A when it is not there yet).
type board struct {
	r      *updateRig
	fs     *vfs.MemFS
	booted slots.SlotID
	step   string // what runs now, for labelling crash points
	boots  int
}

// healthy reports whether the running image passes its health checks:
// A always, B only in the healthy variant.
func (b *board) healthy() bool { return b.booted == slots.A || !b.r.hang }

// done reports whether the update reached its end state: the new image
// booted and committed, or (hang) A running and B recorded bad.
func (b *board) done(st map[slots.SlotID]slots.SlotInfo, ws watchdog.Status) bool {
	if b.r.hang {
		return b.booted == slots.A && st[slots.B].State == slots.Bad && !slices.Contains(ws.Order, "B") && ws.TrialSlot == ""
	}
	return b.booted == slots.B && st[slots.B].State == slots.Good && st[slots.B].Image == "v2" && ws.TrialSlot == ""
}

// start is one boot's run of flightd: Reconcile, health checks, Commit,
// then (on A) the install if the new image is not installed or armed.
func (b *board) start() (bool, error) {
	u, err := b.r.updater(b.fs, b.booted)
	if err != nil {
		return false, err
	}
	b.step = "reconcile@" + string(b.booted)
	if _, err := u.Reconcile(); err != nil {
		return false, err
	}
	if b.healthy() {
		b.step = "commit@" + string(b.booted)
		if err := u.Commit(); err != nil {
			return false, err
		}
	}
	st, ws, err := u.snapshot()
	if err != nil {
		return false, err
	}
	if b.done(st, ws) {
		return true, nil
	}
	if b.booted == slots.A && st[slots.B].State != slots.Pending && !(b.r.hang && st[slots.B].State == slots.Bad && st[slots.B].Image == "v2") {
		b.step = "install"
		if _, err := u.Install(context.Background(), slots.B, b.r.image()); err != nil {
			return false, err
		}
	}
	return false, nil
}

// reboot runs the bootloader model on the environment.
func (b *board) reboot() error {
	b.step = "bootloader"
	for {
		d, err := (watchdog.BootloaderModel{Attempts: attempts}).Boot(b.r.env(b.fs))
		if err != nil {
			return err
		}
		if b.fs.Crashed() != nil {
			return vfs.ErrCrashed // the decision was never acted on
		}
		b.boots++
		if !d.Reset {
			b.booted = slots.SlotID(d.Slot)
			if b.booted == slots.B {
				b.r.bootsB++
			}
			return nil
		}
	}
}

// run drives the board until the update is done, at most maxBoots boots.
func (b *board) run(maxBoots int) error {
	for {
		ok, err := b.start()
		if err != nil || ok {
			return err
		}
		if b.boots >= maxBoots {
			return fmt.Errorf("not converged after %d boots (booted %s)", b.boots, b.booted)
		}
		if err := b.reboot(); err != nil {
			return err
		}
	}
}

// checkSlotContent asserts that slot id's content is what its state
// records: for written, pending and good, the bytes (raw) or the tree
// (dir) read back equal the recorded digest, which is the old or new image.
func (r *updateRig) checkSlotContent(t *testing.T, fsys vfs.FS, id slots.SlotID, info slots.SlotInfo, where string) {
	t.Helper()
	if id == slots.A {
		r.checkA(t, fsys, where)
		return
	}
	switch info.State {
	case slots.Written, slots.Pending, slots.Good:
	default:
		return
	}
	if info.Digest != r.newDigest && info.Digest != r.oldDigest {
		t.Fatalf("%s: slot B %s records digest %s, neither the new image's %s nor the old %s", where, info.State, info.Digest, r.newDigest, r.oldDigest)
	}
	var got string
	if r.dir {
		es, err := slots.ReadTree(context.Background(), r.slotB, slots.ReadTreeOptions{})
		mustT(t, err)
		got = slots.TreeDigest(es, slots.DigestOptions{})
	} else {
		data := readAllMem(t, fsys, "dev/b")
		if info.Size > int64(len(data)) {
			t.Fatalf("%s: slot B records %d bytes, holds %d", where, info.Size, len(data))
		}
		got = sha(data[:info.Size])
	}
	if got != info.Digest {
		t.Fatalf("%s: slot B is %s recorded %s but holds %s", where, info.State, info.Digest, got)
	}
}

func (r *updateRig) checkA(t *testing.T, fsys vfs.FS, where string) {
	t.Helper()
	if r.dir {
		es, err := slots.ReadTree(context.Background(), filepath.Join(r.base, "a"), slots.ReadTreeOptions{})
		mustT(t, err)
		if d := slots.TreeDigest(es, slots.DigestOptions{Mtimes: true}); d != string(r.aBytes) {
			t.Fatalf("%s: slot A changed: %s, was %s", where, d, r.aBytes)
		}
		return
	}
	a := readAllMem(t, fsys, "dev/a")
	if int64(len(a)) != r.slotSz || !bytes.Equal(a[:len(r.aBytes)], r.aBytes) || slices.ContainsFunc(a[len(r.aBytes):], func(c byte) bool { return c != 0 }) {
		t.Fatalf("%s: slot A's bytes changed", where)
	}
}

// checkConsistent asserts the invariant after Reconcile: the environment
// can boot only pending or good slots, a trial slot other than the booted
// one is pending, every recorded content matches, and a booted pending slot
// is reported as a trial.
func (r *updateRig) checkConsistent(t *testing.T, fsys vfs.FS, booted slots.SlotID, res *ReconcileResult, where string) map[slots.SlotID]slots.SlotInfo {
	t.Helper()
	st, ws := r.snapshot(t, fsys, booted, where)
	if st[slots.A].State != slots.Good {
		t.Fatalf("%s: slot A is %s", where, st[slots.A].State)
	}
	for _, x := range ws.Order {
		if s := st[slots.SlotID(x)].State; s != slots.Pending && s != slots.Good {
			t.Fatalf("%s: environment %v can boot slot %s, which is %s", where, ws, x, s)
		}
	}
	if ws.TrialSlot != "" && ws.TrialSlot != string(booted) && st[slots.SlotID(ws.TrialSlot)].State != slots.Pending {
		t.Fatalf("%s: trial slot %s is %s", where, ws.TrialSlot, st[slots.SlotID(ws.TrialSlot)].State)
	}
	if st[booted].State == slots.Pending && !res.Trial {
		t.Fatalf("%s: booted slot %s is pending and Reconcile did not report a trial", where, booted)
	}
	if len(res.Warnings) > 0 {
		t.Fatalf("%s: warnings %v", where, res.Warnings)
	}
	for _, id := range []slots.SlotID{slots.A, slots.B} {
		r.checkSlotContent(t, fsys, id, st[id], where)
	}
	return st
}

func (r *updateRig) checkBootable(t *testing.T, fsys vfs.FS, booted slots.SlotID, where string) {
	t.Helper()
	st, ws := r.snapshot(t, fsys, booted, where)
	v, err := r.kind.open(fsys).Load()
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	for _, x := range ws.Order {
		s := st[slots.SlotID(x)].State
		failedTrial := s == slots.Bad && ws.TrialSlot == x && ws.Left[x] == 0
		// The factory environment (no BOOT_ORDER: the scripts' "A B")
		// names the empty slot until flightd's first start drops it.
		factory := s == slots.Empty && v[watchdog.VarBootOrder] == ""
		if s != slots.Pending && s != slots.Good && !failedTrial && !factory {
			t.Fatalf("%s: before reconcile, environment (order %v, left %v, trial %q) can boot slot %s, which is %s", where, ws.Order, ws.Left, ws.TrialSlot, x, s)
		}
	}
}

// powercutStats counts, per crash label, the states slot B was found in
// after the cut and Reconcile.
type powercutStats struct {
	cuts    int
	byLabel map[string]map[string]int
}

func (p *powercutStats) add(label, outcome string) {
	if p.byLabel == nil {
		p.byLabel = map[string]map[string]int{}
	}
	if p.byLabel[label] == nil {
		p.byLabel[label] = map[string]int{}
	}
	p.byLabel[label][outcome]++
	p.cuts++
}

func (p *powercutStats) String() string {
	var ls []string
	for l := range p.byLabel {
		ls = append(ls, l)
	}
	sort.Strings(ls)
	var b strings.Builder
	for _, l := range ls {
		var os []string
		for o, n := range p.byLabel[l] {
			os = append(os, fmt.Sprintf("%s=%d", o, n))
		}
		sort.Strings(os)
		fmt.Fprintf(&b, "\n  %-34s %s", l, strings.Join(os, " "))
	}
	return b.String()
}

// class names the storage an operation touched.
func class(name string) string {
	switch {
	case strings.HasPrefix(name, "dev/a"):
		return "SLOT-A"
	case strings.HasPrefix(name, "dev/b"):
		return "slot"
	case strings.HasPrefix(name, "state"):
		return "state"
	case strings.HasPrefix(name, "boot"):
		return "env"
	}
	return name
}

// powerCutCampaign runs the whole update once without a cut, labelling
// every mutating operation, then once per operation with the power cut
// there; after every cut it "reboots" and checks the invariants, then
// finishes the update from there and checks that it converges.
func powerCutCampaign(t *testing.T, r *updateRig, rnd *rand.Rand) *powercutStats {
	// Reference run: the label of every mutating operation.
	// A label is step/storageK:op, K counting the step's durable updates
	// of that storage (a state file replacement ends with the sync of its
	// directory, an environment save with the sync of its copy), so that
	// install/state2 is the record of "written", install/state3 "pending".
	var labels []string
	r.recordEnvs, r.envs = true, nil
	ref := &board{r: r, fs: r.newDisk(-1), booted: slots.A}
	lastStep, done := "", map[string]int{}
	ref.fs.Inject = func(op vfs.Op, name string) error {
		if op == vfs.OpRead || op == vfs.OpOpen {
			return nil
		}
		if ref.step != lastStep {
			lastStep, done = ref.step, map[string]int{}
		}
		c := class(name)
		labels = append(labels, fmt.Sprintf("%s/%s%d:%s", ref.step, c, done[c]+1, op))
		if op == vfs.OpSync && (c == "env" || c == "slot" || name == "state") {
			done[c]++
		}
		return nil
	}
	if err := ref.run(20); err != nil {
		t.Fatalf("update without power cut: %v", err)
	}
	ref.fs.Inject = nil
	r.recordEnvs = false
	for _, l := range labels {
		if strings.Contains(l, "SLOT-A") {
			t.Fatalf("the update wrote to the booted slot A: %s", l)
		}
	}
	if len(labels) < 10 {
		t.Fatalf("only %d operations: the crash points cover nothing", len(labels))
	}

	stats := &powercutStats{}
	for n := 0; n < len(labels); n++ {
		r.bootsB = 0
		b := &board{r: r, fs: r.newDisk(n), booted: slots.A}
		b.fs.SetCrashAfter(n, rnd)
		err := b.run(20)
		after := b.fs.Crashed()
		if after == nil {
			t.Fatalf("cut %d (%s): no power cut happened (run: %v)", n, labels[n], err)
		}
		if !errors.Is(err, vfs.ErrCrashed) {
			t.Fatalf("cut %d (%s): error %v does not report the power cut", n, labels[n], err)
		}
		where := fmt.Sprintf("%s %s cut %d at %s (booted %s)", r.kind.name, variantName(r), n, labels[n], b.booted)

		booted, outcome := r.afterCut(t, after, b.booted, where)
		stats.add(labels[n], outcome)
		// Finishing the update from there converges.
		nb := &board{r: r, fs: after, booted: booted}
		if err := nb.run(30); err != nil {
			t.Fatalf("%s: finishing the update: %v", where, err)
		}
		r.checkConsistent(t, after, nb.booted, &ReconcileResult{Trial: true}, where+": at the end")
		// A hanging image gets its N attempts, never more: a power cut
		// must not let an abandoned trial be armed again.
		if r.hang && r.bootsB > attempts {
			t.Fatalf("%s: the hanging slot B was booted %d times, more than its %d attempts", where, r.bootsB, attempts)
		}
	}
	return stats
}

// afterCut checks the disk a power cut left, "reboots" it through the
// bootloader model and runs Reconcile on the slot booted; it returns that
// slot and slot B's state as an outcome label.
func (r *updateRig) afterCut(t *testing.T, after *vfs.MemFS, booted slots.SlotID, where string) (slots.SlotID, string) {
	t.Helper()
	// The environment loads, old or new, never corrupt.
	v, err := r.kind.open(after).Load()
	if err != nil {
		t.Fatalf("%s: environment does not load: %v", where, err)
	}
	if r.envs != nil && !slices.ContainsFunc(r.envs, v.Equal) {
		t.Fatalf("%s: the environment is neither the initial one nor one that was saved:\n%s", where, v)
	}
	// Even before Reconcile, the environment can boot only slots whose
	// state is pending or good; the one exception is a failed trial
	// recorded bad and not yet dropped (0 attempts left: bootable only
	// after a counter reset), which Reconcile finishes.
	r.checkBootable(t, after, booted, where)
	// The slot A is untouched; whatever the bootloader boots next is
	// complete and verified content.
	r.checkA(t, after, where)
	nb := &board{r: r, fs: after, booted: booted}
	if err := nb.reboot(); err != nil {
		t.Fatalf("%s: bootloader: %v", where, err)
	}
	u, err := r.updater(after, nb.booted)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	st := u.Slots.Status().Slots
	bootedInfo := st[slotIndex(nb.booted)].SlotInfo
	if s := bootedInfo.State; s != slots.Pending && s != slots.Good {
		t.Fatalf("%s: the bootloader boots slot %s, which is %s", where, nb.booted, s)
	}
	r.checkSlotContent(t, after, nb.booted, bootedInfo, where+": booted by the bootloader")
	// After Reconcile the two stores agree.
	res, err := u.Reconcile()
	if err != nil {
		t.Fatalf("%s: reconcile: %v", where, err)
	}
	st2 := r.checkConsistent(t, after, nb.booted, res, where+": after reconcile")
	outcome := string(st2[slots.B].State)
	if nb.booted == slots.B {
		outcome = "booted-B-" + outcome
	}
	return nb.booted, outcome
}

func variantName(r *updateRig) string {
	s := "healthy"
	if r.hang {
		s = "hang"
	}
	if r.oldB != nil {
		s += "/B-old-good"
	} else {
		s += "/B-empty"
	}
	return s
}

// requireLabels fails unless cuts landed in every phase named.
func requireLabels(t *testing.T, stats *powercutStats, want []string) {
	t.Helper()
	for _, w := range want {
		found := false
		for l := range stats.byLabel {
			if strings.HasPrefix(l, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("no power cut landed in %q: %v", w, stats)
		}
	}
}

func rawImage(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestUpdatePowerCut cuts the power at every write and sync of a whole
// update (first start, install into raw slot B, reboot through the
// bootloader model, trial boot, commit; or the hanging image booted N times
// and abandoned), on one crashable disk holding both raw slots, the slot
// state and the bootloader environment, for each environment backend; once
// keeping only synced data and once a random subset of the unsynced writes
// (in the default run for the redundant U-Boot environment only, whose
// saves have the most to lose from a surviving unsynced write; with
// -long for every backend, with 4 MiB images).
func TestUpdatePowerCut(t *testing.T) {
	// slots writes raw slots in 1 MiB chunks: the default image is one
	// write and one sync; the long campaign's is five writes.
	imgSize, slotSize := 200<<10+123, int64(256<<10)
	if testrand.Long() {
		imgSize, slotSize = 4<<20+123, 5<<20
	}
	for ki, kind := range envKinds() {
		for _, hang := range []bool{false, true} {
			for _, old := range []bool{false, true} {
				for _, random := range []bool{false, true} {
					if random && ki > 0 && !testrand.Long() {
						continue // the default run keeps random survivors for the flight backend only
					}
					name := fmt.Sprintf("%s/hang=%v/oldB=%v/random=%v", kind.name, hang, old, random)
					t.Run(name, func(t *testing.T) {
						rnd := updateRand(t)
						r := &updateRig{t: t, kind: kind, hang: hang, slotSz: slotSize}
						r.aBytes = rawImage(rnd, imgSize-4096)
						r.img = rawImage(rnd, imgSize)
						r.newDigest = sha(r.img)
						if old {
							r.oldB = rawImage(rnd, imgSize/2)
							r.oldDigest = sha(r.oldB)
						}
						var cr *rand.Rand
						if random {
							cr = rnd
						}
						stats := powerCutCampaign(t, r, cr)
						t.Logf("%d cut points; slot B after cut + reconcile, per cut point label:%v", stats.cuts, stats)
						// install: state1 writing, slot data, state2 written,
						// state3 pending, the last env save arms B (the first
						// drops the old B when it was bootable).
						want := []string{"install/state1:", "install/slot1:write", "install/slot1:sync", "install/state2:", "install/state3:",
							"install/env1:write", "install/env1:sync", "bootloader/env1:write", "bootloader/env1:sync"}
						if old {
							want = append(want, "install/env2:write")
						} else {
							want = append(want, "reconcile@A/env1:write") // drops the empty B from the factory order
						}
						if hang {
							// the fallback: B recorded bad, then dropped
							want = append(want, "reconcile@A/state1:", "reconcile@A/env1:")
						} else {
							want = append(want, "commit@B/env1:write", "commit@B/env1:sync", "commit@B/state1:")
						}
						requireLabels(t, stats, want)
					})
				}
			}
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// layerTar is a small root filesystem layer.
func layerTar(t *testing.T, files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	mustT(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "usr/", Mode: 0o755, ModTime: fixedNow(), Uid: os.Getuid(), Gid: os.Getgid()}))
	for _, n := range names {
		mustT(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(files[n])), ModTime: fixedNow(), Uid: os.Getuid(), Gid: os.Getgid()}))
		_, err := tw.Write([]byte(files[n]))
		mustT(t, err)
	}
	mustT(t, tw.Close())
	return buf.Bytes()
}

func extractTar(dir string, layer []byte) error {
	_, err := slots.ExtractLayers(context.Background(), dir, []io.Reader{bytes.NewReader(layer)}, slots.ExtractOptions{Sync: slots.SyncNone})
	return err
}

func treeDigestOf(t *testing.T, layer []byte) string {
	res, err := slots.ExpectedTree(context.Background(), []io.Reader{bytes.NewReader(layer)}, slots.ExtractOptions{})
	mustT(t, err)
	return slots.TreeDigest(res.Entries, slots.DigestOptions{})
}

// TestUpdatePowerCutDirSlots is the same campaign with directory slots on
// the real filesystem (the extractor uses raw syscalls, not vfs, so the
// cuts land in the slot state and the environment only, with the U-Boot
// redundant environment), like slots' TestDirInstallStatePowerCut.
func TestUpdatePowerCutDirSlots(t *testing.T) {
	for _, hang := range []bool{false, true} {
		for _, random := range []bool{false, true} {
			t.Run(fmt.Sprintf("hang=%v/random=%v", hang, random), func(t *testing.T) {
				rnd := updateRand(t)
				base := t.TempDir()
				r := &updateRig{t: t, kind: envKinds()[0], hang: hang, dir: true, base: base}
				a := layerTar(t, map[string]string{"usr/a": "image A", "usr/bin/sh": "sh A"})
				mustT(t, os.MkdirAll(filepath.Join(base, "a"), 0o755))
				mustT(t, extractTar(filepath.Join(base, "a"), a))
				es, err := slots.ReadTree(context.Background(), filepath.Join(base, "a"), slots.ReadTreeOptions{})
				mustT(t, err)
				r.aBytes = []byte(slots.TreeDigest(es, slots.DigestOptions{Mtimes: true}))
				r.img = layerTar(t, map[string]string{"usr/a": "image B v2", "usr/bin/sh": "sh v2", "usr/lib/x": strings.Repeat("x", 5000)})
				r.newDigest = treeDigestOf(t, r.img)
				r.oldB = layerTar(t, map[string]string{"usr/a": "image B v1"})
				r.oldDigest = treeDigestOf(t, r.oldB)
				var cr *rand.Rand
				if random {
					cr = rnd
				}
				stats := powerCutCampaign(t, r, cr)
				t.Logf("%d cut points; slot B after cut + reconcile, per cut point label:%v", stats.cuts, stats)
				want := []string{"install/state1:", "install/state2:", "install/state3:", "install/env1:write", "install/env2:write", "bootloader/env1:write"}
				if hang {
					want = append(want, "reconcile@A/state1:", "reconcile@A/env1:")
				} else {
					want = append(want, "commit@B/env1:write", "commit@B/state1:")
				}
				requireLabels(t, stats, want)
			})
		}
	}
}

// TestUpdateRepeatedPowerCuts cuts the power several times in one update,
// at random operations (up to three cuts before the update may finish, so
// that slot A, which is marked good again only by a Commit, keeps boot
// attempts), on raw slots with every environment backend and both
// variants: after every cut the checks of the single-cut campaign hold, and
// the update converges once the power stays on. The seed is logged.
func TestUpdateRepeatedPowerCuts(t *testing.T) {
	rnd := updateRand(t)
	runs := 48
	if testrand.Long() {
		runs = 1200
	}
	kinds := envKinds()
	cutsTotal := 0
	for i := range runs {
		kind := kinds[i%len(kinds)]
		r := &updateRig{t: t, kind: kind, hang: i/3%2 == 1, slotSz: 64 << 10}
		r.aBytes = rawImage(rnd, 40<<10)
		r.img = rawImage(rnd, 50<<10+7)
		r.newDigest = sha(r.img)
		if i/6%2 == 1 {
			r.oldB = rawImage(rnd, 30<<10)
			r.oldDigest = sha(r.oldB)
		}
		var cr *rand.Rand
		if i/12%2 == 1 {
			cr = rnd
		}
		fs, booted := r.newDisk(i), slots.A
		var trail []string
		for c := range 1 + rnd.IntN(3) {
			b := &board{r: r, fs: fs, booted: booted}
			n := rnd.IntN(45 >> c) // later cuts sooner: the rest of the update is shorter
			fs.SetCrashAfter(n, cr)
			err := b.run(20)
			after := fs.Crashed()
			if after == nil {
				if err != nil {
					t.Fatalf("run %d: %v", i, err)
				}
				fs.SetCrashAfter(-1, nil)
				break // the update finished before the cut
			}
			if !errors.Is(err, vfs.ErrCrashed) {
				t.Fatalf("run %d cut %d: error %v does not report the power cut", i, c, err)
			}
			cutsTotal++
			trail = append(trail, fmt.Sprintf("%s+%d", b.step, n))
			where := fmt.Sprintf("run %d (%s %s, random %v) cuts %v (booted %s)", i, kind.name, variantName(r), cr != nil, trail, b.booted)
			booted, _ = r.afterCut(t, after, b.booted, where)
			fs = after
		}
		b := &board{r: r, fs: fs, booted: booted}
		where := fmt.Sprintf("run %d (%s %s, random %v) cuts %v", i, kind.name, variantName(r), cr != nil, trail)
		if err := b.run(30); err != nil {
			t.Fatalf("%s: finishing the update: %v", where, err)
		}
		r.checkConsistent(t, fs, b.booted, &ReconcileResult{Trial: true}, where+": at the end")
	}
	t.Logf("%d runs, %d power cuts", runs, cutsTotal)
	if cutsTotal < runs {
		t.Errorf("only %d cuts in %d runs", cutsTotal, runs)
	}
}

// TestDisarmPowerCut cuts the power at every operation of Disarm of an
// armed slot: after each cut and Reconcile, the slot is either still armed
// (pending, the next boot tries it) or disarmed (bad, not bootable).
func TestDisarmPowerCut(t *testing.T) {
	rnd := updateRand(t)
	for _, random := range []bool{false, true} {
		r := &updateRig{t: t, kind: envKinds()[0], slotSz: 64 << 10}
		r.aBytes = rawImage(rnd, 30<<10)
		r.img = rawImage(rnd, 40<<10)
		r.newDigest = sha(r.img)
		var cr *rand.Rand
		if random {
			cr = rnd
		}
		seen := map[string]int{}
		for n := 0; ; n++ {
			fs := r.newDisk(n)
			u, err := r.updater(fs, slots.A)
			mustT(t, err)
			if _, err := u.Reconcile(); err != nil {
				t.Fatal(err)
			}
			if _, err := u.Install(context.Background(), slots.B, r.image()); err != nil {
				t.Fatal(err)
			}
			fs.SetCrashAfter(n, cr)
			err = u.Disarm(slots.B, "test")
			after := fs.Crashed()
			where := fmt.Sprintf("random %v cut %d", random, n)
			if after == nil {
				if err != nil {
					t.Fatal(err)
				}
				st, ws, err := u.snapshot()
				mustT(t, err)
				if b := st[slots.B]; b.State != slots.Bad || b.Reason != "disarmed: test" || bootable(ws, slots.B) {
					t.Fatalf("after disarm: %+v, order %v", b, ws.Order)
				}
				if n < 4 {
					t.Fatalf("disarm took only %d operations", n)
				}
				break
			}
			r.checkBootable(t, after, slots.A, where)
			u2, err := r.updater(after, slots.A)
			mustT(t, err)
			_, ws0, err := u2.snapshot()
			mustT(t, err)
			if !bootable(ws0, slots.B) {
				seen["between"]++ // the environment dropped B, the state did not follow
			}
			res, err := u2.Reconcile()
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			st := r.checkConsistent(t, after, slots.A, res, where)
			_, ws, err := u2.snapshot()
			mustT(t, err)
			switch b := st[slots.B].State; {
			case b == slots.Pending && armed(ws, slots.B):
			case b == slots.Bad && !bootable(ws, slots.B):
			default:
				t.Fatalf("%s: slot B %s, environment order %v trial %q", where, b, ws.Order, ws.TrialSlot)
			}
			seen[string(st[slots.B].State)]++
		}
		t.Logf("random %v: slot B after a cut in Disarm and Reconcile: %v", random, seen)
		// A cut keeps only synced data: the disarm is not done before its
		// last sync (the state directory); a cut after the environment
		// write ("between") is undone by Reconcile arming B again.
		if seen[string(slots.Pending)] == 0 || seen["between"] == 0 {
			t.Errorf("cuts did not land on both sides of Disarm's environment write: %v", seen)
		}
	}
}

// TestCommitLastAttemptPowerCut commits a trial boot that used the slot's
// last attempt (the image took three boots to pass its health checks) and
// cuts the power at every operation of Commit. A cut before the
// environment write loses the commit (the bootloader falls back, B is a
// failed trial: nothing was recorded); but once the slot state says good,
// B must boot again. That is what the environment-first order of Commit
// buys: with the slot state first, a cut between the two writes leaves B
// good in the state but on trial at 0 attempts in the environment, and the
// bootloader abandons a slot recorded good. Every cut converges.
func TestCommitLastAttemptPowerCut(t *testing.T) {
	rnd := updateRand(t)
	r := &updateRig{t: t, kind: envKinds()[0], slotSz: 64 << 10}
	r.aBytes = rawImage(rnd, 30<<10)
	r.img = rawImage(rnd, 40<<10)
	r.newDigest = sha(r.img)
	ctx := context.Background()
	cuts, committed := 0, 0
	for n := 0; ; n++ {
		fs := r.newDisk(n)
		u, err := r.updater(fs, slots.A)
		mustT(t, err)
		if _, err := u.Reconcile(); err != nil {
			t.Fatal(err)
		}
		if _, err := u.Install(ctx, slots.B, r.image()); err != nil {
			t.Fatal(err)
		}
		b := &board{r: r, fs: fs, booted: slots.A}
		for range attempts {
			mustT(t, b.reboot())
			if b.booted != slots.B {
				t.Fatalf("boot %d: %s", b.boots, b.booted)
			}
		}
		onB, err := r.updater(fs, slots.B)
		mustT(t, err)
		st, err := onB.Boot.Status("B")
		mustT(t, err)
		if res, err := onB.Reconcile(); err != nil || !res.Trial || st.Left["B"] != 0 {
			t.Fatalf("last trial boot: %+v %v, %d left", res, err, st.Left["B"])
		}
		fs.SetCrashAfter(n, nil)
		err = onB.Commit()
		after := fs.Crashed()
		if after == nil {
			mustT(t, err)
			break
		}
		cuts++
		where := fmt.Sprintf("cut %d in Commit on the last attempt", n)
		before, err := r.updater(after, slots.B)
		mustT(t, err)
		wasGood := before.Slots.Status().Slots[1].State == slots.Good
		ws, err := before.Boot.Status("B")
		mustT(t, err)
		booted, outcome := r.afterCut(t, after, slots.B, where)
		if wasGood && booted != slots.B {
			t.Fatalf("%s: slot B was recorded good, yet the bootloader fell back to %s (and B is now %s)", where, booted, outcome)
		}
		if ws.TrialSlot == "" {
			committed++ // the environment write was durable: B must boot
			if booted != slots.B {
				t.Fatalf("%s: the environment was committed, yet the bootloader booted %s", where, booted)
			}
		}
		nb := &board{r: r, fs: after, booted: booted}
		if err := nb.run(20); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
	}
	if cuts < 4 || committed == 0 {
		t.Fatalf("%d cuts in Commit, %d after its environment write", cuts, committed)
	}
	t.Logf("%d cuts in Commit (%d after its environment write), each converged to B good", cuts, committed)
}

// TestFailedTrialPowerCut: the new image hung on all its attempts and the
// bootloader fell back to A, and on A an operation other than Reconcile
// runs first (flightd update disarm or install by hand, before any
// reconcile). Each is cut at every operation; after the cut and Reconcile
// the image that failed is never armed again: the slot is bad, or, for an
// install, armed only with the new image. Dropping the failed slot from the
// environment before recording it bad loses the only evidence of the
// failure, and Reconcile then completes what looks like an interrupted arm.
// Arm of the failed slot is refused.
func TestFailedTrialPowerCut(t *testing.T) {
	rnd := updateRand(t)
	r := &updateRig{t: t, kind: envKinds()[0], slotSz: 64 << 10, hang: true}
	r.aBytes = rawImage(rnd, 30<<10)
	r.img = rawImage(rnd, 40<<10)
	r.newDigest = sha(r.img)
	img3 := rawImage(rnd, 35<<10)
	ctx := context.Background()

	// fellBack returns a disk on which B (v2) hung on all its attempts and
	// A runs again, nothing reconciled yet.
	fellBack := func(n int) (*vfs.MemFS, *Updater) {
		fs := r.newDisk(n)
		u, err := r.updater(fs, slots.A)
		mustT(t, err)
		_, err = u.Reconcile()
		mustT(t, err)
		_, err = u.Install(ctx, slots.B, r.image())
		mustT(t, err)
		b := &board{r: r, fs: fs, booted: slots.A}
		for range attempts + 1 {
			mustT(t, b.reboot())
		}
		u, err = r.updater(fs, slots.A)
		mustT(t, err)
		if st, err := u.Boot.Status("A"); err != nil || b.booted != slots.A || st.FailedTrial != "B" {
			t.Fatalf("setup: booted %s, %+v %v", b.booted, st, err)
		}
		return fs, u
	}

	fs, u := fellBack(0)
	if err := u.Arm(slots.B); !errors.Is(err, ErrTrialFailed) || !strings.Contains(err.Error(), "slot B") {
		t.Errorf("arm of the slot whose trial failed: %v", err)
	}
	u2, err := r.updater(fs, slots.A)
	mustT(t, err)
	st, ws, err := u2.snapshot()
	mustT(t, err)
	if st[slots.B].State != slots.Bad || !strings.Contains(st[slots.B].Reason, "trial boot failed") || armed(ws, slots.B) {
		t.Errorf("after the refused arm: B %+v, environment %+v", st[slots.B], ws)
	}

	ops := []struct {
		name string
		run  func(*Updater) error
	}{
		{"disarm", func(u *Updater) error { return u.Disarm(slots.B, "test") }},
		{"install", func(u *Updater) error {
			_, err := u.Install(ctx, slots.B, slots.Image{Label: "v3", Layers: []io.Reader{bytes.NewReader(img3)}, RawStream: true, Digest: sha(img3)})
			return err
		}},
	}
	for _, op := range ops {
		cuts := 0
		for n := 0; ; n++ {
			fs, u := fellBack(n)
			fs.SetCrashAfter(n, nil)
			err := op.run(u)
			after := fs.Crashed()
			if after == nil {
				mustT(t, err)
				break
			}
			cuts++
			where := fmt.Sprintf("%s cut %d", op.name, n)
			u2, err := r.updater(after, slots.A)
			mustT(t, err)
			if _, err := u2.Reconcile(); err != nil {
				t.Fatalf("%s: reconcile: %v", where, err)
			}
			st, ws, err := u2.snapshot()
			mustT(t, err)
			if b := st[slots.B]; bootable(ws, slots.B) && b.Digest != sha(img3) {
				t.Fatalf("%s: the image whose trial failed can boot again: B %s %s (%q), environment order %v trial %q", where, b.State, b.Image, b.Reason, ws.Order, ws.TrialSlot)
			}
		}
		if cuts < 3 {
			t.Errorf("%s: only %d cuts", op.name, cuts)
		}
	}
}
