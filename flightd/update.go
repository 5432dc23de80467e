package flightd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
)

// Errors of the update orchestration. Errors of the two packages it drives
// (slots, watchdog) are wrapped, so errors.Is finds their sentinels too.
var (
	ErrNoBootedSlot    = errors.New("flightd: booted slot unknown")
	ErrTrialInProgress = errors.New("flightd: the booted slot is on trial")
	ErrOnlyGoodSlot    = errors.New("flightd: refusing to overwrite the only good slot")
	ErrNotCommittable  = errors.New("flightd: booted slot cannot be committed")
	ErrTrialFailed     = errors.New("flightd: slot failed its trial boot")
	ErrBadDigest       = errors.New("flightd: bad image digest")
	// ErrImageMismatch is slots' refusal of an image whose shape the
	// slot's backend cannot take (Manager.CheckImage).
	ErrImageMismatch = slots.ErrImageShape
)

// CheckImageDigest returns an error unless d is "" (no expected digest) or
// a digest as slots records one: "sha256:" and 64 lowercase hex digits.
// Install checks it before it writes anything: a malformed digest can
// never match, and would otherwise be found only after the slot was
// dropped, overwritten and read back, and then recorded bad.
func CheckImageDigest(d string) error {
	if d == "" {
		return nil
	}
	h, ok := strings.CutPrefix(d, "sha256:")
	if ok && len(h) == 64 && strings.Trim(h, "0123456789abcdef") == "" {
		return nil
	}
	return fmt.Errorf("%w %q: want sha256: and 64 lowercase hex digits", ErrBadDigest, d)
}

// Updater is the orchestration between slots (what is in each slot) and
// the bootloader environment (which slot boots). Neither package knows the
// other; the Updater writes the two stores in an order that keeps one rule
// at every instant, power cuts included:
//
//	the environment can boot a slot only if its slot state is pending or
//	good (verified content, armed or proven).
//
// It follows from these orders:
//
//   - Install and Disarm take the slot out of the environment before its
//     state or a byte of it changes;
//   - Arm records pending before the environment arms the slot;
//   - Commit marks the environment good before the slot state;
//   - a failed trial is recorded bad in the slot state before the
//     environment drops it. This is the one exception to the rule, for the
//     time between the two writes: the slot is then at 0 attempts, so the
//     bootloader boots it only after a counter reset, and recording the
//     failure first is what keeps Reconcile from arming it again.
//
// A power cut between the two writes of any step leaves a combination that
// Reconcile, run at every start, resolves. Reconcile only ever removes
// slots from what the environment can boot, ends trials, completes an
// arm whose slot state already says pending, and puts the booted slot,
// already recorded good and committed, back in BOOT_ORDER as the
// fallback; it never records a slot good.
//
// An Updater is not safe for concurrent use: flightd runs one update step
// at a time (the U-Boot environment's LockFile keeps an engineer's
// fw_setenv from interleaving with it).
type Updater struct {
	Slots  *slots.Manager
	Boot   *watchdog.BootControl
	Booted slots.SlotID // the running slot (rauc.slot= on the kernel command line)
	Log    *slog.Logger
}

// OpenUpdater opens the slots and the bootloader environment the
// configuration names, with the booted slot from its kernel command line
// file. The boot section must name an environment.
func (c *Config) OpenUpdater(log *slog.Logger) (*Updater, error) {
	if log == nil {
		log = slog.Default()
	}
	o, err := c.Slots.SlotOptions(false)
	if err != nil {
		return nil, err
	}
	o.Log = log
	m, err := slots.Open(o)
	if err != nil {
		return nil, err
	}
	env, _, err := c.Boot.OpenEnv()
	if err != nil {
		return nil, err
	}
	return &Updater{Slots: m, Boot: &watchdog.BootControl{Env: env, Attempts: c.Boot.AttemptsOrDefault()}, Booted: o.Booted, Log: log}, nil
}

