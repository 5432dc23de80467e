package slots

import (
	"archive/tar"
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

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
		o.FlushEvery = 8 << 20
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
		if err := x.layer(ctx, l); err != nil {
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

// smallFile is the largest file handed to a worker (its content is
// buffered); larger files are streamed by the extracting goroutine.
const smallFile = 1 << 20

// fileJob is one small regular file for a worker to create and fill.
type fileJob struct {
	pfd          int
	release      func() // of pfd
	base, name   string
	data         []byte
	e            Entry
	createMode   uint32
	chown, chmod bool
}

func (x *extractor) startWorkers(n int) {
	x.jobs, x.free, x.pending = make(chan fileJob, 2*n), make(chan []byte, 4*n), map[string]bool{}
	for i := 0; i < cap(x.free); i++ {
		x.free <- make([]byte, smallFile)
	}
	for i := 0; i < n; i++ {
		x.workers.Add(1)
		go func() {
			defer x.workers.Done()
			for j := range x.jobs {
				if !x.failed.Load() {
					if err := x.writeJob(&j); err != nil && !x.failed.Swap(true) {
						x.errMu.Lock()
						x.firstErr = fmt.Errorf("entry %q: %w", truncName(j.name), err)
						x.errMu.Unlock()
					}
				}
				x.flush.wrote(int64(len(j.data)))
				j.release()
				x.free <- j.data[:cap(j.data)]
				x.busy.Done()
			}
		}()
	}
}

func (x *extractor) stopWorkers() {
	close(x.jobs)
	x.workers.Wait()
}

// drain waits until every file handed to the workers is written.
func (x *extractor) drain() {
	if x.jobs == nil || len(x.pending) == 0 {
		return
	}
	x.busy.Wait()
	clear(x.pending)
}

// workerErr is the first error of a worker, naming its entry.
func (x *extractor) workerErr() error {
	if x.jobs == nil || !x.failed.Load() {
		return nil
	}
	x.errMu.Lock()
	defer x.errMu.Unlock()
	return x.firstErr
}

// writeJob creates and fills a small file on a worker.
func (x *extractor) writeJob(j *fileJob) error {
	fd, err := unix.Openat(j.pfd, j.base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, j.createMode)
	if err != nil {
		return err
	}
	// A raw descriptor: os.NewFile would cost an fcntl per file.
	err = writeAll(fd, j.data)
	if err == nil {
		err = setMetaFd(fd, &j.e, j.chown, j.chmod)
	}
	if err == nil && x.o.Sync == SyncEach {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// writeAll writes b to fd, resuming after short writes and EINTR.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

// parent resolves rel's parent directory beneath the slot root (creating
// missing ones with create) and returns its descriptor and rel's last
// component; a dry run checks the model instead and returns -1.
func (x *extractor) parent(rel string, create bool) (int, string, error) {
	if !x.dry {
		return x.r.parent(rel, create)
	}
	dir, base := splitRel(rel)
	if err := x.modelDir(dir, create); err != nil {
		return -1, "", err
	}
	return -1, base, nil
}

// lookup says whether rel (base in pfd) exists and is a directory.
func (x *extractor) lookup(pfd int, base, rel string) (isDir, exists bool, err error) {
	e := x.model[rel]
	if x.dry {
		return e != nil && e.Type == 'd', e != nil, nil
	}
	// The slot was emptied (all but lost+found) and everything created in
	// it since is in the model: a path the model does not have is not
	// there, and no lstat is needed. Should the model ever be wrong, the
	// O_EXCL create or mkdir fails; nothing is followed or overwritten.
	if top, _, _ := strings.Cut(rel, "/"); e == nil && top != "lost+found" {
		return false, false, nil
	}
	st, ok, err := x.r.lstat(pfd, base)
	return ok && st.Mode&unix.S_IFMT == unix.S_IFDIR, ok, err
}

// modelDir is what root.openDir does, on the model: dir and each of its
// ancestors must be a directory (a symlink or another type is refused as
// the walk on disk refuses it); missing ones are added as implicit
// directories with create, or reported as not existing.
func (x *extractor) modelDir(dir string, create bool) error {
	for i := 1; i <= len(dir); i++ {
		if i < len(dir) && dir[i] != '/' {
			continue
		}
		p := dir[:i]
		switch e := x.model[p]; {
		case e == nil && create:
			x.implicitDir(p)
		case e == nil:
			return fmt.Errorf("%s: %w", p, os.ErrNotExist)
		case e.Type == 'l':
			return fmt.Errorf("%w: parent %s is a symlink", ErrEscape, p)
		case e.Type != 'd':
			return fmt.Errorf("%w: parent %s is not a directory", ErrBadEntry, p)
		}
	}
	return nil
}

func (x *extractor) implicitDir(rel string) {
	x.model[rel] = &Entry{Path: rel, Type: 'd', Mode: 0o755, UID: x.uid, GID: x.gid}
	x.dirTimes[rel] = 0
	x.layerSeen[rel] = true
}

// cleanName turns an archive name into a slot-relative path, refusing
// anything that could leave the slot. "" is the slot root.
func cleanName(name string) (string, error) {
	if len(name) > maxPathLen {
		return "", fmt.Errorf("%w: name of %d bytes (limit %d)", ErrTooLarge, len(name), maxPathLen)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL in name", ErrBadEntry)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: absolute path", ErrEscape)
	}
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch {
		case p == "" || p == ".":
			continue
		case p == "..":
			return "", fmt.Errorf("%w: \"..\" component", ErrEscape)
		case len(p) > maxNameLen:
			return "", fmt.Errorf("%w: component of %d bytes (limit %d)", ErrTooLarge, len(p), maxNameLen)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "/"), nil
}

func tarError(err error) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %v", ErrTruncated, err)
	case errors.Is(err, tar.ErrFieldTooLong):
		return fmt.Errorf("%w: header: %v", ErrTooLarge, err)
	case errors.Is(err, tar.ErrHeader), errors.Is(err, tar.ErrInsecurePath):
		return fmt.Errorf("%w: %v", ErrBadArchive, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrBadArchive, err)
}

func (x *extractor) layer(ctx context.Context, l io.Reader) error {
	x.layerSeen = map[string]bool{}
	tr := tar.NewReader(l)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			// The layer's files are all written before the next layer's
			// whiteouts apply, and its errors are its own.
			x.drain()
			return x.workerErr()
		}
		if err != nil {
			return tarError(err)
		}
		x.entries++
		if x.entries > x.o.MaxEntries {
			return fmt.Errorf("%w: more than %d entries", ErrTooLarge, x.o.MaxEntries)
		}
		x.name = hdr.Name
		err = x.entry(tr, hdr)
		if werr := x.workerErr(); werr != nil {
			return werr // an earlier entry failed on a worker: that comes first
		}
		if err != nil {
			return fmt.Errorf("entry %q: %w", truncName(hdr.Name), err)
		}
	}
}

