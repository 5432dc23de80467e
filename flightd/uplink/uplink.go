package uplink

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/flightd/uplink/journal"
	"github.com/bootorbit/bootorbit/flightd/uplink/staging"
	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/opencontainers/go-digest"
)

// Errors of the engine. Refusals of plans and offers are not errors of the
// caller's: they are counted, reported as events, and Step goes on.
var (
	// ErrBusy: an install is running.
	ErrBusy = errors.New("uplink: an install is in progress")
	// ErrUnknownPlan: a command names a plan the engine does not hold.
	ErrUnknownPlan = errors.New("uplink: unknown plan")
	// ErrBadState: the plan is not in a state the call applies to.
	ErrBadState = errors.New("uplink: plan in the wrong state")
	// ErrNoReceiver: the engine was opened without a return-link
	// authenticator (offline installs only) and takes no frames.
	ErrNoReceiver = errors.New("uplink: no receiver (no return-link authenticator configured)")
)

// Installer is what the engine needs from the slots and the boot side
// (flightd's Updater): which image runs, the data a delta is applied
// against, and a write into the inactive slot.
type Installer interface {
	// Status returns the slots: the booted one, and each one's state and
	// the label (image manifest digest) it records.
	Status() slots.Status
	// Base returns the booted image's layers by diff_id, as the delta
	// engine reads them (the booted slot itself: a raw slot's device, a
	// directory slot's files, plus the index kept at install time). It
	// may return nil when the vehicle holds nothing a delta can use.
	Base() delta.Base
	// Install writes img into the inactive slot, syncs it, reads it back
	// and records it written (slots.Manager.Install after taking the slot
	// out of the boot environment: flightd.Updater). It does not arm the
	// slot: activation is a separate command.
	Install(ctx context.Context, img slots.Image) (*slots.InstallResult, error)
}

// Config configures an Engine.
type Config struct {
	// Vehicle is this vehicle's id: plans and offers for another are refused.
	Vehicle uint32
	// HardwareID is this vehicle's hardware: a release for other hardware is
	// refused.
	HardwareID string
	// Dir holds the journal (journal.db, bbolt) and the staging directory
	// (staging/).
	Dir string
	// FS is the filesystem of the staging directory (nil: the OS's). The
	// journal is always a bbolt file on the OS filesystem.
	FS vfs.FS
	// StagingQuota bounds the staged bytes (plans and bundles); a plan whose
	// Staging does not fit is refused before its bundle.
	StagingQuota int64
	// GroundKeys are the ground's public keys by key id: they sign transfer
	// offers and plans. Several at once for rotation.
	GroundKeys map[uint32]ed25519.PublicKey
	// ReleaseKeys are the release authority's public keys by key id: a
	// plan's release must be signed by one of them.
	ReleaseKeys map[uint32]ed25519.PublicKey
	// ReturnAuth tags every frame sent back (protocol.NewReturnAuth with a
	// fresh epoch per Open). Nil: no receiver, InstallFile only.
	ReturnAuth *protocol.ReturnAuth
	// Opener, if set, opens sealed uplink frames before they are decoded;
	// a frame that does not open is counted and dropped. Nil: frames come
	// in clear, or the caller opens them and passes the inner frames (with
	// Codec the inner codec).
	Opener *protocol.Opener
	// MaxFrame is the largest frame of the links (default 1024). Codec and
	// ReturnCodec default to codecs of that size.
	MaxFrame    int
	Codec       *protocol.Codec
	ReturnCodec *protocol.Codec
	// MinVersion is the release version the vehicle holds when no installed
	// release is recorded (the factory image's); a plan must be above the
	// booted slot's version unless it allows a downgrade.
	MinVersion uint64
	// RawImage: the slots are raw, and an image's single layer is the
	// filesystem image itself (slots.Image.RawStream), whose diff_id is
	// then the digest the slot is read back against.
	RawImage bool
	// Receiver tunes the transfer receiver (report intervals, limits); its
	// Codec, Vehicle, Keys, Auth and Accept are set by the engine.
	Receiver transfer.ReceiverConfig
}

func (c *Config) check() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("no state directory"))
	}
	if c.StagingQuota <= 0 {
		errs = append(errs, fmt.Errorf("staging quota %d, want > 0", c.StagingQuota))
	}
	if len(c.GroundKeys) == 0 {
		errs = append(errs, errors.New("no ground keys"))
	}
	if len(c.ReleaseKeys) == 0 {
		errs = append(errs, errors.New("no release keys"))
	}
	if c.HardwareID == "" {
		errs = append(errs, errors.New("no hardware id"))
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = 1024
	}
	if len(errs) > 0 {
		return fmt.Errorf("uplink: config: %w", errors.Join(errs...))
	}
	return nil
}