// ReconcileResult says what Reconcile found and did.
type ReconcileResult struct {
	Booted      slots.SlotID `json:"booted"`
	BootedState slots.State  `json:"booted_state"`
	// Trial is true when this boot still has to prove itself: the booted
	// slot is pending (a trial boot, or a commit a power cut interrupted)
	// or the environment has it on trial. Run the health checks, then
	// Commit; without a Commit the bootloader abandons the slot after its
	// attempts.
	Trial bool `json:"trial"`
	// Actions lists every change made, in order; empty when the two
	// stores already agreed.
	Actions []string `json:"actions,omitempty"`
	// Warnings lists disagreements Reconcile cannot resolve safely by
	// itself (they need the ground), e.g. a booted slot recorded bad with
	// no good slot to return to.
	Warnings []string `json:"warnings,omitempty"`
}

func (r *ReconcileResult) act(log *slog.Logger, format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.Actions = append(r.Actions, s)
	log.Info("reconcile", "action", s)
}

func (r *ReconcileResult) warn(log *slog.Logger, format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.Warnings = append(r.Warnings, s)
	log.Warn("reconcile", "warning", s)
}

func (u *Updater) log() *slog.Logger {
	if u.Log == nil {
		return slog.Default()
	}
	return u.Log
}

// checkInactive is check, and that slot, the target of verb, is a slot
// and not the booted one: what every operation on the other slot needs.
func (u *Updater) checkInactive(verb string, slot slots.SlotID) error {
	if err := u.check(); err != nil {
		return err
	}
	if slot != slots.A && slot != slots.B {
		return fmt.Errorf("flightd: %s: %w: %q", verb, slots.ErrUnknownSlot, slot)
	}
	if slot == u.Booted {
		return fmt.Errorf("flightd: %s slot %s: %w", verb, slot, slots.ErrActiveSlot)
	}
	return nil
}

func (u *Updater) check() error {
	if u.Slots == nil || u.Boot == nil {
		return errors.New("flightd: updater needs slots and boot control")
	}
	if u.Booted != slots.A && u.Booted != slots.B {
		return fmt.Errorf("%w (%q): read it from rauc.slot= on the kernel command line", ErrNoBootedSlot, u.Booted)
	}
	if b := u.Slots.Status().Booted; b != u.Booted {
		// slots refuses to write the slot it believes booted: it must be
		// the same one.
		return fmt.Errorf("%w: updater says %q, slot manager says %q", ErrNoBootedSlot, u.Booted, b)
	}
	return nil
}

// snapshot reads both stores. An environment that cannot be read or holds
// values the boot scripts would misread stops everything: nothing is
// written on a guess.
func (u *Updater) snapshot() (map[slots.SlotID]slots.SlotInfo, watchdog.Status, error) {
	st := map[slots.SlotID]slots.SlotInfo{}
	for _, s := range u.Slots.Status().Slots {
		st[s.ID] = s.SlotInfo
	}
	ws, err := u.Boot.Status(string(u.Booted))
	if err != nil {
		return nil, ws, fmt.Errorf("flightd: boot environment: %w", err)
	}
	return st, ws, nil
}

// bootable reports whether the environment can boot x: x is in BOOT_ORDER.
// Attempts left do not matter: when every counter reaches 0 the bootloader
// resets them all to N.
func bootable(ws watchdog.Status, x slots.SlotID) bool {
	return slices.Contains(ws.Order, string(x))
}

// armed reports whether x is armed for a trial the next boot starts.
func armed(ws watchdog.Status, x slots.SlotID) bool {
	return ws.TrialSlot == string(x) && ws.Next == string(x)
}

// onTrial reports whether the booted slot has not been committed yet.
func (u *Updater) onTrial(st map[slots.SlotID]slots.SlotInfo, ws watchdog.Status) bool {
	return st[u.Booted].State == slots.Pending || ws.TrialSlot == string(u.Booted)
}

// unboot removes x from what the environment can boot. When the booted
// slot is good but missing from BOOT_ORDER (hand-edited), it is put back
// first, so that x is never the last slot and the board keeps a slot it
// can boot.
func (u *Updater) unboot(st map[slots.SlotID]slots.SlotInfo, ws watchdog.Status, x slots.SlotID) error {
	if !bootable(ws, x) {
		return nil
	}
	if x != u.Booted && !bootable(ws, u.Booted) && st[u.Booted].State == slots.Good {
		if err := u.Boot.MarkGood(string(u.Booted)); err != nil {
			return fmt.Errorf("flightd: environment: put booted slot %s back in the boot order: %w", u.Booted, err)
		}
	}
	if err := u.Boot.MarkBad(string(x)); err != nil {
		return fmt.Errorf("flightd: environment: drop slot %s from the boot order: %w", x, err)
	}
	return nil
}

