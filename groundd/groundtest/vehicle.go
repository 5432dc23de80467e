// Package groundtest holds groundd's test doubles: a vehicle stand-in built
// on protocol/transfer's Receiver (until flightd runs in-process in groundd's
// tests) and a lockstep relay over loopback UDP that loses frames from a
// seed, so that end-to-end tests of groundd over real sockets stay
// deterministic.
package groundtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/transfer/transfertest"
	"github.com/bootorbit/bootorbit/protocol/update"
	digest "github.com/opencontainers/go-digest"
)

// VehicleConfig configures a Vehicle.
type VehicleConfig struct {
	ID uint32
	// Codec decodes the ground's frames (the inner codec when sealed) and
	// ReturnCodec, if set, encodes the vehicle's (default Codec).
	Codec       *protocol.Codec
	ReturnCodec *protocol.Codec
	// SealKeys, if set, are the keys the uplink is sealed with: every frame
	// must open with one, as on a vehicle with an Opener.
	SealKeys    []protocol.SealKey
	MACKey      protocol.MACKey
	GroundKeys  map[uint32]ed25519.PublicKey // plan and offer keys
	ReleaseKeys *protocol.Keyring
	// Booted is the manifest and version of the image slot A holds (booted).
	Booted  digest.Digest
	Version uint64
	// Epoch is the vehicle's boot counter (ReturnAuth); new for every
	// Vehicle made on the same MAC key.
	Epoch uint32
	// HKInterval: housekeeping at least this often while the link is up
	// (default 5 s).
	HKInterval time.Duration
	// OnBundle, if set, is asked about every complete bundle of an
	// accepted plan: the layers it returns are reported as base mismatches
	// instead of installing.
	OnBundle func(p *update.Plan, bundle []byte) []int
}

// Vehicle is the vehicle side of the uplink, as far as groundd sees it:
// a transfer.Receiver with an in-memory journal, plan verification, and
// hk.slots/hk.boot and the plan events flightd sends. Not safe for
// concurrent use.
type Vehicle struct {
	cfg     VehicleConfig
	opener  *protocol.Opener
	auth    *protocol.ReturnAuth
	keys    *protocol.Keyring
	Rx      *transfer.Receiver
	Journal *transfertest.MemJournal
	Store   *transfertest.MemStore

	// Plans are the plans accepted, by id; Bundles their verified bundles.
	Plans   map[uint64]*update.Plan
	Bundles map[uint64][]byte
	// Installed lists the plans installed, in order.
	Installed []uint64
	// Events lists the names of the events sent.
	Events []string
	// Commands lists the commands received and verified.
	Commands []*protocol.Command
	// Unopened counts frames that did not open (sealed uplinks).
	Unopened int

	slotB digest.Digest
	versB uint64
	// active is the plan in progress, its state (dict transfer_state).
	active      uint64
	activeState uint64
	lastHK      time.Time
	link        bool
	evSeq       uint32
	tmSeq       uint32
	pending     [][]byte
}

// NewVehicle returns a vehicle with an empty journal.
func NewVehicle(cfg VehicleConfig) (*Vehicle, error) {
	auth, err := protocol.NewReturnAuth(cfg.ID, cfg.MACKey, cfg.Epoch)
	if err != nil {
		return nil, err
	}
	var ks []protocol.Key
	for id, k := range cfg.GroundKeys {
		ks = append(ks, protocol.Key{ID: protocol.KeyID(id), Pub: k})
	}
	keys, err := protocol.NewKeyring(ks...)
	if err != nil {
		return nil, err
	}
	if cfg.ReturnCodec == nil {
		cfg.ReturnCodec = cfg.Codec
	}
	var opener *protocol.Opener
	if len(cfg.SealKeys) > 0 {
		if opener, err = protocol.NewOpener(protocol.OpenerConfig{Vehicle: cfg.ID, MaxFrame: cfg.ReturnCodec.MaxFrame(), Keys: cfg.SealKeys}); err != nil {
			return nil, err
		}
	}
	rx, err := transfer.NewReceiver(transfer.ReceiverConfig{Codec: cfg.Codec, ReturnCodec: cfg.ReturnCodec, Vehicle: cfg.ID, Keys: cfg.GroundKeys, Auth: auth}, nil)
	if err != nil {
		return nil, err
	}
	if cfg.HKInterval == 0 {
		cfg.HKInterval = 5 * time.Second
	}
	return &Vehicle{cfg: cfg, opener: opener, auth: auth, keys: keys, Rx: rx, Journal: transfertest.NewMemJournal(), Store: transfertest.NewMemStore(),
		Plans: map[uint64]*update.Plan{}, Bundles: map[uint64][]byte{}}, nil
}

