package ocitest

import (
	"fmt"
	"math/rand/v2"
	"path"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
)

// GenOptions shapes RandomLayers. Zero fields take the defaults noted.
type GenOptions struct {
	Layers       int               // number of layers; 0: 1 to 3
	Files        int               // regular files per layer; 0: 5 to 40
	MaxFileSize  int               // 0: 16 KiB
	Compressions []oci.Compression // picked per layer at random; nil: all three
}

var dirPool = []string{
	"usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "usr/lib/python3/dist-packages/pkg",
	"usr/share/doc/libfoo", "etc", "etc/ssh", "var/lib/dpkg/info", "opt/app/lib",
}

var extPool = []string{"", ".so", ".so.1", ".py", ".conf", ".list", ".md5sums", ".gz"}

// content makes file contents that compress and delta like real files do:
// tokens drawn from a per-image vocabulary mixed with random bytes, so that
// two files share structure but are not copies.
type content struct {
	rng   *rand.Rand
	vocab [][]byte
}

func newContent(rng *rand.Rand) *content {
	c := &content{rng: rng}
	for range 96 {
		w := make([]byte, 4+rng.IntN(28))
		for i := range w {
			w[i] = byte(rng.IntN(256))
		}
		c.vocab = append(c.vocab, w)
	}
	return c
}

func (c *content) bytes(n int) []byte {
	b := make([]byte, 0, n+32)
	for len(b) < n {
		if c.rng.IntN(5) == 0 {
			for range 1 + c.rng.IntN(16) {
				b = append(b, byte(c.rng.IntN(256)))
			}
		} else {
			b = append(b, c.vocab[c.rng.IntN(len(c.vocab))]...)
		}
	}
	return b[:n]
}

// RandomLayers returns a random image's layers, reproducible from rng's seed.
// File names are unique across the image.
func RandomLayers(rng *rand.Rand, o GenOptions) []Layer {
	if o.MaxFileSize <= 0 {
		o.MaxFileSize = 16 << 10
	}
	if len(o.Compressions) == 0 {
		o.Compressions = []oci.Compression{oci.Uncompressed, oci.Gzip, oci.Zstd}
	}
	nl := o.Layers
	if nl <= 0 {
		nl = 1 + rng.IntN(3)
	}
	g := &gen{rng: rng, c: newContent(rng), max: o.MaxFileSize, used: map[string]bool{}}
	var layers []Layer
	for range nl {
		nf := o.Files
		if nf <= 0 {
			nf = 5 + rng.IntN(36)
		}
		var files []Entry
		for range nf {
			files = append(files, g.newFile())
		}
		// A few links to files of this layer.
		for range rng.IntN(3) {
			t := files[rng.IntN(len(files))]
			name := g.newName()
			if rng.IntN(2) == 0 {
				files = append(files, Entry{Type: Symlink, Name: name, Link: "/" + t.Name})
			} else {
				files = append(files, Entry{Type: Hardlink, Name: name, Link: t.Name})
			}
		}
		layers = append(layers, Layer{
			Entries:     withDirs(nil, files),
			Compression: o.Compressions[rng.IntN(len(o.Compressions))],
		})
	}
	return layers
}

type gen struct {
	rng  *rand.Rand
	c    *content
	max  int
	used map[string]bool
	seq  int
}

func (g *gen) newName() string {
	for {
		g.seq++
		n := path.Join(dirPool[g.rng.IntN(len(dirPool))], fmt.Sprintf("f%04d%s", g.seq, extPool[g.rng.IntN(len(extPool))]))
		if !g.used[n] {
			g.used[n] = true
			return n
		}
	}
}

func (g *gen) newFile() Entry {
	size := g.rng.IntN(g.max + 1)
	if g.rng.IntN(8) == 0 {
		size = g.rng.IntN(64) // small files are common
	}
	mode := int64(0o644)
	if g.rng.IntN(4) == 0 {
		mode = 0o755
	}
	return Entry{Type: File, Name: g.newName(), Data: g.c.bytes(size), Mode: mode,
		ModTime: Epoch.Add(time.Duration(g.rng.IntN(1000)) * time.Hour)}
}