// recordFailedTrial records the other slot bad when the environment says
// its trial failed: it is the trial slot, at 0 attempts, and the booted
// slot is another one (the bootloader fell back). It must run before
// anything drops that slot from the environment, in every operation, not
// only in Reconcile: the environment is the only evidence of the failure,
// and once dropped, a slot still recorded pending is indistinguishable from
// an interrupted arm, which Reconcile completes: it would arm the image
// that just failed. It reports whether it recorded anything.
func (u *Updater) recordFailedTrial(st map[slots.SlotID]slots.SlotInfo, ws watchdog.Status) (bool, error) {
	other := u.Booted.Other()
	if ws.FailedTrial != string(other) {
		return false, nil
	}
	switch st[other].State {
	case slots.Written, slots.Pending, slots.Good:
	default:
		return false, nil
	}
	reason := fmt.Sprintf("trial boot failed: the bootloader used all %d attempts and fell back to %s", ws.Attempts, u.Booted)
	if err := u.Slots.MarkBad(other, reason); err != nil {
		return false, fmt.Errorf("record slot %s bad (its trial boot failed): %w", other, err)
	}
	u.log().Warn("trial boot failed: slot recorded bad", "slot", string(other), "fallback", string(u.Booted))
	return true, nil
}

// Reconcile makes the slot states and the bootloader environment agree
// again. Run it at every start, before the health checks. It is idempotent
// and safe to cut at any point: every step rereads both stores and each
// write it makes is one a later run would make again.
//
// For the other (not booted) slot X:
//
//   - the bootloader fell back from X (X on trial with 0 attempts left):
//     X is recorded bad ("trial boot failed"), then dropped from the
//     environment;
//   - X pending but not armed (a cut between Arm's two writes): X is armed
//     again. Pending is the durable record of a decision already taken on
//     a verified slot; completing it is what a journal replay does, and it
//     needs no ground contact. Rolling back would need a pending -> written
//     transition that slots does not offer, and it would lose the arm
//     silently. (Reconcile does this only when the booted slot is good
//     and committed: Arm makes the booted slot X's fallback, and arming X
//     while the booted slot is on trial would end that trial.)
//   - X bootable while its state is empty, writing, written or bad (a cut
//     in Install, or a hand-edited environment): X is dropped from the
//     environment.
//   - the booted slot good and committed but missing from BOOT_ORDER, or
//     at 0 attempts behind X armed: it is put back (last) with N attempts,
//     so that X always has a fallback.
//
// For the booted slot:
//
//   - good: nothing (Trial if the environment has it on trial);
//   - pending: Trial; the health checks and Commit decide;
//   - anything else (the state file says this slot holds no verified or
//     proven content, which only a hand-edited environment or state file
//     produces): a warning, never a state change; if the other slot is
//     good, the booted slot is dropped from the environment so that the
//     next boot returns to the good slot; if not, it stays, since a board
//     that boots something beats one that boots nothing.
func (u *Updater) Reconcile() (*ReconcileResult, error) {
	if err := u.check(); err != nil {
		return nil, err
	}
	log := u.log()
	booted, other := u.Booted, u.Booted.Other()
	res := &ReconcileResult{Booted: booted}
	st, ws, err := u.snapshot()
	if err != nil {
		return nil, err
	}

	if ok, err := u.recordFailedTrial(st, ws); err != nil {
		return res, fmt.Errorf("flightd: reconcile: %w", err)
	} else if ok {
		res.act(log, "slot %s: trial boot failed, recorded bad", other)
		if st, ws, err = u.snapshot(); err != nil {
			return res, err
		}
	}

	if st[other].State == slots.Pending && !armed(ws, other) && st[booted].State == slots.Good && !u.onTrial(st, ws) {
		if err := u.Boot.Arm(string(other)); err != nil {
			return res, fmt.Errorf("flightd: reconcile: arm pending slot %s: %w", other, err)
		}
		res.act(log, "slot %s: pending but not armed (arm interrupted): armed", other)
		if st, ws, err = u.snapshot(); err != nil {
			return res, err
		}
	}

	if s := st[other].State; bootable(ws, other) && s != slots.Pending && s != slots.Good {
		if err := u.unboot(st, ws, other); err != nil {
			if !errors.Is(err, watchdog.ErrLastSlot) {
				return res, fmt.Errorf("flightd: reconcile: %w", err)
			}
			res.warn(log, "slot %s is %s but the environment can boot it, and it cannot be dropped: %v", other, s, err)
		} else {
			res.act(log, "slot %s: %s, dropped from the boot order", other, s)
		}
		if st, ws, err = u.snapshot(); err != nil {
			return res, err
		}
	}

	// The committed good booted slot is the fallback of whatever the
	// environment boots first: it must be in BOOT_ORDER, and, behind an
	// armed trial, have attempts left. Missing (a hand edit: flightd's
	// own writes never drop it), a slot that hangs would be retried
	// forever by the bootloader's counter reset; at 0 attempts behind a
	// trial, the reset would give the trial N attempts more. Commit does
	// the same after the health checks; this is before them, so that a
	// boot whose health checks fail still leaves the board a way back.
	// It is put back last: what boots next does not change.
	if st[booted].State == slots.Good && !u.onTrial(st, ws) && (!bootable(ws, booted) || armed(ws, other) && ws.Primary == string(other) && ws.Left[string(booted)] == 0) {
		if err := u.Boot.MarkGood(string(booted)); err != nil {
			return res, fmt.Errorf("flightd: reconcile: put booted slot %s back as the fallback: %w", booted, err)
		}
		res.act(log, "booted slot %s: good but not a fallback the bootloader can reach (order %q, %d attempts left): put back with %d attempts", booted, strings.Join(ws.Order, " "), ws.Left[string(booted)], u.Boot.Attempts)
		if st, ws, err = u.snapshot(); err != nil {
			return res, err
		}
	}

	res.BootedState = st[booted].State
	switch st[booted].State {
	case slots.Good:
		res.Trial = ws.TrialSlot == string(booted)
	case slots.Pending:
		res.Trial = true
	default:
		s := st[booted].State
		switch {
		case st[other].State == slots.Good && bootable(ws, booted):
			if err := u.unboot(st, ws, booted); err != nil {
				if !errors.Is(err, watchdog.ErrLastSlot) {
					return res, fmt.Errorf("flightd: reconcile: %w", err)
				}
				res.warn(log, "booted slot %s is %s in the slot state and cannot be dropped: %v", booted, s, err)
			} else {
				res.act(log, "booted slot %s is %s in the slot state: dropped from the boot order, the next boot returns to good slot %s", booted, s, other)
			}
		case st[other].State == slots.Good:
			res.warn(log, "booted slot %s is %s in the slot state; the next boot returns to good slot %s", booted, s, other)
		default:
			res.warn(log, "booted slot %s is %s in the slot state, and slot %s is not good to return to: left bootable", booted, s, other)
		}
	}
	return res, nil
}

