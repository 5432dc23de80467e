package sais

import (
	"bytes"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/bootorbit/bootorbit/internal/testrand"
)

func naive(text []byte) []int32 {
	sa := make([]int32, len(text))
	for i := range sa {
		sa[i] = int32(i)
	}
	sort.Slice(sa, func(a, b int) bool { return bytes.Compare(text[sa[a]:], text[sa[b]:]) < 0 })
	return sa
}

func TestAgainstNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(testrand.Seed(t), 1))
	fixed := []string{"", "a", "aa", "ab", "ba", "banana", "mississippi", "aaaaaaaaab", "abababab", "zyxwvu", "abcabcabcabd"}
	for _, s := range fixed {
		check(t, []byte(s))
	}
	for i := 0; i < 2000; i++ {
		n := rng.IntN(300)
		alpha := 1 + rng.IntN(5)
		if i%10 == 0 {
			alpha = 256
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.IntN(alpha))
		}
		if i%7 == 0 && n > 10 { // periodic text exercises deep recursion
			p := 1 + rng.IntN(6)
			for j := p; j < n; j++ {
				b[j] = b[j-p]
			}
		}
		check(t, b)
	}
}

func check(t *testing.T, b []byte) {
	t.Helper()
	got := New(b)
	want := naive(b)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("text %q: suffix array differs at %d: got %v want %v", b, i, got, want)
		}
	}
}

func BenchmarkNew(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	text := make([]byte, 8<<20)
	// Text with repeats, like binaries: random blocks copied around.
	for i := 0; i < len(text); {
		if i > 4096 && rng.IntN(2) == 0 {
			src := rng.IntN(i - 1024)
			i += copy(text[i:min(len(text), i+1024)], text[src:src+1024])
		} else {
			for j := 0; j < 512 && i < len(text); j++ {
				text[i] = byte(rng.IntN(64))
				i++
			}
		}
	}
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		New(text)
	}
}

// FuzzAgainstNaive checks New against a plain sort on arbitrary texts.
func FuzzAgainstNaive(f *testing.F) {
	for _, s := range []string{"", "banana", "mississippi", "abababab", "\x00\xff\x00\xff\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4096 {
			b = b[:4096] // the naive sort is quadratic
		}
		check(t, b)
	})
}
