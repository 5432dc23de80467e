package uplink

import (
	"bytes"
	"context"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/flightd/uplink/journal"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/update"
	bolt "go.etcd.io/bbolt"
)

// TestBadJournalRecord: a journal record that does not decode (bit rot, a
// bug of an older release) is set aside with an event naming it, and the
// engine opens, instead of failing at every start (flightd would never
// run again); what depended on the record is abandoned, and the next
// uplink installs.
func TestBadJournalRecord(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bucket string
		key    func(k []byte) bool // the records to damage
	}{
		// The engine's record of plan 7, waiting for its bundle.
		{"plan", "up", func(k []byte) bool { return bytes.Equal(k, keyPlan(7)) }},
		// The engine's record of the bundle transfer.
		{"transfer", "up", func(k []byte) bool { return len(k) == 9 && k[0] == 'x' }},
		// The receiver's record of the bundle's offer (its chunks follow).
		{"receiver", "rx", func(k []byte) bool { return len(k) == 9 && k[0] == 't' }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := testrand.New(t)
			dir := t.TempDir()
			im := makeImages(t, rng, filepath.Join(dir, "img"), ocitest.GenOptions{Layers: 1, Files: 20})
			v := newVehicle(t, filepath.Join(dir, "vehicle"), false, im.oldBase())
			defer v.close()
			g := newGround(t)
			if err := v.deliver(g, update.TargetPlan(7), im.plan(t, planOpts{id: 7})); err != nil {
				t.Fatal(err)
			}
			// Half the bundle.
			s := g.sender(update.TargetBundle(7), im.bundle)
			v.run(s, &relay{rng: rng}, 200000, func(int) bool { return v.e.Status().ChunksHeld > v.e.Status().Total/2 })
			if st := v.e.Status(); st.StateName != "bundle" || st.ChunksHeld == 0 || st.ChunksHeld == st.Total {
				t.Fatalf("status %+v, want the bundle under way", st)
			}
			v.close()
			db, err := bolt.Open(filepath.Join(v.cfg.Dir, "journal.db"), 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			var damaged [][]byte
			err = db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket([]byte(tc.bucket))
				var keys [][]byte
				b.ForEach(func(k, _ []byte) error {
					if tc.key(k) {
						keys = append(keys, bytes.Clone(k))
					}
					return nil
				})
				for _, k := range keys {
					if err := b.Put(k, []byte{0xff, 0x00, 0x13}); err != nil {
						return err
					}
				}
				damaged = keys
				return nil
			})
			db.Close()
			if err != nil || len(damaged) == 0 {
				t.Fatalf("damaged %d records: %v", len(damaged), err)
			}

			v.open() // fails the test if the engine does not open
			evs := v.e.Events()
			checkEvents(t, evs)
			var named bool
			for _, e := range evs {
				if e.Def == dict.EvTransferAborted && e.Args["code"] == uint64(dict.CodeStorage) && strings.Contains(e.Text, hex.EncodeToString(damaged[0])) {
					named = true
				}
			}
			if !named {
				t.Fatalf("no transfer_aborted event naming record %x: %v", damaged[0], evs)
			}
			if st := v.e.Status(); st.StateName == "bundle" || st.StagingUsed != 0 {
				t.Fatalf("status %+v: plan 7 should be abandoned, its staging freed", st)
			}
			if ps := v.e.Check(); len(ps) > 0 {
				t.Fatalf("Check: %v", ps)
			}
			v.close()
			j, err := journal.Open(filepath.Join(v.cfg.Dir, "journal.db"))
			if err != nil {
				t.Fatal(err)
			}
			q, err := j.Quarantined()
			j.Close()
			// The engine's bad records alone; the receiver's all (one
			// bad record of the transfer layer sets its journal aside).
			kept := map[string]bool{}
			for _, r := range q {
				kept[string(r.Key)] = true
			}
			for _, k := range damaged {
				if !kept[tc.bucket+"/"+string(k)] {
					t.Fatalf("record %s/%x not quarantined (%d are, %v)", tc.bucket, k, len(q), err)
				}
			}
			if tc.bucket == "up" && len(q) != len(damaged) {
				t.Fatalf("%d records quarantined, want %d", len(q), len(damaged))
			}
			// Opened again: nothing more to set aside; the next uplink
			// installs.
			v.open()
			if evs := v.e.Events(); hasEvent(evs, dict.EvTransferAborted) {
				t.Fatalf("events at the second start: %v", eventNames(evs))
			}
			if err := v.deliver(g, update.TargetPlan(8), im.plan(t, planOpts{id: 8})); err != nil {
				t.Fatal(err)
			}
			if err := v.deliver(g, update.TargetBundle(8), im.bundle); err != nil {
				t.Fatal(err)
			}
			if id, err := v.e.RunInstall(context.Background()); err != nil || id != 8 {
				t.Fatalf("RunInstall: %d %v", id, err)
			}
			if st := v.e.Status(); st.StateName != "installed" || st.StagingUsed != 0 {
				t.Fatalf("after plan 8: %+v", st)
			}
		})
	}
}

