package flightd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
)

// tableRig is an Updater on a MemFS (two small raw slots, state) and an
// in-memory environment, with the slot states written directly.
type tableRig struct {
	fs  *vfs.MemFS
	env *watchdog.MemEnv
	u   *Updater
}

const tableSlot = 64 << 10

func newTableRig(t *testing.T, booted slots.SlotID, a, b slots.State, env watchdog.Vars) *tableRig {
	t.Helper()
	return newTableRigSized(t, tableSlot, booted, a, b, env)
}

func newTableRigSized(t *testing.T, size int64, booted slots.SlotID, a, b slots.State, env watchdog.Vars) *tableRig {
	t.Helper()
	m := vfs.NewMem()
	mustT(t, m.MkdirAll("state", 0o755))
	mustT(t, m.MkdirAll("dev", 0o755))
	writeMem(t, m, "dev/a", make([]byte, size))
	writeMem(t, m, "dev/b", make([]byte, size))
	info := func(s slots.State) string {
		d := ""
		switch s {
		case slots.Written, slots.Pending, slots.Good, slots.Bad:
			d = `, "image": "v1", "digest": "sha256:1111", "size": 100`
		}
		return fmt.Sprintf(`{"state": %q%s, "changed": "2027-01-15T08:00:00Z"}`, s, d)
	}
	doc := fmt.Sprintf(`{"version": 1, "seq": 7, "slots": {"A": %s, "B": %s}}`, info(a), info(b))
	mustT(t, vfs.WriteFileAtomic(m, "state/slots.json", []byte(doc), 0o644))
	sm, err := slots.Open(slots.Options{FS: m, StateDir: "state", Booted: booted, Now: fixedNow, Log: discard,
		A: slots.Slot{Backend: slots.BackendRaw, Path: "dev/a", Size: size},
		B: slots.Slot{Backend: slots.BackendRaw, Path: "dev/b", Size: size}})
	mustT(t, err)
	e := &watchdog.MemEnv{Vars: env.Clone()}
	return &tableRig{fs: m, env: e, u: &Updater{Slots: sm, Boot: &watchdog.BootControl{Env: e, Attempts: attempts}, Booted: booted, Log: discard}}
}

func (r *tableRig) state(id slots.SlotID) slots.SlotInfo {
	return r.u.Slots.Status().Slots[slotIndex(id)].SlotInfo
}

// vars builds an environment: order, A left, B left, trial ("-" for unset).
func vars(order, a, b, trial string) watchdog.Vars {
	v := watchdog.Vars{"bootcmd": "run bootorbit"}
	for k, x := range map[string]string{watchdog.VarBootOrder: order, watchdog.LeftVar("A"): a, watchdog.LeftVar("B"): b, watchdog.VarTrial: trial} {
		if x != "-" {
			v[k] = x
		}
	}
	return v
}

