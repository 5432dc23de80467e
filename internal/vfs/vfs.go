// Package vfs is the narrow filesystem interface that bootorbit's durable
// state goes through: an OS implementation, and a crashable in-memory one
// (MemFS) that keeps what was synced and drops what was not at a chosen or
// random instant, with error injection, so that power-cut tests run in an
// ordinary `go test`.
//
// The contract is POSIX's, narrowed to what durable writers need: data
// written to a File is durable once File.Sync returns; a directory entry
// (create, rename, remove) is durable once the directory, opened with
// OpenDir, is synced.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// File is an open file or directory.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.WriterAt
	io.Closer
	// Sync makes the file's data (or, for a directory, its entries) durable.
	Sync() error
	Stat() (fs.FileInfo, error)
}

// FS is the filesystem. Names are slash- or OS-separated paths; MemFS cleans
// them, the OS implementation passes them through.
type FS interface {
	// Create creates or truncates name for writing.
	Create(name string, perm fs.FileMode) (File, error)
	// Open opens name for reading.
	Open(name string) (File, error)
	// OpenRW opens an existing file for reading and writing without
	// truncating it (a raw slot: a device or a preallocated file).
	OpenRW(name string) (File, error)
	// OpenDir opens a directory so that it can be synced.
	OpenDir(name string) (File, error)
	Rename(oldname, newname string) error
	Remove(name string) error
	MkdirAll(name string, perm fs.FileMode) error
	Stat(name string) (fs.FileInfo, error)
	ReadDir(name string) ([]fs.DirEntry, error)
}

// ErrCrashed is returned by every operation of a MemFS after its power was
// cut: the process is "dead" and must not get further.
var ErrCrashed = errors.New("vfs: power cut")

// Default is the operating system's filesystem.
var Default FS = osFS{}

type osFS struct{}

func (osFS) Create(name string, perm fs.FileMode) (File, error) {
	return os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, perm)
}
func (osFS) Open(name string) (File, error)   { return os.Open(name) }
func (osFS) OpenRW(name string) (File, error) { return os.OpenFile(name, os.O_RDWR, 0) }
func (osFS) OpenDir(name string) (File, error) {
	return os.Open(name)
}
func (osFS) Rename(o, n string) error                     { return os.Rename(o, n) }
func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }
func (osFS) Stat(name string) (fs.FileInfo, error)        { return os.Stat(name) }
func (osFS) ReadDir(name string) ([]fs.DirEntry, error)   { return os.ReadDir(name) }

// WriteFileAtomic replaces name with data durably: it writes a temporary
// file in the same directory, syncs it, renames it over name and syncs the
// directory. After a power cut at any instant, name holds either its old
// content or data, never a mixture; a stale temporary may be left behind and
// is overwritten by the next call.
func WriteFileAtomic(fsys FS, name string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(name)
	tmp := name + ".tmp"
	f, err := fsys.Create(tmp, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fsys.Rename(tmp, name); err != nil {
		return err
	}
	return SyncDir(fsys, dir)
}

// SyncDir makes the entries of directory dir durable.
func SyncDir(fsys FS, dir string) error {
	d, err := fsys.OpenDir(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return d.Close()
}
