package slots

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/internal/vfs"
)

// SlotID names a slot: "A" or "B", as on the kernel command line
// (rauc.slot=A) and in the bootloader's BOOT_ORDER.
type SlotID string

// The two slots.
const (
	A SlotID = "A"
	B SlotID = "B"
)

// Other returns the other slot.
func (s SlotID) Other() SlotID {
	if s == A {
		return B
	}
	return A
}

// ParseSlotID accepts "A", "B", "a" or "b".
func ParseSlotID(s string) (SlotID, error) {
	switch strings.ToUpper(s) {
	case "A":
		return A, nil
	case "B":
		return B, nil
	}
	return "", fmt.Errorf("%w: %q (want A or B)", ErrUnknownSlot, s)
}

// State is a slot's content state.
type State string

// Slot states. See docs/slots.md for the life cycle.
const (
	Empty   State = "empty"   // nothing installed, or contents unknown
	Writing State = "writing" // a write started and has not been verified
	Written State = "written" // written, synced and verified; not yet armed
	Pending State = "pending" // armed for a trial boot
	Good    State = "good"    // booted and passed health checks
	Bad     State = "bad"     // failed verification or its trial boot
)

// allowed is the transition table. A transition not listed is refused with
// ErrTransition. Writing is reachable from every state but pending so that a
// failed or stale slot can always be rewritten; the booted-slot rule is
// checked separately.
var allowed = map[State][]State{
	Empty:   {Writing},
	Writing: {Writing, Written, Bad},
	Written: {Writing, Pending, Bad},
	Pending: {Good, Bad, Written},
	Good:    {Writing, Pending, Bad},
	Bad:     {Writing},
}

// CanTransition reports whether from -> to is in the transition table.
func CanTransition(from, to State) bool {
	for _, s := range allowed[from] {
		if s == to {
			return true
		}
	}
	return false
}

func (s State) valid() bool {
	_, ok := allowed[s]
	return ok
}

// Errors of the slot model.
var (
	ErrUnknownSlot = errors.New("slots: unknown slot")
	ErrTransition  = errors.New("slots: transition not allowed")
	ErrActiveSlot  = errors.New("slots: slot is the booted slot")
	ErrStateFile   = errors.New("slots: bad state file")
	ErrCmdline     = errors.New("slots: booted slot not found on the kernel command line")
	ErrVerify      = errors.New("slots: verification failed")
	ErrImageShape  = errors.New("slots: image does not fit the slot")
)

// SlotInfo is what the state file records about one slot.
type SlotInfo struct {
	State State `json:"state"`
	// Image is the caller's label of the installed image (its manifest
	// digest, typically).
	Image string `json:"image,omitempty"`
	// Digest is the content digest verified after the write: the tree
	// digest of a directory slot (see docs/slots.md) or the sha256 of the
	// bytes of a raw slot.
	Digest string `json:"digest,omitempty"`
	// StaticDigest, for a directory slot, is the tree digest without the
	// mutable trees (etc/ and var/); it is what a later re-verify checks.
	StaticDigest string `json:"static_digest,omitempty"`
	// Size is the number of image bytes in a raw slot.
	Size int64 `json:"size,omitempty"`
	// Reason says why a slot is bad.
	Reason string `json:"reason,omitempty"`
	// Formatted, on a writing slot, says that Prepare made a fresh
	// filesystem on the slot's device and mounted it, so that Install need
	// not format it again. Every other state write clears it.
	Formatted bool      `json:"formatted,omitempty"`
	Changed   time.Time `json:"changed"`
}

// stateFile is the durable record, replaced atomically on every transition.
type stateFile struct {
	Version int                 `json:"version"`
	Seq     uint64              `json:"seq"`
	Slots   map[SlotID]SlotInfo `json:"slots"`
}

const (
	stateFileName   = "slots.json"
	maxStateFile    = 64 << 10
	stateFileFormat = 1
)

func decodeState(data []byte) (*stateFile, error) {
	if len(data) > maxStateFile {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrStateFile, maxStateFile)
	}
	// Unknown fields are ignored: the release rolled back to must read what
	// a newer one wrote. A field added within a version is therefore only
	// ever a hint whose absence is safe (Formatted: without it, Install
	// formats again); a change an older reader must not misread takes a
	// new version, which it refuses.
	dec := json.NewDecoder(bytes.NewReader(data))
	var st stateFile
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStateFile, err)
	}
	if st.Version != stateFileFormat {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrStateFile, st.Version, stateFileFormat)
	}
	for id, info := range st.Slots {
		if id != A && id != B {
			return nil, fmt.Errorf("%w: unknown slot %q", ErrStateFile, id)
		}
		if !info.State.valid() {
			return nil, fmt.Errorf("%w: slot %s: unknown state %q", ErrStateFile, id, info.State)
		}
	}
	if st.Slots == nil {
		st.Slots = map[SlotID]SlotInfo{}
	}
	return &st, nil
}

// loadState reads the state file; a missing file is a fresh system: the
// booted slot (if known) is good, as it is running, and the other is empty.
func loadState(fsys vfs.FS, dir string, booted SlotID) (*stateFile, error) {
	f, err := fsys.Open(filepath.Join(dir, stateFileName))
	if errors.Is(err, fs.ErrNotExist) {
		st := &stateFile{Version: stateFileFormat, Slots: map[SlotID]SlotInfo{A: {State: Empty}, B: {State: Empty}}}
		if booted != "" {
			st.Slots[booted] = SlotInfo{State: Good, Reason: "booted; no state recorded"}
		}
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("slots: state: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, fmt.Errorf("slots: state: %w", err)
	}
	st, err := decodeState(data)
	if err != nil {
		return nil, err
	}
	for _, id := range []SlotID{A, B} {
		if _, ok := st.Slots[id]; !ok {
			st.Slots[id] = SlotInfo{State: Empty}
		}
	}
	return st, nil
}

func saveState(fsys vfs.FS, dir string, st *stateFile) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := vfs.WriteFileAtomic(fsys, filepath.Join(dir, stateFileName), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("slots: save state: %w", err)
	}
	return nil
}

// ParseCmdline returns the slot named by rauc.slot= on a kernel command
// line (the content of /proc/cmdline). The bootloader puts it there; it is
// the only trustworthy answer to "which slot is running".
func ParseCmdline(cmdline string) (SlotID, error) {
	var found SlotID
	for _, f := range strings.Fields(cmdline) {
		if f == "--" {
			break // the rest goes to init
		}
		v, ok := strings.CutPrefix(f, "rauc.slot=")
		if !ok {
			continue
		}
		id, err := ParseSlotID(v)
		if err != nil {
			return "", fmt.Errorf("%w: rauc.slot=%q", ErrCmdline, v)
		}
		found = id // the last one wins, as for the kernel's own parameters
	}
	if found == "" {
		return "", ErrCmdline
	}
	return found, nil
}
