package oci_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/opencontainers/go-digest"
)

// crashFS is a storage model in the manner of pebble's crashable MemFS: it
// keeps, apart from what programs see, what would survive a power cut: a
// file's content as of its last Sync, and a directory's entries as of its
// last SyncDir. From operation number crashAt on, every call fails and has
// no effect, as if the machine had died there.
type crashFS struct {
	ops, crashAt int
	seq          int
	live         map[string]*node // path -> node, what programs see
	durable      map[string]*node // path -> node, directory entries that were synced
}

type node struct {
	dir          bool
	data, synced []byte
}

var errCrashed = errors.New("crashed")

func newCrashFS(crashAt int) *crashFS {
	root := &node{dir: true}
	return &crashFS{crashAt: crashAt, live: map[string]*node{"/": root}, durable: map[string]*node{"/": root}}
}

func (c *crashFS) step() error {
	c.ops++
	if c.crashAt > 0 && c.ops >= c.crashAt {
		return errCrashed
	}
	return nil
}

func (c *crashFS) MkdirAll(dir string) error {
	if err := c.step(); err != nil {
		return err
	}
	for d := path.Clean(dir); d != "/"; d = path.Dir(d) {
		if _, ok := c.live[d]; !ok {
			c.live[d] = &node{dir: true}
		}
	}
	return nil
}

type crashFile struct {
	c    *crashFS
	name string
	n    *node
}

func (f *crashFile) Name() string { return f.name }
func (f *crashFile) Write(p []byte) (int, error) {
	if err := f.c.step(); err != nil {
		return 0, err
	}
	f.n.data = append(f.n.data, p...)
	return len(p), nil
}
func (f *crashFile) Sync() error {
	if err := f.c.step(); err != nil {
		return err
	}
	f.n.synced = append([]byte(nil), f.n.data...)
	return nil
}
func (f *crashFile) Close() error { return nil }

func (c *crashFS) CreateTemp(dir, pattern string) (oci.File, error) {
	if err := c.step(); err != nil {
		return nil, err
	}
	if d, ok := c.live[path.Clean(dir)]; !ok || !d.dir {
		return nil, fs.ErrNotExist
	}
	c.seq++
	name := path.Join(dir, strings.Replace(pattern, "*", fmt.Sprint(c.seq), 1))
	n := &node{}
	c.live[name] = n
	return &crashFile{c: c, name: name, n: n}, nil
}

func (c *crashFS) Rename(from, to string) error {
	if err := c.step(); err != nil {
		return err
	}
	n, ok := c.live[from]
	if !ok {
		return fs.ErrNotExist
	}
	delete(c.live, from)
	c.live[to] = n
	return nil
}

func (c *crashFS) Remove(name string) error {
	if err := c.step(); err != nil {
		return err
	}
	delete(c.live, name)
	return nil
}

// SyncDir makes the entries of dir durable as they are now.
func (c *crashFS) SyncDir(dir string) error {
	if err := c.step(); err != nil {
		return err
	}
	dir = path.Clean(dir)
	for p := range c.durable {
		if p != "/" && path.Dir(p) == dir {
			delete(c.durable, p)
		}
	}
	for p, n := range c.live {
		if p != "/" && path.Dir(p) == dir {
			c.durable[p] = n
		}
	}
	return nil
}

type info struct {
	name string
	n    *node
}

func (i info) Name() string       { return path.Base(i.name) }
func (i info) Size() int64        { return int64(len(i.n.data)) }
func (i info) Mode() fs.FileMode  { return 0o644 }
func (i info) ModTime() time.Time { return time.Time{} }
func (i info) IsDir() bool        { return i.n.dir }
func (i info) Sys() any           { return nil }

func (c *crashFS) Stat(name string) (fs.FileInfo, error) {
	if err := c.step(); err != nil {
		return nil, err
	}
	n, ok := c.live[path.Clean(name)]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return info{name, n}, nil
}

func (c *crashFS) ReadFile(name string, max int64) ([]byte, error) {
	if err := c.step(); err != nil {
		return nil, err
	}
	n, ok := c.live[path.Clean(name)]
	if !ok || n.dir {
		return nil, fs.ErrNotExist
	}
	return append([]byte(nil), n.data...), nil
}

