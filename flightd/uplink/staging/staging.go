// Package staging is flightd's staging store: the data of uplink transfers,
// one file per transfer under a directory, written at the offsets the
// transfer receiver gives and synced before the journal records that point
// at it (protocol/transfer's Store). It enforces a quota: space is reserved
// for a whole transfer when its offer is accepted, a write outside a
// reservation is refused, and nothing is allocated from a number off the
// wire beyond what was reserved.
package staging

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"sync"

	"github.com/bootorbit/bootorbit/internal/vfs"
)

// Errors.
var (
	// ErrQuota: a reservation that would take the store over its quota.
	ErrQuota = errors.New("staging: over quota")
	// ErrNotReserved: a write or read of a transfer with no reservation, or
	// outside it.
	ErrNotReserved = errors.New("staging: outside any reservation")
)

// Store is the staging directory. It is safe for concurrent use.
type Store struct {
	fs    vfs.FS
	dir   string
	quota int64

	mu       sync.Mutex
	files    map[uint64]*file
	used     int64
	dirDirty bool // a file was created since the directory was synced
}

type file struct {
	f     vfs.File
	size  int64 // reserved
	dirty bool  // written since the last sync
}

// Open opens the staging directory dir (creating it) with a quota in
// bytes. Files already there are not reserved: the caller reserves what
// its journal says it holds (Reserve keeps their data) and removes the rest
// (Orphans, Remove).
func Open(fsys vfs.FS, dir string, quota int64) (*Store, error) {
	if fsys == nil {
		fsys = vfs.Default
	}
	if quota <= 0 {
		return nil, fmt.Errorf("staging: quota %d, want > 0", quota)
	}
	if err := MkdirDurable(fsys, dir); err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	return &Store{fs: fsys, dir: dir, quota: quota, files: map[uint64]*file{}}, nil
}

// MkdirDurable creates dir and its missing parents and makes their entries
// durable: each directory from dir up to the root is synced, since a new
// directory's entry lives in its parent. Without it a power cut can take
// the whole staging directory away after records pointing into it were
// committed.
func MkdirDurable(fsys vfs.FS, dir string) error {
	if err := fsys.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for d := filepath.Clean(dir); ; {
		if err := vfs.SyncDir(fsys, d); err != nil {
			return err
		}
		p := filepath.Dir(d)
		if p == d {
			return nil
		}
		d = p
	}
}

// Name is the file name of transfer id's data.
func Name(id uint64) string { return fmt.Sprintf("%016x", id) }

func (s *Store) path(id uint64) string { return filepath.Join(s.dir, Name(id)) }

// Quota returns the quota in bytes.
func (s *Store) Quota() int64 { return s.quota }

// Used returns the bytes reserved.
func (s *Store) Used() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// Reserve reserves size bytes for transfer id and opens its file, keeping
// what an earlier run wrote there. Reserving an id again with the same size
// does nothing; with another size it fails.
func (s *Store) Reserve(id uint64, size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[id]; f != nil {
		if f.size != size {
			return fmt.Errorf("staging: transfer %d reserved with %d bytes, not %d", id, f.size, size)
		}
		return nil
	}
	if size < 0 || size > s.quota-s.used {
		return fmt.Errorf("%w: %d bytes for transfer %d, %d of %d in use", ErrQuota, size, id, s.used, s.quota)
	}
	p := s.path(id)
	var fh vfs.File
	var err error
	if _, serr := s.fs.Stat(p); serr == nil {
		fh, err = s.fs.OpenRW(p)
	} else {
		fh, err = s.fs.Create(p, 0o600)
		s.dirDirty = true
	}
	if err != nil {
		return fmt.Errorf("staging: %w", err)
	}
	s.files[id] = &file{f: fh, size: size}
	s.used += size
	return nil
}

// WriteAt implements transfer.Store: p at off of transfer id's data, which
// must lie in its reservation. The write is durable after Sync.
func (s *Store) WriteAt(id uint64, off int64, p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[id]
	if f == nil || off < 0 || off > f.size || int64(len(p)) > f.size-off {
		return fmt.Errorf("%w: %d bytes at %d of transfer %d", ErrNotReserved, len(p), off, id)
	}
	if _, err := f.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("staging: %w", err)
	}
	f.dirty = true
	return nil
}

// Sync implements transfer.Store: every write so far, and every file
// created, is durable when it returns.
func (s *Store) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]uint64, 0, len(s.files))
	for id, f := range s.files {
		if f.dirty {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	for _, id := range ids {
		f := s.files[id]
		if err := f.f.Sync(); err != nil {
			return fmt.Errorf("staging: sync %s: %w", Name(id), err)
		}
		f.dirty = false
	}
	if s.dirDirty {
		if err := vfs.SyncDir(s.fs, s.dir); err != nil {
			return fmt.Errorf("staging: %w", err)
		}
		s.dirDirty = false
	}
	return nil
}

// Reader returns a reader of transfer id's reserved bytes (whatever was
// written; holes read as zeros or as short reads).
func (s *Store) Reader(id uint64) (io.ReaderAt, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[id]
	if f == nil {
		return nil, 0, fmt.Errorf("%w: transfer %d", ErrNotReserved, id)
	}
	return f.f, f.size, nil
}

// Remove releases transfer id's reservation and deletes its file durably.
// Removing an id with no reservation deletes a file left there.
func (s *Store) Remove(id uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[id]; f != nil {
		f.f.Close()
		delete(s.files, id)
		s.used -= f.size
	}
	if err := s.fs.Remove(s.path(id)); err != nil {
		if _, serr := s.fs.Stat(s.path(id)); serr != nil {
			return nil // not there: nothing to remove
		}
		return fmt.Errorf("staging: %w", err)
	}
	if err := vfs.SyncDir(s.fs, s.dir); err != nil {
		return fmt.Errorf("staging: %w", err)
	}
	return nil
}

// Files lists the transfer ids whose files are in the directory, with
// their sizes on disk, and the names that are not transfer files.
func (s *Store) Files() (ids map[uint64]int64, strays []string, err error) {
	ents, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("staging: %w", err)
	}
	ids = map[uint64]int64{}
	for _, e := range ents {
		id, perr := strconv.ParseUint(e.Name(), 16, 64)
		if perr != nil || len(e.Name()) != 16 || e.IsDir() {
			strays = append(strays, e.Name())
			continue
		}
		fi, err := s.fs.Stat(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return nil, nil, fmt.Errorf("staging: %w", err)
		}
		ids[id] = fi.Size()
	}
	return ids, strays, nil
}

// Reserved returns the reservations, by transfer id.
func (s *Store) Reserved() map[uint64]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[uint64]int64, len(s.files))
	for id, f := range s.files {
		m[id] = f.size
	}
	return m
}

// Close closes the open files (their reservations end).
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for id, f := range s.files {
		errs = append(errs, f.f.Close())
		delete(s.files, id)
	}
	s.used = 0
	return errors.Join(errs...)
}
