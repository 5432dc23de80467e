package vfs

import (
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

// Op names an operation of a MemFS, for error injection and crash points.
type Op string

// The operations a MemFS counts and offers to the injector. Mutating
// operations (all but OpRead and OpOpen) are crash points.
const (
	OpCreate Op = "create"
	OpWrite  Op = "write"
	OpSync   Op = "sync"
	OpRename Op = "rename"
	OpRemove Op = "remove"
	OpMkdir  Op = "mkdir"
	OpRead   Op = "read"
	OpOpen   Op = "open"
)

// MemFS is an in-memory filesystem that tracks what is durable. Each file
// keeps its synced content and the writes since its last Sync; each directory
// keeps its synced entries and its current ones. CrashClone returns the
// filesystem as it would be found after a power cut: synced state, plus (when
// given a random source) an arbitrary subset of the unsynced writes and, per
// directory, either the synced or the current entries.
//
// SetCrashAfter makes the filesystem lose power at a chosen mutating
// operation: from then on every operation fails with ErrCrashed, and
// Crashed returns the image taken at that instant.
type MemFS struct {
	mu   sync.Mutex
	root *memNode

	ops        int // mutating operations performed
	crashAfter int // crash when ops reaches this; <0: never
	crashRand  *rand.Rand
	crashed    *MemFS

	// Inject, when set, is called before every operation; a non-nil error
	// fails the operation without changing anything.
	Inject func(op Op, name string) error
}

type memWrite struct {
	off      int64
	data     []byte
	truncate bool // truncate to off instead of writing
}

type memNode struct {
	dir     bool
	mode    fs.FileMode
	modTime time.Time

	data    []byte
	synced  []byte
	pending []memWrite

	children       map[string]*memNode
	syncedChildren map[string]*memNode
}

// NewMem returns an empty MemFS whose root directory is durable.
func NewMem() *MemFS {
	return &MemFS{root: newDir(0o755), crashAfter: -1}
}

func newDir(mode fs.FileMode) *memNode {
	return &memNode{dir: true, mode: fs.ModeDir | mode, children: map[string]*memNode{}, syncedChildren: map[string]*memNode{}}
}

// SetCrashAfter arranges for the power to be cut before mutating operation
// number n+1 (n operations succeed). r chooses which unsynced writes survive;
// nil keeps only synced state. n < 0 disarms.
func (m *MemFS) SetCrashAfter(n int, r *rand.Rand) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.crashAfter = m.ops + n
	if n < 0 {
		m.crashAfter = -1
	}
	m.crashRand = r
}

// Ops returns the number of mutating operations performed so far.
func (m *MemFS) Ops() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ops
}

// Crashed returns the filesystem as found after the power cut, or nil if the
// power was not cut.
func (m *MemFS) Crashed() *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.crashed
}

// CrashClone returns the state a power cut now would leave. With r nil only
// synced data and entries survive; otherwise each unsynced write survives
// with probability 1/2 and each directory shows its synced or current
// entries.
func (m *MemFS) CrashClone(r *rand.Rand) *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.crashCloneLocked(r)
}

func (m *MemFS) crashCloneLocked(r *rand.Rand) *MemFS {
	seen := map[*memNode]*memNode{}
	var clone func(n *memNode) *memNode
	clone = func(n *memNode) *memNode {
		if c, ok := seen[n]; ok {
			return c
		}
		c := &memNode{dir: n.dir, mode: n.mode, modTime: n.modTime}
		seen[n] = c
		if n.dir {
			src := n.syncedChildren
			if r != nil && r.IntN(2) == 0 {
				src = n.children
			}
			c.children = map[string]*memNode{}
			for name, ch := range src {
				c.children[name] = clone(ch)
			}
			c.syncedChildren = maps(c.children)
			return c
		}
		d := append([]byte(nil), n.synced...)
		if r != nil {
			for _, w := range n.pending {
				if r.IntN(2) == 0 {
					continue
				}
				d = applyWrite(d, w)
			}
		}
		c.data = d
		c.synced = append([]byte(nil), d...)
		return c
	}
	return &MemFS{root: clone(m.root), crashAfter: -1}
}