func TestReconcileTable(t *testing.T) {
	const (
		A, B                                        = slots.A, slots.B
		empty, writing, written, pending, good, bad = slots.Empty, slots.Writing, slots.Written, slots.Pending, slots.Good, slots.Bad
	)
	for _, tc := range []struct {
		name     string
		booted   slots.SlotID
		a, b     slots.State
		env      watchdog.Vars
		wantA    slots.State
		wantB    slots.State
		wantEnv  watchdog.Vars
		trial    bool
		actions  int
		warnings string // substring of the only warning, "" for none
	}{
		{"steady", A, good, empty, vars("A", "3", "0", "-"), good, empty, vars("A", "3", "0", "-"), false, 0, ""},
		{"factory environment boots empty B by default", A, good, empty, vars("-", "-", "-", "-"), good, empty, vars("A", "3", "0", "-"), false, 1, ""},
		{"both good, both bootable", A, good, good, vars("A B", "3", "3", "-"), good, good, vars("A B", "3", "3", "-"), false, 0, ""},
		{"armed, not booted yet", A, good, pending, vars("B A", "3", "3", "B"), good, pending, vars("B A", "3", "3", "B"), false, 0, ""},
		{"pending, not armed (cut in Arm)", A, good, pending, vars("A", "3", "0", "-"), good, pending, vars("B A", "3", "3", "B"), false, 1, ""},
		{"pending, on trial but not primary", A, good, pending, vars("A B", "3", "3", "B"), good, pending, vars("B A", "3", "3", "B"), false, 1, ""},
		{"bootloader fell back", A, good, pending, vars("B A", "2", "0", "B"), good, bad, vars("A", "2", "0", "-"), false, 2, ""},
		{"fell back, bad recorded, environment not cleaned (cut)", A, good, bad, vars("B A", "2", "0", "B"), good, bad, vars("A", "2", "0", "-"), false, 1, ""},
		{"fell back from a re-armed good slot (hand armed)", A, good, good, vars("B A", "3", "0", "B"), good, bad, vars("A", "3", "0", "-"), false, 2, ""},
		{"fell back from a writing slot (hand armed)", A, good, writing, vars("B A", "3", "0", "B"), good, writing, vars("A", "3", "0", "-"), false, 1, ""},
		{"writing slot armed (tampered)", A, good, writing, vars("B A", "3", "3", "B"), good, writing, vars("A", "3", "0", "-"), false, 1, ""},
		{"empty slot armed (tampered)", A, good, empty, vars("B A", "3", "3", "B"), good, empty, vars("A", "3", "0", "-"), false, 1, ""},
		{"written slot bootable (cut before Arm of a re-install)", A, good, written, vars("A B", "3", "3", "-"), good, written, vars("A", "3", "0", "-"), false, 1, ""},
		{"bad slot bootable", A, good, bad, vars("A B", "3", "3", "-"), good, bad, vars("A", "3", "0", "-"), false, 1, ""},
		{"writing slot the only one in the order, booted good A missing", A, good, writing, vars("B", "3", "3", "-"), good, writing, vars("A", "3", "0", "-"), false, 1, ""},
		{"armed, booted good slot missing from the order (hand-edited)", A, good, pending, vars("B", "3", "3", "B"), good, pending, vars("B A", "3", "3", "B"), false, 1, ""},
		{"armed, booted good slot at 0 attempts behind the trial", A, good, pending, vars("B A", "0", "2", "B"), good, pending, vars("B A", "3", "2", "B"), false, 1, ""},
		{"both good, booted slot missing from the order", A, good, good, vars("B", "3", "3", "-"), good, good, vars("B A", "3", "3", "-"), false, 1, ""},
		{"both good, booted slot at 0 attempts, not behind a trial: left to Commit", A, good, good, vars("B A", "0", "3", "-"), good, good, vars("B A", "0", "3", "-"), false, 0, ""},
		{"trial boot", B, good, pending, vars("B A", "3", "2", "B"), good, pending, vars("B A", "3", "2", "B"), true, 0, ""},
		{"trial boot, commit cut after the environment", B, good, pending, vars("B A", "3", "3", "-"), good, pending, vars("B A", "3", "3", "-"), true, 0, ""},
		{"good slot on trial in the environment (tampered)", B, good, good, vars("B A", "3", "2", "B"), good, good, vars("B A", "3", "2", "B"), true, 0, ""},
		{"booted slot recorded bad, other good", B, good, bad, vars("B A", "3", "2", "-"), good, bad, vars("A", "3", "0", "-"), false, 1, ""},
		{"booted slot recorded written, other good", B, good, written, vars("A B", "0", "2", "-"), good, written, vars("A", "0", "0", "-"), false, 1, ""},
		{"booted slot bad, other bad too", B, bad, bad, vars("B A", "3", "2", "-"), bad, bad, vars("B", "0", "2", "-"), false, 1, "not good to return to"},
		{"booted on trial, fallback bad cannot be dropped", A, pending, bad, vars("A B", "2", "3", "A"), pending, bad, vars("A B", "2", "3", "A"), true, 0, "cannot be dropped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTableRig(t, tc.booted, tc.a, tc.b, tc.env)
			res, err := r.u.Reconcile()
			if err != nil {
				t.Fatal(err)
			}
			if got := r.state(slots.A).State; got != tc.wantA {
				t.Errorf("slot A %s, want %s", got, tc.wantA)
			}
			if got := r.state(slots.B).State; got != tc.wantB {
				t.Errorf("slot B %s, want %s", got, tc.wantB)
			}
			if !r.env.Vars.Equal(tc.wantEnv) {
				t.Errorf("environment\n%swant\n%s", r.env.Vars, tc.wantEnv)
			}
			if res.Trial != tc.trial || len(res.Actions) != tc.actions {
				t.Errorf("trial %v actions %q, want %v and %d actions", res.Trial, res.Actions, tc.trial, tc.actions)
			}
			checkWarnings(t, res.Warnings, tc.warnings)
			if tc.wantB == bad && tc.b != bad && !strings.Contains(r.state(slots.B).Reason, "trial boot failed") {
				t.Errorf("slot B bad for %q", r.state(slots.B).Reason)
			}
			// Idempotent: a second run changes nothing.
			writes, seq := r.env.Writes, r.u.Slots.Status().Seq
			res2, err := r.u.Reconcile()
			if err != nil || len(res2.Actions) != 0 || r.env.Writes != writes || r.u.Slots.Status().Seq != seq || res2.Trial != res.Trial {
				t.Errorf("second reconcile: %v, actions %q, %d env writes, state seq %d -> %d", err, res2.Actions, r.env.Writes-writes, seq, r.u.Slots.Status().Seq)
			}
			// A booted slot that is not good keeps being reported; once
			// it is dropped, as the one the next boot leaves.
			want2 := tc.warnings
			if bs := r.state(tc.booted).State; bs != good && bs != pending && r.state(tc.booted.Other()).State == good {
				want2 = "the next boot returns to good slot"
			}
			checkWarnings(t, res2.Warnings, want2)
		})
	}
}

