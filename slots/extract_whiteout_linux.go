package slots

// OCI whiteouts: .wh.NAME removes NAME, .wh..wh..opq hides what earlier
// layers put in a directory.

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func (x *extractor) whiteout(dir, base string) error {
	if top, _, _ := strings.Cut(dir, "/"); top == "lost+found" {
		// What fsck put there is the filesystem's, as lost+found itself
		// is (the tree digest leaves it out): no whiteout reaches it.
		return nil
	}
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
// the tree digest leaves out; whiteouts below it are ignored too), and the
// directory the old tree is being deleted from by a goroutine of its own.
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
