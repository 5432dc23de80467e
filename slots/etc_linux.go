package slots

import (
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
func MergeEtc(ctx context.Context, oldImage, current, newEtc string) (*MergeReport, error) {
	read := func(dir string) (map[string]*Entry, error) {
		m := map[string]*Entry{}
		if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
			return m, nil
		}
		es, err := ReadTree(ctx, dir, ReadTreeOptions{})
		if err != nil {
			return nil, err
		}
		for i := range es {
			m[es[i].Path] = &es[i]
		}
		return m, nil
	}
	o, err := read(oldImage)
	if err != nil {
		return nil, err
	}
	c, err := read(current)
	if err != nil {
		return nil, err
	}
	n, err := read(newEtc)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(newEtc, 0o755); err != nil {
		return nil, err
	}
	r, err := openRoot(newEtc)
	if err != nil {
		return nil, err
	}
	defer r.close()

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
		if err := copyEntry(r, filepath.Join(current, p), p, cv, nv); err != nil {
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

// copyEntry makes rel in r what e (read from src) describes; existing is
// what rel is now, or nil. A directory keeps its children.
func copyEntry(r *root, src, rel string, e, existing *Entry) error {
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
		in, err := os.Open(src)
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
// not), preserving types, modes, owners, xattrs and times.
func CopyTree(ctx context.Context, src, dst string) error {
	es, err := ReadTree(ctx, src, ReadTreeOptions{})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	r, err := openRoot(dst)
	if err != nil {
		return err
	}
	defer r.close()
	if err := removeChildren(r.fd, ".", nil); err != nil {
		return err
	}
	for i := range es {
		e := &es[i]
		if err := copyEntry(r, filepath.Join(src, e.Path), e.Path, e, nil); err != nil {
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

// carryEtc keeps the new slot's pristine /etc (for the next merge) and
// merges the running slot's local /etc changes into it.
func (m *Manager) carryEtc(ctx context.Context, id SlotID, res *InstallResult) error {
	sl := m.slot(id)
	newEtc := filepath.Join(sl.Path, "etc")
	if _, err := os.Lstat(newEtc); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := CopyTree(ctx, newEtc, m.pristineDir(id)); err != nil {
		return fmt.Errorf("slots: keep pristine /etc: %w", err)
	}
	if m.o.Booted == "" || m.slot(m.o.Booted).Backend != BackendDir {
		return nil
	}
	old := m.pristineDir(m.o.Booted)
	if _, err := os.Stat(old); err != nil {
		m.log.Warn("no pristine /etc of the booted slot: local /etc changes not carried", "slot", string(m.o.Booted))
		return nil
	}
	rep, err := MergeEtc(ctx, old, filepath.Join(m.slot(m.o.Booted).Path, "etc"), newEtc)
	if err != nil {
		return err
	}
	res.Etc = rep
	if len(rep.Conflicts) > 0 {
		m.log.Warn("etc merge conflicts: local versions kept", "slot", string(id), "paths", rep.Conflicts)
	}
	fd, err := unix.Open(sl.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// FactoryReset drops the local state of slot id: its /etc becomes the
// image's pristine /etc again, and, with wipeVar, the persistent /var is
// emptied (the next boot seeds it from the image, see SeedVar). The booted
// slot is refused: its /etc and /var are in use; reset the other slot and
// boot it, or run this from a maintenance boot where Booted is unset.
func (m *Manager) FactoryReset(ctx context.Context, id SlotID, wipeVar bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id == m.o.Booted {
		return fmt.Errorf("%w: slot %s: factory reset of the running slot", ErrActiveSlot, id)
	}
	sl := m.slot(id)
	if sl.Backend != BackendDir {
		return fmt.Errorf("slots: factory reset: slot %s is %s; only directory slots carry local state", id, sl.Backend)
	}
	if _, err := os.Stat(m.pristineDir(id)); err != nil {
		return fmt.Errorf("slots: factory reset: no pristine /etc for slot %s: %w", id, err)
	}
	if err := CopyTree(ctx, m.pristineDir(id), filepath.Join(sl.Path, "etc")); err != nil {
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
// is: /var belongs to the vehicle, not to the image.
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
	src := filepath.Join(m.slot(id).Path, "var")
	if _, err := os.Lstat(src); err != nil {
		return false, nil
	}
	return true, CopyTree(ctx, src, m.o.VarDir)
}
