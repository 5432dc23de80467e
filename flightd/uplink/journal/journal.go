// Package journal is flightd's uplink journal: one bbolt database holding,
// in separate buckets, the transfer receiver's records (it implements
// protocol/transfer's Journal) and the uplink engine's own records (plans,
// transfers, installed releases). Every Commit is one bbolt transaction, so
// a power cut leaves either all of its records in effect or none, and the
// records of both buckets that belong together commit together.
package journal

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/bootorbit/bootorbit/protocol/transfer"
	bolt "go.etcd.io/bbolt"
)

// Bucket names.
var (
	bucketRx  = []byte("rx")  // the transfer receiver's records
	bucketUp  = []byte("up")  // the uplink engine's records
	bucketBad = []byte("bad") // records set aside as unreadable
)

// MaxQuarantined bounds the records kept in quarantine: beyond it, a
// record set aside is deleted, not kept.
const MaxQuarantined = 64

// ErrCorrupt: the database does not have the shape this package writes.
var ErrCorrupt = errors.New("journal: corrupt")

// DB is the journal. It is safe for concurrent use (bbolt serializes
// writers).
type DB struct {
	db *bolt.DB
}

// Open opens (creating if needed) the journal at path. It fails at once,
// rather than wait, if another process holds the database.
func Open(path string) (*DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRx, bucketUp} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: %s: %w", path, err)
	}
	return &DB{db: db}, nil
}

// OpenReadOnly opens an existing journal for reading only (flightd check):
// it fails if the file is missing, or at once if the daemon holds it.
func OpenReadOnly(path string) (*DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	return &DB{db: db}, nil
}

// Close closes the database.
func (d *DB) Close() error { return d.db.Close() }

// Commit implements transfer.Journal: recs go to the receiver's bucket, in
// one transaction.
func (d *DB) Commit(recs []transfer.Record) error { return d.Apply(recs, nil) }

// Load implements transfer.Journal: the receiver's records.
func (d *DB) Load() ([]transfer.Record, error) { return d.load(bucketRx) }

// LoadUp returns the engine's records, in key order.
func (d *DB) LoadUp() ([]transfer.Record, error) { return d.load(bucketUp) }

// Apply commits rx to the receiver's bucket and up to the engine's, in one
// transaction: all of them take effect, or none.
func (d *DB) Apply(rx, up []transfer.Record) error {
	if len(rx) == 0 && len(up) == 0 {
		return nil
	}
	err := d.db.Update(func(tx *bolt.Tx) error {
		if err := apply(tx.Bucket(bucketRx), rx); err != nil {
			return err
		}
		return apply(tx.Bucket(bucketUp), up)
	})
	if err != nil {
		return fmt.Errorf("journal: commit: %w", err)
	}
	return nil
}

func apply(b *bolt.Bucket, recs []transfer.Record) error {
	if b == nil {
		return ErrCorrupt
	}
	for _, r := range recs {
		switch r.Op {
		case transfer.OpPut:
			if len(r.Key) == 0 {
				return errors.New("empty key")
			}
			// bbolt keeps a reference to the value until the commit: give
			// it a copy, never the caller's buffer.
			if err := b.Put(bytes.Clone(r.Key), append([]byte{}, r.Value...)); err != nil {
				return err
			}
		case transfer.OpDeletePrefix:
			c := b.Cursor()
			for k, _ := c.Seek(r.Key); k != nil && bytes.HasPrefix(k, r.Key); k, _ = c.Seek(r.Key) {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("unknown record op %d", r.Op)
		}
	}
	return nil
}

func (d *DB) load(name []byte) ([]transfer.Record, error) {
	var recs []transfer.Record
	err := d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(name)
		if b == nil {
			return ErrCorrupt
		}
		return b.ForEach(func(k, v []byte) error {
			recs = append(recs, transfer.Record{Op: transfer.OpPut, Key: bytes.Clone(k), Value: append([]byte{}, v...)})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("journal: load %s: %w", name, err)
	}
	return recs, nil
}

// Quarantine moves records that do not decode out of the receiver's (rx)
// and the engine's (up) buckets, in one transaction, into a bucket of
// their own under "rx/KEY" and "up/KEY" (at most MaxQuarantined are kept,
// for a person to look at; the others are deleted): a record that cannot
// be read is set aside, and the daemon starts, rather than fail at every
// start.
//
// fix, the engine's records that repair what depended on the records set
// aside (a replay floor rebuilt, plans failed), commit in the same
// transaction: a cut between the two would leave the bad records gone and
// the repair never written, and the next start nothing to repair from.
func (d *DB) Quarantine(rx, up [][]byte, fix []transfer.Record) error {
	if len(rx) == 0 && len(up) == 0 && len(fix) == 0 {
		return nil
	}
	err := d.db.Update(func(tx *bolt.Tx) error {
		bad, err := tx.CreateBucketIfNotExists(bucketBad)
		if err != nil {
			return err
		}
		kept := 0
		c := bad.Cursor()
		for k, _ := c.First(); k != nil && kept < MaxQuarantined; k, _ = c.Next() {
			kept++
		}
		for _, x := range []struct {
			name []byte
			keys [][]byte
		}{{bucketRx, rx}, {bucketUp, up}} {
			b := tx.Bucket(x.name)
			if b == nil {
				return ErrCorrupt
			}
			for _, k := range x.keys {
				v := b.Get(k)
				if v == nil {
					continue
				}
				if kept < MaxQuarantined {
					qk := append(append(bytes.Clone(x.name), '/'), k...)
					if err := bad.Put(qk, bytes.Clone(v)); err != nil {
						return err
					}
					kept++
				}
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		return apply(tx.Bucket(bucketUp), fix)
	})
	if err != nil {
		return fmt.Errorf("journal: quarantine: %w", err)
	}
	return nil
}

// Quarantined returns the records set aside (keys "rx/KEY", "up/KEY").
func (d *DB) Quarantined() ([]transfer.Record, error) {
	var recs []transfer.Record
	err := d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBad)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			recs = append(recs, transfer.Record{Op: transfer.OpPut, Key: bytes.Clone(k), Value: bytes.Clone(v)})
			return nil
		})
	})
	return recs, err
}

// Check runs bbolt's consistency check of the database pages and returns
// the problems found (none: nil).
func (d *DB) Check() []error {
	var errs []error
	err := d.db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			errs = append(errs, fmt.Errorf("%w: %v", ErrCorrupt, e))
		}
		for _, b := range [][]byte{bucketRx, bucketUp} {
			if tx.Bucket(b) == nil {
				errs = append(errs, fmt.Errorf("%w: bucket %s missing", ErrCorrupt, b))
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return errs
}