// SetLink tells the vehicle whether the link is up.
func (v *Vehicle) SetLink(now time.Time, up bool) {
	if up != v.link {
		v.link = up
		v.Rx.SetLink(now, transfer.LinkState{Forward: up, Return: up})
		if up {
			v.lastHK = time.Time{} // housekeeping at the start of every pass
		}
	}
}

// Step takes the frames received at now and returns the frames to send.
func (v *Vehicle) Step(now time.Time, in [][]byte) ([][]byte, error) {
	for _, f := range in {
		if v.opener != nil {
			var err error
			if f, err = v.opener.Open(f); err != nil {
				v.Unopened++
				continue
			}
		}
		if m, err := v.cfg.Codec.Decode(f); err == nil {
			if c, ok := m.(*protocol.Command); ok {
				v.command(now, c)
				continue
			}
		}
		_ = v.Rx.Step(now, f) // dropped frames are counted
	}
	v.Rx.Tick(now)
	rd := v.Rx.Ready()
	if err := transfer.Persist(&rd, v.Store, v.Journal); err != nil {
		return nil, err
	}
	var out [][]byte
	for _, m := range rd.Messages {
		out = append(out, m.Frame)
	}
	for _, c := range rd.Completed {
		if err := v.completed(now, c); err != nil {
			return nil, err
		}
	}
	v.Rx.Advance()
	if v.link && (v.lastHK.IsZero() || now.Sub(v.lastHK) >= v.cfg.HKInterval) {
		v.lastHK = now
		if err := v.housekeeping(now); err != nil {
			return nil, err
		}
	}
	out = append(out, v.pending...)
	v.pending = nil
	return out, nil
}

func (v *Vehicle) completed(now time.Time, c transfer.Completion) error {
	kind, id, err := update.ParseTarget(c.Target)
	if err != nil {
		return nil
	}
	data := v.Store.Bytes(c.ID)
	if uint64(len(data)) < c.Size {
		return fmt.Errorf("groundtest: transfer %d complete with %d of %d bytes", c.ID, len(data), c.Size)
	}
	data = data[:c.Size]
	switch kind {
	case update.KindPlan:
		p, err := update.DecodePlan(data)
		if err != nil {
			return err
		}
		if err := update.VerifyPlan(v.keys, v.cfg.ID, p); err != nil {
			return v.event(now, dict.EvPlanRefused, dict.Values{"plan": p.ID, "code": uint64(dict.CodeBadPlanSignature)})
		}
		if err := update.VerifyRelease(v.cfg.ReleaseKeys, &p.Release); err != nil {
			return v.event(now, dict.EvPlanRefused, dict.Values{"plan": p.ID, "code": uint64(dict.CodeBadReleaseSignature)})
		}
		if p.ID != id {
			return fmt.Errorf("groundtest: plan %d in the transfer of plan %d", p.ID, id)
		}
		if p.Supplement != 0 && v.Plans[p.Supplement] == nil {
			return fmt.Errorf("groundtest: supplement of unknown plan %d", p.Supplement)
		}
		v.Plans[p.ID] = p
		v.active, v.activeState = p.ID, 2 // bundle
		return v.event(now, dict.EvPlanAccepted, dict.Values{"plan": p.ID, "version": p.Release.Release.Version, "bundle_size": p.BundleSize})
	case update.KindBundle:
		p := v.Plans[id]
		if p == nil {
			return fmt.Errorf("groundtest: bundle of plan %d never accepted", id)
		}
		if c.Size != p.BundleSize {
			return fmt.Errorf("groundtest: bundle of %d bytes for a plan of %d", c.Size, p.BundleSize)
		}
		sum := sha256.Sum256(data)
		if digest.NewDigestFromBytes(digest.SHA256, sum[:]) != p.BundleDigest {
			return errors.New("groundtest: bundle digest mismatch")
		}
		v.Bundles[id] = bytes.Clone(data)
		if v.cfg.OnBundle != nil {
			if layers := v.cfg.OnBundle(p, data); len(layers) > 0 {
				v.activeState = 6 // base_mismatch
				for i, l := range layers {
					err := v.event(now, dict.EvBaseMismatch, dict.Values{"plan": p.ID, "layer": uint64(l),
						"diff_id": make([]byte, dict.ShortDigestLen), "parts": []byte{0, 0, 0, 0}, "more": i < len(layers)-1})
					if err != nil {
						return err
					}
				}
				return nil
			}
		}
		v.activeState = 5 // installed
		v.Installed = append(v.Installed, p.ID)
		v.slotB, v.versB = p.Release.Release.Manifest, p.Release.Release.Version
		if err := v.event(now, dict.EvInstallDone, dict.Values{"plan": p.ID, "slot": uint64(2), "version": p.Release.Release.Version}); err != nil {
			return err
		}
		return v.housekeeping(now)
	}
	return nil
}