// Commit records that the booted slot passed its health checks: the
// environment first (its counter back to N, its trial ended), then the slot
// state (good). Call it after the health checks of every boot: on a boot
// that is no trial it only resets the counter, and writes nothing when the
// counter is already N.
//
// The environment goes first because it decides what boots. Once the
// checks have passed, the slot must stop being counted down at once: with
// the slot state first, a power cut before the environment write could
// let the bootloader exhaust the trial's attempts and abandon a slot that
// passed. The other way round, a cut leaves the slot pending with no trial
// in the environment; the next start reports Trial again and the next
// Commit finishes it.
func (u *Updater) Commit() error {
	if err := u.check(); err != nil {
		return err
	}
	info := u.Slots.Status().Slots[slotIndex(u.Booted)]
	if info.State != slots.Pending && info.State != slots.Good {
		return fmt.Errorf("%w: slot %s is %s (only a pending or good slot can be)", ErrNotCommittable, u.Booted, info.State)
	}
	if err := u.Boot.MarkGood(string(u.Booted)); err != nil {
		return fmt.Errorf("flightd: commit slot %s: environment: %w", u.Booted, err)
	}
	if err := u.Slots.MarkGood(u.Booted); err != nil {
		return fmt.Errorf("flightd: commit slot %s: slot state: %w", u.Booted, err)
	}
	if info.State == slots.Pending {
		u.log().Info("update committed", "slot", string(u.Booted), "image", info.Image)
	}
	return nil
}

