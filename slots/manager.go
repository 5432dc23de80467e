package slots

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/opencontainers/go-digest"
)

// Backend kinds.
const (
	BackendDir = "dir"
	BackendRaw = "raw"
)

// Slot describes one slot's storage.
type Slot struct {
	Backend string // BackendDir or BackendRaw
	Path    string // directory, or device/file
	Size    int64  // raw: capacity in bytes; 0 means the size of the file
	// Directory slots only: with Format set, Install (and Prepare) make a new
	// filesystem of that type on Device and mount it on Path instead of
	// deleting the old tree file by file.
	Device       string   // the slot's block device, e.g. /dev/mmcblk0p3
	Format       string   // "" (empty the mounted filesystem, as today) or "ext4"
	MkfsOptions  []string // extra mkfs.ext4 arguments, after ours (e.g. "-E", "nodiscard")
	MountOptions string   // mount options for Path, comma-separated, e.g. "noatime"
}

// Options configures a Manager.
type Options struct {
	// FS is where the state file and raw slots live; nil means the OS.
	FS vfs.FS
	// StateDir holds the state file and the pristine /etc copies.
	StateDir string
	// A and B are the slots.
	A, B Slot
	// Booted is the running slot, from the kernel command line
	// (ParseCmdline); "" when unknown (a bench host), in which case no slot
	// is protected from writing.
	Booted SlotID
	// VarDir is the persistent /var shared by both slots; "" disables the
	// /var policy.
	VarDir string
	// Extract bounds and tunes directory extraction.
	Extract ExtractOptions
	// MaxEtcCopy bounds the pristine copy of a new directory slot's /etc
	// kept in StateDir (for the next /etc merge and factory resets): the
	// bytes its entries take, each rounded up to a 4 KiB block (default
	// DefaultMaxEtcCopy; negative: no bound). The copy is outside the slot's capacity check,
	// on the running system's filesystem: an image whose /etc is larger is
	// refused (ErrEtcTooLarge) before the slot is recorded written.
	MaxEtcCopy int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log receives state changes; nil means slog.Default().
	Log *slog.Logger
}

// Manager owns the slot state file and performs writes and transitions.
// It is safe for concurrent use. Operations that change a slot or its
// state are serialized (an install holds the manager for its whole write);
// reads of the state (Status, and the state Base and Verify start from)
// never wait for them: flightd's main loop reads Status between two
// watchdog pets while an install writes a slot for minutes.
type Manager struct {
	// op serializes the operations that change a slot or its state
	// (Install, Prepare, the Mark transitions, FactoryReset, CheckImage);
	// it may be held for minutes. Under op, m.st may be read without mu:
	// only op's holder replaces it.
	op sync.Mutex
	// mu guards st, the state as last saved: held only to copy it or to
	// replace it, never across a write, a sync or a read-back.
	mu  sync.Mutex
	o   Options
	st  *stateFile
	log *slog.Logger
}

// Open loads the slot state. A missing state file is a fresh system: the
// booted slot is recorded as good and the other as empty (not yet saved).
func Open(o Options) (*Manager, error) {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.StateDir == "" {
		return nil, errors.New("slots: no state directory")
	}
	for _, s := range []struct {
		id SlotID
		s  Slot
	}{{A, o.A}, {B, o.B}} {
		if s.s.Backend != BackendDir && s.s.Backend != BackendRaw {
			return nil, fmt.Errorf("slots: slot %s: unknown backend %q", s.id, s.s.Backend)
		}
		if s.s.Path == "" {
			return nil, fmt.Errorf("slots: slot %s: no path", s.id)
		}
		if err := s.s.validateFormat(s.id); err != nil {
			return nil, err
		}
	}
	if o.A.Device != "" && filepath.Clean(o.A.Device) == filepath.Clean(o.B.Device) {
		return nil, fmt.Errorf("slots: slots A and B have the same device %s", o.A.Device)
	}
	if o.Booted != "" && o.Booted != A && o.Booted != B {
		return nil, fmt.Errorf("%w: booted %q", ErrUnknownSlot, o.Booted)
	}
	st, err := loadState(o.FS, o.StateDir, o.Booted)
	if err != nil {
		return nil, err
	}
	return &Manager{o: o, st: st, log: o.Log}, nil
}

