package uplink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/fxamacker/cbor/v2"
)

// Plan states: dict.EnumTransferState's values.
const (
	stIdle         uint8 = 0
	stPlan         uint8 = 1
	stBundle       uint8 = 2
	stPaused       uint8 = 3
	stInstalling   uint8 = 4
	stInstalled    uint8 = 5
	stBaseMismatch uint8 = 6
	stFailed       uint8 = 7
	stArmed        uint8 = 8
)

func stateName(s uint8) string { return dict.EnumTransferState.NameOf(uint64(s)) }

// The engine's journal records (bucket "up"), beside the receiver's:
//
//	"p" plan id (8)      planRec: a verified plan and where it is
//	"x" transfer id (8)  xferRec: what an accepted transfer carries
//	"s" slot id          slotRec: the release an install wrote into a slot
//	"k" key id (4)       the highest plan id accepted from a ground key
type planRec struct {
	State  uint8  `cbor:"1,keyasint"`
	Plan   []byte `cbor:"2,keyasint"`           // the encoded plan, verified
	Bundle uint64 `cbor:"3,keyasint,omitempty"` // its bundle's transfer id
	Code   uint16 `cbor:"4,keyasint,omitempty"` // why it failed
	Slot   string `cbor:"5,keyasint,omitempty"` // the slot installed into
	// Mismatch lists, on a base mismatch, the parts the vehicle could not
	// rebuild: what a supplement plan must carry.
	Mismatch []layerParts `cbor:"6,keyasint,omitempty"`
	Paused   bool         `cbor:"7,keyasint,omitempty"`
	// File: an offline install (InstallFile), whose bundle is not staged.
	File bool `cbor:"8,keyasint,omitempty"`
	// Supplemented is the supplement plan that resolved a base mismatch.
	Supplemented uint64 `cbor:"9,keyasint,omitempty"`

	dec *update.Plan // decoded Plan, cached
}

type layerParts struct {
	Layer int   `cbor:"1,keyasint"`
	Parts []int `cbor:"2,keyasint,omitempty"`
	// Whole: the layer as a whole is missing (a reused layer the base
	// does not hold).
	Whole bool `cbor:"3,keyasint,omitempty"`
}

type xferRec struct {
	Kind byte   `cbor:"1,keyasint"` // update.KindPlan or update.KindBundle
	Plan uint64 `cbor:"2,keyasint"`
	Size uint64 `cbor:"3,keyasint"`
}

type slotRec struct {
	Manifest string `cbor:"1,keyasint"`
	Version  uint64 `cbor:"2,keyasint"`
	Plan     uint64 `cbor:"3,keyasint,omitempty"`
	Digest   string `cbor:"4,keyasint,omitempty"` // the slot's content digest, as slots recorded it
}

var (
	encMode = func() cbor.EncMode {
		m, err := cbor.CoreDetEncOptions().EncMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
	decMode = func() cbor.DecMode {
		m, err := cbor.DecOptions{MaxArrayElements: 1 << 16, MaxMapPairs: 64, MaxNestedLevels: 8}.DecMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
)

func mustEncode(v any) []byte {
	b, err := encMode.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("uplink: encode record: %v", err))
	}
	return b
}

func keyPlan(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'p'}, id) }
func keyXfer(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'x'}, id) }
func keySlot(id slots.SlotID) []byte {
	return append([]byte{'s'}, id...)
}
func keyFloor(k uint32) []byte { return binary.BigEndian.AppendUint32([]byte{'k'}, k) }

func putPlan(id uint64, p *planRec) transfer.Record {
	return transfer.Record{Op: transfer.OpPut, Key: keyPlan(id), Value: mustEncode(p)}
}
func putXfer(id uint64, x xferRec) transfer.Record {
	return transfer.Record{Op: transfer.OpPut, Key: keyXfer(id), Value: mustEncode(x)}
}
func delKey(k []byte) transfer.Record { return transfer.Record{Op: transfer.OpDeletePrefix, Key: k} }