func checkWarnings(t *testing.T, got []string, want string) {
	t.Helper()
	switch {
	case want == "" && len(got) > 0:
		t.Errorf("warnings %q", got)
	case want != "" && (len(got) != 1 || !strings.Contains(got[0], want)):
		t.Errorf("warnings %q, want one with %q", got, want)
	}
}

// failingEnv cannot be read.
type failingEnv struct{ saves int }

func (e *failingEnv) Load() (watchdog.Vars, error) {
	return nil, fmt.Errorf("%w in both copies (test)", watchdog.ErrBadCRC)
}
func (e *failingEnv) Save(watchdog.Vars) error { e.saves++; return nil }

var errSaveTest = errors.New("save failed (test)")

// failSaveEnv fails its next `fail` saves.
type failSaveEnv struct {
	watchdog.Env
	fail int
}

func (e *failSaveEnv) Save(v watchdog.Vars) error {
	if e.fail > 0 {
		e.fail--
		return errSaveTest
	}
	return e.Env.Save(v)
}

func TestReconcileErrors(t *testing.T) {
	r := newTableRig(t, slots.A, slots.Good, slots.Pending, vars("A", "3", "0", "-"))
	fe := &failingEnv{}
	r.u.Boot.Env = fe
	if _, err := r.u.Reconcile(); !errors.Is(err, watchdog.ErrBadCRC) || !strings.Contains(err.Error(), "flightd: boot environment") {
		t.Errorf("unreadable environment: %v", err)
	}
	if fe.saves != 0 || r.state(slots.B).State != slots.Pending {
		t.Errorf("an unreadable environment led to %d saves, slot B %s", fe.saves, r.state(slots.B).State)
	}

	r = newTableRig(t, slots.A, slots.Good, slots.Pending, vars("A", "a", "0", "-"))
	if _, err := r.u.Reconcile(); !errors.Is(err, watchdog.ErrBootVar) {
		t.Errorf("bad counter: %v", err)
	}
	if r.env.Writes != 0 {
		t.Errorf("bad counter: environment written")
	}

	r = newTableRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
	r.u.Booted = slots.B
	if _, err := r.u.Reconcile(); !errors.Is(err, ErrNoBootedSlot) || !strings.Contains(err.Error(), `slot manager says "A"`) {
		t.Errorf("booted slot differs from the slot manager's: %v", err)
	}
	r.u.Booted = ""
	for name, f := range map[string]func() error{
		"reconcile": func() error { _, err := r.u.Reconcile(); return err },
		"commit":    r.u.Commit,
		"arm":       func() error { return r.u.Arm(slots.B) },
		"install":   func() error { _, err := r.u.Install(context.Background(), slots.B, slots.Image{}); return err },
	} {
		if err := f(); !errors.Is(err, ErrNoBootedSlot) {
			t.Errorf("%s without a booted slot: %v", name, err)
		}
	}
}

