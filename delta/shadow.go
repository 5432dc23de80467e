package delta

import "strings"

// What the vehicle holds of its base. flightd's base is its booted slot:
// the layer tars given back from the slot's tree and a layer index
// (slots.LayerBase), so a regular file's bytes come from the file at its
// path in the slot, which holds what the image's last layer to touch that
// path put there. A file of a base layer that a later base layer removed
// (a whiteout, an opaque directory, a non-directory over one of its
// parents) or replaced with other content is not held as that layer has
// it: a bundle that reused the layer or copied from that file would fail
// the vehicle's base check, and cost a round trip for a supplement. The
// bundle therefore reuses only base layers that are whole in the tree and
// reads no shadowed file; headers, padding and the like come from the
// index, so they stay usable.

// shadowTree is the tree the base layers make, with, at each path, the
// regular files (of base layers, by entry) whose content is what the tree
// holds there now.
type shadowTree struct {
	root   shadowNode
	shadow map[ref]bool
	// opaque: the directories an opaque marker of a layer already
	// applied to (the layer's index + 1), so a repeated marker does not
	// walk the directory again.
	opaque map[string]int
}

type shadowNode struct {
	kids    map[string]*shadowNode
	holders []ref // regular files with content, all with the same bytes
	sum     [32]byte
	size    int64
}

// shadowedFiles returns the regular files with content of the base layers
// that the tree they make does not hold as their layer has them.
// Conservative: it may name a file the slot does hold (an opaque
// directory hides lower layers' files in a subdirectory the same layer
// writes into), never the other way round; the vehicle checks what it
// reads anyway.
func shadowedFiles(old []*spooled) map[ref]bool {
	t := &shadowTree{shadow: map[ref]bool{}, opaque: map[string]int{}}
	for li, l := range old {
		for ei := range l.entries {
			t.add(li, ei, &l.entries[ei], old)
		}
	}
	return t.shadow
}

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

func (t *shadowTree) add(li, ei int, e *entry, old []*spooled) {
	if e.Path == "" || escapes(e.Path) {
		return // the root; or a path no slot holds
	}
	dir, base := "", e.Path
	if i := strings.LastIndexByte(e.Path, '/'); i >= 0 {
		dir, base = e.Path[:i], e.Path[i+1:]
	}
	switch {
	case base == opaqueMarker:
		// Lower layers' content below dir is hidden; this layer's stays.
		if n := t.lookup(dir); n != nil && t.opaque[dir] != li+1 {
			t.opaque[dir] = li + 1
			for name, k := range n.kids {
				if t.drop(k, func(r ref) bool { return r.layer < li }) {
					delete(n.kids, name)
				}
			}
		}
		return
	case strings.HasPrefix(base, whiteoutPrefix+whiteoutPrefix):
		return // other AUFS metadata, not content
	case strings.HasPrefix(base, whiteoutPrefix):
		name := strings.TrimPrefix(base, whiteoutPrefix)
		if p := t.lookup(dir); p != nil && p.kids[name] != nil {
			t.drop(p.kids[name], nil)
			delete(p.kids, name)
		}
		return
	}
	// Every parent is a directory now: a file there is gone.
	n := &t.root
	for _, c := range strings.Split(e.Path, "/") {
		t.shadowAll(n.holders)
		n.holders = nil
		if n.kids == nil {
			n.kids = map[string]*shadowNode{}
		}
		k := n.kids[c]
		if k == nil {
			k = &shadowNode{}
			n.kids[c] = k
		}
		n = k
	}
	reg := isRegular(e.Type) && e.DataLen > 0
	if len(n.holders) > 0 && !(reg && n.sum == e.Sum && n.size == e.DataLen) {
		t.shadowAll(n.holders)
		n.holders = nil
	}
	if e.Type != '5' {
		// Not a directory: whatever was below the path is gone.
		for _, k := range n.kids {
			t.drop(k, nil)
		}
		n.kids = nil
	}
	if reg {
		n.holders = append(n.holders, ref{li, ei})
		n.sum, n.size = e.Sum, e.DataLen
	}
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// lookup returns the node at path, nil when the tree has none.
func (t *shadowTree) lookup(path string) *shadowNode {
	n := &t.root
	if path == "" {
		return n
	}
	for _, c := range strings.Split(path, "/") {
		if n = n.kids[c]; n == nil {
			return nil
		}
	}
	return n
}

// drop shadows the holders of n and below it that match (nil: all) and
// forgets them, pruning the nodes left with nothing; it says whether n is
// left with nothing (the caller removes it). Iterative: a path may be
// deep. Every node it visits is removed, unless it holds or leads to a
// holder that does not match, so a tree is walked about once in all.
func (t *shadowTree) drop(n *shadowNode, match func(ref) bool) bool {
	type frame struct {
		n    *shadowNode
		done bool
	}
	stack := []frame{{n: n}}
	var order []*shadowNode // post-order
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if f.done {
			order = append(order, f.n)
			continue
		}
		keep := f.n.holders[:0]
		for _, r := range f.n.holders {
			if match == nil || match(r) {
				t.shadow[r] = true
			} else {
				keep = append(keep, r)
			}
		}
		f.n.holders = keep
		stack = append(stack, frame{n: f.n, done: true})
		for _, k := range f.n.kids {
			stack = append(stack, frame{n: k})
		}
	}
	for _, x := range order {
		for name, k := range x.kids {
			if len(k.holders) == 0 && len(k.kids) == 0 {
				delete(x.kids, name)
			}
		}
	}
	return len(n.holders) == 0 && len(n.kids) == 0
}

func (t *shadowTree) shadowAll(rs []ref) {
	for _, r := range rs {
		t.shadow[r] = true
	}
}
