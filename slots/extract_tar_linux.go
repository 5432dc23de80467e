package slots

// The tar walk: one layer's entries in archive order, each checked
// (names, sizes, owners, types, limits) and created beneath the slot root.

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

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

// entry applies one archive entry: a whiteout, or a new directory, file,
// symlink, hard link or device node at its path.
func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	rel, err := x.entryPath(hdr)
	if err != nil || rel == "" {
		return err // rel "": the slot root, whose attributes belong to the mount
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
	e, err := x.headerEntry(rel, hdr)
	if err != nil {
		return err
	}
	t, err := x.target(rel)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = x.mkdir(t, e)
	case tar.TypeReg, tar.TypeRegA:
		if !sparse(hdr.PAXRecords) {
			x.rec.file(rel, hdr.Size) // the content that follows is the file's
		}
		err = x.regular(t, e, tr, hdr.Size)
	case tar.TypeSymlink:
		err = x.symlink(t, e, hdr.Linkname)
	case tar.TypeLink:
		return x.hardlink(t, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		err = x.node(t, e, hdr)
	default:
		return fmt.Errorf("%w: type %q", ErrUnsupported, hdr.Typeflag)
	}
	if err != nil {
		return err
	}
	return x.created(t, e)
}

// entryPath is the slot-relative path of hdr, refused if it could leave
// the slot or names the old tree's directory.
func (x *extractor) entryPath(hdr *tar.Header) (string, error) {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return "", err
	}
	if top, _, _ := strings.Cut(rel, "/"); rel != "" && top == x.trash {
		return "", fmt.Errorf("%w: name reserved during extraction", ErrBadEntry)
	}
	return rel, nil
}

// headerEntry checks hdr's size, xattrs and owner and returns the Entry
// it describes (its type is set by the creating function).
func (x *extractor) headerEntry(rel string, hdr *tar.Header) (*Entry, error) {
	if hdr.Size < 0 || hdr.Size > x.o.MaxFileSize {
		return nil, fmt.Errorf("%w: size %d (limit %d)", ErrTooLarge, hdr.Size, x.o.MaxFileSize)
	}
	e := &Entry{Path: rel, Mode: uint32(hdr.Mode) & 0o7777, UID: hdr.Uid, GID: hdr.Gid, Mtime: hdr.ModTime.UnixNano()}
	var err error
	if e.Xattrs, err = xattrsOf(hdr); err != nil {
		return nil, err
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || hdr.Uid > 1<<31-2 || hdr.Gid > 1<<31-2 {
		return nil, fmt.Errorf("%w: uid/gid %d/%d out of range", ErrBadEntry, hdr.Uid, hdr.Gid)
	}
	return e, nil
}

// target is where an entry goes: its parent directory's descriptor (-1 in
// a dry run), its name there, and what is there now.
type target struct {
	rel           string
	pfd           int
	base          string
	isDir, exists bool
}

// target resolves rel's parent (creating missing directories) after the
// workers finished any file at rel or above it, and looks rel up.
func (x *extractor) target(rel string) (*target, error) {
	dir, _ := splitRel(rel)
	wait := x.pending[rel]
	for a := dir; a != ""; a, _ = splitRel(a) {
		x.layerSeen[a] = true
		wait = wait || x.pending[a]
	}
	if wait {
		x.drain() // rel, or a parent of it, is a file still being written
	}
	t := &target{rel: rel}
	var err error
	if t.pfd, t.base, err = x.parent(rel, true); err != nil {
		return nil, err
	}
	if t.isDir, t.exists, err = x.lookup(t.pfd, t.base, rel); err != nil {
		return nil, err
	}
	return t, nil
}

// replace removes what is at t (a directory only when keepDir is false)
// and re-resolves the parent, which the removal may invalidate.
func (x *extractor) replace(t *target, keepDir bool) error {
	if !t.exists || (keepDir && t.isDir) {
		return nil
	}
	if !x.dry {
		x.drain() // the workers may be writing below rel
		if err := x.r.removeAt(t.pfd, t.base); err != nil {
			return err
		}
	}
	x.dropModel(t.rel)
	t.exists = false
	var err error
	t.pfd, t.base, err = x.parent(t.rel, true)
	return err
}

// mkdir makes a directory at t, or keeps the one there (and its
// children); its time is set at the end, after its children.
func (x *extractor) mkdir(t *target, e *Entry) error {
	e.Type = 'd'
	if err := x.replace(t, true); err != nil {
		return err
	}
	if !t.exists && !x.dry {
		if err := unix.Mkdirat(t.pfd, t.base, 0o700); err != nil {
			return err
		}
	}
	x.dirTimes[t.rel] = e.Mtime
	return nil
}

// regular writes a regular file of size bytes from tr at t, within the
// content limits.
func (x *extractor) regular(t *target, e *Entry, tr io.Reader, size int64) error {
	e.Type = 'f'
	x.total += size
	if err := x.checkTotal(size); err != nil {
		return err
	}
	if err := x.replace(t, false); err != nil {
		return err
	}
	if err := x.writeFile(t.pfd, t.base, tr, size, e); err != nil {
		return err
	}
	x.files++
	return nil
}

// symlink makes a symlink to linkname at t (never followed by the
// extractor).
func (x *extractor) symlink(t *target, e *Entry, linkname string) error {
	e.Type = 'l'
	if len(linkname) > maxPathLen || linkname == "" || strings.IndexByte(linkname, 0) >= 0 {
		return fmt.Errorf("%w: symlink target of %d bytes", ErrBadEntry, len(linkname))
	}
	e.Link = linkname
	e.Mode = 0o777 // Linux symlinks have no mode of their own
	if err := x.replace(t, false); err != nil {
		return err
	}
	if x.dry {
		return nil
	}
	return unix.Symlinkat(linkname, t.pfd, t.base)
}

// node makes a character or block device or a FIFO at t.
func (x *extractor) node(t *target, e *Entry, hdr *tar.Header) error {
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
	if err := x.replace(t, false); err != nil {
		return err
	}
	if x.dry {
		return nil
	}
	if err := unix.Mknodat(t.pfd, t.base, mode|0o600, int(unix.Mkdev(e.Major, e.Minor))); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%w: mknod: %v", ErrNotPermitted, err)
		}
		return err
	}
	return nil
}