// checkTotal refuses content beyond the limits before it is written: the
// extraction's MaxTotal, the slot filesystem's capacity (a sparse entry
// of a few bytes in the archive reads as its whole size of zeros) and the
// image's declared size. size is the current entry's share of x.total.
func (x *extractor) checkTotal(size int64) error {
	for _, l := range []struct {
		limit int64
		what  string
	}{
		{x.o.MaxTotal, "the extraction's limit (MaxTotal)"},
		{x.capacity, "the slot filesystem's capacity"},
		{x.o.DeclaredSize, "the image's declared size"},
	} {
		if l.limit > 0 && x.total > l.limit {
			return fmt.Errorf("%w: more than %d content bytes, %s (this entry %d bytes, %d in all)", ErrTooLarge, l.limit, l.what, size, x.total)
		}
	}
	return nil
}

// mustBeDir refuses a top-level entry that is not a directory where the
// slot needs one: etc and var, which the /etc carry-over, the pristine
// copy, the factory reset and the /var seeding work on (a symlink etc ->
// /etc would lead them to the host's /etc), and lost+found, which belongs
// to the slot's filesystem.
func mustBeDir(name string, typ byte) error {
	switch name {
	case "etc", "var":
		return fmt.Errorf("%w: top-level %s must be a directory (type %q): the /etc and /var policy works on the slot's own directories", ErrBadEntry, name, typ)
	case "lost+found":
		return fmt.Errorf("%w: top-level lost+found belongs to the slot's filesystem and stays a directory (type %q)", ErrBadEntry, typ)
	}
	return nil
}