// restore loads the engine's records and the receiver's, reserves the
// staging of every transfer held, and opens the receiver.
func (e *Engine) restore() error {
	up, err := e.j.LoadUp()
	if err != nil {
		return err
	}
	var bad [][]byte
	for _, r := range up {
		if err := e.restoreRec(r); err != nil {
			if e.inspect {
				return fmt.Errorf("uplink: journal record %x: %w", r.Key, err)
			}
			bad = append(bad, r.Key)
			e.setAside(r.Key, err)
		}
	}
	if e.inspect {
		return nil
	}
	// The records set aside and the repairs of what depended on them
	// commit in one transaction. The repairs are also derived from the
	// records alone, at every start, not from the bad records: a journal
	// that an older release left with a record set aside and its repair
	// not written is mended too.
	e.refloor()
	e.abandonOrphans()
	if err := e.j.Quarantine(nil, bad, e.pendUp); err != nil {
		return err
	}
	e.pendUp = nil
	e.removeStaged()
	for id, x := range e.xfers {
		if err := e.st.Reserve(id, int64(x.Size)); err != nil {
			return fmt.Errorf("uplink: staging of transfer %d: %w", id, err)
		}
	}
	// Files no record names: a cut between the commit that dropped a
	// transfer and the file's removal, or before an accepted offer's first
	// commit.
	files, _, err := e.st.Files()
	if err != nil {
		return err
	}
	for id := range files {
		if _, ok := e.xfers[id]; !ok {
			if err := e.st.Remove(id); err != nil {
				return err
			}
		}
	}
	// An offline install cut short cannot go on: its file is not ours.
	var fix []transfer.Record
	for id, p := range e.plans {
		if p.File && p.State == stInstalling {
			p.State, p.Code = stFailed, uint16(dict.CodeInstallFailed)
			fix = append(fix, putPlan(id, p))
		}
	}
	if err := e.j.Apply(nil, fix); err != nil {
		return err
	}
	if e.cfg.ReturnAuth == nil {
		return nil
	}
	rc := e.cfg.Receiver
	rc.Codec, rc.ReturnCodec = e.cfg.Codec, e.cfg.ReturnCodec
	if rc.Codec == nil {
		c, err := newCodec(e.cfg)
		if err != nil {
			return err
		}
		rc.Codec = c
	}
	rc.Vehicle, rc.Keys, rc.Auth, rc.Accept = e.cfg.Vehicle, e.cfg.GroundKeys, e.cfg.ReturnAuth, e.accept
	recs, err := e.j.Load()
	if err != nil {
		return err
	}
	e.rxCodec = rc.Codec
	if e.rx, err = transfer.NewReceiver(rc, recs); err != nil {
		// The receiver's records are the transfer layer's: one that does
		// not decode sets them all aside (the transfers under way are
		// abandoned; the transfer ids' replay floors go, the plans' stay),
		// rather than stop flightd at every start.
		keys := make([][]byte, len(recs))
		for i, r := range recs {
			keys[i] = r.Key
		}
		e.setAside(nil, err)
		// A complete bundle (a plan installing, or waiting on a base
		// mismatch for its supplement) needs no receiver: kept. The
		// others are dropped, and their plans failed, in the transaction
		// that sets the receiver's records aside.
		for id, x := range e.xfers {
			if p := e.plans[x.Plan]; p == nil || p.Bundle != id || p.State != stInstalling && p.State != stBaseMismatch {
				e.dropXfer(id)
			}
		}
		e.abandonOrphans()
		if qerr := e.j.Quarantine(keys, nil, e.pendUp); qerr != nil {
			return errors.Join(fmt.Errorf("uplink: %w", err), qerr)
		}
		e.pendUp = nil
		e.removeStaged()
		if e.rx, err = transfer.NewReceiver(rc, nil); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
	}
	// Transfers with no engine record (it was set aside, at this start or
	// an earlier one): ended, the ground told (their staging is gone). An
	// accepted offer's engine record commits with the receiver's, so
	// there are none otherwise.
	for _, id := range e.rx.Active() {
		if _, ok := e.xfers[id]; !ok {
			e.rx.Abandon(id, protocol.CancelRefused)
		}
	}
	// Completions a cut kept us from acting on: the receiver shows them
	// in its first Ready (whole transfers) or as Completed (finished ones).
	for id, x := range e.xfers {
		if e.rx.Completed(id) {
			e.completed(id, x)
		}
	}
	return e.process(e.now)
}

