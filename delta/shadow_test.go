package delta

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/opencontainers/go-digest"
)

// shadowedBase is a base image whose later layers remove or replace files
// of its first layer in every way a tree allows, and the files of the
// first layer its tree no longer holds as that layer has them.
func shadowedBase(rng *rand.Rand) (layers []ocitest.Layer, shadowed []string) {
	f := func(name string, data []byte) ocitest.Entry { return ocitest.Entry{Name: name, Data: data} }
	d := func(name string) ocitest.Entry { return ocitest.Entry{Type: ocitest.Dir, Name: name} }
	big := make([]byte, 96<<10)
	for i := range big {
		big[i] = byte(rng.IntN(256))
	}
	l0 := ocitest.Layer{Entries: []ocitest.Entry{
		d("usr"), d("usr/share"), d("usr/share/doc"), d("usr/lib"), d("opt"), d("opt/tool"), d("var"), d("var/cache"), d("etc"), d("srv"),
		f("usr/share/doc/flight-old", bytes.Repeat([]byte("old notes\n"), 300)), // whiteout
		f("usr/share/doc/flight-keep", bytes.Repeat([]byte("kept\n"), 200)),
		f("usr/lib/libflight.so", big),                              // kept, large
		f("usr/lib/libx.so", bytes.Repeat([]byte("libx v1 "), 400)), // replaced
		f("opt/tool/run", []byte("#!/bin/sh\necho run\n")),          // its directory whited out
		f("var/cache/a", []byte("cached a\n")),                      // opaque directory
		f("etc/motd", []byte("welcome\n")),                          // rewritten, same bytes
		f("srv/data", bytes.Repeat([]byte("data "), 100)),           // its parent replaced by a file
		f("etc/hostname", []byte("sat-1\n")),                        // written twice in this layer
		f("etc/hostname", []byte("sat-2\n")),
	}}
	l1 := ocitest.Layer{Entries: []ocitest.Entry{
		d("usr"), d("usr/lib"), d("etc"),
		f("usr/lib/libx.so", bytes.Repeat([]byte("libx v2 "), 400)),
		f("etc/motd", []byte("welcome\n")),
		f("srv", []byte("not a directory any more\n")),
	}}
	l2 := ocitest.Layer{Entries: []ocitest.Entry{
		d("usr"), d("usr/share"), d("usr/share/doc"), d("opt"), d("var"), d("var/cache"),
		{Type: ocitest.Whiteout, Name: "usr/share/doc/flight-old"},
		{Type: ocitest.Whiteout, Name: "opt/tool"},
		{Type: ocitest.OpaqueWhiteout, Name: "var/cache"},
		f("var/cache/b", []byte("cached b\n")),
	}}
	return []ocitest.Layer{l0, l1, l2}, []string{"etc/hostname", "opt/tool/run", "srv/data", "usr/lib/libx.so", "usr/share/doc/flight-old", "var/cache/a"}
}

// TestShadowedFiles: the files of the base layers that later layers
// removed or replaced are found, and only those (the first etc/hostname,
// rewritten in the same layer, is one).
func TestShadowedFiles(t *testing.T) {
	layers, want := shadowedBase(rand.New(rand.NewPCG(seed(t), 1)))
	tars := tarsOf(t, layers)
	dir := t.TempDir()
	var old []*spooled
	for i, src := range sources(tars) {
		s, err := spool(context.Background(), dir, i, src)
		if err != nil {
			t.Fatal(err)
		}
		defer s.close()
		old = append(old, s)
	}
	var got []string
	for r := range shadowedFiles(old) {
		if r.layer != 0 {
			t.Errorf("layer %d entry %s shadowed", r.layer, old[r.layer].entries[r.entry].Path)
		}
		got = append(got, old[r.layer].entries[r.entry].Path)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("shadowed %v, want %v", got, want)
	}
}

