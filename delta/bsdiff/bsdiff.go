// Package bsdiff finds the alignment between an old and a new byte string in
// the manner of Colin Percival's bsdiff: approximate matches found through a
// suffix array of the old string, extended while they agree on more than half
// of their bytes. The result is a list of controls; each says "the next Add
// bytes of new are old[OldPos:OldPos+Add] plus small differences, then Extra
// bytes of new have no counterpart". Differences in compiled code (shifted
// addresses) are sparse, so the byte-wise difference stream compresses far
// better than the new bytes themselves. Encoding the controls and streams is
// the caller's business.
package bsdiff

import (
	"fmt"

	"github.com/bootorbit/bootorbit/delta/sais"
)

// Control is one step of the alignment.
type Control struct {
	NewPos int // start of this step in new
	OldPos int // where the Add bytes align in old
	Add    int // bytes coded as old plus difference
	Extra  int // bytes that follow, coded literally
}

// maxCompare caps a single suffix comparison, so that long repeats (runs of
// zeros, say) cannot make the search quadratic. A match longer than this is
// still found in pieces.
const maxCompare = 1 << 16

// skipAfter is the match length above which the scan skips ahead.
const skipAfter = 64

// workPerByte bounds the bytes searches may compare, per input byte, before
// Diff gives up aligning and codes the rest literally. Real files need a few
// tens (a 6.8 MB rebuilt executable: 23); repetitive input can need
// quadratically many.
const workPerByte = 1024

// Index is the old string with its suffix array.
type Index struct {
	old      []byte
	sa       []int32
	searches int   // suffix array searches made, for tests of the work done
	work     int64 // bytes compared by searches
}

// NewIndex builds the suffix array of old.
func NewIndex(old []byte) *Index { return &Index{old: old, sa: sais.New(old)} }

// search returns the position in old and the length of the longest match of
// a prefix of b.
func (x *Index) search(b []byte) (pos, n int) {
	if len(b) > maxCompare {
		b = b[:maxCompare]
	}
	x.searches++
	lo, hi := 0, len(x.sa)
	for hi-lo > 1 {
		mid := int(uint(lo+hi) >> 1)
		less, k := lessPrefix(x.old[x.sa[mid]:], b)
		x.work += int64(k) + 1
		if less {
			lo = mid
		} else {
			hi = mid
		}
	}
	// The best match is next to the insertion point.
	for _, i := range [...]int{lo, lo + 1} {
		if i < len(x.sa) {
			p := int(x.sa[i])
			l := common(x.old[p:], b)
			x.work += int64(l) + 1
			if l > n {
				pos, n = p, l
			}
		}
	}
	return pos, n
}

// lessPrefix reports whether a < b comparing at most len(b) bytes, and
// how many bytes it compared.
func lessPrefix(a, b []byte) (bool, int) {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return a[i] < b[i], i
		}
	}
	return len(a) < len(b), n
}

func common(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// Diff aligns nw against the indexed old string and calls emit for each
// control in order. The controls cover nw exactly.
func (x *Index) Diff(nw []byte, emit func(Control)) {
	old := x.old
	oldLen, newLen := len(old), len(nw)
	budget := x.work + workPerByte*int64(newLen+oldLen) + 1<<20
	var scan, length, pos int
	lastScan, lastPos, lastOffset := 0, 0, 0
	for scan < newLen {
		oldScore := 0
		scan += length
		scsc := scan
		for scan < newLen {
			if x.work > budget {
				// Out of budget (repetitive or hostile input): the
				// rest of new becomes one last control, extending the
				// current alignment and then literal.
				scan, length = newLen, 0
				break
			}
			pos, length = x.search(nw[scan:])
			// oldScore counts how many of the bytes in the candidate
			// match also match at the current alignment.
			for ; scsc < scan+length; scsc++ {
				if scsc+lastOffset >= 0 && scsc+lastOffset < oldLen && old[scsc+lastOffset] == nw[scsc] {
					oldScore++
				}
			}
			if (length == oldScore && length != 0) || length > oldScore+8 {
				break
			}
			// Move on. Classic bsdiff moves one byte at a time, which is
			// quadratic on repetitive data (long runs of zeros match
			// almost everywhere); after a long match it skips half of
			// it instead. The backward extension below finds where a
			// new alignment really starts, so little is lost.
			step := 1
			if length > skipAfter {
				step = length / 2
			}
			for end := scan + step; scan < end; scan++ {
				if scan+lastOffset >= 0 && scan+lastOffset < oldLen && old[scan+lastOffset] == nw[scan] {
					oldScore--
				}
			}
		}
		if length == oldScore && scan != newLen {
			continue
		}
		// Extend the previous alignment forward while it matches more
		// often than not.
		lenF := 0
		{
			s, best := 0, 0
			for i := 0; lastScan+i < scan && lastPos+i < oldLen; {
				if old[lastPos+i] == nw[lastScan+i] {
					s++
				}
				i++
				if s*2-i > best*2-lenF {
					best, lenF = s, i
				}
			}
		}
		// Extend the new match backward likewise.
		lenB := 0
		if scan < newLen {
			s, best := 0, 0
			for i := 1; scan >= lastScan+i && pos >= i; i++ {
				if old[pos-i] == nw[scan-i] {
					s++
				}
				if s*2-i > best*2-lenB {
					best, lenB = s, i
				}
			}
		}
		// Resolve an overlap between the two extensions at the point
		// that keeps the most matching bytes.
		if lastScan+lenF > scan-lenB {
			overlap := (lastScan + lenF) - (scan - lenB)
			s, best, lens := 0, 0, 0
			for i := 0; i < overlap; i++ {
				if nw[lastScan+lenF-overlap+i] == old[lastPos+lenF-overlap+i] {
					s++
				}
				if nw[scan-lenB+i] == old[pos-lenB+i] {
					s--
				}
				if s > best {
					best, lens = s, i+1
				}
			}
			lenF += lens - overlap
			lenB -= lens
		}
		emit(Control{NewPos: lastScan, OldPos: lastPos, Add: lenF, Extra: (scan - lenB) - (lastScan + lenF)})
		lastScan = scan - lenB
		lastPos = pos - lenB
		lastOffset = pos - scan
	}
}

// Stats describes the work done so far, for tuning.
func (x *Index) Stats() string {
	return fmt.Sprintf("%d searches, %d bytes compared for %d old bytes", x.searches, x.work, len(x.old))
}