// SlotStatus is one slot as Status reports it.
type SlotStatus struct {
	ID      SlotID `json:"id"`
	Backend string `json:"backend"`
	Path    string `json:"path"`
	// Device and Format are set for a slot formatted at every install.
	Device string `json:"device,omitempty"`
	Format string `json:"format,omitempty"`
	Booted bool   `json:"booted"`
	SlotInfo
}

// Status is the state of both slots.
type Status struct {
	Booted SlotID       `json:"booted,omitempty"`
	Seq    uint64       `json:"seq"`
	Slots  []SlotStatus `json:"slots"`
}

// Status returns the state of both slots as last saved. It takes only the
// state lock: it does not wait for an install or any other operation in
// progress (a slot being written shows as writing).
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Status{Booted: m.o.Booted, Seq: m.st.Seq}
	for _, id := range []SlotID{A, B} {
		sl := m.slot(id)
		s.Slots = append(s.Slots, SlotStatus{ID: id, Backend: sl.Backend, Path: sl.Path, Device: sl.Device, Format: sl.Format,
			Booted: id == m.o.Booted, SlotInfo: m.st.Slots[id]})
	}
	return s
}

// stateOf is slot id's state as last saved, under the state lock only.
func (m *Manager) stateOf(id SlotID) State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.Slots[id].State
}

func (m *Manager) slot(id SlotID) Slot {
	if id == A {
		return m.o.A
	}
	return m.o.B
}

func (m *Manager) otherSlot(id SlotID) Slot {
	if id == A {
		return m.o.B
	}
	return m.o.A
}

// set durably records info for slot id after checking the transition; the
// in-memory state changes only once the state file is replaced. It clears
// the freshly-formatted marker: only Prepare sets it, through record.
func (m *Manager) set(id SlotID, info SlotInfo) error {
	return m.record(id, info, false)
}

// canWrite refuses what set would refuse of writing, before a formatted
// slot is unmounted.
func (m *Manager) canWrite(id SlotID) error {
	return m.checkTransition(id, Writing)
}

// checkTransition refuses a change of slot id's state to to that the
// transition table does not allow.
func (m *Manager) checkTransition(id SlotID, to State) error {
	if cur := m.st.Slots[id].State; !CanTransition(cur, to) {
		return fmt.Errorf("%w: slot %s %s -> %s", ErrTransition, id, cur, to)
	}
	return nil
}

func (m *Manager) record(id SlotID, info SlotInfo, formatted bool) error {
	info.Formatted = formatted
	if id != A && id != B {
		return fmt.Errorf("%w: %q", ErrUnknownSlot, id)
	}
	cur := m.st.Slots[id]
	if err := m.checkTransition(id, info.State); err != nil {
		return err
	}
	if info.State == Writing && id == m.o.Booted {
		return fmt.Errorf("%w: slot %s cannot be written", ErrActiveSlot, id)
	}
	info.Changed = m.o.Now().UTC()
	next := &stateFile{Version: stateFileFormat, Seq: m.st.Seq + 1, Slots: map[SlotID]SlotInfo{}}
	for k, v := range m.st.Slots {
		next.Slots[k] = v
	}
	next.Slots[id] = info
	if err := m.o.FS.MkdirAll(m.o.StateDir, 0o755); err != nil {
		return fmt.Errorf("slots: state dir: %w", err)
	}
	if err := saveState(m.o.FS, m.o.StateDir, next); err != nil {
		return err
	}
	m.mu.Lock()
	m.st = next
	m.mu.Unlock()
	m.log.Info("slot state", "slot", string(id), "from", string(cur.State), "to", string(info.State), "reason", info.Reason)
	return nil
}