func maps(in map[string]*memNode) map[string]*memNode {
	out := make(map[string]*memNode, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}

func applyWrite(d []byte, w memWrite) []byte {
	if w.truncate {
		if int64(len(d)) > w.off {
			return d[:w.off]
		}
		return append(d, make([]byte, w.off-int64(len(d)))...)
	}
	end := w.off + int64(len(w.data))
	if int64(len(d)) < end {
		d = append(d, make([]byte, end-int64(len(d)))...)
	}
	copy(d[w.off:], w.data)
	return d
}

// begin checks for a crash and runs the injector. Callers hold m.mu.
func (m *MemFS) begin(op Op, name string) error {
	if m.crashed != nil {
		return ErrCrashed
	}
	mutating := op != OpRead && op != OpOpen
	if mutating && m.crashAfter >= 0 && m.ops >= m.crashAfter {
		m.crashed = m.crashCloneLocked(m.crashRand)
		return ErrCrashed
	}
	if m.Inject != nil {
		if err := m.Inject(op, name); err != nil {
			return err
		}
	}
	if mutating {
		m.ops++
	}
	return nil
}

func clean(name string) string {
	name = strings.ReplaceAll(name, "\\", "/")
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// lookup returns the node at name (cleaned), or nil.
func (m *MemFS) lookup(name string) *memNode {
	n := m.root
	if name == "" {
		return n
	}
	for _, part := range strings.Split(name, "/") {
		if !n.dir {
			return nil
		}
		n = n.children[part]
		if n == nil {
			return nil
		}
	}
	return n
}

func (m *MemFS) parent(name string) (*memNode, string, error) {
	if name == "" {
		return nil, "", errors.New("vfs: root has no parent")
	}
	dir, base := path.Split(name)
	p := m.lookup(strings.TrimSuffix(dir, "/"))
	if p == nil {
		return nil, "", fs.ErrNotExist
	}
	if !p.dir {
		return nil, "", errors.New("vfs: not a directory")
	}
	return p, base, nil
}

func pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// Create implements FS.
func (m *MemFS) Create(name string, perm fs.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cn := clean(name)
	if err := m.begin(OpCreate, cn); err != nil {
		return nil, pathErr("create", name, err)
	}
	p, base, err := m.parent(cn)
	if err != nil {
		return nil, pathErr("create", name, err)
	}
	n := p.children[base]
	switch {
	case n == nil:
		n = &memNode{mode: perm}
		p.children[base] = n
	case n.dir:
		return nil, pathErr("create", name, errors.New("is a directory"))
	default:
		n.data = n.data[:0:0]
		n.pending = append(n.pending, memWrite{off: 0, truncate: true})
	}
	return &memFile{fs: m, n: n, name: name, write: true}, nil
}

func (m *MemFS) open(name string, write, dir bool) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cn := clean(name)
	if err := m.begin(OpOpen, cn); err != nil {
		return nil, pathErr("open", name, err)
	}
	n := m.lookup(cn)
	if n == nil {
		return nil, pathErr("open", name, fs.ErrNotExist)
	}
	if dir && !n.dir {
		return nil, pathErr("open", name, errors.New("not a directory"))
	}
	if write && n.dir {
		return nil, pathErr("open", name, errors.New("is a directory"))
	}
	return &memFile{fs: m, n: n, name: name, write: write}, nil
}

// Open implements FS.
func (m *MemFS) Open(name string) (File, error) { return m.open(name, false, false) }

// OpenRW implements FS.
func (m *MemFS) OpenRW(name string) (File, error) { return m.open(name, true, false) }

// OpenDir implements FS.
func (m *MemFS) OpenDir(name string) (File, error) { return m.open(name, false, true) }

// Rename implements FS.
func (m *MemFS) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	co, cn := clean(oldname), clean(newname)
	if err := m.begin(OpRename, co); err != nil {
		return pathErr("rename", oldname, err)
	}
	op, obase, err := m.parent(co)
	if err != nil {
		return pathErr("rename", oldname, err)
	}
	n := op.children[obase]
	if n == nil {
		return pathErr("rename", oldname, fs.ErrNotExist)
	}
	np, nbase, err := m.parent(cn)
	if err != nil {
		return pathErr("rename", newname, err)
	}
	if old := np.children[nbase]; old != nil && old.dir && len(old.children) > 0 {
		return pathErr("rename", newname, errors.New("directory not empty"))
	}
	delete(op.children, obase)
	np.children[nbase] = n
	return nil
}