func truncName(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		return nil // the slot root: its attributes belong to the mount
	}
	if top, _, _ := strings.Cut(rel, "/"); top == x.trash {
		return fmt.Errorf("%w: name reserved during extraction", ErrBadEntry)
	}
	dir, base := splitRel(rel)
	if strings.HasPrefix(base, errWhiteoutPrefx) {
		return x.whiteout(dir, base)
	}
	if dir == "" && hdr.Typeflag != tar.TypeDir {
		if err := mustBeDir(base, hdr.Typeflag); err != nil {
			return err
		}
	}
	if hdr.Size < 0 || hdr.Size > x.o.MaxFileSize {
		return fmt.Errorf("%w: size %d (limit %d)", ErrTooLarge, hdr.Size, x.o.MaxFileSize)
	}
	e := &Entry{Path: rel, Mode: uint32(hdr.Mode) & 0o7777, UID: hdr.Uid, GID: hdr.Gid, Mtime: hdr.ModTime.UnixNano()}
	if e.Xattrs, err = xattrsOf(hdr); err != nil {
		return err
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || hdr.Uid > 1<<31-2 || hdr.Gid > 1<<31-2 {
		return fmt.Errorf("%w: uid/gid %d/%d out of range", ErrBadEntry, hdr.Uid, hdr.Gid)
	}
	wait := x.pending[rel]
	for a := dir; a != ""; a, _ = splitRel(a) {
		x.layerSeen[a] = true
		wait = wait || x.pending[a]
	}
	if wait {
		x.drain() // rel, or a parent of it, is a file still being written
	}
	pfd, base, err := x.parent(rel, true)
	if err != nil {
		return err
	}
	isDir, exists, err := x.lookup(pfd, base, rel)
	if err != nil {
		return err
	}
	// replace removes what is at rel (a dir only when the new entry is not
	// one) and re-resolves the parent, which the removal may invalidate.
	replace := func(keepDir bool) error {
		if !exists || (keepDir && isDir) {
			return nil
		}
		if !x.dry {
			x.drain() // the workers may be writing below rel
			if err := x.r.removeAt(pfd, base); err != nil {
				return err
			}
		}
		x.dropModel(rel)
		exists = false
		pfd, base, err = x.parent(rel, true)
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		e.Type = 'd'
		if err := replace(true); err != nil {
			return err
		}
		if !exists && !x.dry {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return err
			}
		}
		x.dirTimes[rel] = e.Mtime
	case tar.TypeReg, tar.TypeRegA:
		e.Type = 'f'
		x.total += hdr.Size
		if err := x.checkTotal(hdr.Size); err != nil {
			return err
		}
		if err := replace(false); err != nil {
			return err
		}
		if err := x.writeFile(pfd, base, tr, hdr.Size, e); err != nil {
			return err
		}
		x.files++
	case tar.TypeSymlink:
		e.Type = 'l'
		if len(hdr.Linkname) > maxPathLen || hdr.Linkname == "" || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return fmt.Errorf("%w: symlink target of %d bytes", ErrBadEntry, len(hdr.Linkname))
		}
		e.Link = hdr.Linkname
		e.Mode = 0o777 // Linux symlinks have no mode of their own
		if err := replace(false); err != nil {
			return err
		}
		if x.dry {
			break
		}
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return err
		}
	case tar.TypeLink:
		return x.hardlink(rel, hdr.Linkname, replace, &pfd, &base)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := uint32(unix.S_IFIFO)
		e.Type = 'p'
		if hdr.Typeflag != tar.TypeFifo {
			if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > 1<<12-1 || hdr.Devminor > 1<<20-1 {
				return fmt.Errorf("%w: device %d:%d out of range", ErrBadEntry, hdr.Devmajor, hdr.Devminor)
			}
			e.Major, e.Minor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
			mode, e.Type = unix.S_IFCHR, 'c'
			if hdr.Typeflag == tar.TypeBlock {
				mode, e.Type = unix.S_IFBLK, 'b'
			}
		}
		if err := replace(false); err != nil {
			return err
		}
		if x.dry {
			break
		}
		if err := unix.Mknodat(pfd, base, mode|0o600, int(unix.Mkdev(e.Major, e.Minor))); err != nil {
			if errors.Is(err, unix.EPERM) {
				return fmt.Errorf("%w: mknod: %v", ErrNotPermitted, err)
			}
			return err
		}
	default:
		return fmt.Errorf("%w: type %q", ErrUnsupported, hdr.Typeflag)
	}
	if !x.dry && e.Type != 'f' { // regular files got theirs by descriptor
		if err := setMeta(pfd, base, e); err != nil {
			return err
		}
	}
	if old := x.model[rel]; old == nil || old.Type != 'd' || e.Type != 'd' {
		x.dropModel(rel)
	}
	x.model[rel] = e
	x.layerSeen[rel] = true
	return nil
}