func (e *Engine) restoreRec(r transfer.Record) error {
	k, v := r.Key, r.Value
	switch {
	case len(k) == 9 && k[0] == 'p':
		var p planRec
		if err := decMode.Unmarshal(v, &p); err != nil {
			return err
		}
		e.plans[binary.BigEndian.Uint64(k[1:])] = &p
	case len(k) == 9 && k[0] == 'x':
		var x xferRec
		if err := decMode.Unmarshal(v, &x); err != nil {
			return err
		}
		e.xfers[binary.BigEndian.Uint64(k[1:])] = x
	case len(k) == 2 && k[0] == 's':
		var s slotRec
		if err := decMode.Unmarshal(v, &s); err != nil {
			return err
		}
		e.slotRecs[slots.SlotID(k[1:])] = s
	case len(k) == 5 && k[0] == 'k':
		if len(v) != 8 {
			return errors.New("bad floor")
		}
		e.floors[binary.BigEndian.Uint32(k[1:])] = binary.BigEndian.Uint64(v)
	default:
		return errors.New("unknown key")
	}
	return nil
}

// setAside reports a journal record (key; nil: the receiver's records)
// that does not decode and was quarantined, with the plan or transfer it
// named.
func (e *Engine) setAside(key []byte, err error) {
	var plan, xfer uint64
	// The receiver's error names its record first ("transfer: journal
	// record KEY: ..."); the event's text is short.
	text := "receiver " + strings.TrimPrefix(err.Error(), "transfer: ") + "; all receiver records set aside"
	if key != nil {
		text = fmt.Sprintf("journal record %x: %v; set aside", key, err)
		if len(key) == 9 && key[0] == 'p' {
			plan = binary.BigEndian.Uint64(key[1:])
		}
		if len(key) == 9 && key[0] == 'x' {
			xfer = binary.BigEndian.Uint64(key[1:])
		}
	}
	e.log.Error("uplink: journal record does not decode: quarantined", "key", fmt.Sprintf("%x", key), "err", err)
	e.fail(dict.CodeStorage, text)
	e.event(dict.EvTransferAborted, text[:min(len(text), dict.MaxEventText)], dict.Values{"plan": plan, "transfer": xfer, "code": uint64(dict.CodeStorage)})
}

// refloor raises the plan replay floor of every ground key to the highest
// plan id of that key recorded (plans are never deleted), writing the
// floors it changed. A floor record set aside is so rebuilt (it may have
// been higher, for plans whose own record went too; their transfers' ids
// are still refused by the receiver's floors), at the start that set it
// aside and at every later one.
func (e *Engine) refloor() {
	raised := map[uint32]bool{}
	for id, p := range e.plans {
		pl, err := p.decoded()
		if err != nil {
			continue
		}
		if f, ok := e.floors[pl.KeyID]; !ok || id > f {
			e.floors[pl.KeyID] = id
			raised[pl.KeyID] = true
		}
	}
	for k := range raised {
		e.pendUp = append(e.pendUp, transfer.Record{Op: transfer.OpPut, Key: keyFloor(k), Value: binary.BigEndian.AppendUint64(nil, e.floors[k])})
	}
}

// abandonOrphans fails the plans whose bundle transfer's record was set
// aside (a bundle under way can never complete; a complete one's staged
// file is gone with the record) and drops the transfers of plans that are
// gone, freeing their staging.
func (e *Engine) abandonOrphans() {
	for id, x := range e.xfers {
		if _, ok := e.plans[x.Plan]; !ok && update.TargetKind(x.Kind) == update.KindBundle {
			e.dropXfer(id)
		}
	}
	for id, p := range e.plans {
		switch p.State {
		case stBundle, stPaused, stInstalling, stBaseMismatch:
		default:
			continue
		}
		if p.File {
			continue // an offline install reads its file, not the staging
		}
		if _, ok := e.xfers[p.Bundle]; p.Bundle != 0 && !ok {
			p.State, p.Code = stFailed, uint16(dict.CodeStorage)
			e.pendUp = append(e.pendUp, putPlan(id, p))
			e.event(dict.EvTransferAborted, fmt.Sprintf("plan %d: its bundle transfer's record was set aside", id),
				dict.Values{"plan": id, "transfer": p.Bundle, "code": uint64(dict.CodeStorage)})
		}
	}
}

// commitUp commits engine records on their own.
func (e *Engine) commitUp(recs ...transfer.Record) error {
	return e.j.Apply(nil, recs)
}
