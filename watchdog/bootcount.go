package watchdog

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Boot counting follows RAUC's variable protocol so that RAUC's boot
// scripts, and anyone who knows them, work with it unchanged:
//
//	BOOT_ORDER   "A B": slots in the order the bootloader tries them
//	BOOT_A_LEFT  attempts left for slot A, one digit 0-9
//	BOOT_B_LEFT  attempts left for slot B
//
// On every boot the bootloader takes the first slot in BOOT_ORDER with
// attempts left, decrements its counter, saves the environment, and boots
// it with rauc.slot=X on the kernel command line. When no slot has
// attempts left it resets every counter to N and resets the board.
//
// bootorbit adds one variable that bootloaders ignore:
//
//	BOOTORBIT_TRIAL  the slot armed for a trial and not yet marked good
//
// It is what makes a trial boot knowable: a counter below N cannot tell a
// trial from a good slot that has simply booted since it was last marked
// good. Arm sets it, MarkGood and MarkBad of that slot clear it.
const (
	VarBootOrder = "BOOT_ORDER"
	VarTrial     = "BOOTORBIT_TRIAL"

	// MaxAttempts keeps counters to one digit: U-Boot's setexpr writes
	// hex and its test -gt reads decimal, which agree only on 0-9.
	MaxAttempts = 9
	// DefaultAttempts is the N of the shipped boot scripts.
	DefaultAttempts = 3

	// DefaultBootOrder is what the boot scripts assume when BOOT_ORDER is
	// unset.
	DefaultBootOrder = "A B"
)

// SlotNames are the two slots.
var SlotNames = []string{"A", "B"}

// Errors of boot control.
var (
	ErrBadSlot   = errors.New("watchdog: bad slot name")
	ErrBootVar   = errors.New("watchdog: bad boot variable")
	ErrAttempts  = errors.New("watchdog: attempts out of range")
	ErrLastSlot  = errors.New("watchdog: refusing to drop the last slot from BOOT_ORDER")
	ErrNotBooted = errors.New("watchdog: booted slot unknown")
)

// LeftVar is the attempts counter variable of slot: BOOT_A_LEFT.
func LeftVar(slot string) string { return "BOOT_" + slot + "_LEFT" }

// CheckSlot returns an error unless s is "A" or "B".
func CheckSlot(s string) error {
	if s == "A" || s == "B" {
		return nil
	}
	return fmt.Errorf("%w: %q (want A or B)", ErrBadSlot, s)
}

// CheckAttempts returns an error unless 1 <= n <= MaxAttempts.
func CheckAttempts(n int) error {
	if n < 1 || n > MaxAttempts {
		return fmt.Errorf("%w: %d (want 1..%d)", ErrAttempts, n, MaxAttempts)
	}
	return nil
}

func otherSlot(s string) string {
	if s == "A" {
		return "B"
	}
	return "A"
}

// ParseCmdline returns the slot named by rauc.slot= on a kernel command
// line, or "" when there is none. The last occurrence wins, as for any
// kernel parameter.
func ParseCmdline(cmdline string) (string, error) {
	slot := ""
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "rauc.slot="); ok {
			slot = v
		}
	}
	if slot == "" {
		return "", nil
	}
	if err := CheckSlot(slot); err != nil {
		return "", fmt.Errorf("kernel command line rauc.slot: %w", err)
	}
	return slot, nil
}

// BootControl reads and changes the boot-counting variables in an
// environment. Every operation is one Load and at most one Save, so a
// power cut leaves either the whole change or none of it (to the degree
// the Env guarantees).
type BootControl struct {
	Env Env
	// Attempts is N: the boot attempts an armed slot gets, and what a good
	// slot's counter is reset to. 1..MaxAttempts.
	Attempts int
}

// Status is the boot state as the environment and kernel command line say.
type Status struct {
	// Booted is the running slot (rauc.slot= on the kernel command line),
	// "" when unknown.
	Booted string `json:"booted"`
	// Order is BOOT_ORDER, primary first.
	Order []string `json:"order"`
	// Primary is the first slot of Order.
	Primary string `json:"primary"`
	// Next is the slot the bootloader will boot next: the first in Order
	// with attempts left; "" means it will reset all counters first.
	Next string `json:"next"`
	// Left is the attempts left per slot.
	Left map[string]int `json:"left"`
	// Attempts is N.
	Attempts int `json:"attempts"`
	// TrialSlot is the slot armed and not yet marked good, "" if none.
	TrialSlot string `json:"trial_slot,omitempty"`
	// Trial is true when the booted slot is the trial slot: this boot is a
	// trial and the slot must be marked good or it will be abandoned.
	Trial bool `json:"trial"`
	// FailedTrial names the trial slot when its attempts ran out and the
	// bootloader fell back: the booted slot is another one and the trial
	// slot has 0 left. flightd reports it and marks the slot bad.
	FailedTrial string `json:"failed_trial,omitempty"`
}

