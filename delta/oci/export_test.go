package oci

import (
	"io"
	"io/fs"
)

// FS and File let the crash test run the Writer on a storage model.
type FS interface {
	MkdirAll(dir string) error
	CreateTemp(dir, pattern string) (File, error)
	Rename(from, to string) error
	Remove(name string) error
	SyncDir(dir string) error
	Stat(name string) (fs.FileInfo, error)
	ReadFile(name string, max int64) ([]byte, error)
}

type File interface {
	io.Writer
	Name() string
	Sync() error
	Close() error
}

type fsAdapter struct{ FS }

func (a fsAdapter) CreateTemp(dir, pattern string) (wfile, error) {
	f, err := a.FS.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// CreateOn is Create on storage f.
func CreateOn(f FS, dir string) (*Writer, error) { return create(fsAdapter{f}, dir) }