func slotIndex(id slots.SlotID) int {
	if id == slots.B {
		return 1
	}
	return 0
}

// Arm makes an installed slot the one the next boot tries, as a trial:
// slot state pending first, then the environment. The slot must be written
// (verified) or good; arming an already pending slot arms the environment
// again (what Reconcile does after a cut between the two).
func (u *Updater) Arm(slot slots.SlotID) error {
	if err := u.checkInactive("arm", slot); err != nil {
		return err
	}
	st, ws, err := u.snapshot()
	if err != nil {
		return err
	}
	if u.onTrial(st, ws) {
		return fmt.Errorf("%w: commit slot %s before arming slot %s", ErrTrialInProgress, u.Booted, slot)
	}
	if ok, err := u.recordFailedTrial(st, ws); err != nil {
		return fmt.Errorf("flightd: arm slot %s: %w", slot, err)
	} else if ok {
		return fmt.Errorf("%w: slot %s used all %d attempts and the bootloader fell back to %s; recorded bad, install it again", ErrTrialFailed, slot, ws.Attempts, u.Booted)
	}
	if st[slot].State != slots.Pending {
		if err := u.Slots.MarkPending(slot); err != nil {
			return fmt.Errorf("flightd: arm slot %s: %w", slot, err)
		}
	}
	if err := u.Boot.Arm(string(slot)); err != nil {
		return fmt.Errorf("flightd: arm slot %s: environment: %w", slot, err)
	}
	u.log().Info("slot armed for a trial boot", "slot", string(slot), "attempts", u.Boot.Attempts)
	return nil
}

// Install writes img into slot (never the booted one), verifies it by
// reading it back, and arms it for a trial boot at the next reboot. In
// order:
//
//  1. checks that write nothing: the booted slot is committed (its trial
//     over: the other slot is its fallback), the environment is readable,
//     and slot is not the only good slot;
//  2. slot is dropped from the environment, before its state or content
//     change: the bootloader never boots a slot that is being written;
//  3. a pending slot is recorded bad ("disarmed: replaced by a new
//     install"), since slots has no pending -> writing (a cut between 2
//     and 3 leaves it pending and unarmed: Reconcile arms it again, the
//     verified image it held, and the retried Install disarms it again;
//     see Disarm);
//  4. slots.Install: state writing, write, sync, read back, state written
//     (or bad on a mismatch);
//  5. Arm: state pending, then the environment.
//
// A failure or power cut anywhere leaves a state a retry of Install (or
// Reconcile) accepts.
func (u *Updater) Install(ctx context.Context, slot slots.SlotID, img slots.Image) (*slots.InstallResult, error) {
	if err := u.checkInactive("install", slot); err != nil {
		return nil, err
	}
	if err := CheckImageDigest(img.Digest); err != nil {
		return nil, fmt.Errorf("flightd: install slot %s: %w", slot, err)
	}
	if err := u.checkImage(slot, img); err != nil {
		return nil, fmt.Errorf("flightd: install slot %s: %w", slot, err)
	}
	st, ws, err := u.snapshot()
	if err != nil {
		return nil, err
	}
	if u.onTrial(st, ws) {
		return nil, fmt.Errorf("%w: commit slot %s before installing into slot %s, its fallback", ErrTrialInProgress, u.Booted, slot)
	}
	if st[slot].State == slots.Good && st[u.Booted].State != slots.Good {
		return nil, fmt.Errorf("%w: slot %s is good and booted slot %s is %s", ErrOnlyGoodSlot, slot, u.Booted, st[u.Booted].State)
	}
	res, err := u.write(ctx, slot, img)
	if err != nil {
		return nil, err
	}
	if err := u.Arm(slot); err != nil {
		// Say what was done: the slot holds the verified image (and may
		// be recorded pending; Reconcile then arms it at the next start),
		// and a retry of Install writes it again.
		return res, fmt.Errorf("flightd: install slot %s: written and verified (%s), but not armed: %w", slot, res.Digest, err)
	}
	return res, nil
}