// state is the parsed boot variables.
type state struct {
	order []string
	left  map[string]int
	trial string
}

func (c *BootControl) check() error {
	if c.Env == nil {
		return errors.New("watchdog: boot control has no environment")
	}
	return CheckAttempts(c.Attempts)
}

// parseState reads the protocol variables, with the defaults the boot
// scripts apply to unset ones. Values the scripts would misread are errors.
func parseState(v Vars, n int) (state, error) {
	st := state{left: map[string]int{}}
	order := v[VarBootOrder]
	if order == "" {
		order = DefaultBootOrder
	}
	seen := map[string]bool{}
	for _, s := range orderFields(order) {
		if CheckSlot(s) != nil || seen[s] {
			return st, fmt.Errorf("%w: %s=%q: want slot names A and B, each at most once", ErrBootVar, VarBootOrder, v[VarBootOrder])
		}
		seen[s] = true
		st.order = append(st.order, s)
	}
	if len(st.order) == 0 {
		// Set but blank: the scripts keep it (it is not empty), find no
		// slot, reset the counters and the board, and do so forever.
		return st, fmt.Errorf("%w: %s=%q names no slot: the boot scripts would reset the board in a loop", ErrBootVar, VarBootOrder, v[VarBootOrder])
	}
	for _, s := range SlotNames {
		x, ok := v[LeftVar(s)]
		if !ok || x == "" {
			st.left[s] = n
			continue
		}
		if len(x) != 1 || x[0] < '0' || x[0] > '9' {
			return st, fmt.Errorf("%w: %s=%q: want one digit 0-9", ErrBootVar, LeftVar(s), x)
		}
		st.left[s] = int(x[0] - '0')
	}
	if t := v[VarTrial]; t != "" {
		if CheckSlot(t) != nil {
			return st, fmt.Errorf("%w: %s=%q: want A or B", ErrBootVar, VarTrial, t)
		}
		st.trial = t
	}
	return st, nil
}

// orderFields splits BOOT_ORDER into slot names on spaces only, the
// separator flightd writes. Any other white space stays inside a word,
// which then names no slot and is refused: the bootloaders disagree on it
// (U-Boot's hush splits on newline but not on tab or carriage return; see
// BootloaderModel), so flightd must not guess which slot they will boot.
func orderFields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' })
}

func (st state) apply(v Vars) {
	v[VarBootOrder] = strings.Join(st.order, " ")
	for _, s := range SlotNames {
		v[LeftVar(s)] = strconv.Itoa(st.left[s])
	}
	if st.trial == "" {
		delete(v, VarTrial)
	} else {
		v[VarTrial] = st.trial
	}
}

// update loads the environment, lets f change the state, and saves it in
// one write if anything changed.
func (c *BootControl) update(f func(*state) error) error {
	if err := c.check(); err != nil {
		return err
	}
	v, err := c.Env.Load()
	if err != nil {
		// Never replace an unreadable environment with one that holds only
		// our variables: it also holds the board's boot commands.
		return fmt.Errorf("%w; boot control changes nothing in an unreadable environment", err)
	}
	st, err := parseState(v, c.Attempts)
	if err != nil {
		return err
	}
	if err := f(&st); err != nil {
		return err
	}
	nv := v.Clone()
	st.apply(nv)
	if nv.Equal(v) {
		return nil
	}
	return c.Env.Save(nv)
}

// Arm makes slot the primary with N attempts and records it as the trial
// slot, in one environment write. The other slot becomes the fallback with
// its counter refreshed to N: Arm is called from the running, healthy
// other slot, and a fallback with no attempts left would make the
// bootloader's reset loop retry the armed slot forever.
func (c *BootControl) Arm(slot string) error {
	if err := CheckSlot(slot); err != nil {
		return err
	}
	return c.update(func(st *state) error {
		st.order = []string{slot, otherSlot(slot)}
		st.left[slot] = c.Attempts
		st.left[otherSlot(slot)] = c.Attempts
		st.trial = slot
		return nil
	})
}

