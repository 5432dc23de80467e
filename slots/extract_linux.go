package slots

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Extraction errors. Every error from ExtractLayers wraps one of these (or a
// context or I/O error) and names the entry.
var (
	ErrEscape        = errors.New("slots: path escapes slot")
	ErrBadEntry      = errors.New("slots: bad archive entry")
	ErrTooLarge      = errors.New("slots: archive exceeds limits")
	ErrTruncated     = errors.New("slots: archive truncated")
	ErrBadArchive    = errors.New("slots: malformed archive")
	ErrNotPermitted  = errors.New("slots: not permitted (device nodes and ownership need root)")
	ErrUnsupported   = errors.New("slots: unsupported entry type")
	errWhiteoutPrefx = ".wh."
)

const (
	opaqueMarker = ".wh..wh..opq"
	maxPathLen   = 4096
	maxNameLen   = 255
	maxXattrs    = 128
	maxXattrSize = 64 << 10
)

// SyncMode is how an extraction makes its files durable.
type SyncMode int

const (
	// SyncFS issues one syncfs(2) on the slot's filesystem at the end.
	SyncFS SyncMode = iota
	// SyncEach fsyncs every file as it is closed and every directory at
	// the end.
	SyncEach
	// SyncNone leaves durability to the caller (tests, benchmarks of the
	// extraction alone).
	SyncNone
)

// ExtractOptions bounds and tunes an extraction. Zero values take defaults.
type ExtractOptions struct {
	MaxEntries  int   // entries over all layers; default 4 Mi
	MaxFileSize int64 // one regular file; default 16 GiB
	MaxTotal    int64 // content bytes over all layers; default 256 GiB
	// DeclaredSize, if positive, is what the image says it expands to (the
	// content bytes of its regular files): an archive that expands to more
	// (sparse entries read as runs of zeros) is refused before the entry
	// that crosses it is written. ExtractLayers also refuses content beyond
	// the slot filesystem's capacity (statfs).
	DeclaredSize int64
	Sync         SyncMode
	// FlushEvery, with SyncFS: after every FlushEvery bytes of file
	// content a syncfs(2) on a goroutine of its own writes back what has
	// been extracted so far while the extraction goes on, so that the
	// final syncfs has little left (default 8 MiB; negative: only the
	// final syncfs). `hil bench slot-write` measures both.
	FlushEvery int64
	// Hash computes the sha256 of every regular file while it is written
	// (on a second goroutine), so that ExtractResult.Entries is the full
	// expected tree: for callers that have no expected tree. Without it the
	// entries carry everything but the content hashes, and the caller
	// verifies the slot by reading it back against the tree it computed
	// beforehand (ExpectedTree), which keeps hashing off the write path.
	Hash bool
	// Workers is the number of goroutines that write small regular files
	// (up to 1 MiB) while the extracting goroutine reads the archive on;
	// 0 or 1 (the default) writes every file on the extracting goroutine,
	// in archive order. Entries that depend on a file still being written
	// (the same path, a path below it, a hard link to it, any removal,
	// directory times) wait for the workers first. Measured on the
	// development VM (2 shared vCPUs), 2 workers made no consistent
	// difference (docs/slots.md), hence off by default; `hil bench
	// slot-write` measures both.
	Workers int
}

func (o *ExtractOptions) defaults() {
	if o.MaxEntries <= 0 {
		o.MaxEntries = 4 << 20
	}
	if o.MaxFileSize <= 0 {
		o.MaxFileSize = 16 << 30
	}
	if o.MaxTotal <= 0 {
		o.MaxTotal = 256 << 30
	}
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.FlushEvery == 0 {
		o.FlushEvery = DefaultFlushEvery
	}
}

// ExtractResult is what an extraction produced: the tree the layers
// describe (computed from the archives while they were written; regular
// files have content hashes only with ExtractOptions.Hash), and counts.
type ExtractResult struct {
	Entries []Entry
	Files   int
	Bytes   int64
}

// ExtractLayers empties the directory dir (keeping a top-level lost+found)
// and extracts the OCI layer tars (uncompressed) into it in order, applying
// whiteouts and opaque directories. Nothing is created outside dir: entries
// with absolute paths or ".." are refused, parents are resolved beneath dir
// without following symlinks, and hard links must point inside. On error the
// directory holds a partial tree; the caller's slot state says "writing".
func ExtractLayers(ctx context.Context, dir string, layers []io.Reader, o ExtractOptions) (*ExtractResult, error) {
	return extractLayers(ctx, dir, layers, o, nil)
}

// extractLayers is ExtractLayers recording the layers' index into idx
// (nil: none).
func extractLayers(ctx context.Context, dir string, layers []io.Reader, o ExtractOptions, idx *indexWriter) (*ExtractResult, error) {
	o.defaults()
	r, err := openRoot(dir)
	if err != nil {
		return nil, err
	}
	defer r.close()
	x := newExtractor(o)
	x.r = r
	if o.Hash {
		// File contents are hashed on a second goroutine while they are
		// written, so that hashing and the write syscalls overlap.
		x.hashIn, x.hashed = make(chan []byte, 2), make(chan struct{}, 2)
		go func() {
			for b := range x.hashIn {
				x.sum.Write(b)
				x.hashed <- struct{}{}
			}
		}()
		defer close(x.hashIn)
	}
	r.onImplicitDir = x.implicitDir
	x.umask = readUmask()
	var rst unix.Stat_t
	if err := unix.Fstat(r.fd, &rst); err != nil {
		return nil, fmt.Errorf("slots: stat slot directory %s: %w", dir, err)
	}
	x.rootSetgid = rst.Mode&unix.S_ISGID != 0
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(r.fd, &sfs); err != nil {
		return nil, fmt.Errorf("slots: statfs slot directory %s: %w", dir, err)
	}
	x.capacity = int64(sfs.Blocks) * int64(sfs.Frsize)
	if o.Workers > 1 && !o.Hash {
		x.startWorkers(o.Workers)
		defer x.stopWorkers() // before r.close: the workers use its descriptors
	}
	if o.Sync == SyncFS && o.FlushEvery > 0 {
		if x.flush, err = startFlusher(r.fd, o.FlushEvery); err != nil {
			return nil, err
		}
		defer x.flush.stop()
	}
	// Empty the slot: move the old content aside (a few renames) and delete
	// it on another goroutine while the new content is extracted; the
	// deletion is complete before the slot is synced.
	deleted, err := x.moveAside()
	if err != nil {
		return nil, fmt.Errorf("slots: empty %s: %w", dir, err)
	}
	for i, l := range layers {
		if idx != nil {
			x.rec = idx.begin(i, l)
			l = x.rec
		}
		err := x.layer(ctx, l)
		if err == nil {
			err = x.rec.end()
		}
		if err != nil {
			<-deleted
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	if err := <-deleted; err != nil {
		return nil, fmt.Errorf("slots: empty %s: %w", dir, err)
	}
	x.drain()
	if err := x.workerErr(); err != nil {
		return nil, err
	}
	if err := x.flush.stop(); err != nil {
		return nil, fmt.Errorf("slots: syncfs %s: %w", dir, err)
	}
	if err := x.finish(); err != nil {
		return nil, err
	}
	return x.result(), nil
}

// ExpectedTree computes, without writing anything, the tree that
// ExtractLayers produces from layers in an empty slot, with the sha256 of
// every regular file: the expected content a directory slot is verified
// against after it is written. Run it where the layers are staged and
// verified (or as a separate pass over the tars), so that the extraction
// itself does not hash. It applies the extractor's own rules (whiteouts,
// opaque directories, replacement, hard links, implicit parents owned by
// the calling user) to a model instead of a filesystem, and refuses what
// extraction refuses, except what only the filesystem decides (device
// nodes and foreign ownership without privileges).
func ExpectedTree(ctx context.Context, layers []io.Reader, o ExtractOptions) (*ExtractResult, error) {
	o.defaults()
	x := newExtractor(o)
	x.dry = true
	for i, l := range layers {
		if err := x.layer(ctx, l); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	if err := x.finish(); err != nil {
		return nil, err
	}
	return x.result(), nil
}

func newExtractor(o ExtractOptions) *extractor {
	return &extractor{
		o:        o,
		model:    map[string]*Entry{},
		dirTimes: map[string]int64{},
		uid:      os.Geteuid(), gid: os.Getegid(),
		bufs: [2][]byte{make([]byte, 1<<20), make([]byte, 1<<20)},
		sum:  sha256.New(),
	}
}

func (x *extractor) result() *ExtractResult {
	res := &ExtractResult{Files: x.files, Bytes: x.total, Entries: make([]Entry, 0, len(x.model))}
	for _, e := range x.model {
		res.Entries = append(res.Entries, *e)
	}
	sort.Slice(res.Entries, func(i, j int) bool { return res.Entries[i].Path < res.Entries[j].Path })
	return res
}

// EmptyDir deletes everything in the directory dir but a top-level
// lost+found, never following a symlink. Manager.Prepare uses it to empty
// a directory slot ahead of an install.
func EmptyDir(ctx context.Context, dir string) error {
	r, err := openRoot(dir)
	if err != nil {
		return err
	}
	defer r.close()
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("slots: empty %s: %w", dir, err)
	}
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if n == "lost+found" {
			continue
		}
		if err := removeAll(r.fd, n); err != nil {
			return fmt.Errorf("slots: empty %s: %s: %w", dir, n, err)
		}
	}
	return nil
}

// moveAside renames everything in the slot root but lost+found into a
// fresh directory and starts deleting that directory; the channel yields
// the deletion's result.
func (x *extractor) moveAside() (<-chan error, error) {
	var rnd [8]byte
	if _, err := crand.Read(rnd[:]); err != nil {
		return nil, err
	}
	x.trash = ".bootorbit-old-" + hex.EncodeToString(rnd[:])
	if err := unix.Mkdirat(x.r.fd, x.trash, 0o700); err != nil {
		return nil, err
	}
	d, err := os.Open(x.r.path)
	if err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, err
	}
	tfd, err := unix.Openat(x.r.fd, x.trash, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(tfd)
	for _, n := range names {
		if n == "lost+found" || n == x.trash {
			continue
		}
		if err := unix.Renameat(x.r.fd, n, tfd, n); err != nil {
			return nil, fmt.Errorf("move %s aside: %w", n, err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- removeOld(x.r.fd, x.trash) }()
	return done, nil
}

// removeOld deletes the directory the old tree was moved into; tests
// replace it to check that nothing else touched that directory meanwhile.
var removeOld = removeAll

type extractor struct {
	// dry applies the archives to the model only (ExpectedTree): nothing
	// touches a filesystem, r is nil, and file contents are hashed.
	dry       bool
	trash     string // top-level name of the old content being deleted
	r         *root
	o         ExtractOptions
	model     map[string]*Entry
	layerSeen map[string]bool
	dirTimes  map[string]int64
	uid, gid  int
	// umask is the process's file mode creation mask (-1 if unknown), and
	// rootSetgid whether the slot root passes its group on: with them a new
	// file's owner and mode are known without asking, and the fchown and
	// fchmod that would not change anything are skipped.
	umask      int
	rootSetgid bool
	bufs       [2][]byte
	sum        hash.Hash   // written only by the hasher goroutine while chunks are pending
	hashIn     chan []byte // nil: no inline hashing
	hashed     chan struct{}
	entries    int
	files      int
	total      int64
	capacity   int64  // of the slot's filesystem in bytes; 0: unknown (dry run)
	name       string // the current entry's archive name, for errors

	flush *flusher // nil: no early writeback

	// rec records the current layer's index (nil: no index recorded).
	rec *layerRec

	// Small-file workers (nil jobs: none).
	jobs     chan fileJob
	free     chan []byte     // content buffers, smallFile bytes each
	busy     sync.WaitGroup  // jobs not finished
	workers  sync.WaitGroup  // running workers
	pending  map[string]bool // paths of jobs handed out since the last drain
	failed   atomic.Bool
	errMu    sync.Mutex
	firstErr error
}

func (x *extractor) finish() error {
	// Directory times last: creating children changed them.
	for rel, mt := range x.dirTimes {
		e := x.model[rel]
		if e == nil || e.Type != 'd' {
			continue
		}
		if x.dry {
			e.Mtime = mt
			continue
		}
		pfd, base, err := x.r.parent(rel, false)
		if err != nil {
			return fmt.Errorf("set time of %s: %w", rel, err)
		}
		ts := unix.NsecToTimespec(mt)
		if err := unix.UtimesNanoAt(pfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set time of %s: %w", rel, err)
		}
		e.Mtime = mt
	}
	if x.dry {
		return nil
	}
	switch x.o.Sync {
	case SyncFS:
		if err := finalSyncfs(x.r.fd); err != nil {
			return fmt.Errorf("slots: syncfs %s: %w", x.r.path, err)
		}
	case SyncEach:
		dirs := []string{""}
		for p, e := range x.model {
			if e.Type == 'd' {
				dirs = append(dirs, p)
			}
		}
		for _, d := range dirs {
			fd := x.r.fd
			if d != "" {
				var err error
				if fd, err = x.r.openDir(d, false); err != nil {
					return err
				}
			}
			// An O_PATH descriptor cannot be fsynced: reopen for reading.
			rfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if fd != x.r.fd {
				unix.Close(fd)
			}
			if err != nil {
				return err
			}
			err = unix.Fsync(rfd)
			unix.Close(rfd)
			if err != nil {
				return fmt.Errorf("slots: fsync %s: %w", d, err)
			}
		}
	}
	return nil
}
