package ocitest_test

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
)

func tars(t *testing.T, ls []ocitest.Layer) [][]byte {
	t.Helper()
	var out [][]byte
	for _, l := range ls {
		b, err := ocitest.Tar(l.Entries)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestSeededAndPure(t *testing.T) {
	gen := func() ([][]byte, [][]byte, []string, [][]byte) {
		rng := rand.New(rand.NewPCG(7, 7))
		base := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 3})
		before := tars(t, base)
		mod, log := ocitest.Modify(rng, base, ocitest.ModifyOptions{})
		return before, tars(t, mod), log, tars(t, base)
	}
	b1, m1, l1, after := gen()
	b2, m2, l2, _ := gen()
	if !reflect.DeepEqual(b1, b2) || !reflect.DeepEqual(m1, m2) || !reflect.DeepEqual(l1, l2) {
		t.Fatal("same seed, different images")
	}
	if !reflect.DeepEqual(b1, after) {
		t.Fatal("Modify changed its base")
	}
}

func TestEachChange(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 2, Files: 10})
	bt := tars(t, base)
	for c := ocitest.Edit; c <= ocitest.Upgrade; c++ {
		mod, log := ocitest.Modify(rng, base, ocitest.ModifyOptions{Changes: []ocitest.Change{c}})
		if len(log) != 1 {
			t.Fatalf("%v: log %v", c, log)
		}
		mt := tars(t, mod)
		switch c {
		case ocitest.Upgrade:
			if len(mod) != 3 || !bytes.Equal(mt[0], bt[0]) || !bytes.Equal(mt[1], bt[1]) {
				t.Fatalf("upgrade must keep the layers and add one: %v", log)
			}
		case ocitest.Recompress:
			if !reflect.DeepEqual(mt, bt) {
				t.Fatal("recompress changed content")
			}
		default:
			if reflect.DeepEqual(mt, bt) {
				t.Fatalf("%v changed nothing: %v", c, log)
			}
		}
	}
}

func TestFlattenWhiteouts(t *testing.T) {
	ls := []ocitest.Layer{
		{Entries: []ocitest.Entry{{Name: "a/x", Data: []byte("1")}, {Name: "a/y"}, {Name: "b"}}},
		{Entries: []ocitest.Entry{{Type: ocitest.Whiteout, Name: "b"}, {Type: ocitest.OpaqueWhiteout, Name: "a"}, {Name: "a/z"}}},
	}
	if got := ocitest.Names(ocitest.Flatten(ls)); !reflect.DeepEqual(got, []string{"a/z"}) {
		t.Fatalf("flatten: %v", got)
	}
	dir := t.TempDir()
	im := ocitest.Build(t, dir, "w", ls)
	if _, err := oci.Open(im.Ref); err != nil {
		t.Fatal(err)
	}
}
