package slots

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultMaxEtcCopy is Options.MaxEtcCopy's default: far above any real
// /etc (a few MiB), far below a state directory's filesystem.
const DefaultMaxEtcCopy = 64 << 20

// ErrEtcTooLarge: a new slot's /etc is over Options.MaxEtcCopy.
var ErrEtcTooLarge = errors.New("slots: /etc too large for its pristine copy")

// etcBlock is the block each entry of a copy is counted in.
const etcBlock = 4096

// MergeReport says what the three-way /etc merge did. Paths are relative to
// /etc.
type MergeReport struct {
	// Kept are local changes carried into the new slot (the image did not
	// change these paths).
	Kept []string `json:"kept,omitempty"`
	// Deleted are paths deleted locally that stay deleted.
	Deleted []string `json:"deleted,omitempty"`
	// Conflicts are paths changed both locally and by the new image,
	// differently: the local version wins and the path is listed here so
	// that an operator can review it.
	Conflicts []string `json:"conflicts,omitempty"`
	// Skipped are local changes that could not be carried (a parent in the
	// new /etc is a symlink or not a directory): the image version stays.
	Skipped []string `json:"skipped,omitempty"`
}

// MergeEtc merges local /etc changes into a new slot's /etc, in place:
// oldImage is the /etc the running image shipped (its pristine copy),
// current is the running /etc, newEtc is the new image's /etc (in the new
// slot). Per path:
//
//   - unchanged locally (current == oldImage): the new image's version
//     (including its deletions);
//   - changed locally, not by the image (new == oldImage): the local version,
//     including a local deletion;
//   - changed by both, to the same thing: that;
//   - changed by both, differently: the local version, recorded as a
//     conflict.
//
// "Changed" compares type, mode, owner, content, link target, device numbers
// and xattrs (not times). A directory deleted locally takes its subtree
// with it, even files the new image adds there.
//
// None of the three is followed if it is a symlink (an image's etc -> /etc
// would otherwise merge into the host's /etc): each must be a directory or
// missing (newEtc is then created), and everything below them is resolved
// beneath them without following symlinks.
func MergeEtc(ctx context.Context, oldImage, current, newEtc string) (*MergeReport, error) {
	var fds [3]int
	for i, p := range []string{oldImage, current, newEtc} {
		fd, err := openDirPath(p, i == 2)
		if errors.Is(err, os.ErrNotExist) {
			fd, err = -1, nil
		}
		if err != nil {
			for _, f := range fds[:i] {
				closeFd(f)
			}
			return nil, fmt.Errorf("slots: etc merge: %w", err)
		}
		fds[i] = fd
	}
	defer func() {
		for _, f := range fds {
			closeFd(f)
		}
	}()
	return mergeEtcAt(ctx, fds[0], fds[1], fds[2])
}

