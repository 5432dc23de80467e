// Package transfertest provides test doubles for package transfer, in the
// manner of net/http/httptest: MemJournal, an in-memory Journal whose
// commits are atomic, and MemStore, an in-memory Store that loses every
// write not yet synced when the power is cut. Tests, groundd's vehicle
// stand-in and the bench use them; the daemons never import this package,
// so that no double ships in flightd or groundd.
//
// The doubles keep the promises the engine's persistence rules rely on
// (docs/transfer.md, "Journal and store"): a Commit is all or nothing, and
// only synced writes survive PowerLoss, so that a test can cut the power
// between any two steps of transfer.Persist and check that no report ever
// claimed what was lost.
package transfertest

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/bootorbit/bootorbit/protocol/transfer"
)

// MemJournal is an in-memory transfer.Journal. Its commits are atomic;
// Commits counts them.
type MemJournal struct {
	kv      map[string][]byte
	Commits int
}

// NewMemJournal returns an empty journal.
func NewMemJournal() *MemJournal { return &MemJournal{kv: map[string][]byte{}} }

// Commit implements transfer.Journal. It checks every record before it
// applies any, so that a batch it refuses changes nothing, as a real
// journal's failed transaction does.
func (j *MemJournal) Commit(recs []transfer.Record) error {
	for _, r := range recs {
		if r.Op != transfer.OpPut && r.Op != transfer.OpDeletePrefix {
			return fmt.Errorf("transfertest: journal: unknown record op %d", r.Op)
		}
	}
	for _, r := range recs {
		switch r.Op {
		case transfer.OpPut:
			j.kv[string(r.Key)] = append([]byte(nil), r.Value...)
		case transfer.OpDeletePrefix:
			for k := range j.kv {
				if strings.HasPrefix(k, string(r.Key)) {
					delete(j.kv, k)
				}
			}
		}
	}
	j.Commits++
	return nil
}

// Load implements transfer.Journal.
func (j *MemJournal) Load() ([]transfer.Record, error) {
	recs := make([]transfer.Record, 0, len(j.kv))
	for k, v := range j.kv {
		recs = append(recs, transfer.Record{Op: transfer.OpPut, Key: []byte(k), Value: append([]byte(nil), v...)})
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

// MemStore is an in-memory transfer.Store that can lose power: writes not
// yet synced are dropped by PowerLoss.
type MemStore struct {
	durable map[uint64][]byte
	pending []transfer.Write
	Syncs   int
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return &MemStore{durable: map[uint64][]byte{}} }

// WriteAt implements transfer.Store; the write is volatile until Sync.
func (s *MemStore) WriteAt(id uint64, off int64, p []byte) error {
	if off < 0 {
		return fmt.Errorf("transfertest: memstore: negative offset %d", off)
	}
	s.pending = append(s.pending, transfer.Write{ID: id, Offset: off, Data: append([]byte(nil), p...)})
	return nil
}

// Sync implements transfer.Store.
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
