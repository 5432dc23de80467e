package transfer

import (
	"bytes"
	"fmt"
	"sort"
)

// Journal is where the receiver's durable state lives: a key-value store
// (flightd backs it with bbolt). The engine never calls it; the caller
// commits each Ready's Records and hands Load's result to NewReceiver after
// a restart.
type Journal interface {
	// Commit applies recs in order, atomically and durably: after a power
	// cut either all of them are in effect or none.
	Commit(recs []Record) error
	// Load returns every key and value, as OpPut records.
	Load() ([]Record, error)
}

// Store holds transfer data. The engine never calls it; the caller carries
// out each Ready's Writes, then Sync, before committing its Records.
type Store interface {
	WriteAt(id uint64, off int64, p []byte) error
	// Sync makes every write so far durable.
	Sync() error
}

// Persist carries out the durable part of a Ready in the required order:
// writes, sync, then the journal commit. Send rd.Messages only after it
// returns nil.
func Persist(rd *Ready, s Store, j Journal) error {
	if len(rd.Writes) > 0 {
		for _, w := range rd.Writes {
			if err := s.WriteAt(w.ID, w.Offset, w.Data); err != nil {
				return fmt.Errorf("transfer: store write: %w", err)
			}
		}
		if err := s.Sync(); err != nil {
			return fmt.Errorf("transfer: store sync: %w", err)
		}
	}
	if len(rd.Records) > 0 {
		if err := j.Commit(rd.Records); err != nil {
			return fmt.Errorf("transfer: journal commit: %w", err)
		}
	}
	return nil
}

// MemJournal is an in-memory Journal for tests. Its commits are atomic;
// Commits counts them.
type MemJournal struct {
	kv      map[string][]byte
	Commits int
}

// NewMemJournal returns an empty journal.
func NewMemJournal() *MemJournal { return &MemJournal{kv: map[string][]byte{}} }

// Commit implements Journal.
func (j *MemJournal) Commit(recs []Record) error {
	for _, r := range recs {
		switch r.Op {
		case OpPut:
			j.kv[string(r.Key)] = append([]byte(nil), r.Value...)
		case OpDeletePrefix:
			for k := range j.kv {
				if len(k) >= len(r.Key) && k[:len(r.Key)] == string(r.Key) {
					delete(j.kv, k)
				}
			}
		default:
			return fmt.Errorf("transfer: journal: unknown record op %d", r.Op)
		}
	}
	j.Commits++
	return nil
}

// Load implements Journal.
func (j *MemJournal) Load() ([]Record, error) {
	recs := make([]Record, 0, len(j.kv))
	for k, v := range j.kv {
		recs = append(recs, Record{Op: OpPut, Key: []byte(k), Value: append([]byte(nil), v...)})
	}
	sort.Slice(recs, func(a, b int) bool { return bytes.Compare(recs[a].Key, recs[b].Key) < 0 })
	return recs, nil
}

// Has says whether key is present.
func (j *MemJournal) Has(key []byte) bool { _, ok := j.kv[string(key)]; return ok }

// Len is the number of keys.
func (j *MemJournal) Len() int { return len(j.kv) }

// Snapshot returns a copy of the contents, for comparing states.
func (j *MemJournal) Snapshot() map[string]string {
	m := make(map[string]string, len(j.kv))
	for k, v := range j.kv {
		m[k] = string(v)
	}
	return m
}

// MemStore is an in-memory Store for tests that can lose power: writes not
// yet synced are dropped by PowerLoss.
type MemStore struct {
	durable map[uint64][]byte
	pending []Write
	Syncs   int
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return &MemStore{durable: map[uint64][]byte{}} }

// WriteAt implements Store; the write is volatile until Sync.
func (s *MemStore) WriteAt(id uint64, off int64, p []byte) error {
	if off < 0 {
		return fmt.Errorf("transfer: memstore: negative offset %d", off)
	}
	s.pending = append(s.pending, Write{ID: id, Offset: off, Data: append([]byte(nil), p...)})
	return nil
}

// Sync implements Store.
func (s *MemStore) Sync() error {
	for _, w := range s.pending {
		b := s.durable[w.ID]
		if end := int(w.Offset) + len(w.Data); end > len(b) {
			b = append(b, make([]byte, end-len(b))...)
		}
		copy(b[w.Offset:], w.Data)
		s.durable[w.ID] = b
	}
	s.pending = s.pending[:0]
	s.Syncs++
	return nil
}

// PowerLoss drops every write not synced.
func (s *MemStore) PowerLoss() { s.pending = nil }

// Bytes returns the durable data of transfer id.
func (s *MemStore) Bytes(id uint64) []byte { return s.durable[id] }