// TestBadFloorRecord: the replay floor of a ground key whose record does
// not decode is rebuilt from the plans recorded: a plan below it is still
// refused as replayed.
func TestBadFloorRecord(t *testing.T) {
	rng := testrand.New(t)
	dir := t.TempDir()
	im := makeImages(t, rng, filepath.Join(dir, "img"), ocitest.GenOptions{Layers: 1, Files: 10})
	v := newVehicle(t, filepath.Join(dir, "vehicle"), false, im.oldBase())
	defer v.close()
	g := newGround(t)
	if err := v.deliver(g, update.TargetPlan(7), im.plan(t, planOpts{id: 7})); err != nil {
		t.Fatal(err)
	}
	v.close()
	db, err := bolt.Open(filepath.Join(v.cfg.Dir, "journal.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("up")).Put(keyFloor(groundKeyID), []byte{1, 2, 3}) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	v.open()
	if !hasEvent(v.e.Events(), dict.EvTransferAborted) {
		t.Fatal("no event for the record set aside")
	}
	// Plan 5 was never seen, and is below plan 7: a replay.
	if err := v.deliver(g, update.TargetPlan(5), im.plan(t, planOpts{id: 5})); err != nil {
		t.Fatal(err)
	}
	var refused bool
	for _, e := range v.e.Events() {
		if e.Def == dict.EvPlanRefused && e.Args["plan"] == uint64(5) {
			refused = true
		}
	}
	if !refused {
		t.Fatalf("plan 5 below the rebuilt floor not refused: %+v", v.e.Status())
	}
}

// TestBadReceiverRecordKeepsStagedBundles: the receiver's records set
// aside while a plan waits on a base mismatch and its supplement's bundle
// is complete: both staged bundles are kept (they are complete, and the
// receiver no longer needed for them), and the supplement installs.
func TestBadReceiverRecordKeepsStagedBundles(t *testing.T) {
	baseMismatchWith(t, 16<<10, func(v *vehicle) {
		v.close()
		db, err := bolt.Open(filepath.Join(v.cfg.Dir, "journal.db"), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("rx"))
			var keys [][]byte
			b.ForEach(func(k, _ []byte) error {
				if len(k) == 9 && k[0] == 'd' {
					keys = append(keys, bytes.Clone(k))
				}
				return nil
			})
			for _, k := range keys {
				if err := b.Put(k, []byte{1}); err != nil {
					return err
				}
			}
			n = len(keys)
			return nil
		})
		db.Close()
		if err != nil || n == 0 {
			t.Fatalf("damaged %d finished-transfer records: %v", n, err)
		}
		v.open()
		if !hasEvent(v.e.Events(), dict.EvTransferAborted) {
			t.Fatal("no event for the records set aside")
		}
	})
}