// Prepare empties slot id ahead of an install, so that deleting the old
// content overlaps the download of the new image rather than its write. The
// slot is recorded writing first (its content is no longer an image); the
// booted slot is refused. Only a directory slot has anything to delete;
// Install empties the slot again anyway, which after Prepare finds nothing.
//
// A formatted slot (Slot.Format) is formatted and mounted instead, after
// the same checks as Install's, and then recorded writing and freshly
// formatted, so that the next Install does not format it again (as long as
// the slot path is still a mount of the device).
func (m *Manager) Prepare(ctx context.Context, id SlotID) error {
	m.op.Lock()
	defer m.op.Unlock()
	if id != A && id != B {
		return fmt.Errorf("%w: %q", ErrUnknownSlot, id)
	}
	if id == m.o.Booted {
		return fmt.Errorf("%w: slot %s cannot be written", ErrActiveSlot, id)
	}
	sl := m.slot(id)
	if sl.Format != "" {
		c, err := checkFormat(sl, m.otherSlot(id))
		if err != nil {
			return err
		}
		if err := m.canWrite(id); err != nil {
			return err
		}
		if err := release(sl, c); err != nil {
			return err
		}
		if err := m.set(id, SlotInfo{State: Writing}); err != nil {
			return errors.Join(err, c.remount(sl))
		}
		if err := m.dropLocalState(id); err != nil {
			return err
		}
		if err := format(ctx, sl, c); err != nil {
			return err
		}
		return m.record(id, SlotInfo{State: Writing}, true)
	}
	if err := m.set(id, SlotInfo{State: Writing}); err != nil {
		return err
	}
	if err := m.dropLocalState(id); err != nil {
		return err
	}
	if e, ok := m.backend(id).(emptier); ok {
		return e.empty(ctx)
	}
	return nil
}

// dropLocalState drops what is kept beside slot id's content (its layer
// index, a directory slot's pristine /etc), once the slot is recorded
// writing and before its content changes.
func (m *Manager) dropLocalState(id SlotID) error {
	if err := m.dropIndex(id); err != nil {
		return err
	}
	if l, ok := m.backend(id).(localState); ok {
		return l.dropLocalState()
	}
	return nil
}

// MarkPending records that slot id is armed for a trial boot. Only a
// written (verified) or good slot may be armed, and not the booted one.
// flightd calls it before arming the bootloader environment.
func (m *Manager) MarkPending(id SlotID) error {
	m.op.Lock()
	defer m.op.Unlock()
	if id == m.o.Booted {
		return fmt.Errorf("%w: slot %s is already running", ErrActiveSlot, id)
	}
	info := m.st.Slots[id]
	info.State, info.Reason = Pending, ""
	return m.set(id, info)
}

// MarkGood records that slot id passed its health checks. Only the booted
// slot can be marked good (when the booted slot is known). A slot already
// good is answered from the state, without waiting for an operation in
// progress: flightd commits every healthy boot, an install may be writing
// the other slot meanwhile, and there is nothing to write.
func (m *Manager) MarkGood(id SlotID) error {
	if m.o.Booted != "" && id != m.o.Booted {
		return fmt.Errorf("%w: slot %s is not the booted slot (%s)", ErrTransition, id, m.o.Booted)
	}
	if m.stateOf(id) == Good {
		return nil
	}
	m.op.Lock()
	defer m.op.Unlock()
	info := m.st.Slots[id]
	if info.State == Good {
		return nil
	}
	info.State, info.Reason = Good, ""
	return m.set(id, info)
}

// MarkBad records that slot id failed (verification, or its trial boot).
// A slot already bad is answered from the state, as MarkGood does.
func (m *Manager) MarkBad(id SlotID, reason string) error {
	if m.stateOf(id) == Bad {
		return nil
	}
	m.op.Lock()
	defer m.op.Unlock()
	info := m.st.Slots[id]
	if info.State == Bad {
		return nil
	}
	info.State, info.Reason = Bad, reason
	return m.set(id, info)
}