// writeFile creates base in pfd with the next size bytes of tr as its
// content and gives it e's metadata by descriptor. In a dry run it only
// hashes the content.
func (x *extractor) writeFile(pfd int, base string, tr io.Reader, size int64, e *Entry) error {
	e.Size = size
	if x.dry {
		x.sum.Reset()
		if err := copyContent(tr, size, x.bufs[0], func(b []byte) error { x.sum.Write(b); return nil }); err != nil {
			return err
		}
		x.sum.Sum(e.SHA256[:0])
		return nil
	}
	// Created with its final permission bits when the umask keeps them and
	// there are no setuid/setgid/sticky bits (which a chown would clear):
	// then no fchmod is needed. Until then it is 0600 and ours.
	createMode, chmod := uint32(0o600), true
	if x.umask >= 0 && e.Mode&0o7000 == 0 && e.Mode&uint32(x.umask) == 0 {
		createMode, chmod = e.Mode, false
	}
	// A new file is owned by the extracting user and group, or the
	// parent's group when the parent is setgid.
	pdir, _ := splitRel(e.Path)
	setgid := x.rootSetgid
	if pdir != "" {
		setgid = x.model[pdir] == nil || x.model[pdir].Mode&0o2000 != 0
	}
	chown := e.UID != x.uid || e.GID != x.gid || setgid
	if x.jobs != nil && size <= smallFile {
		buf := <-x.free
		if err := copyContent(tr, size, buf, func([]byte) error { return nil }); err != nil {
			x.free <- buf
			return err
		}
		x.pending[e.Path] = true
		x.busy.Add(1)
		x.jobs <- fileJob{pfd: pfd, release: x.r.retain(pfd), base: base, name: x.name, data: buf[:size],
			e: *e, createMode: createMode, chown: chown, chmod: chmod}
		return nil
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, createMode)
	if err != nil {
		return err
	}
	if x.hashIn != nil {
		err = x.writeHashed(fd, tr, size, e)
	} else {
		err = copyContent(tr, size, x.bufs[0], func(b []byte) error { return writeAll(fd, b) })
	}
	if err == nil {
		err = setMetaFd(fd, e, chown, chmod)
	}
	if err == nil && x.o.Sync == SyncEach {
		err = unix.Fsync(fd)
	}
	if err != nil {
		unix.Close(fd)
		return err
	}
	x.flush.wrote(size)
	return unix.Close(fd)
}