// edit returns a changed copy of b, as a package upgrade changes a file:
// byte flips, insertions, deletions, a replaced region, an append.
func (g *gen) edit(b []byte) []byte {
	out := append([]byte(nil), b...)
	for range 1 + g.rng.IntN(4) {
		switch op := g.rng.IntN(5); {
		case op == 0 && len(out) > 0:
			for range 1 + g.rng.IntN(8) {
				out[g.rng.IntN(len(out))] ^= byte(1 + g.rng.IntN(255))
			}
		case op == 1:
			at := g.rng.IntN(len(out) + 1)
			ins := g.c.bytes(1 + g.rng.IntN(64))
			out = append(out[:at], append(ins, out[at:]...)...)
		case op == 2 && len(out) > 1:
			at := g.rng.IntN(len(out))
			n := 1 + g.rng.IntN(min(64, len(out)-at))
			out = append(out[:at], out[at+n:]...)
		case op == 3 && len(out) > 16:
			at := g.rng.IntN(len(out))
			n := min(len(out)-at, 1+len(out)/20)
			copy(out[at:at+n], g.c.bytes(n))
		default:
			out = append(out, g.c.bytes(1+g.rng.IntN(128))...)
		}
	}
	return out
}

// withDirs prepends to entries a directory entry for every parent of their
// names that is not already in have or in entries.
func withDirs(have map[string]bool, entries []Entry) []Entry {
	seen := map[string]bool{}
	for k := range have {
		seen[k] = true
	}
	for _, e := range entries {
		if e.Type == Dir {
			seen[e.Name] = true
		}
	}
	var dirs []Entry
	var add func(string)
	add = func(d string) {
		if d == "." || d == "/" || d == "" || seen[d] {
			return
		}
		add(path.Dir(d))
		seen[d] = true
		dirs = append(dirs, Entry{Type: Dir, Name: d})
	}
	for _, e := range entries {
		add(path.Dir(e.Name))
	}
	return append(dirs, entries...)
}

// Change is a kind of modification Modify may make.
type Change int

const (
	Edit       Change = iota // change the content of some files in place
	Add                      // add files
	Delete                   // remove files
	Move                     // move a file to another layer
	Rename                   // give a file a new path, same content
	Meta                     // change mode or mtime only
	Recompress               // store a layer with another compression
	Upgrade                  // keep all layers, add one on top with new versions, new files, whiteouts
)

func (c Change) String() string {
	return [...]string{"edit", "add", "delete", "move", "rename", "meta", "recompress", "upgrade"}[c]
}

// ModifyOptions shapes Modify.
type ModifyOptions struct {
	// Changes are the kinds to make, each once; nil: a random mix of the
	// in-place kinds (all but Upgrade), or Upgrade alone one time in four.
	Changes     []Change
	MaxFileSize int // for added files; 0: 16 KiB
}

// Modify returns a new version of base (which it does not change) and a
// description of what it changed, reproducible from rng's seed.
func Modify(rng *rand.Rand, base []Layer, o ModifyOptions) ([]Layer, []string) {
	if o.MaxFileSize <= 0 {
		o.MaxFileSize = 16 << 10
	}
	g := &gen{rng: rng, c: newContent(rng), max: o.MaxFileSize, used: map[string]bool{}}
	layers := make([]Layer, len(base))
	for i, l := range base {
		layers[i] = Layer{Entries: append([]Entry(nil), l.Entries...), Compression: l.Compression}
		for _, e := range l.Entries {
			g.used[e.Name] = true
		}
	}
	changes := o.Changes
	if changes == nil {
		if rng.IntN(4) == 0 {
			changes = []Change{Upgrade}
		} else {
			for c := Edit; c < Upgrade; c++ {
				if c == Edit || rng.IntN(3) == 0 {
					changes = append(changes, c)
				}
			}
		}
	}
	var log []string
	for _, c := range changes {
		if s := g.apply(c, &layers); s != "" {
			log = append(log, s)
		}
	}
	return layers, log
}

// files lists (layer, entry index) of regular files that no hard link in
// their layer points to, so they can be moved or deleted freely.
func files(layers []Layer) [][2]int {
	var out [][2]int
	for li, l := range layers {
		linked := map[string]bool{}
		for _, e := range l.Entries {
			if e.Type == Hardlink {
				linked[e.Link] = true
			}
		}
		for ei, e := range l.Entries {
			if e.Type == File && !linked[e.Name] {
				out = append(out, [2]int{li, ei})
			}
		}
	}
	return out
}