func short(d digest.Digest) []byte {
	if d == "" {
		return make([]byte, dict.ShortDigestLen)
	}
	b, _ := hex.DecodeString(d.Encoded()[:2*dict.ShortDigestLen])
	return b
}

func (v *Vehicle) housekeeping(now time.Time) error {
	bState := uint64(0)
	if v.slotB != "" {
		bState = 2 // written
	}
	slots := dict.Values{
		"slot_a_state": uint64(4), "slot_a_version": v.cfg.Version, "slot_a_digest": short(v.cfg.Booted), "slot_a_attempts": uint64(0),
		"slot_b_state": bState, "slot_b_version": v.versB, "slot_b_digest": short(v.slotB), "slot_b_attempts": uint64(0),
	}
	xfer := dict.Values{"plan_id": v.active, "transfer_id": uint64(0), "chunks_held": uint64(0), "chunks_total": uint64(0), "bytes_staged": uint64(0), "state": v.activeState}
	boot := dict.Values{"booted_slot": uint64(1), "next_slot": uint64(1), "trial": false, "reset_cause": uint64(1), "boot_count": uint64(1), "last_outcome": uint64(0)}
	for _, p := range []struct {
		p    *dict.Packet
		vals dict.Values
	}{{dict.HKBoot, boot}, {dict.HKSlots, slots}, {dict.HKTransfer, xfer}} {
		v.tmSeq++
		tm, err := p.p.NewTelemetry(v.cfg.ID, now.UnixMilli(), v.tmSeq, p.vals)
		if err != nil {
			return err
		}
		if err := v.auth.Sign(tm); err != nil {
			return err
		}
		f, err := v.cfg.ReturnCodec.Encode(tm)
		if err != nil {
			return err
		}
		v.pending = append(v.pending, f)
	}
	return nil
}

func (v *Vehicle) event(now time.Time, e *dict.Event, vals dict.Values) error {
	v.evSeq++
	ev, err := e.NewEvent(v.cfg.ID, now.UnixMilli(), v.evSeq, "", vals)
	if err != nil {
		return err
	}
	if err := v.auth.Sign(ev); err != nil {
		return err
	}
	f, err := v.cfg.ReturnCodec.Encode(ev)
	if err != nil {
		return err
	}
	v.Events = append(v.Events, e.Name)
	v.pending = append(v.pending, f)
	return nil
}

// command answers a verified command with accepted and completed (or
// rejected with the reason); it does nothing the command asks.
func (v *Vehicle) command(now time.Time, c *protocol.Command) {
	if c.Vehicle != v.cfg.ID || protocol.VerifyCommand(v.keys, c) != nil {
		return
	}
	v.Commands = append(v.Commands, c)
	stages := []protocol.Stage{protocol.StageAccepted, protocol.StageCompleted}
	var code protocol.Code
	if _, ok := dict.CommandByOpcode(c.Opcode); !ok {
		stages, code = []protocol.Stage{protocol.StageRejected}, dict.CodeUnknownCommand
	}
	for _, st := range stages {
		vr := &protocol.Verification{Vehicle: v.cfg.ID, Seq: c.Seq, Stage: st, Code: code, Opcode: c.Opcode}
		if v.auth.Sign(vr) != nil {
			return
		}
		if f, err := v.cfg.ReturnCodec.Encode(vr); err == nil {
			v.pending = append(v.pending, f)
		}
	}
	if c.Opcode == dict.CmdStatus.Opcode {
		_ = v.housekeeping(now)
	}
}