// Write is Install without the Arm: steps 1 to 4. The slot is left
// written (verified), for the activate command to arm. The uplink engine
// installs through it.
func (u *Updater) Write(ctx context.Context, slot slots.SlotID, img slots.Image) (*slots.InstallResult, error) {
	if err := u.checkInactive("install", slot); err != nil {
		return nil, err
	}
	if err := CheckImageDigest(img.Digest); err != nil {
		return nil, fmt.Errorf("flightd: install slot %s: %w", slot, err)
	}
	if err := u.checkImage(slot, img); err != nil {
		return nil, fmt.Errorf("flightd: install slot %s: %w", slot, err)
	}
	st, ws, err := u.snapshot()
	if err != nil {
		return nil, err
	}
	if u.onTrial(st, ws) {
		return nil, fmt.Errorf("%w: commit slot %s before installing into slot %s, its fallback", ErrTrialInProgress, u.Booted, slot)
	}
	if st[slot].State == slots.Good && st[u.Booted].State != slots.Good {
		return nil, fmt.Errorf("%w: slot %s is good and booted slot %s is %s", ErrOnlyGoodSlot, slot, u.Booted, st[u.Booted].State)
	}
	return u.write(ctx, slot, img)
}

// write drops slot from the environment (a pending slot recorded bad)
// and installs img into it: steps 2 to 4 of Install.
func (u *Updater) write(ctx context.Context, slot slots.SlotID, img slots.Image) (*slots.InstallResult, error) {
	if err := u.disarm(slot, "replaced by a new install"); err != nil {
		return nil, fmt.Errorf("flightd: install slot %s: %w", slot, err)
	}
	res, err := u.Slots.Install(ctx, slot, img)
	if err != nil {
		return nil, fmt.Errorf("flightd: install slot %s: %w", slot, err)
	}
	return res, nil
}

// checkImage refuses, before anything is written (the slot dropped from
// the environment included), an image whose shape the slot's backend
// cannot take.
func (u *Updater) checkImage(slot slots.SlotID, img slots.Image) error {
	return u.Slots.CheckImage(slot, img)
}

// Disarm abandons an armed update before its trial boot: slot is dropped
// from the environment first, then a pending slot is recorded bad
// ("disarmed: ..."; slots has no pending -> written, so installing it
// again means writing it again). A cut between the two leaves the slot
// pending and unarmed, which Reconcile arms again: the disarm did not
// happen, and is retried. (This is also why dropping the slot with
// `flightd boot mark-bad` alone is undone by the next Reconcile.) The
// booted slot is refused.
func (u *Updater) Disarm(slot slots.SlotID, why string) error {
	if err := u.checkInactive("disarm", slot); err != nil {
		return err
	}
	if err := u.disarm(slot, why); err != nil {
		return fmt.Errorf("flightd: disarm slot %s: %w", slot, err)
	}
	return nil
}

// disarm drops slot from the environment, then records a pending slot
// bad: the environment first, so that the bootloader never boots a slot
// recorded bad. A failed trial is the exception: it is recorded bad first
// (recordFailedTrial), or a cut after the drop would leave it pending and
// unarmed, and Reconcile would arm the image that failed.
func (u *Updater) disarm(slot slots.SlotID, why string) error {
	st, ws, err := u.snapshot()
	if err != nil {
		return err
	}
	if ok, err := u.recordFailedTrial(st, ws); err != nil {
		return err
	} else if ok {
		if st, ws, err = u.snapshot(); err != nil {
			return err
		}
	}
	if err := u.unboot(st, ws, slot); err != nil {
		return err
	}
	if st[slot].State == slots.Pending {
		if err := u.Slots.MarkBad(slot, "disarmed: "+why); err != nil {
			return err
		}
		u.log().Info("slot disarmed", "slot", string(slot), "why", why)
	}
	return nil
}