// copyContent passes the next size bytes of tr to sink through buf.
func copyContent(tr io.Reader, size int64, buf []byte, sink func([]byte) error) error {
	var n int64
	for n < size {
		k, rerr := io.ReadFull(tr, buf[:min(int64(len(buf)), size-n)])
		if k > 0 {
			if err := sink(buf[:k]); err != nil {
				return err
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			return fmt.Errorf("%w: %d of %d bytes", ErrTruncated, n, size)
		}
		if rerr != nil {
			return tarError(rerr)
		}
	}
	return nil
}

// writeHashed writes size bytes of tr to fd while the hasher goroutine
// computes their sha256 into e.
func (x *extractor) writeHashed(fd int, tr io.Reader, size int64, e *Entry) error {
	x.sum.Reset() // no chunk is pending between files
	pending := 0
	var n int64
	var werr error
	for i := 0; n < size; i++ {
		buf := x.bufs[i%2]
		if pending == 2 { // the hasher still reads this buffer
			<-x.hashed
			pending--
		}
		k, rerr := io.ReadFull(tr, buf[:min(int64(len(buf)), size-n)])
		if k > 0 {
			x.hashIn <- buf[:k]
			pending++
			if err := writeAll(fd, buf[:k]); err != nil && werr == nil {
				werr = err
			}
			n += int64(k)
		}
		if rerr != nil || werr != nil {
			if werr == nil && rerr == io.EOF {
				werr = fmt.Errorf("%w: %d of %d bytes", ErrTruncated, n, size)
			} else if werr == nil {
				werr = tarError(rerr)
			}
			break
		}
	}
	for ; pending > 0; pending-- {
		<-x.hashed
	}
	if werr != nil {
		return werr
	}
	if n != size {
		return fmt.Errorf("%w: %d of %d bytes", ErrTruncated, n, size)
	}
	x.sum.Sum(e.SHA256[:0])
	return nil
}

func (x *extractor) hardlink(rel, linkname string, replace func(bool) error, pfd *int, base *string) error {
	target, err := cleanName(linkname)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", truncName(linkname), err)
	}
	if target == "" || target == rel {
		return fmt.Errorf("%w: hard link to %q", ErrBadEntry, linkname)
	}
	if x.pending[target] {
		x.drain() // the target is still being written
	}
	t := x.model[target]
	if t == nil {
		return fmt.Errorf("%w: hard link target %q is not in the archive", ErrBadEntry, target)
	}
	if t.Type == 'd' {
		return fmt.Errorf("%w: hard link to directory %q", ErrBadEntry, target)
	}
	if err := replace(false); err != nil {
		return err
	}
	if x.model[target] == nil {
		return fmt.Errorf("%w: hard link target %q replaced by the link itself", ErrBadEntry, target)
	}
	if x.dry {
		c := *t
		c.Path = rel
		x.model[rel] = &c
		x.layerSeen[rel] = true
		return nil
	}
	tdir, tbase := splitRel(target)
	tfd := x.r.fd
	if tdir != "" {
		if tfd, err = x.r.openDir(tdir, false); err != nil {
			return fmt.Errorf("hard link target %q: %w", target, err)
		}
		defer unix.Close(tfd)
	}
	if err := unix.Linkat(tfd, tbase, *pfd, *base, 0); err != nil {
		return fmt.Errorf("hard link to %q: %w", target, err)
	}
	c := *t
	c.Path = rel
	x.dropModel(rel)
	x.model[rel] = &c
	x.layerSeen[rel] = true
	return nil
}