func keyring(m map[uint32]ed25519.PublicKey) (*protocol.Keyring, error) {
	ids := make([]uint32, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	keys := make([]protocol.Key, 0, len(ids))
	for _, id := range ids {
		keys = append(keys, protocol.Key{ID: protocol.KeyID(id), Pub: m[id]})
	}
	return protocol.NewKeyring(keys...)
}

// Event is a state change for telemetry: a dictionary event with its
// arguments (dict.Event.NewEvent makes the frame) and a short text for logs.
type Event struct {
	Def  *dict.Event
	Args dict.Values
	Text string
}

// Engine receives plans and bundles and installs them. Its methods are safe
// for concurrent use: RunInstall may run in its own goroutine while Step
// and Tick go on.
type Engine struct {
	cfg         Config
	log         *slog.Logger
	inst        Installer
	groundKeys  *protocol.Keyring
	releaseKeys *protocol.Keyring
	j           *journal.DB
	st          *staging.Store

	mu       sync.Mutex
	rx       *transfer.Receiver
	auth     int64 // Authenticated
	plans    map[uint64]*planRec
	xfers    map[uint64]xferRec
	floors   map[uint32]uint64 // highest accepted plan id per ground key
	slotRecs map[slots.SlotID]slotRec
	// inFlight is the release an install is writing into slot inSlot
	// (from its start until its outcome is recorded, under mu with it):
	// the slot may be recorded written before the engine journals the
	// install, and Release must name what the slot holds meanwhile.
	inFlight *slotRec
	inSlot   slots.SlotID
	pendUp   []transfer.Record // engine records to commit with the next Ready
	rmAfter  []uint64          // staged transfers to delete after that commit
	rxCodec  *protocol.Codec
	outbox   [][]byte
	events   []Event
	refused  map[uint64]bool // offers whose refusal was reported, bounded
	counts   map[protocol.Code]uint64
	lastErr  protocol.Code
	lastText string
	lastAt   time.Time
	now      time.Time

	installing sync.Mutex // held by RunInstall and InstallFile

	// inspect: opened by Inspect, to read and check only.
	inspect bool
}

// Open opens the engine's journal and staging under cfg.Dir and restores
// what they hold: transfers resume where they were, a plan that was
// installing is installed again by the next RunInstall. inst may be nil
// for an engine that only receives (then nothing is installed).
func Open(cfg Config, inst Installer, log *slog.Logger) (*Engine, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	gk, err := keyring(cfg.GroundKeys)
	if err != nil {
		return nil, fmt.Errorf("uplink: ground keys: %w", err)
	}
	rk, err := keyring(cfg.ReleaseKeys)
	if err != nil {
		return nil, fmt.Errorf("uplink: release keys: %w", err)
	}
	fsys := cfg.FS
	if fsys == nil {
		fsys = vfs.Default
	}
	if err := staging.MkdirDurable(vfs.Default, cfg.Dir); err != nil { // the journal's, on the OS
		return nil, fmt.Errorf("uplink: %w", err)
	}
	st, err := staging.Open(fsys, filepath.Join(cfg.Dir, "staging"), cfg.StagingQuota)
	if err != nil {
		return nil, err
	}
	j, err := journal.Open(filepath.Join(cfg.Dir, "journal.db"))
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, log: log, inst: inst, groundKeys: gk, releaseKeys: rk, j: j, st: st,
		plans: map[uint64]*planRec{}, xfers: map[uint64]xferRec{}, floors: map[uint32]uint64{},
		slotRecs: map[slots.SlotID]slotRec{}, refused: map[uint64]bool{}, counts: map[protocol.Code]uint64{}}
	if err := e.restore(); err != nil {
		j.Close()
		st.Close()
		return nil, err
	}
	return e, nil
}

// Inspect opens the journal and staging under cfg.Dir to read and check
// them only (`flightd check`): nothing is repaired, reserved, received or
// installed, and no key is needed. It fails at once while a daemon holds
// the journal.
func Inspect(cfg Config, inst Installer, log *slog.Logger) (*Engine, error) {
	if cfg.Dir == "" {
		return nil, errors.New("uplink: config: no state directory")
	}
	if cfg.StagingQuota <= 0 {
		cfg.StagingQuota = 1 << 62
	}
	if log == nil {
		log = slog.Default()
	}
	fsys := cfg.FS
	if fsys == nil {
		fsys = vfs.Default
	}
	j, err := journal.OpenReadOnly(filepath.Join(cfg.Dir, "journal.db"))
	if err != nil {
		return nil, err
	}
	st, err := staging.Open(fsys, filepath.Join(cfg.Dir, "staging"), cfg.StagingQuota)
	if err != nil {
		j.Close()
		return nil, err
	}
	e := &Engine{cfg: cfg, log: log, inst: inst, j: j, st: st, inspect: true,
		plans: map[uint64]*planRec{}, xfers: map[uint64]xferRec{}, floors: map[uint32]uint64{},
		slotRecs: map[slots.SlotID]slotRec{}, refused: map[uint64]bool{}, counts: map[protocol.Code]uint64{}}
	if err := e.restore(); err != nil {
		j.Close()
		st.Close()
		return nil, err
	}
	return e, nil
}

