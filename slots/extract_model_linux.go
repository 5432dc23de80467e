package slots

// The extractor's model of the tree it made: parents resolved on disk or,
// in a dry run, on the model, and the model kept in step with removals.

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

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