// MarkGood resets slot's counter to N, puts it back in BOOT_ORDER if it was
// missing, and ends its trial.
func (c *BootControl) MarkGood(slot string) error {
	if err := CheckSlot(slot); err != nil {
		return err
	}
	return c.update(func(st *state) error {
		st.left[slot] = c.Attempts
		if !contains(st.order, slot) {
			st.order = append(st.order, slot)
		}
		if st.trial == slot {
			st.trial = ""
		}
		return nil
	})
}

// MarkBad drops slot from BOOT_ORDER and sets its counter to 0. It refuses
// to drop the last slot: an empty BOOT_ORDER makes the scripts fall back to
// their default "A B", which would resurrect the bad slot. It also refuses
// to leave only a slot that is still on trial: if that one hangs, the
// bootloader's counter reset would retry it forever with nothing to fall
// back to. Mark the trial slot good first.
func (c *BootControl) MarkBad(slot string) error {
	if err := CheckSlot(slot); err != nil {
		return err
	}
	return c.update(func(st *state) error {
		rest := remove(st.order, slot)
		if len(rest) == 0 {
			return fmt.Errorf("%w: %s (an empty order makes the boot scripts fall back to %q)", ErrLastSlot, slot, DefaultBootOrder)
		}
		if len(rest) == 1 && rest[0] == st.trial {
			return fmt.Errorf("%w: %s (only %s would remain, and it is on trial, never marked good)", ErrLastSlot, slot, st.trial)
		}
		st.order = rest
		st.left[slot] = 0
		if st.trial == slot {
			st.trial = ""
		}
		return nil
	})
}

// Status reads the boot state; booted is the slot from the kernel command
// line ("" if unknown).
func (c *BootControl) Status(booted string) (Status, error) {
	if err := c.check(); err != nil {
		return Status{}, err
	}
	if booted != "" {
		if err := CheckSlot(booted); err != nil {
			return Status{}, err
		}
	}
	v, err := c.Env.Load()
	if err != nil {
		return Status{}, err
	}
	st, err := parseState(v, c.Attempts)
	if err != nil {
		return Status{}, err
	}
	s := Status{Booted: booted, Order: st.order, Left: st.left, Attempts: c.Attempts, TrialSlot: st.trial}
	if len(st.order) > 0 {
		s.Primary = st.order[0]
	}
	for _, x := range st.order {
		if st.left[x] > 0 {
			s.Next = x
			break
		}
	}
	if st.trial != "" && booted != "" {
		s.Trial = booted == st.trial
		if booted != st.trial && st.left[st.trial] == 0 {
			s.FailedTrial = st.trial
		}
	}
	return s, nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func remove(xs []string, x string) []string {
	var out []string
	for _, y := range xs {
		if y != x {
			out = append(out, y)
		}
	}
	return out
}

// Text renders the status for people, one fact per line.
func (s Status) Text() string {
	var b strings.Builder
	booted := s.Booted
	if booted == "" {
		booted = "unknown (no rauc.slot= on the kernel command line)"
	}
	fmt.Fprintf(&b, "booted         %s\n", booted)
	fmt.Fprintf(&b, "boot order     %s (primary %s)\n", strings.Join(s.Order, " "), s.Primary)
	next := s.Next
	if next == "" {
		next = "none has attempts left: the bootloader will reset all counters"
	}
	fmt.Fprintf(&b, "next boot      %s\n", next)
	fmt.Fprintf(&b, "attempts left  A %d/%d, B %d/%d\n", s.Left["A"], s.Attempts, s.Left["B"], s.Attempts)
	var trial string
	switch {
	case s.TrialSlot == "":
		trial = "none"
	case s.Trial:
		trial = fmt.Sprintf("this boot of %s is a trial: mark it good or it will be abandoned", s.TrialSlot)
	case s.FailedTrial != "":
		trial = fmt.Sprintf("%s FAILED: its attempts ran out and the bootloader fell back to %s; mark it bad", s.FailedTrial, s.Booted)
	default:
		trial = fmt.Sprintf("%s armed, not booted yet (%d attempts left)", s.TrialSlot, s.Left[s.TrialSlot])
	}
	fmt.Fprintf(&b, "trial          %s\n", trial)
	return b.String()
}