func closeFd(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// dupFd is a second descriptor of fd, for a root that closes its own.
func dupFd(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

// mergeEtcAt is MergeEtc on directory descriptors (which stay the
// caller's): oldFd and curFd may be -1 (missing: nothing), newFd must be a
// directory.
func mergeEtcAt(ctx context.Context, oldFd, curFd, newFd int) (*MergeReport, error) {
	read := func(fd int) (map[string]*Entry, error) {
		m := map[string]*Entry{}
		if fd < 0 {
			return m, nil
		}
		es, err := readTreeAt(ctx, fd, ReadTreeOptions{})
		if err != nil {
			return nil, err
		}
		for i := range es {
			m[es[i].Path] = &es[i]
		}
		return m, nil
	}
	o, err := read(oldFd)
	if err != nil {
		return nil, err
	}
	c, err := read(curFd)
	if err != nil {
		return nil, err
	}
	n, err := read(newFd)
	if err != nil {
		return nil, err
	}
	nfd, err := dupFd(newFd)
	if err != nil {
		return nil, err
	}
	r := rootAt(nfd, "etc")
	defer r.close()
	var cur *root
	if curFd >= 0 {
		cfd, err := dupFd(curFd)
		if err != nil {
			return nil, err
		}
		cur = rootAt(cfd, "running etc")
		defer cur.close()
	}

	all := map[string]bool{}
	for _, m := range []map[string]*Entry{o, c, n} {
		for p := range m {
			all[p] = true
		}
	}
	ps := make([]string, 0, len(all))
	for p := range all {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	rep := &MergeReport{}
	var gone []string // removed subtrees: their descendants are decided
	under := func(p string) bool {
		for _, g := range gone {
			if strings.HasPrefix(p, g+"/") {
				return true
			}
		}
		return false
	}
	for _, p := range ps {
		if under(p) {
			continue
		}
		ov, cv, nv := o[p], c[p], n[p]
		if sameEntry(cv, ov) || sameEntry(cv, nv) {
			continue // take the new image's version: already there
		}
		record := func() {
			switch {
			case !sameEntry(nv, ov):
				rep.Conflicts = append(rep.Conflicts, p)
			case cv == nil:
				rep.Deleted = append(rep.Deleted, p)
			default:
				rep.Kept = append(rep.Kept, p)
			}
		}
		if cv == nil {
			pfd, base, err := r.parent(p, false)
			if err == nil {
				err = r.removeAt(pfd, base)
			}
			if errors.Is(err, ErrEscape) || errors.Is(err, ErrBadEntry) {
				rep.Skipped = append(rep.Skipped, p)
				continue
			}
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("slots: etc merge: remove %s: %w", p, err)
			}
			gone = append(gone, p)
			record()
			continue
		}
		if err := copyEntry(r, cur, p, cv, nv); err != nil {
			if errors.Is(err, ErrEscape) || errors.Is(err, ErrBadEntry) {
				rep.Skipped = append(rep.Skipped, p)
				continue
			}
			return nil, fmt.Errorf("slots: etc merge: %s: %w", p, err)
		}
		record()
	}
	return rep, nil
}

func sameEntry(a, b *Entry) bool {
	if a == nil || b == nil {
		return a == b
	}
	var ra, rb strings.Builder
	x, y := *a, *b
	writeRecord(&ra, &x, DigestOptions{})
	writeRecord(&rb, &y, DigestOptions{})
	return ra.String() == rb.String()
}

// copyEntry makes rel in r what e (read from rel in src) describes;
// existing is what rel is now, or nil. A directory keeps its children.
func copyEntry(r, src *root, rel string, e, existing *Entry) error {
	pfd, base, err := r.parent(rel, true)
	if err != nil {
		return err
	}
	if existing != nil && !(existing.Type == 'd' && e.Type == 'd') {
		if err := r.removeAt(pfd, base); err != nil {
			return err
		}
		if pfd, base, err = r.parent(rel, true); err != nil {
			return err
		}
	}
	switch e.Type {
	case 'd':
		if existing == nil || existing.Type != 'd' {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return err
			}
		}
	case 'f':
		in, err := src.openFile(rel)
		if err != nil {
			return err
		}
		defer in.Close()
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		out := os.NewFile(uintptr(fd), base)
		_, err = io.Copy(out, in)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case 'l':
		if err := unix.Symlinkat(e.Link, pfd, base); err != nil {
			return err
		}
	case 'c', 'b', 'p':
		mode := map[byte]uint32{'c': unix.S_IFCHR, 'b': unix.S_IFBLK, 'p': unix.S_IFIFO}[e.Type]
		if err := unix.Mknodat(pfd, base, mode|0o600, int(unix.Mkdev(e.Major, e.Minor))); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: cannot copy %s", ErrUnsupported, rel)
	}
	return setMeta(pfd, base, e)
}

// CopyTree copies the tree at src into dst (created if missing, emptied if
// not), preserving types, modes, owners, xattrs and times. Neither src nor
// dst is followed if it is a symlink, nor is anything below them.
func CopyTree(ctx context.Context, src, dst string) error {
	sfd, err := openDirPath(src, false)
	if err != nil {
		return err
	}
	defer unix.Close(sfd)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	dfd, err := openDirPath(dst, true)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return copyTreeAt(ctx, sfd, dfd)
}

// copyTreeAt is CopyTree on directory descriptors, which stay the caller's.
func copyTreeAt(ctx context.Context, srcFd, dstFd int) error {
	return copyTreeLimitAt(ctx, srcFd, dstFd, 0)
}

// copyTreeLimitAt is copyTreeAt that refuses (ErrEtcTooLarge), before it
// writes anything, a tree whose entries take more than limit bytes, each
// rounded up to etcBlock (0: no limit).
func copyTreeLimitAt(ctx context.Context, srcFd, dstFd int, limit int64) error {
	es, err := readTreeAt(ctx, srcFd, ReadTreeOptions{})
	if err != nil {
		return err
	}
	if limit > 0 {
		var n int64
		for i := range es {
			n += (max(es[i].Size, 1) + etcBlock - 1) / etcBlock * etcBlock
			if n > limit {
				return fmt.Errorf("%w: %d of its %d entries already take over %d bytes (the limit)", ErrEtcTooLarge, i+1, len(es), limit)
			}
		}
	}
	fd, err := dupFd(dstFd)
	if err != nil {
		return err
	}
	r := rootAt(fd, "copy")
	defer r.close()
	if fd, err = dupFd(srcFd); err != nil {
		return err
	}
	src := rootAt(fd, "copy source")
	defer src.close()
	if err := removeChildren(r.fd, ".", nil); err != nil {
		return err
	}
	for i := range es {
		e := &es[i]
		if err := copyEntry(r, src, e.Path, e, nil); err != nil {
			return fmt.Errorf("slots: copy %s: %w", e.Path, err)
		}
	}
	// Directory times last, deepest first: copying children changed them.
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].Type != 'd' {
			continue
		}
		pfd, base, err := r.parent(es[i].Path, false)
		if err != nil {
			return err
		}
		ts := unix.NsecToTimespec(es[i].Mtime)
		if err := unix.UtimesNanoAt(pfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	return unix.Syncfs(r.fd)
}

// slotSubdir opens the top-level directory name ("etc", "var") of slot id
// without following a symlink: an image's etc -> /etc must not lead the
// carry-over, the pristine copy, a factory reset or the /var seeding out of
// the slot. The caller closes both descriptors (slot first opened, then the
// subdirectory); the slot's own path is configuration and is followed.
func (m *Manager) slotSubdir(id SlotID, name string, create bool) (slotFd, fd int, err error) {
	sl := m.slot(id)
	slotFd, err = unix.Open(sl.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("slots: open slot %s: %w", id, err)
	}
	fd, err = openSubdir(slotFd, name, fmt.Sprintf("slot %s's %s", id, name), create)
	if err != nil {
		unix.Close(slotFd)
		return -1, -1, err
	}
	return slotFd, fd, nil
}

// dropPristine deletes slot id's pristine /etc: once the slot is being
// written its content is no longer the image the copy was taken from, and
// a copy left by a failed install must not be merged from or reset to.
func (m *Manager) dropPristine(id SlotID) error {
	for _, p := range []string{m.pristineDir(id), m.pristineDir(id) + ".new"} {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("slots: drop pristine /etc of slot %s: %w", id, err)
		}
	}
	return nil
}