// Close closes the journal and the staging files. Call it after RunInstall
// returned.
func (e *Engine) Close() error {
	e.installing.Lock()
	defer e.installing.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	return errors.Join(e.j.Close(), e.st.Close())
}

// Step takes one frame received from the ground (sealed if Config.Opener
// is set). The error says why the frame was dropped or refused (it is also
// counted), or that persisting failed; the engine goes on either way. What
// the frame asks to store is made durable at the latest by the next Tick
// or Outbox, before any frame that depends on it is released.
func (e *Engine) Step(now time.Time, frame []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rx == nil {
		return ErrNoReceiver
	}
	e.now = now
	if e.cfg.Opener != nil {
		inner, err := e.cfg.Opener.Open(frame)
		if err != nil {
			e.rx.Counters.Count(err)
			return err
		}
		frame = inner
	}
	if e.pausedChunk(frame) {
		return fmt.Errorf("uplink: chunk of a paused plan dropped")
	}
	before := authCount(e.rx.Stats)
	serr := e.rx.Step(now, frame)
	// Counted around the receiver's step alone: what the persisting below
	// does (a plan abandoned, say) is the vehicle's, not the frame's.
	e.auth += authCount(e.rx.Stats) - before
	// Persisting is batched: the work of many frames commits at once (one
	// fsync of the staging, one bbolt transaction) at the next Tick or
	// Outbox, or here once a batch is full, which bounds the data held.
	if rd := e.rx.Ready(); len(rd.Writes) >= maxBatch || len(rd.Completed) > 0 {
		if err := e.process(now); err != nil {
			return err
		}
	}
	return serr
}

// Authenticated counts the frames Step took that only the ground can have
// sent first: offers accepted, new chunks that verified against a signed
// hash tree, signed cancels, and report requests whose MAC verified with a
// new sequence number. A duplicate, a replay or anything unauthenticated
// does not move it: the daemon answers the sender of a frame that did
// (protocol/link PeerLink.Answer), and no one else.
func (e *Engine) Authenticated() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.auth
}

// authCount is what Authenticated counts, from the receiver's stats.
func authCount(st transfer.ReceiverStats) int64 {
	return st.OffersAccepted + st.ChunksJournaled + st.Cancelled + st.RequestsAuthenticated
}

// maxBatch is the chunks received before Step persists them itself.
const maxBatch = 256

// Tick moves the timers to now: reports due are sent.
func (e *Engine) Tick(now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rx == nil {
		return nil
	}
	e.now = now
	e.rx.Tick(now)
	return e.process(now)
}

// SetLink tells the receiver whether the return link is up: its report
// timers freeze while it is down.
func (e *Engine) SetLink(now time.Time, returnUp bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rx != nil {
		e.rx.SetLink(now, transfer.LinkState{Forward: true, Return: returnUp})
	}
}

// Deadline is when Tick must be called next (zero: no timer pending).
func (e *Engine) Deadline() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rx == nil {
		return time.Time{}
	}
	return e.rx.Ready().Deadline
}

// Outbox returns the frames to send to the ground, each tagged with the
// return-link MAC, and forgets them. Every record they depend on is
// already durable.
func (e *Engine) Outbox() [][]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rx != nil {
		if err := e.process(e.now); err != nil {
			// The frames stay unsent until the work is durable; the
			// error is the next Tick's too.
			e.log.Error("uplink: persist", "err", err)
			return nil
		}
	}
	out := e.outbox
	e.outbox = nil
	return out
}

// Events returns the state changes since the last call, and forgets them.
func (e *Engine) Events() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	ev := e.events
	e.events = nil
	return ev
}

// maxEvents bounds the events kept for a caller that does not take them:
// the oldest are dropped.
const maxEvents = 4096

func (e *Engine) event(def *dict.Event, text string, args dict.Values) {
	e.log.Info("uplink: "+def.Name, "text", text)
	if len(e.events) >= maxEvents {
		e.events = append(e.events[:0], e.events[len(e.events)-maxEvents/2:]...)
	}
	e.events = append(e.events, Event{Def: def, Args: args, Text: text})
}

