// Package sais builds suffix arrays with the SA-IS algorithm (induced
// sorting, linear time). The delta encoder uses the suffix array of an old
// file to find, for every position of a new file, the longest match in the
// old one. The standard library's index/suffixarray builds the same array
// but does not expose it.
package sais

// New returns the suffix array of text: the start positions of all suffixes
// of text in lexicographic order. It panics if text is 2 GiB or longer.
func New(text []byte) []int32 {
	if len(text) >= 1<<31-1 {
		panic("sais: text too long")
	}
	sa := make([]int32, len(text))
	build(text, sa, 256)
	return sa
}

type symbol interface{ ~byte | ~int32 }

// build writes the suffix array of s into sa (len(sa) == len(s)). Every symbol
// of s is in [0, k). A virtual sentinel, smaller than every symbol, follows s.
func build[T symbol](s []T, sa []int32, k int) {
	n := len(s)
	switch n {
	case 0:
		return
	case 1:
		sa[0] = 0
		return
	}
	// stype[i] reports whether suffix i is S-type (smaller than suffix i+1).
	// The last suffix is L-type because the sentinel follows it.
	stype := make([]bool, n)
	for i := n - 2; i >= 0; i-- {
		stype[i] = s[i] < s[i+1] || (s[i] == s[i+1] && stype[i+1])
	}
	isLMS := func(i int) bool { return i > 0 && stype[i] && !stype[i-1] }

	counts := make([]int32, k)
	for _, c := range s {
		counts[c]++
	}
	bkt := make([]int32, k)
	heads := func() {
		var sum int32
		for c, x := range counts {
			bkt[c] = sum
			sum += x
		}
	}
	tails := func() {
		var sum int32
		for c, x := range counts {
			sum += x
			bkt[c] = sum
		}
	}
	induce := func() {
		heads()
		// The sentinel's suffix sorts first, so the suffix just before it
		// (always L-type) is placed first.
		j := n - 1
		sa[bkt[s[j]]] = int32(j)
		bkt[s[j]]++
		for i := 0; i < n; i++ {
			if p := sa[i]; p > 0 && !stype[p-1] {
				c := s[p-1]
				sa[bkt[c]] = p - 1
				bkt[c]++
			}
		}
		tails()
		for i := n - 1; i >= 0; i-- {
			if p := sa[i]; p > 0 && stype[p-1] {
				c := s[p-1]
				bkt[c]--
				sa[bkt[c]] = p - 1
			}
		}
	}

	// Step 1: sort the LMS substrings by placing LMS positions at their
	// bucket tails and inducing.
	for i := range sa {
		sa[i] = -1
	}
	tails()
	m := 0
	for i := n - 1; i >= 1; i-- {
		if isLMS(i) {
			bkt[s[i]]--
			sa[bkt[s[i]]] = int32(i)
			m++
		}
	}
	if m == 0 {
		// No LMS position: s is non-increasing, and inducing from the
		// sentinel alone sorts it.
		for i := range sa {
			sa[i] = -1
		}
		induce()
		return
	}
	induce()

	// Step 2: name the sorted LMS substrings; equal substrings share a name.
	sorted := make([]int32, 0, m)
	for _, p := range sa {
		if isLMS(int(p)) {
			sorted = append(sorted, p)
		}
	}
	names := make([]int32, n/2+1) // indexed by position/2: LMS positions are >= 2 apart
	for i := range names {
		names[i] = -1
	}
	name := int32(0)
	prev := -1
	for _, p := range sorted {
		if prev >= 0 && !equalLMS(s, stype, prev, int(p)) {
			name++
		}
		names[p/2] = name
		prev = int(p)
	}
	nnames := int(name) + 1

	// Reduced string: names of LMS substrings in text order.
	pos := make([]int32, 0, m)
	for i := 1; i < n; i++ {
		if isLMS(i) {
			pos = append(pos, int32(i))
		}
	}
	reduced := make([]int32, m)
	for i, p := range pos {
		reduced[i] = names[p/2]
	}
	names = nil
	sa1 := make([]int32, m)
	if nnames < m {
		build(reduced, sa1, nnames)
	} else {
		for i, c := range reduced {
			sa1[c] = int32(i)
		}
	}
	reduced = nil

	// Step 3: place the LMS suffixes in their now-known order and induce
	// the full suffix array.
	for i, r := range sa1 {
		sorted[i] = pos[r]
	}
	for i := range sa {
		sa[i] = -1
	}
	tails()
	for i := m - 1; i >= 0; i-- {
		p := sorted[i]
		c := s[p]
		bkt[c]--
		sa[bkt[c]] = p
	}
	induce()
}

// equalLMS reports whether the LMS substrings starting at p and q (each
// running to the next LMS position, inclusive) are equal.
func equalLMS[T symbol](s []T, stype []bool, p, q int) bool {
	n := len(s)
	for d := 0; ; d++ {
		if p+d >= n || q+d >= n {
			return false // one runs into the sentinel, which is unique
		}
		if s[p+d] != s[q+d] || stype[p+d] != stype[q+d] {
			return false
		}
		if d > 0 {
			pl := stype[p+d] && !stype[p+d-1]
			ql := stype[q+d] && !stype[q+d-1]
			if pl || ql {
				return pl && ql
			}
		}
	}
}