// setMeta gives the new entry base in pfd its owner, mode, xattrs and (but
// for directories, done last) times.
func setMeta(pfd int, base string, e *Entry) error {
	if err := unix.Fchownat(pfd, base, e.UID, e.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%w: chown %d:%d: %v", ErrNotPermitted, e.UID, e.GID, err)
		}
		return err
	}
	if e.Type != 'l' {
		if err := unix.Fchmodat(pfd, base, e.Mode, 0); err != nil {
			return err
		}
	}
	for _, xa := range e.Xattrs {
		if err := unix.Lsetxattr(procPath(pfd, base), xa.Name, []byte(xa.Value), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", xa.Name, err)
		}
	}
	if e.Type != 'd' {
		ts := unix.NsecToTimespec(e.Mtime)
		if err := unix.UtimesNanoAt(pfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	return nil
}

// setMetaFd gives the open regular file fd e's owner, mode, xattrs and
// times: by descriptor, with no path resolution.
// chown and chmod are false when the file already has e's owner and
// mode.
func setMetaFd(fd int, e *Entry, chown, chmod bool) error {
	if chown {
		if err := unix.Fchown(fd, e.UID, e.GID); err != nil {
			if errors.Is(err, unix.EPERM) {
				return fmt.Errorf("%w: chown %d:%d: %v", ErrNotPermitted, e.UID, e.GID, err)
			}
			return err
		}
	}
	if chown || chmod {
		if err := unix.Fchmod(fd, e.Mode); err != nil {
			return err
		}
	}
	for _, xa := range e.Xattrs {
		if err := unix.Fsetxattr(fd, xa.Name, []byte(xa.Value), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", xa.Name, err)
		}
	}
	ts := [2]unix.Timespec{unix.NsecToTimespec(e.Mtime), unix.NsecToTimespec(e.Mtime)}
	// utimensat(fd, NULL, ...) is futimens(3): the file itself, with
	// nanoseconds (unix.Futimes has only microseconds).
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); errno != 0 {
		return errno
	}
	return nil
}

// readUmask returns the process's umask from /proc/self/status (Linux
// 4.7+), or -1. umask(2) itself cannot be read without setting it, which
// would race with other goroutines creating files.
func readUmask() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil && m <= 0o777 {
				return int(m)
			}
		}
	}
	return -1
}

func xattrsOf(hdr *tar.Header) ([]Xattr, error) {
	var xs []Xattr
	size := 0
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		size += len(name) + len(v)
		if len(xs) >= maxXattrs || size > maxXattrSize || name == "" {
			return nil, fmt.Errorf("%w: xattrs (%d, %d bytes)", ErrTooLarge, len(xs)+1, size)
		}
		xs = append(xs, Xattr{Name: name, Value: v})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	return xs, nil
}

// dropModel removes rel and everything below it from the expected tree.
func (x *extractor) dropModel(rel string) {
	if e := x.model[rel]; e == nil {
		return
	} else if e.Type != 'd' {
		delete(x.model, rel)
		return
	}
	delete(x.model, rel)
	prefix := rel + "/"
	for p := range x.model {
		if strings.HasPrefix(p, prefix) {
			delete(x.model, p)
		}
	}
}

func (x *extractor) whiteout(dir, base string) error {
	if base == opaqueMarker {
		return x.opaque(dir)
	}
	if strings.HasPrefix(base, errWhiteoutPrefx+errWhiteoutPrefx) {
		return nil // other AUFS metadata (.wh..wh.plnk and the like): not content
	}
	name := strings.TrimPrefix(base, errWhiteoutPrefx)
	if name == "." || name == ".." {
		return fmt.Errorf("%w: whiteout of %q", ErrEscape, name)
	}
	if dir == "" && x.keepTop(name) {
		// Not image content: lost+found is the filesystem's, and the old
		// tree's directory is being deleted on the side.
		x.dropModel(name)
		return nil
	}
	x.drain()
	if x.dry {
		err := x.modelDir(dir, false)
		if errors.Is(err, os.ErrNotExist) {
			return nil // nothing to hide
		}
		if err != nil {
			return err
		}
		x.dropModel(joinRel(dir, name))
		return nil
	}
	pfd := x.r.fd
	if dir != "" {
		fd, err := x.r.openDir(dir, false)
		if errors.Is(err, os.ErrNotExist) {
			return nil // nothing to hide
		}
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		pfd = fd
	}
	if err := x.r.removeAt(pfd, name); err != nil {
		return err
	}
	x.dropModel(joinRel(dir, name))
	return nil
}