// fail records a refusal or failure: counter, last error.
func (e *Engine) fail(code protocol.Code, text string) {
	e.counts[code]++
	e.lastErr, e.lastText, e.lastAt = code, text, e.now
	e.log.Warn("uplink: refused or failed", "code", dict.EnumReason.NameOf(uint64(code)), "text", text)
}

// Status is what telemetry reports of the uplink (hk.transfer, hk.storage,
// counters by reason, last error).
type Status struct {
	// Plan is the latest plan (0: none) and State where it is (a
	// dict.EnumTransferState value; StateName its name).
	Plan      uint64
	State     uint8
	StateName string
	// Transfer is the transfer in progress for that plan (0: none), with
	// its chunks held and total (hash blocks included).
	Transfer          uint64
	ChunksHeld, Total int
	// BytesStaged is the staging reserved for the plan.
	BytesStaged int64
	// StagingUsed and StagingQuota are the whole store's.
	StagingUsed, StagingQuota int64
	// Refusals counts plans and offers refused and installs failed, by
	// reason code, since Open.
	Refusals map[protocol.Code]uint64
	// LastError is the last refusal or failure (0: none since Open).
	LastError     protocol.Code
	LastErrorText string
	LastErrorAt   time.Time
	// Receiver are the transfer receiver's counters (frames dropped by
	// reason, chunks journaled, duplicates).
	Receiver   transfer.ReceiverStats
	RxCounters [protocol.NumReasons]uint64
}

// Status returns the current status.
func (e *Engine) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Status{StagingUsed: e.st.Used(), StagingQuota: e.st.Quota(), Refusals: map[protocol.Code]uint64{},
		LastError: e.lastErr, LastErrorText: e.lastText, LastErrorAt: e.lastAt}
	for c, n := range e.counts {
		s.Refusals[c] = n
	}
	if e.rx != nil {
		s.Receiver = e.rx.Stats
		s.RxCounters = e.rx.Counters.Snapshot()
	}
	var latest uint64
	for id := range e.plans {
		latest = max(latest, id)
	}
	if latest == 0 {
		s.StateName = dict.EnumTransferState.NameOf(0)
		return s
	}
	p := e.plans[latest]
	s.Plan, s.State = latest, p.State
	if p.Paused {
		s.State = stPaused
	}
	s.StateName = dict.EnumTransferState.NameOf(uint64(s.State))
	res := e.st.Reserved()
	for xid, x := range e.xfers {
		if x.Plan != latest {
			continue
		}
		s.BytesStaged += res[xid]
		if e.rx != nil {
			if held, total, ok := e.rx.Progress(xid); ok {
				s.Transfer, s.ChunksHeld, s.Total = xid, held, total
			}
		}
	}
	return s
}

// Release returns the release recorded for slot (written by an install of
// this engine), or the one an install is writing into it: its version and
// manifest digest. A caller that shows it next to the slot's state reads
// the slot first and keeps the version only if the manifest is the
// slot's label: the two then always agree.
func (e *Engine) Release(slot slots.SlotID) (version uint64, manifest digest.Digest, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.inFlight != nil && e.inSlot == slot {
		return e.inFlight.Version, digest.Digest(e.inFlight.Manifest), true
	}
	r, ok := e.slotRecs[slot]
	return r.Version, digest.Digest(r.Manifest), ok
}

// Installed returns the plan installed into the inactive slot and waiting
// for activation (0: none), with that slot.
func (e *Engine) Installed() (plan uint64, slot slots.SlotID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, p := range e.plans {
		if p.State == stInstalled && id > plan {
			plan, slot = id, slots.SlotID(p.Slot)
		}
	}
	return plan, slot
}

// MarkArmed records that the installed plan's slot was armed (by the
// activate command), so that Status says so.
func (e *Engine) MarkArmed(plan uint64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.plans[plan]
	if p == nil {
		return fmt.Errorf("%w: %d", ErrUnknownPlan, plan)
	}
	if p.State != stInstalled {
		return fmt.Errorf("%w: plan %d is %s", ErrBadState, plan, stateName(p.State))
	}
	p.State = stArmed
	return e.commitUp(putPlan(plan, p))
}

func (e *Engine) codec() *protocol.Codec { return e.rxCodec }

// bootedLabel is the label (manifest digest) the booted slot records.
func bootedLabel(st slots.Status) string {
	for _, s := range st.Slots {
		if s.ID == st.Booted {
			return s.Image
		}
	}
	return ""
}