// materialize writes what survives the crash under root: the durable
// entries reachable from "/" through durable directories, files with their
// synced content.
func (c *crashFS) materialize(t *testing.T, root string) {
	t.Helper()
	var paths []string
	for p := range c.durable {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if p == "/" {
			continue
		}
		reachable := true
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if n, ok := c.durable[d]; !ok || !n.dir {
				reachable = false
				break
			}
		}
		if !reachable {
			continue
		}
		n := c.durable[p]
		dst := filepath.Join(root, filepath.FromSlash(p))
		if n.dir {
			os.MkdirAll(dst, 0o755)
		} else {
			os.MkdirAll(filepath.Dir(dst), 0o755)
			if err := os.WriteFile(dst, n.synced, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// writeImage writes an image of two layers through w and tags it.
func writeImage(w *oci.Writer, tag string, seed byte) error {
	var descs []oci.Descriptor
	var diffs []digest.Digest
	for i, c := range []oci.Compression{oci.Gzip, oci.Uncompressed} {
		tarb, err := ocitest.Tar([]ocitest.Entry{{Name: fmt.Sprintf("f%d", i), Data: []byte(strings.Repeat(string('a'+seed), 700+i))}})
		if err != nil {
			return err
		}
		blob, err := ocitest.Compress(c, tarb)
		if err != nil {
			return err
		}
		d, err := w.WriteBlobBytes(ocitest.MediaType(c), blob)
		if err != nil {
			return err
		}
		descs = append(descs, d)
		diffs = append(diffs, digest.FromBytes(tarb))
	}
	_, err := w.Commit(tag, oci.NewConfig(oci.DefaultPlatform(), diffs), descs, nil)
	return err
}

// openAll opens every tag of the layout at dir and reads all its layers.
func openAll(dir string) (tags []string, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return nil, err
	}
	idx, err := oci.ParseIndex(b)
	if err != nil {
		return nil, err
	}
	for _, d := range idx.Manifests {
		tag := d.Annotations[oci.RefNameAnnotation]
		im, err := oci.Open(oci.Ref{Layout: dir, Tag: tag})
		if err != nil {
			return nil, fmt.Errorf("tag %s: %w", tag, err)
		}
		for i := range im.Layers() {
			rc, err := im.OpenLayer(i)
			if err != nil {
				return nil, fmt.Errorf("tag %s: %w", tag, err)
			}
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				return nil, fmt.Errorf("tag %s layer %d: %w", tag, i, err)
			}
		}
		tags = append(tags, tag)
	}
	sort.Strings(tags)
	return tags, nil
}

// TestWriterCrashAtEveryStep cuts the power at every storage operation of
// creating a layout with tag v1 and then adding v2 and retagging v1, and
// checks what survives: index.json never names a blob that is missing or
// short, v1 survives once its Commit returned, and each tag is either the
// old image or the new one.
func TestWriterCrashAtEveryStep(t *testing.T) {
	const layout = "/data/L"
	for crashAt := 1; ; crashAt++ {
		c := newCrashFS(crashAt)
		c.live["/data"] = &node{dir: true}
		c.durable["/data"] = c.live["/data"]
		committed := map[string]bool{}
		err := func() error {
			w, err := oci.CreateOn(c, layout)
			if err != nil {
				return err
			}
			if err := writeImage(w, "v1", 0); err != nil {
				return err
			}
			committed["v1"] = true
			if err := writeImage(w, "v2", 1); err != nil {
				return err
			}
			committed["v2"] = true
			if err := writeImage(w, "v1", 2); err != nil {
				return err
			}
			committed["v1'"] = true
			return nil
		}()
		if err != nil && !errors.Is(err, errCrashed) {
			t.Fatalf("crash at %d: unexpected error %v", crashAt, err)
		}
		root := t.TempDir()
		c.materialize(t, root)
		dir := filepath.Join(root, "data", "L")
		tags, oerr := openAll(dir)
		if errors.Is(oerr, fs.ErrNotExist) {
			if committed["v1"] {
				t.Fatalf("crash at %d: index.json lost after v1 was committed", crashAt)
			}
		} else if oerr != nil {
			t.Fatalf("crash at %d: surviving layout is broken: %v", crashAt, oerr)
		} else {
			have := strings.Join(tags, ",")
			if committed["v2"] && have != "v1,v2" || committed["v1"] && !strings.Contains(have, "v1") {
				t.Fatalf("crash at %d: committed %v, layout has %s", crashAt, committed, have)
			}
		}
		if err == nil {
			t.Logf("checked %d crash points", crashAt-1)
			if crashAt < 20 {
				t.Fatal("suspiciously few storage operations")
			}
			return
		}
	}
}