// keepPristine copies the new slot's /etc (etcFd) to its pristine copy in
// the state directory: into a fresh directory first, renamed into place
// once complete and synced, so that a cut leaves no partial copy under the
// pristine name.
func (m *Manager) keepPristine(ctx context.Context, id SlotID, etcFd int) (err error) {
	final := m.pristineDir(id)
	tmp := final + ".new"
	if err := m.dropPristine(id); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return err
	}
	dfd, err := openDirPath(tmp, true)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	defer func() {
		if err != nil {
			// A partial copy would hold space outside any slot's
			// capacity until the next install of the slot.
			if rerr := os.RemoveAll(tmp); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	// The copy keeps the image's setuid bits and device nodes, on the
	// running system's filesystem, outside the slot's nosuid and nodev:
	// no one but flightd may get into it. Empty yet, so nothing was
	// reachable before this.
	if err := unix.Fchmod(dfd, 0o700); err != nil {
		return err
	}
	if err := copyTreeLimitAt(ctx, etcFd, dfd, cmp.Or(m.o.MaxEtcCopy, DefaultMaxEtcCopy)); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	pfd, err := unix.Open(filepath.Dir(final), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	return unix.Fsync(pfd)
}

// carryEtc keeps the new slot's pristine /etc (for the next merge) and
// merges the running slot's local /etc changes into it. Both slots' etc
// are opened without following a symlink (the extraction refuses an image
// whose etc is not a directory; this holds for a slot written otherwise).
func (m *Manager) carryEtc(ctx context.Context, id SlotID, res *InstallResult) error {
	slotFd, newEtc, err := m.slotSubdir(id, "etc", false)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(slotFd)
	defer unix.Close(newEtc)
	if err := m.keepPristine(ctx, id, newEtc); err != nil {
		return fmt.Errorf("slots: keep pristine /etc: %w", err)
	}
	if m.o.Booted == "" || m.slot(m.o.Booted).Backend != BackendDir {
		return nil
	}
	oldFd, err := openDirPath(m.pristineDir(m.o.Booted), false)
	if err != nil {
		m.log.Warn("no pristine /etc of the booted slot: local /etc changes not carried", "slot", string(m.o.Booted), "err", err)
		return nil
	}
	defer unix.Close(oldFd)
	curFd := -1
	bootFd, fd, err := m.slotSubdir(m.o.Booted, "etc", false)
	switch {
	case err == nil:
		defer unix.Close(bootFd)
		defer unix.Close(fd)
		curFd = fd
	case errors.Is(err, os.ErrNotExist): // all of /etc deleted locally
	default:
		return fmt.Errorf("slots: etc merge: %w", err)
	}
	rep, err := mergeEtcAt(ctx, oldFd, curFd, newEtc)
	if err != nil {
		return err
	}
	res.Etc = rep
	if len(rep.Conflicts) > 0 {
		m.log.Warn("etc merge conflicts: local versions kept", "slot", string(id), "paths", rep.Conflicts)
	}
	return unix.Syncfs(slotFd)
}

// FactoryReset drops the local state of slot id: its /etc becomes the
// image's pristine /etc again, and, with wipeVar, the persistent /var is
// emptied (the next boot seeds it from the image, see SeedVar). The booted
// slot is refused: its /etc and /var are in use; reset the other slot and
// boot it, or run this from a maintenance boot where Booted is unset. A
// slot whose etc is a symlink or not a directory is refused.
func (m *Manager) FactoryReset(ctx context.Context, id SlotID, wipeVar bool) error {
	m.op.Lock()
	defer m.op.Unlock()
	if id == m.o.Booted {
		return fmt.Errorf("%w: slot %s: factory reset of the running slot", ErrActiveSlot, id)
	}
	sl := m.slot(id)
	if sl.Backend != BackendDir {
		return fmt.Errorf("slots: factory reset: slot %s is %s; only directory slots carry local state", id, sl.Backend)
	}
	switch st := m.st.Slots[id].State; st {
	case Written, Pending, Good, Bad:
	default:
		// A slot being written holds no image to reset to (its pristine
		// copy was dropped when the write began).
		return fmt.Errorf("%w: slot %s is %s: factory reset needs an installed image", ErrTransition, id, st)
	}
	pristine, err := openDirPath(m.pristineDir(id), false)
	if err != nil {
		return fmt.Errorf("slots: factory reset: no pristine /etc for slot %s: %w", id, err)
	}
	defer unix.Close(pristine)
	slotFd, etcFd, err := m.slotSubdir(id, "etc", true)
	if err != nil {
		return fmt.Errorf("slots: factory reset: %w", err)
	}
	defer unix.Close(slotFd)
	defer unix.Close(etcFd)
	if err := copyTreeAt(ctx, pristine, etcFd); err != nil {
		return err
	}
	if wipeVar && m.o.VarDir != "" {
		fd, err := unix.Open(m.o.VarDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := removeChildren(fd, ".", nil); err != nil {
			return err
		}
		if err := unix.Syncfs(fd); err != nil {
			return err
		}
	}
	m.log.Info("factory reset", "slot", string(id), "var", wipeVar)
	return nil
}

// SeedVar fills an empty persistent /var from slot id's image /var (first
// boot, or after a factory reset). A /var that holds anything is left as
// is: /var belongs to the vehicle, not to the image. A slot whose var is a
// symlink or not a directory is refused.
func (m *Manager) SeedVar(ctx context.Context, id SlotID) (bool, error) {
	if m.o.VarDir == "" {
		return false, nil
	}
	names, err := os.ReadDir(m.o.VarDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if len(names) > 0 {
		return false, nil
	}
	slotFd, src, err := m.slotSubdir(id, "var", false)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("slots: seed /var: %w", err)
	}
	defer unix.Close(slotFd)
	defer unix.Close(src)
	if err := os.MkdirAll(filepath.Dir(m.o.VarDir), 0o755); err != nil {
		return false, err
	}
	dst, err := openDirPath(m.o.VarDir, true)
	if err != nil {
		return false, err
	}
	defer unix.Close(dst)
	return true, copyTreeAt(ctx, src, dst)
}
