package transfer

import "fmt"

// Journal is where the receiver's durable state lives: a key-value store
// (flightd backs it with bbolt; tests use transfertest.MemJournal). The
// engine never calls it; the caller commits each Ready's Records and hands
// Load's result to NewReceiver after a restart.
type Journal interface {
	// Commit applies recs in order, atomically and durably: after a power
	// cut either all of them are in effect or none.
	Commit(recs []Record) error
	// Load returns every key and value, as OpPut records.
	Load() ([]Record, error)
}

// Store holds transfer data (tests use transfertest.MemStore, which can lose
// power). The engine never calls it; the caller carries out each Ready's
// Writes, then Sync, before committing its Records.
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