func rawImg(data []byte) slots.Image {
	return slots.Image{Label: "v2", Layers: []io.Reader{bytes.NewReader(data)}, RawStream: true, Digest: sha(data)}
}

func TestInstallArmCommit(t *testing.T) {
	ctx := context.Background()
	img := bytes.Repeat([]byte("new image "), 3000)

	// The whole path, by hand: install, boot B, commit.
	r := newTableRig(t, slots.A, slots.Good, slots.Good, vars("A B", "3", "3", "-"))
	if _, err := r.u.Install(ctx, slots.B, rawImg(img)); err != nil {
		t.Fatal(err)
	}
	if b := r.state(slots.B); b.State != slots.Pending || b.Digest != sha(img) {
		t.Fatalf("after install: %+v", b)
	}
	if want := vars("B A", "3", "3", "B"); !r.env.Vars.Equal(want) {
		t.Fatalf("after install: environment\n%s", r.env.Vars)
	}
	if r.env.Writes != 2 {
		t.Errorf("install of a bootable slot: %d environment writes, want 2 (drop, arm)", r.env.Writes)
	}
	d, err := (watchdog.BootloaderModel{Attempts: attempts}).Boot(r.env)
	if err != nil || d.Slot != "B" {
		t.Fatalf("boot: %+v %v", d, err)
	}
	onB := &Updater{Slots: reopen(t, r, slots.B), Boot: r.u.Boot, Booted: slots.B, Log: discard}
	res, err := onB.Reconcile()
	if err != nil || !res.Trial || len(res.Actions) != 0 {
		t.Fatalf("trial boot: %+v %v", res, err)
	}
	if _, err := onB.Install(ctx, slots.A, rawImg(img)); !errors.Is(err, ErrTrialInProgress) {
		t.Errorf("install into the fallback during a trial: %v", err)
	}
	if err := onB.Arm(slots.A); !errors.Is(err, ErrTrialInProgress) {
		t.Errorf("arm the fallback during a trial: %v", err)
	}
	if err := onB.Commit(); err != nil {
		t.Fatal(err)
	}
	if want := vars("B A", "3", "3", "-"); !r.env.Vars.Equal(want) || onB.Slots.Status().Slots[1].State != slots.Good {
		t.Fatalf("after commit: %v\n%s", onB.Slots.Status().Slots[1].State, r.env.Vars)
	}
	writes, seq := r.env.Writes, onB.Slots.Status().Seq
	if err := onB.Commit(); err != nil || r.env.Writes != writes || onB.Slots.Status().Seq != seq {
		t.Errorf("second commit: %v, %d env writes, seq %d -> %d", err, r.env.Writes-writes, seq, onB.Slots.Status().Seq)
	}
	if _, err := onB.Install(ctx, slots.B, rawImg(img)); !errors.Is(err, slots.ErrActiveSlot) {
		t.Errorf("install into the booted slot: %v", err)
	}
	if err := onB.Arm(slots.B); !errors.Is(err, slots.ErrActiveSlot) {
		t.Errorf("arm the booted slot: %v", err)
	}
}

func reopen(t *testing.T, r *tableRig, booted slots.SlotID) *slots.Manager {
	m, err := slots.Open(slots.Options{FS: r.fs, StateDir: "state", Booted: booted, Now: fixedNow, Log: discard,
		A: slots.Slot{Backend: slots.BackendRaw, Path: "dev/a", Size: tableSlot},
		B: slots.Slot{Backend: slots.BackendRaw, Path: "dev/b", Size: tableSlot}})
	mustT(t, err)
	return m
}

