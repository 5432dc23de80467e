package oci

import (
	"io"
	"io/fs"
	"os"
)

// fsys is the storage the Writer uses: the few calls an atomic layout
// update needs, so that tests can run the Writer on a storage model that
// drops whatever was not synced when it "crashes".
type fsys interface {
	MkdirAll(dir string) error
	// CreateTemp creates a new file in dir, named from pattern as
	// os.CreateTemp does.
	CreateTemp(dir, pattern string) (wfile, error)
	Rename(from, to string) error
	Remove(name string) error
	// SyncDir makes dir's entries (creations, renames) durable.
	SyncDir(dir string) error
	Stat(name string) (fs.FileInfo, error)
	// ReadFile reads a file of at most max bytes.
	ReadFile(name string, max int64) ([]byte, error)
}

// wfile is a file being written.
type wfile interface {
	io.Writer
	Name() string
	Sync() error
	Close() error
}

type osFS struct{}

func (osFS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }

func (osFS) CreateTemp(dir, pattern string) (wfile, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	// Layout files are world-readable, as the other tools write them.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return f, nil
}

func (osFS) Rename(from, to string) error          { return os.Rename(from, to) }
func (osFS) Remove(name string) error              { return os.Remove(name) }
func (osFS) Stat(name string) (fs.FileInfo, error) { return os.Stat(name) }
func (osFS) ReadFile(name string, max int64) ([]byte, error) {
	return readCapped(name, max)
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// scratchFS is osFS without syncs, for layouts nobody needs after a crash.
type scratchFS struct{ osFS }

type unsyncedFile struct{ wfile }

func (unsyncedFile) Sync() error { return nil }

func (s scratchFS) CreateTemp(dir, pattern string) (wfile, error) {
	f, err := s.osFS.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return unsyncedFile{f}, nil
}

func (scratchFS) SyncDir(string) error { return nil }