func (g *gen) apply(c Change, lp *[]Layer) string {
	layers := *lp
	fs := files(layers)
	pick := func() (int, int, bool) {
		if len(fs) == 0 {
			return 0, 0, false
		}
		f := fs[g.rng.IntN(len(fs))]
		return f[0], f[1], true
	}
	switch c {
	case Edit:
		n := 1 + g.rng.IntN(5)
		for range n {
			li, ei, ok := pick()
			if !ok {
				return ""
			}
			e := &layers[li].Entries[ei]
			e.Data = g.edit(e.Data)
			e.ModTime = e.ModTime.Add(24 * time.Hour)
		}
		return fmt.Sprintf("edit %d files", n)
	case Add:
		li := g.rng.IntN(len(layers))
		f := g.newFile()
		layers[li].Entries = withDirs(dirSet(layers[li]), append(layers[li].Entries, f))
		return fmt.Sprintf("add %s to layer %d", f.Name, li)
	case Delete:
		li, ei, ok := pick()
		if !ok {
			return ""
		}
		name := layers[li].Entries[ei].Name
		layers[li].Entries = append(layers[li].Entries[:ei:ei], layers[li].Entries[ei+1:]...)
		return fmt.Sprintf("delete %s from layer %d", name, li)
	case Move:
		li, ei, ok := pick()
		if !ok || len(layers) < 2 {
			return ""
		}
		to := (li + 1 + g.rng.IntN(len(layers)-1)) % len(layers)
		e := layers[li].Entries[ei]
		layers[li].Entries = append(layers[li].Entries[:ei:ei], layers[li].Entries[ei+1:]...)
		if g.rng.IntN(2) == 0 {
			e.Data = g.edit(e.Data)
		}
		layers[to].Entries = withDirs(dirSet(layers[to]), append(layers[to].Entries, e))
		return fmt.Sprintf("move %s from layer %d to %d", e.Name, li, to)
	case Rename:
		li, ei, ok := pick()
		if !ok {
			return ""
		}
		e := layers[li].Entries[ei]
		old := e.Name
		e.Name = g.newName()
		layers[li].Entries = append(layers[li].Entries[:ei:ei], layers[li].Entries[ei+1:]...)
		layers[li].Entries = withDirs(dirSet(layers[li]), append(layers[li].Entries, e))
		return fmt.Sprintf("rename %s to %s", old, e.Name)
	case Meta:
		li, ei, ok := pick()
		if !ok {
			return ""
		}
		e := &layers[li].Entries[ei]
		e.Mode ^= 0o111
		e.ModTime = e.ModTime.Add(time.Minute)
		return fmt.Sprintf("chmod %s", e.Name)
	case Recompress:
		li := g.rng.IntN(len(layers))
		layers[li].Compression = (layers[li].Compression + 1) % 3
		return fmt.Sprintf("recompress layer %d as %v", li, layers[li].Compression)
	case Upgrade:
		flat := Flatten(layers)
		var regular []Entry
		for _, p := range Names(flat) {
			if e := flat[p]; e.Type == File {
				regular = append(regular, e)
			}
		}
		var top []Entry
		n := 0
		for _, e := range regular {
			if g.rng.IntN(3) == 0 {
				e.Data = g.edit(e.Data)
				e.ModTime = e.ModTime.Add(48 * time.Hour)
				top = append(top, e)
				n++
			}
		}
		for range g.rng.IntN(3) {
			top = append(top, g.newFile())
		}
		if len(regular) > 0 && g.rng.IntN(2) == 0 {
			top = append(top, Entry{Type: Whiteout, Name: regular[g.rng.IntN(len(regular))].Name})
		}
		*lp = append(layers, Layer{Entries: withDirs(nil, top), Compression: layers[len(layers)-1].Compression})
		return fmt.Sprintf("upgrade layer with %d new versions, %d entries", n, len(top))
	}
	return ""
}

func dirSet(l Layer) map[string]bool {
	m := map[string]bool{}
	for _, e := range l.Entries {
		if e.Type == Dir {
			m[e.Name] = true
		}
	}
	return m
}