// TestShadowedBaseNotReused: a target layer equal to a base layer whose
// files later base layers removed or replaced is not reused but coded
// against what the base's tree still holds, and so is a new file with a
// removed file's content: the bundle applies against the base as a slot
// gives it back (the shadowed files' bytes changed), where a reuse, or a
// copy from a removed file, would be a base mismatch.
func TestShadowedBaseNotReused(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 2))
	layers, shadowed := shadowedBase(rng)
	oldTars := tarsOf(t, layers)
	restored := ocitest.Layer{Entries: []ocitest.Entry{
		{Type: ocitest.Dir, Name: "usr"}, {Type: ocitest.Dir, Name: "usr/share"}, {Type: ocitest.Dir, Name: "usr/share/doc"},
		{Name: "usr/share/doc/restored", Data: bytes.Repeat([]byte("old notes\n"), 300)},
	}}
	newTars := append([][]byte{oldTars[0]}, tarsOf(t, []ocitest.Layer{restored})...)
	var buf bytes.Buffer
	st, err := ComputeLayers(context.Background(), sources(oldTars), Target{Config: []byte("{}"), Layers: sources(newTars)}, &buf, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if st.Layers[0].Decision == Reuse {
		t.Fatal("layer 0 reused, but the base's tree does not hold it")
	}
	t.Logf("layer 0 (%d bytes): %s, %d bytes of payload; layer 1: %s, %d bytes", st.Layers[0].Size, st.Layers[0].Decision, st.Layers[0].Payload, st.Layers[1].Decision, st.Layers[1].Payload)
	if st.Layers[0].Payload > 8<<10 {
		t.Errorf("layer 0: %d bytes of payload: what the tree holds was not copied", st.Layers[0].Payload)
	}
	// The base as a slot gives it back: the bytes of a shadowed file are
	// whatever the tree holds at its path (here: others).
	slot := bytes.Clone(oldTars[0])
	last, count := map[string]int{}, map[string]int{}
	for i, e := range layers[0].Entries {
		last[e.Name] = i
		count[e.Name]++
	}
	for i, e := range layers[0].Entries {
		// Rewritten later in the layer, or removed or replaced by a later
		// layer.
		gone := last[e.Name] != i || count[e.Name] == 1 && slices.Contains(shadowed, e.Name)
		if e.Type == ocitest.File && gone {
			at := bytes.Index(oldTars[0], e.Data)
			if at < 0 {
				t.Fatalf("content of %s not in the layer", e.Name)
			}
			for i := at; i < at+len(e.Data); i++ {
				slot[i] ^= 0x5a
			}
		}
	}
	base := MapBase{digest.FromBytes(oldTars[0]): bytes.NewReader(slot)}
	for _, tb := range oldTars[1:] {
		base[digest.FromBytes(tb)] = bytes.NewReader(tb)
	}
	b, err := OpenBundle(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	for li := range newTars {
		if errs := b.VerifyBase(context.Background(), li, base); len(errs) > 0 {
			t.Fatalf("layer %d reads what the slot does not hold: %v", li, errs)
		}
		var out bytes.Buffer
		if err := b.ApplyLayer(context.Background(), li, base, &out); err != nil {
			t.Fatalf("layer %d: %v", li, err)
		}
		if !bytes.Equal(out.Bytes(), newTars[li]) {
			t.Fatalf("layer %d rebuilt differs", li)
		}
	}
}

// TestShadowHostile: a deep tree, and thousands of whiteouts and opaque
// markers of the same directories (a hostile or odd base image) cost about
// one walk of the tree, not one per marker, and no deep recursion.
func TestShadowHostile(t *testing.T) {
	deep := strings.Repeat("d/", 100000) + "f"
	reg := func(p string) entry { return entry{Path: p, Type: '0', DataLen: 1} }
	l0 := &spooled{entries: []entry{reg(deep)}}
	for i := range 20000 {
		l0.entries = append(l0.entries, reg(fmt.Sprintf("wide/f%d", i)))
	}
	l1 := &spooled{}
	for range 20000 {
		l1.entries = append(l1.entries, entry{Path: "wide/.wh..wh..opq", Type: '0'}, entry{Path: ".wh.d", Type: '0'})
	}
	sh := shadowedFiles([]*spooled{l0, l1})
	if len(sh) != 20001 {
		t.Fatalf("%d shadowed, want 20001", len(sh))
	}
}

// TestCleanPath: entry names are made slot paths as the slot's extractor
// makes them (slots cleanName): every empty and "." component dropped, so
// "etc//passwd" and "etc/./passwd" are etc/passwd; a ".." component stays
// (and is flagged: escapes).
func TestCleanPath(t *testing.T) {
	for _, c := range []struct {
		in, want string
		escapes  bool
	}{
		{"etc/passwd", "etc/passwd", false},
		{"./etc/passwd", "etc/passwd", false},
		{"/etc/passwd", "etc/passwd", false},
		{"etc//passwd", "etc/passwd", false},
		{"etc/./passwd", "etc/passwd", false},
		{".//./etc/.//passwd/", "etc/passwd", false},
		{"./", "", false},
		{".", "", false},
		{"a/../b", "a/../b", true},
		{"..", "..", true},
		{"a/..b", "a/..b", false},
	} {
		if got := cleanPath(c.in); got != c.want || escapes(got) != c.escapes {
			t.Errorf("cleanPath(%q) = %q (escapes %v), want %q (%v)", c.in, got, escapes(got), c.want, c.escapes)
		}
	}
}

// TestShadowedOddNames: a later base layer that rewrites a file under
// another spelling of its path ("etc//passwd", "usr/./lib/x") shadows it,
// as on the slot, which writes both to the same file.
func TestShadowedOddNames(t *testing.T) {
	f := func(name, data string) ocitest.Entry { return ocitest.Entry{Name: name, Data: []byte(data)} }
	d := func(name string) ocitest.Entry { return ocitest.Entry{Type: ocitest.Dir, Name: name} }
	layers := []ocitest.Layer{
		{Entries: []ocitest.Entry{d("etc"), d("usr"), d("usr/lib"), f("etc/passwd", "root:x:0:0\n"), f("usr/lib/x", "x v1\n"), f("etc/keep", "kept\n")}},
		{Entries: []ocitest.Entry{f("etc//passwd", "root:x:0:0\nflight:x:1:1\n"), f("usr/./lib/x", "x v2\n")}},
	}
	dir := t.TempDir()
	var old []*spooled
	for i, src := range sources(tarsOf(t, layers)) {
		s, err := spool(context.Background(), dir, i, src)
		if err != nil {
			t.Fatal(err)
		}
		defer s.close()
		old = append(old, s)
	}
	var got []string
	for r := range shadowedFiles(old) {
		got = append(got, fmt.Sprintf("%d:%s", r.layer, old[r.layer].entries[r.entry].Path))
	}
	slices.Sort(got)
	if want := []string{"0:etc/passwd", "0:usr/lib/x"}; !slices.Equal(got, want) {
		t.Fatalf("shadowed %v, want %v", got, want)
	}
}