// TestBadRecordCutBeforeRepair: a stop between the transaction that sets a
// bad record aside and the one that writes what depended on it (a power
// cut, or an error later in Open) must not lose the repair: the next start
// has no bad record to act on, so it must rebuild from the records alone.
// Plan 7 accepted and its bundle under way, then:
//   - floor-open-fails: the floor record damaged, an Open that fails after
//     setting it aside (the staging quota lowered), an Open that works;
//   - floor-cut, transfer-cut: the journal as a cut right after the
//     quarantine left it (the record moved to quarantine, nothing else).
//
// Then plan 5 (below 7) is refused as a replay, plan 7 does not wait for a
// bundle that can never come, and plan 8 installs.
func TestBadRecordCutBeforeRepair(t *testing.T) {
	for _, tc := range []struct {
		name      string
		key       func(k []byte) bool
		openFails bool
	}{
		{"floor-open-fails", func(k []byte) bool { return bytes.Equal(k, keyFloor(groundKeyID)) }, true},
		{"floor-cut", func(k []byte) bool { return bytes.Equal(k, keyFloor(groundKeyID)) }, false},
		{"transfer-cut", func(k []byte) bool { return len(k) == 9 && k[0] == 'x' }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := testrand.New(t)
			dir := t.TempDir()
			im := makeImages(t, rng, filepath.Join(dir, "img"), ocitest.GenOptions{Layers: 1, Files: 20})
			v := newVehicle(t, filepath.Join(dir, "vehicle"), false, im.oldBase())
			defer v.close()
			g := newGround(t)
			if err := v.deliver(g, update.TargetPlan(7), im.plan(t, planOpts{id: 7})); err != nil {
				t.Fatal(err)
			}
			s := g.sender(update.TargetBundle(7), im.bundle)
			v.run(s, &relay{rng: rng}, 200000, func(int) bool { return v.e.Status().ChunksHeld > v.e.Status().Total/2 })
			if st := v.e.Status(); st.StateName != "bundle" || st.ChunksHeld == 0 {
				t.Fatalf("status %+v, want the bundle under way", st)
			}
			v.close()

			db, err := bolt.Open(filepath.Join(v.cfg.Dir, "journal.db"), 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			var keys [][]byte
			err = db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket([]byte("up"))
				b.ForEach(func(k, _ []byte) error {
					if tc.key(k) {
						keys = append(keys, bytes.Clone(k))
					}
					return nil
				})
				if !tc.openFails {
					return nil
				}
				for _, k := range keys {
					if err := b.Put(k, []byte{0xff, 0x00, 0x13}); err != nil {
						return err
					}
				}
				return nil
			})
			db.Close()
			if err != nil || len(keys) == 0 {
				t.Fatalf("found %d records: %v", len(keys), err)
			}
			if tc.openFails {
				quota := v.cfg.StagingQuota
				v.cfg.StagingQuota = 1
				v.epoch++
				if v.cfg.ReturnAuth, err = protocol.NewReturnAuth(testVehicle, macKey, v.epoch); err != nil {
					t.Fatal(err)
				}
				if e, err := Open(v.cfg, v.inst, slog.New(slog.DiscardHandler)); err == nil {
					e.Close()
					t.Fatal("Open with a staging quota below what is held: no error")
				}
				v.cfg.StagingQuota = quota
			} else {
				j, err := journal.Open(filepath.Join(v.cfg.Dir, "journal.db"))
				if err != nil {
					t.Fatal(err)
				}
				err = j.Quarantine(nil, keys, nil) // the set-aside alone, as the old two-transaction restore could leave it
				j.Close()
				if err != nil {
					t.Fatal(err)
				}
				// flightd check (which repairs nothing) sees what is wrong.
				in, err := Inspect(v.cfg, v.inst, slog.New(slog.DiscardHandler))
				if err != nil {
					t.Fatal(err)
				}
				ps := in.Check()
				in.Close()
				if len(ps) == 0 {
					t.Fatal("Inspect: Check finds nothing in the journal a cut left half-repaired")
				}
				t.Logf("Inspect: Check: %v", ps)
			}

			v.open()
			if ps := v.e.Check(); len(ps) > 0 {
				t.Fatalf("Check: %v", ps)
			}
			if st := v.e.Status(); st.StateName == "bundle" && st.Total == 0 {
				t.Fatalf("status %+v: plan 7 waits for a bundle whose record is gone", st)
			}
			if err := v.deliver(g, update.TargetPlan(5), im.plan(t, planOpts{id: 5})); err != nil {
				t.Fatal(err)
			}
			var refused bool
			for _, e := range v.e.Events() {
				if e.Def == dict.EvPlanAccepted && e.Args["plan"] == uint64(5) {
					t.Fatalf("plan 5, below accepted plan 7, accepted: %+v", v.e.Status())
				}
				if e.Def == dict.EvPlanRefused && e.Args["plan"] == uint64(5) {
					refused = true
				}
			}
			if !refused {
				t.Fatalf("plan 5 not refused: %+v", v.e.Status())
			}
			// Reopened: the repair is durable, nothing more to do.
			v.close()
			v.open()
			if evs := v.e.Events(); hasEvent(evs, dict.EvTransferAborted) {
				t.Fatalf("events at the next start: %v", eventNames(evs))
			}
			if err := v.deliver(g, update.TargetPlan(8), im.plan(t, planOpts{id: 8})); err != nil {
				t.Fatal(err)
			}
			if err := v.deliver(g, update.TargetBundle(8), im.bundle); err != nil {
				t.Fatal(err)
			}
			if id, err := v.e.RunInstall(context.Background()); err != nil || id != 8 {
				t.Fatalf("RunInstall: %d %v", id, err)
			}
			if st := v.e.Status(); st.StateName != "installed" || st.StagingUsed != 0 {
				t.Fatalf("after plan 8: %+v", st)
			}
		})
	}
}