// created gives the new entry at t its metadata (regular files got theirs
// by descriptor) and records it in the model.
func (x *extractor) created(t *target, e *Entry) error {
	if !x.dry && e.Type != 'f' {
		if err := setMeta(t.pfd, t.base, e); err != nil {
			return err
		}
	}
	if old := x.model[t.rel]; old == nil || old.Type != 'd' || e.Type != 'd' {
		x.dropModel(t.rel)
	}
	x.model[t.rel] = e
	x.layerSeen[t.rel] = true
	return nil
}

// hardlink makes t a hard link to linkname, an earlier regular file (or
// other non-directory) of this extraction.
func (x *extractor) hardlink(t *target, linkname string) error {
	rel := t.rel
	to, err := cleanName(linkname)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", truncName(linkname), err)
	}
	if to == "" || to == rel {
		return fmt.Errorf("%w: hard link to %q", ErrBadEntry, linkname)
	}
	if x.pending[to] {
		x.drain() // the target is still being written
	}
	te := x.model[to]
	if te == nil {
		return fmt.Errorf("%w: hard link target %q is not in the archive", ErrBadEntry, to)
	}
	if te.Type == 'd' {
		return fmt.Errorf("%w: hard link to directory %q", ErrBadEntry, to)
	}
	if err := x.replace(t, false); err != nil {
		return err
	}
	if x.model[to] == nil {
		return fmt.Errorf("%w: hard link target %q replaced by the link itself", ErrBadEntry, to)
	}
	if !x.dry {
		if err := x.linkat(to, t); err != nil {
			return err
		}
	}
	c := *te
	c.Path = rel
	x.dropModel(rel)
	x.model[rel] = &c
	x.layerSeen[rel] = true
	return nil
}

// linkat links the earlier entry to (resolved beneath the root) at t.
func (x *extractor) linkat(to string, t *target) error {
	tdir, tbase := splitRel(to)
	tfd := x.r.fd
	if tdir != "" {
		var err error
		if tfd, err = x.r.openDir(tdir, false); err != nil {
			return fmt.Errorf("hard link target %q: %w", to, err)
		}
		defer unix.Close(tfd)
	}
	if err := unix.Linkat(tfd, tbase, t.pfd, t.base, 0); err != nil {
		return fmt.Errorf("hard link to %q: %w", to, err)
	}
	return nil
}