func TestInstallRefusalsAndRetries(t *testing.T) {
	ctx := context.Background()
	img := bytes.Repeat([]byte("new image "), 3000)

	// Nothing is written when the environment cannot be read.
	r := newTableRig(t, slots.A, slots.Good, slots.Good, vars("A B", "3", "3", "-"))
	r.u.Boot.Env = &failingEnv{}
	seq := r.u.Slots.Status().Seq
	if _, err := r.u.Install(ctx, slots.B, rawImg(img)); !errors.Is(err, watchdog.ErrBadCRC) {
		t.Errorf("unreadable environment: %v", err)
	}
	if r.u.Slots.Status().Seq != seq {
		t.Errorf("install with an unreadable environment changed the slot state")
	}

	// A malformed expected digest can never match: refused before the
	// slot is dropped or written.
	r = newTableRig(t, slots.A, slots.Good, slots.Good, vars("A B", "3", "3", "-"))
	seq = r.u.Slots.Status().Seq
	for _, d := range []string{"nothex", "sha256:" + strings.Repeat("A", 64), "sha256:1234", "sha512:" + strings.Repeat("0", 64)} {
		bad := rawImg(img)
		bad.Digest = d
		if _, err := r.u.Install(ctx, slots.B, bad); !errors.Is(err, ErrBadDigest) || !strings.Contains(err.Error(), d) {
			t.Errorf("digest %q: %v", d, err)
		}
	}
	if r.u.Slots.Status().Seq != seq || r.env.Writes != 0 || r.state(slots.B).State != slots.Good {
		t.Errorf("install with a malformed digest wrote: state seq %d -> %d, %d environment writes, B %s", seq, r.u.Slots.Status().Seq, r.env.Writes, r.state(slots.B).State)
	}

	// An image the slot's backend cannot take is refused before the slot
	// (here the previous good release) is dropped or recorded writing.
	r = newTableRig(t, slots.A, slots.Good, slots.Good, vars("A B", "3", "3", "-"))
	two := rawImg(img)
	two.Layers = append(two.Layers, bytes.NewReader(img))
	none := rawImg(img)
	none.Layers = nil
	for name, bad := range map[string]slots.Image{"two layers on a raw slot": two, "no layers": none} {
		if _, err := r.u.Install(ctx, slots.B, bad); !errors.Is(err, ErrImageMismatch) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if r.env.Writes != 0 || r.state(slots.B).State != slots.Good {
		t.Errorf("install of an image that does not fit: %d environment writes, B %s", r.env.Writes, r.state(slots.B).State)
	}
	dm := vfs.NewMem()
	mustT(t, dm.MkdirAll("state", 0o755))
	dirB := t.TempDir()
	mustT(t, os.WriteFile(dirB+"/keep", []byte("previous release"), 0o644))
	dsm, err := slots.Open(slots.Options{FS: dm, StateDir: "state", Booted: slots.A, Now: fixedNow, Log: discard,
		A: slots.Slot{Backend: slots.BackendRaw, Path: "dev/a", Size: tableSlot}, B: slots.Slot{Backend: slots.BackendDir, Path: dirB}})
	mustT(t, err)
	du := &Updater{Slots: dsm, Boot: &watchdog.BootControl{Env: &watchdog.MemEnv{Vars: vars("A", "3", "0", "-")}, Attempts: attempts}, Booted: slots.A, Log: discard}
	if _, err := du.Install(ctx, slots.B, rawImg(img)); !errors.Is(err, ErrImageMismatch) || !strings.Contains(err.Error(), "directory slot") {
		t.Errorf("raw image into a directory slot: %v", err)
	}
	if got, err := os.ReadFile(dirB + "/keep"); err != nil || string(got) != "previous release" || dsm.Status().Slots[1].State != slots.Empty {
		t.Errorf("raw image into a directory slot: the slot was touched (%v), B %s", err, dsm.Status().Slots[1].State)
	}

	// The environment write of the arm fails after a good install: the
	// error says the slot was written; Reconcile arms it, and a retried
	// Install works too.
	r = newTableRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
	fe2 := &failSaveEnv{Env: r.env, fail: 1}
	r.u.Boot.Env = fe2
	if _, err := r.u.Install(ctx, slots.B, rawImg(img)); !errors.Is(err, errSaveTest) || !strings.Contains(err.Error(), "install slot B: written and verified ("+sha(img)+"), but not armed") {
		t.Errorf("arm fails after the write: %v", err)
	}
	if b := r.state(slots.B); b.State != slots.Pending || b.Digest != sha(img) {
		t.Errorf("after the failed arm: B %+v", b)
	}
	if res, err := r.u.Reconcile(); err != nil || len(res.Actions) != 1 || !r.env.Vars.Equal(vars("B A", "3", "3", "B")) {
		t.Errorf("reconcile after the failed arm: %+v %v\n%s", res, err, r.env.Vars)
	}
	if _, err := r.u.Install(ctx, slots.B, rawImg(img)); err != nil || r.state(slots.B).State != slots.Pending {
		t.Errorf("install again after the failed arm: %v", err)
	}

	// The only good slot is not overwritten.
	r = newTableRig(t, slots.A, slots.Bad, slots.Good, vars("A B", "3", "3", "-"))
	if _, err := r.u.Install(ctx, slots.B, rawImg(img)); !errors.Is(err, ErrOnlyGoodSlot) {
		t.Errorf("overwrite the only good slot: %v", err)
	}

	// A booted slot on trial in the environment only (state good) still
	// refuses: its trial is not over.
	r = newTableRig(t, slots.A, slots.Good, slots.Good, vars("A B", "2", "3", "A"))
	if _, err := r.u.Install(ctx, slots.B, rawImg(img)); !errors.Is(err, ErrTrialInProgress) {
		t.Errorf("install during a trial: %v", err)
	}

	// A verification failure leaves B bad and unbootable; the retry works.
	r = newTableRig(t, slots.A, slots.Good, slots.Good, vars("A B", "3", "3", "-"))
	wrong := rawImg(img)
	wrong.Digest = sha([]byte("something else"))
	if _, err := r.u.Install(ctx, slots.B, wrong); !errors.Is(err, slots.ErrVerify) || !strings.Contains(err.Error(), "flightd: install slot B") {
		t.Errorf("wrong digest: %v", err)
	}
	if r.state(slots.B).State != slots.Bad || !r.env.Vars.Equal(vars("A", "3", "0", "-")) {
		t.Errorf("after a failed verification: B %s, environment\n%s", r.state(slots.B).State, r.env.Vars)
	}
	if _, err := r.u.Install(ctx, slots.B, rawImg(img)); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if r.state(slots.B).State != slots.Pending || !r.env.Vars.Equal(vars("B A", "3", "3", "B")) {
		t.Errorf("after the retry: B %s, environment\n%s", r.state(slots.B).State, r.env.Vars)
	}

	// Installing over an armed slot disarms it first.
	img2 := bytes.Repeat([]byte("newer image "), 3000)
	if _, err := r.u.Install(ctx, slots.B, rawImg(img2)); err != nil {
		t.Fatalf("install over an armed slot: %v", err)
	}
	if b := r.state(slots.B); b.State != slots.Pending || b.Digest != sha(img2) || !r.env.Vars.Equal(vars("B A", "3", "3", "B")) {
		t.Errorf("after the install over an armed slot: %+v, environment\n%s", b, r.env.Vars)
	}

	// Arm refuses a slot with nothing verified in it.
	r = newTableRig(t, slots.A, slots.Good, slots.Writing, vars("A", "3", "0", "-"))
	if err := r.u.Arm(slots.B); !errors.Is(err, slots.ErrTransition) {
		t.Errorf("arm a writing slot: %v", err)
	}
	if !r.env.Vars.Equal(vars("A", "3", "0", "-")) {
		t.Errorf("refused arm changed the environment:\n%s", r.env.Vars)
	}

	// Commit refuses a booted slot that is neither pending nor good.
	r = newTableRig(t, slots.B, slots.Good, slots.Bad, vars("B A", "3", "2", "-"))
	if err := r.u.Commit(); !errors.Is(err, ErrNotCommittable) {
		t.Errorf("commit a bad slot: %v", err)
	}
	if r.env.Writes != 0 {
		t.Errorf("refused commit wrote the environment")
	}
}

// TestOpenUpdater runs an install on operating-system files from a
// configuration: raw slot files, a state directory and a GRUB environment.
func TestOpenUpdater(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return dir + "/" + n }
	mustT(t, os.WriteFile(p("a.img"), make([]byte, tableSlot), 0o600))
	mustT(t, os.WriteFile(p("b.img"), make([]byte, tableSlot), 0o600))
	mustT(t, os.WriteFile(p("cmdline"), []byte("root=/dev/mmcblk0p2 rauc.slot=A quiet\n"), 0o644))
	blk, err := watchdog.NewGRUBBlock(watchdog.GRUBEnvSize)
	mustT(t, err)
	data, err := blk.Bytes()
	mustT(t, err)
	mustT(t, os.WriteFile(p("grubenv"), data, 0o644))
	doc := fmt.Sprintf(`{"slots": {"state_dir": %q, "cmdline": %q, "a": {"backend": "raw", "path": %q, "size": %d}, "b": {"backend": "raw", "path": %q, "size": %d}},
		"boot": {"grubenv": %q, "attempts": 2}}`, p("state"), p("cmdline"), p("a.img"), tableSlot, p("b.img"), tableSlot, p("grubenv"))
	c, err := ParseConfig([]byte(doc))
	mustT(t, err)
	u, err := c.OpenUpdater(discard)
	mustT(t, err)
	if u.Booted != slots.A || u.Boot.Attempts != 2 {
		t.Fatalf("booted %q attempts %d", u.Booted, u.Boot.Attempts)
	}
	res, err := u.Reconcile()
	if err != nil || len(res.Actions) != 1 {
		t.Fatalf("first start: %+v %v", res, err)
	}
	img := bytes.Repeat([]byte("fs image "), 5000)
	if _, err := u.Install(context.Background(), slots.B, rawImg(img)); err != nil {
		t.Fatal(err)
	}
	v, err := u.Boot.Env.Load()
	mustT(t, err)
	if v[watchdog.VarBootOrder] != "B A" || v[watchdog.VarTrial] != "B" || v[watchdog.LeftVar("B")] != "2" {
		t.Fatalf("environment after install:\n%s", v)
	}
	got, err := os.ReadFile(p("b.img"))
	mustT(t, err)
	if !bytes.Equal(got[:len(img)], img) {
		t.Fatal("slot B does not hold the image")
	}

	c.Boot = BootConfig{}
	if _, err := c.OpenUpdater(discard); !errors.Is(err, ErrConfig) {
		t.Errorf("no boot section: %v", err)
	}
}