// Image is what Install writes into a slot.
type Image struct {
	// Label identifies the image in the state file (its manifest digest).
	Label string
	// Layers are the uncompressed layer tars, in order. A raw slot takes
	// exactly one: a tar holding the filesystem image as its only file, or,
	// with RawStream, the filesystem image itself.
	Layers    []io.Reader
	RawStream bool
	// Digest, if set, is the content digest the written slot must have:
	// "sha256:" and the hex of a raw image (for a RawStream layer, its
	// diff_id), or a directory slot's tree digest (TreeDigest). Tree, if
	// set, is a directory slot's expected tree (ExpectedTree, computed when
	// the layers were staged); a mismatch then names the first differing
	// path. With either, the writer does not hash what it writes: the
	// expected content is known, and the slot is verified by reading it back
	// from the medium. With neither, the writer hashes on the way (the
	// expected content is what it was given) and the read-back is compared
	// with that.
	Digest string
	Tree   []Entry
	// DiffIDs, if set, are the layers' diff_ids (the sha256 of each
	// uncompressed tar, from the image config), one per layer: the layer
	// index recorded at install (see Manager.Base) is keyed by them.
	// Without them each layer is hashed as it is written. They are names,
	// not checks: a layer that is not what its diff_id says gives a base
	// whose ranges do not match, which the delta engine detects.
	DiffIDs []digest.Digest
	// Size, if positive, is what the image declares it expands to: the
	// content bytes of its regular files for a directory slot, the
	// filesystem image's size for a raw slot. An archive that expands to
	// more (sparse entries) is refused before the write; so is one larger
	// than the slot, declared size or not.
	Size int64
}

// InstallResult reports a completed install.
type InstallResult struct {
	Digest       string
	StaticDigest string
	Bytes        int64
	Files        int
	Etc          *MergeReport // /etc merge, when one ran
	// IndexBytes is the size of the layer index recorded for the slot
	// (Manager.Base); 0 when none was, and IndexSkipped says why (an
	// image beyond the index's limits: its layers are not a delta base).
	IndexBytes   int64
	IndexSkipped string
	WriteTime    time.Duration
	VerifyTime   time.Duration
}

// CheckImage refuses an image whose shape the slot's backend cannot take
// (no layers, a nil layer, more than one layer for a raw slot, a raw
// stream for a directory slot). Install runs it before anything changes:
// found later, a wrong argument would cost the slot its content, perhaps
// the previous good release.
func (m *Manager) CheckImage(id SlotID, img Image) error {
	m.op.Lock()
	defer m.op.Unlock()
	return m.checkImage(id, img)
}

func (m *Manager) checkImage(id SlotID, img Image) error {
	if id != A && id != B {
		return fmt.Errorf("%w: %q", ErrUnknownSlot, id)
	}
	if err := checkLayers(img); err != nil {
		return err
	}
	return m.backend(id).checkImage(img)
}