// Remove implements FS.
func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cn := clean(name)
	if err := m.begin(OpRemove, cn); err != nil {
		return pathErr("remove", name, err)
	}
	p, base, err := m.parent(cn)
	if err != nil {
		return pathErr("remove", name, err)
	}
	n := p.children[base]
	if n == nil {
		return pathErr("remove", name, fs.ErrNotExist)
	}
	if n.dir && len(n.children) > 0 {
		return pathErr("remove", name, errors.New("directory not empty"))
	}
	delete(p.children, base)
	return nil
}

// MkdirAll implements FS.
func (m *MemFS) MkdirAll(name string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cn := clean(name)
	if n := m.lookup(cn); n != nil {
		if !n.dir {
			return pathErr("mkdir", name, errors.New("not a directory"))
		}
		return nil
	}
	if err := m.begin(OpMkdir, cn); err != nil {
		return pathErr("mkdir", name, err)
	}
	n := m.root
	for _, part := range strings.Split(cn, "/") {
		c := n.children[part]
		if c == nil {
			c = newDir(perm)
			n.children[part] = c
		} else if !c.dir {
			return pathErr("mkdir", name, errors.New("not a directory"))
		}
		n = c
	}
	return nil
}

// Stat implements FS.
func (m *MemFS) Stat(name string) (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cn := clean(name)
	if err := m.begin(OpOpen, cn); err != nil {
		return nil, pathErr("stat", name, err)
	}
	n := m.lookup(cn)
	if n == nil {
		return nil, pathErr("stat", name, fs.ErrNotExist)
	}
	return memInfo{name: path.Base("/" + cn), n: n}, nil
}

// ReadDir implements FS.
func (m *MemFS) ReadDir(name string) ([]fs.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cn := clean(name)
	if err := m.begin(OpRead, cn); err != nil {
		return nil, pathErr("readdir", name, err)
	}
	n := m.lookup(cn)
	if n == nil || !n.dir {
		return nil, pathErr("readdir", name, fs.ErrNotExist)
	}
	out := make([]fs.DirEntry, 0, len(n.children))
	for k, c := range n.children {
		out = append(out, fs.FileInfoToDirEntry(memInfo{name: k, n: c}))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

type memInfo struct {
	name string
	n    *memNode
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return int64(len(i.n.data)) }
func (i memInfo) Mode() fs.FileMode  { return i.n.mode }
func (i memInfo) ModTime() time.Time { return i.n.modTime }
func (i memInfo) IsDir() bool        { return i.n.dir }
func (i memInfo) Sys() any           { return nil }

type memFile struct {
	fs     *MemFS
	n      *memNode
	name   string
	pos    int64
	write  bool
	closed bool
}

func (f *memFile) check(op Op) error {
	if f.closed {
		return fs.ErrClosed
	}
	return f.fs.begin(op, clean(f.name))
}

func (f *memFile) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.pos)
	f.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(OpRead); err != nil {
		return 0, pathErr("read", f.name, err)
	}
	if f.n.dir {
		return 0, pathErr("read", f.name, errors.New("is a directory"))
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Write(p []byte) (int, error) {
	n, err := f.WriteAt(p, f.pos)
	f.pos += int64(n)
	return n, err
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if !f.write {
		return 0, pathErr("write", f.name, errors.New("file not open for writing"))
	}
	if err := f.check(OpWrite); err != nil {
		return 0, pathErr("write", f.name, err)
	}
	w := memWrite{off: off, data: append([]byte(nil), p...)}
	f.n.data = applyWrite(f.n.data, w)
	f.n.pending = append(f.n.pending, w)
	return len(p), nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(OpSync); err != nil {
		return pathErr("sync", f.name, err)
	}
	if f.n.dir {
		f.n.syncedChildren = maps(f.n.children)
		return nil
	}
	f.n.synced = append(f.n.synced[:0:0], f.n.data...)
	f.n.pending = nil
	return nil
}

func (f *memFile) Stat() (fs.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return nil, fs.ErrClosed
	}
	return memInfo{name: path.Base("/" + clean(f.name)), n: f.n}, nil
}

func (f *memFile) Close() error {
	if f.closed {
		return fs.ErrClosed
	}
	f.closed = true
	return nil
}