// keepTop says whether the top-level name is one that no whiteout or
// opaque marker removes: lost+found, which the slot's filesystem owns (and
// the tree digest leaves out), and the directory the old tree is being
// deleted from by a goroutine of its own.
func (x *extractor) keepTop(name string) bool {
	return name == "lost+found" || x.trash != "" && name == x.trash
}

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// opaque hides everything in dir that earlier layers put there; what this
// layer put there stays, whatever the order of the entries.
func (x *extractor) opaque(dir string) error {
	x.drain()
	if x.dry {
		if err := x.modelDir(dir, true); err != nil {
			return err
		}
	} else {
		pfd := x.r.fd
		if dir != "" {
			fd, err := x.r.openDir(dir, true)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			pfd = fd
		}
		x.r.invalidate()
		keep := func(n string) bool { return x.layerSeen[joinRel(dir, n)] || dir == "" && x.keepTop(n) }
		if err := removeChildren(pfd, ".", keep); err != nil {
			return err
		}
	}
	prefix := dir + "/"
	if dir == "" {
		prefix = ""
	}
	for p := range x.model {
		rest, ok := strings.CutPrefix(p, prefix)
		if !ok || rest == "" {
			continue
		}
		top, _, _ := strings.Cut(rest, "/")
		if !x.layerSeen[prefix+top] {
			delete(x.model, p)
		}
	}
	return nil
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

// flusher starts the writeback of an extraction while it goes on: after
// every `every` bytes of file content it runs syncfs(2) on a goroutine of
// its own, so that the device (and, with a second CPU, the kernel's
// writeback work) runs in parallel with the creation of the next files and
// the final syncfs has little left to wait for. It uses a descriptor of its
// own: syncfs reports a writeback error once per open file, so the error
// seen here is kept and returned by stop, and the final syncfs on the
// extraction's descriptor still sees it too.
type flusher struct {
	fd    int
	every int64
	since atomic.Int64
	kick  chan struct{} // never closed: wrote may race with stop
	quit  chan struct{}
	done  chan struct{}
	err   error // first syncfs error; read after done
}

// flushSyncfs is the flusher's syncfs; tests replace it to count the
// flushes and inject writeback errors. finalSyncfs is the one at the end
// of a SyncFS extraction; tests replace it to check that everything is
// written by then, and that it runs whether or not the flusher did.
var (
	flushSyncfs = unix.Syncfs
	finalSyncfs = unix.Syncfs
)

func startFlusher(dirfd int, every int64) (*flusher, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("slots: open slot for writeback: %w", err)
	}
	f := &flusher{fd: fd, every: every, kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for {
			select {
			case <-f.quit:
				// A flush asked for and not yet run still runs, so that
				// every extraction that crossed the mark flushed early
				// at least once (deterministic for tests; cheap, as the
				// final syncfs then has less to do).
				select {
				case <-f.kick:
					f.sync()
				default:
				}
				return
			case <-f.kick:
				f.sync()
			}
		}
	}()
	return f, nil
}

func (f *flusher) sync() {
	if err := flushSyncfs(f.fd); err != nil && f.err == nil {
		f.err = err
	}
}

// wrote counts n bytes of content written and wakes the flusher when the
// next `every` bytes are complete. Safe from several goroutines, and a
// no-op on a nil flusher.
func (f *flusher) wrote(n int64) {
	if f == nil || f.since.Add(n) < f.every {
		return
	}
	f.since.Store(0)
	select {
	case f.kick <- struct{}{}:
	default: // a flush is pending already
	}
}

// stop waits for a running flush, ends the goroutine and returns the first
// error a flush saw. Idempotent; a no-op on a nil flusher.
func (f *flusher) stop() error {
	if f == nil {
		return nil
	}
	if f.fd >= 0 {
		close(f.quit)
		<-f.done
		unix.Close(f.fd)
		f.fd = -1
	}
	return f.err
}