// Install writes img into slot id and verifies it. The slot is recorded as
// writing before its first byte changes, and as written only after its data
// is synced and read back with the expected digest; a failure or a crash
// anywhere in between leaves it writing (or bad, when the read-back
// differs). The booted slot is refused before anything is touched.
func (m *Manager) Install(ctx context.Context, id SlotID, img Image) (*InstallResult, error) {
	m.op.Lock()
	defer m.op.Unlock()
	if id != A && id != B {
		return nil, fmt.Errorf("%w: %q", ErrUnknownSlot, id)
	}
	if id == m.o.Booted {
		return nil, fmt.Errorf("%w: slot %s cannot be written", ErrActiveSlot, id)
	}
	if err := m.checkImage(id, img); err != nil {
		return nil, err
	}
	if img.Tree != nil && img.Digest != "" {
		if d := TreeDigest(img.Tree, DigestOptions{}); d != img.Digest {
			return nil, fmt.Errorf("%w: image tree has digest %s, image says %s", ErrVerify, d, img.Digest)
		}
	}
	sl := m.slot(id)
	var fc *formatCheck
	if sl.Format != "" {
		var err error
		if fc, err = checkFormat(sl, m.otherSlot(id)); err != nil {
			return nil, err
		}
		// Formatted by Prepare and still mounted: mkfs would only repeat
		// itself. The write below clears the marker, so that a cut during
		// the extraction formats again.
		if cur := m.st.Slots[id]; cur.State == Writing && cur.Formatted && fc.mounted {
			fc = nil
		}
	}
	// The unmount comes before writing is recorded (a busy slot is refused
	// with its state unchanged), but its time is the write's.
	var released time.Duration
	if fc != nil {
		if err := m.canWrite(id); err != nil {
			return nil, err
		}
		t0 := m.o.Now()
		if err := release(sl, fc); err != nil {
			return nil, err
		}
		released = m.o.Now().Sub(t0)
	}
	if err := m.set(id, SlotInfo{State: Writing, Image: img.Label}); err != nil {
		if fc != nil {
			err = errors.Join(err, fc.remount(sl))
		}
		return nil, err
	}
	if err := m.dropLocalState(id); err != nil {
		return nil, err
	}
	idx, err := newIndexWriter(m.o.FS, m.o.StateDir, id, img.DiffIDs)
	if err != nil {
		return nil, err
	}
	defer idx.discard()
	res := &InstallResult{}
	start := m.o.Now().Add(-released)
	if fc != nil {
		if err := format(ctx, sl, fc); err != nil {
			return nil, err
		}
	}
	res.WriteTime = m.o.Now().Sub(start) // the unmount and the format
	info, err := m.backend(id).write(ctx, img, res, idx)
	var mm *mismatch
	if errors.As(err, &mm) {
		return nil, m.failVerify(id, mm.reason)
	}
	if err != nil {
		return nil, err
	}
	if img.Digest != "" && img.Digest != res.Digest {
		return nil, m.failVerify(id, fmt.Sprintf("content digest %s, image says %s", res.Digest, img.Digest))
	}
	// The index is durable before the slot is recorded written: a written
	// slot has its index, or none (abandoned, or an older release's).
	if res.IndexBytes, res.IndexSkipped, err = idx.commit(); err != nil {
		return nil, err
	}
	if res.IndexSkipped != "" {
		m.log.Warn("slot layer index not recorded", "slot", string(id), "reason", res.IndexSkipped)
	}
	if err := m.set(id, info); err != nil {
		return nil, err
	}
	return res, nil
}

func (m *Manager) failVerify(id SlotID, reason string) error {
	if err := m.set(id, SlotInfo{State: Bad, Reason: reason}); err != nil {
		return errors.Join(fmt.Errorf("%w: slot %s: %s", ErrVerify, id, reason), err)
	}
	return fmt.Errorf("%w: slot %s: %s", ErrVerify, id, reason)
}

// VerifyResult is the outcome of re-verifying a slot.
type VerifyResult struct {
	Slot     SlotID `json:"slot"`
	State    State  `json:"state"`
	Expected string `json:"expected"`
	Actual   string `json:"actual"`
	OK       bool   `json:"ok"`
	Detail   string `json:"detail,omitempty"`
}

// Verify reads an installed slot back (from the medium, dropping cached
// pages) and compares it with the digest recorded at install: the sha256
// for a raw slot, the static tree digest (without etc/ and var/, which hold
// local state) for a directory slot. It changes no state; the caller decides
// whether a mismatch makes the slot bad (MarkBad).
func (m *Manager) Verify(ctx context.Context, id SlotID) (*VerifyResult, error) {
	m.mu.Lock()
	info, b := m.st.Slots[id], m.backend(id)
	m.mu.Unlock()
	if id != A && id != B {
		return nil, fmt.Errorf("%w: %q", ErrUnknownSlot, id)
	}
	r := &VerifyResult{Slot: id, State: info.State}
	switch info.State {
	case Written, Pending, Good, Bad:
	default:
		return nil, fmt.Errorf("%w: slot %s is %s: nothing verified to compare with", ErrVerify, id, info.State)
	}
	var err error
	if r.Expected, r.Actual, err = b.readBack(ctx, info); err != nil {
		return nil, err
	}
	r.OK = r.Expected == r.Actual
	if !r.OK {
		r.Detail = "content differs from what was verified at install"
	}
	return r, nil
}

func (m *Manager) pristineDir(id SlotID) string {
	return filepath.Join(m.o.StateDir, "etc-pristine", string(id))
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
