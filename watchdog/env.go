package watchdog

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Errors shared by the environment backends. Each is wrapped with detail
// (which file, which copy, which byte) and can be matched with errors.Is.
var (
	// ErrBadCRC means no copy of a U-Boot environment has a valid CRC: the
	// bootloader would fall back to its built-in default environment.
	ErrBadCRC = errors.New("watchdog: uboot env: bad crc")
	// ErrEnvFormat means an environment is structurally broken (an
	// unterminated entry, a missing GRUB header, a malformed line).
	ErrEnvFormat = errors.New("watchdog: malformed environment")
	// ErrEnvFull means the variables do not fit in the environment's size.
	ErrEnvFull = errors.New("watchdog: environment full")
	// ErrBadVar means a variable name or value cannot be stored in the
	// environment (empty name, '=' in a name, NUL anywhere, ...).
	ErrBadVar = errors.New("watchdog: bad variable")
	// ErrEnvConfig means an environment location is misconfigured.
	ErrEnvConfig = errors.New("watchdog: bad environment config")
	// ErrVerify means an environment read back after a write differs from
	// what was written.
	ErrVerify = errors.New("watchdog: environment read-back mismatch")
)

// Vars is the content of a bootloader environment: variable name to value.
type Vars map[string]string

// Clone returns a copy of v.
func (v Vars) Clone() Vars {
	c := make(Vars, len(v))
	for k, x := range v {
		c[k] = x
	}
	return c
}

// Equal reports whether v and w hold the same variables.
func (v Vars) Equal(w Vars) bool {
	if len(v) != len(w) {
		return false
	}
	for k, x := range v {
		if y, ok := w[k]; !ok || x != y {
			return false
		}
	}
	return true
}

// Keys returns the names in v in byte order, the order U-Boot and
// libubootenv store and print them in.
func (v Vars) Keys() []string {
	ks := make([]string, 0, len(v))
	for k := range v {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// String renders v as name=value lines in key order, like fw_printenv.
func (v Vars) String() string {
	var b strings.Builder
	for _, k := range v.Keys() {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v[k])
		b.WriteByte('\n')
	}
	return b.String()
}

// Env is a bootloader environment on storage, read and written as a whole.
// Save replaces the entire content with one write that is either fully
// visible after a power cut or not at all (to the degree the backend
// documents: redundant U-Boot copies guarantee it, a single U-Boot copy
// detects a torn write by CRC, GRUB relies on the storage).
type Env interface {
	Load() (Vars, error)
	Save(Vars) error
}

// File is the storage an environment lives on: a regular file or a block
// device, read and written at offsets, never truncated or moved.
type File interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Sync makes every completed WriteAt durable.
	Sync() error
	Close() error
}

// FS opens environment storage. Tests substitute a crashable one.
type FS interface {
	// Open opens path for reading, or for reading and writing. It never
	// creates or truncates.
	Open(path string, writable bool) (File, error)
}

// OSFS is the operating system's files and block devices.
type OSFS struct{}

// Open opens path without creating or truncating it.
func (OSFS) Open(path string, writable bool) (File, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	return f, nil
}

// MemEnv is an environment held in memory. flightd check runs the
// bootloader model on a copy of the variables in one to predict the next
// boot without touching the real environment; the bench's virtual board and
// the tests use it too. Its zero value is an empty environment.
type MemEnv struct {
	Vars   Vars
	Writes int // number of Save calls
}

// Load returns a copy of the variables.
func (m *MemEnv) Load() (Vars, error) { return m.Vars.Clone(), nil }

// Save replaces the variables.
func (m *MemEnv) Save(v Vars) error {
	if err := checkVars(v); err != nil {
		return err
	}
	m.Vars = v.Clone()
	m.Writes++
	return nil
}

// checkVars refuses names and values that no environment format can hold:
// names must be non-empty without '=', NUL or newline; values without NUL.
func checkVars(v Vars) error {
	for k, x := range v {
		switch {
		case k == "":
			return fmt.Errorf("%w: empty name", ErrBadVar)
		case strings.ContainsAny(k, "=\x00\n"):
			return fmt.Errorf("%w: name %q contains '=', NUL or newline", ErrBadVar, k)
		case strings.IndexByte(x, 0) >= 0:
			return fmt.Errorf("%w: value of %q contains NUL", ErrBadVar, k)
		}
	}
	return nil
}

// readFull reads exactly len(p) bytes at off.
func readFull(f File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil {
		err = errors.New("short read")
	}
	return err
}

// writeFull writes all of p at off.
func writeFull(f File, p []byte, off int64) error {
	n, err := f.WriteAt(p, off)
	if err == nil && n != len(p) {
		err = errors.New("short write")
	}
	return err
}