// TestReconcileEveryCombination runs Reconcile on every combination of
// booted slot, the two slot states, BOOT_ORDER, attempts left (0, 1, N) and
// trial slot, consistent or not, and checks what it promises: no error on
// a valid environment; the only state change is a failed trial recorded
// bad; afterwards the environment boots only pending or good slots unless
// a warning says why not; it boots nothing it did not boot before except a
// pending slot it arms again or the good booted slot it puts back; a
// pending other slot is armed when the booted slot is committed; a pending
// booted slot is a trial; a second run changes nothing; and a committed
// good booted slot is a fallback the bootloader model comes back to when
// the other slot hangs at every boot (after at most N boots of an armed
// trial), even without a Commit.
func TestReconcileEveryCombination(t *testing.T) {
	states := []slots.State{slots.Empty, slots.Writing, slots.Written, slots.Pending, slots.Good, slots.Bad}
	orders := []string{"-", "A", "B", "A B", "B A"}
	lefts := []string{"0", "1", "3"}
	trials := []string{"-", "A", "B"}
	n := 0
	for _, booted := range []slots.SlotID{slots.A, slots.B} {
		other := booted.Other()
		for _, sa := range states {
			for _, sb := range states {
				for _, order := range orders {
					for _, la := range lefts {
						for _, lb := range lefts {
							for _, trial := range trials {
								n++
								env := vars(order, la, lb, trial)
								r := newTableRigSized(t, 4096, booted, sa, sb, env)
								where := fmt.Sprintf("booted %s, A %s, B %s, env %q", booted, sa, sb, env.String())
								before, err := r.u.Boot.Status(string(booted))
								mustT(t, err)
								res, err := r.u.Reconcile()
								if err != nil {
									t.Fatalf("%s: %v", where, err)
								}
								after, err := r.u.Boot.Status(string(booted))
								mustT(t, err)
								st := map[slots.SlotID]slots.State{slots.A: r.state(slots.A).State, slots.B: r.state(slots.B).State}
								was := map[slots.SlotID]slots.State{slots.A: sa, slots.B: sb}
								for _, id := range []slots.SlotID{slots.A, slots.B} {
									if st[id] == was[id] {
										continue
									}
									if id != other || st[id] != slots.Bad || before.FailedTrial != string(id) {
										t.Fatalf("%s: slot %s went %s -> %s", where, id, was[id], st[id])
									}
								}
								for _, x := range after.Order {
									id := slots.SlotID(x)
									if s := st[id]; s != slots.Pending && s != slots.Good && len(res.Warnings) == 0 {
										t.Fatalf("%s: environment %v boots %s (%s) with no warning; actions %q", where, after.Order, x, s, res.Actions)
									}
									if !slices.Contains(before.Order, x) && !(id == other && st[id] == slots.Pending) && !(id == booted && st[id] == slots.Good) {
										t.Fatalf("%s: Reconcile made %s bootable (%s)", where, x, st[id])
									}
								}
								committed := st[booted] == slots.Good && before.TrialSlot != string(booted)
								if st[other] == slots.Pending && committed && !armed(after, other) {
									t.Fatalf("%s: pending slot %s not armed: %+v", where, other, after)
								}
								if st[booted] == slots.Pending && !res.Trial {
									t.Fatalf("%s: pending booted slot is not reported as a trial", where)
								}
								writes, seq := r.env.Writes, r.u.Slots.Status().Seq
								res2, err := r.u.Reconcile()
								if err != nil || len(res2.Actions) != 0 || r.env.Writes != writes || r.u.Slots.Status().Seq != seq {
									t.Fatalf("%s: second run: %v, actions %q", where, err, res2.Actions)
								}
								if committed {
									// The way back: the other slot hangs at every boot and
									// this one fails its health checks (no Commit). The
									// bootloader must return here, after at most N boots of
									// an armed trial.
									sim := &watchdog.MemEnv{Vars: r.env.Vars.Clone()}
									others, back := 0, false
									for range 4*attempts + 2 {
										d, err := (watchdog.BootloaderModel{Attempts: attempts}).Boot(sim)
										mustT(t, err)
										if d.Slot == string(booted) {
											back = true
											break
										}
										if d.Slot == string(other) {
											others++
										}
									}
									if !back || armed(after, other) && others > attempts {
										t.Fatalf("%s: after reconcile (env %q) and a hanging slot %s, the bootloader came back to %s: %v, after %d boots of %s", where, r.env.Vars.String(), other, booted, back, others, other)
									}
								}
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d combinations", n)
}

// TestSaveFailedTrialBoot: the boot script cannot save the environment
// when it picks the armed slot, so it boots the other slot uncounted
// instead (BootloaderModel.SaveFailed). flightd on that slot leaves the
// armed update alone (no failed trial: B's attempts were never used) and
// commits the running slot; once the environment can be saved again, B
// gets its trial boot with all its attempts.
func TestSaveFailedTrialBoot(t *testing.T) {
	ctx := context.Background()
	img := bytes.Repeat([]byte("new image "), 3000)
	r := newTableRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
	if _, err := r.u.Install(ctx, slots.B, rawImg(img)); err != nil {
		t.Fatal(err)
	}
	model := watchdog.BootloaderModel{Attempts: attempts}
	for i := range 3 {
		d, err := model.Boot(&failSaveEnv{Env: r.env, fail: 1})
		if err != nil || d.Slot != "A" || !d.SaveFailed {
			t.Fatalf("boot %d with a failing saveenv: %+v %v", i, d, err)
		}
		res, err := r.u.Reconcile()
		if err != nil || len(res.Actions) != 0 || res.Trial || len(res.Warnings) != 0 {
			t.Fatalf("boot %d: reconcile on A: %+v %v", i, res, err)
		}
		mustT(t, r.u.Commit())
		if b := r.state(slots.B); b.State != slots.Pending || !r.env.Vars.Equal(vars("B A", "3", "3", "B")) {
			t.Fatalf("boot %d: B %s, environment\n%s", i, b.State, r.env.Vars)
		}
	}
	d, err := model.Boot(r.env)
	if err != nil || d.Slot != "B" || d.SaveFailed {
		t.Fatalf("boot with a working saveenv: %+v %v", d, err)
	}
	onB := &Updater{Slots: reopen(t, r, slots.B), Boot: r.u.Boot, Booted: slots.B, Log: discard}
	if res, err := onB.Reconcile(); err != nil || !res.Trial {
		t.Fatalf("trial boot: %+v %v", res, err)
	}
	if st, err := onB.Boot.Status("B"); err != nil || st.Left["B"] != attempts-1 {
		t.Fatalf("trial boot: %+v %v (B's uncounted boots must not have used its attempts)", st, err)
	}
	mustT(t, onB.Commit())
	if onB.Slots.Status().Slots[1].State != slots.Good || !r.env.Vars.Equal(vars("B A", "3", "3", "-")) {
		t.Fatalf("after commit: %s\n%s", onB.Slots.Status().Slots[1].State, r.env.Vars)
	}
}
