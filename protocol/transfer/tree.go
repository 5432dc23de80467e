package transfer

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/bootorbit/bootorbit/protocol"
)

// HashLen is the length of a hash inside a hash block: SHA-256 truncated to
// 128 bits. A forger must find a second preimage of one of the tree's
// hashes, which costs about 2^128/n for n hashes: far out of reach, while
// collisions (2^64) do not help anyone but the ground, which signs anyway.
const HashLen = 16

// Domain separation prefixes of the three hash functions of the tree.
const (
	leafDomain = "bootorbit/transfer/leaf/v1\x00"
	nodeDomain = "bootorbit/transfer/node/v1\x00"
	rootDomain = "bootorbit/transfer/root/v1\x00"
)

// geometry is the shape of a transfer: data chunks, hash blocks and their
// global index space. Indices [0, h) are hash blocks, the top block first,
// then each level down to the leaf-hash blocks; [h, t) are data chunks.
type geometry struct {
	size  uint64
	chunk int // bytes per chunk (data and hash blocks)
	k     int // hashes per block
	n     int // data chunks
	// levels[j] is the number of blocks at level j+1 (level 1 holds the
	// hashes of data chunks); the last level has one block, the top.
	levels []int
	off    []int // global index of the first block of each level
	h, t   int
}

func newGeometry(size uint64, chunk int) (geometry, error) {
	g := geometry{size: size, chunk: chunk, k: chunk / HashLen}
	if size == 0 || chunk < protocol.MinChunkSize || g.k < 2 {
		return g, fmt.Errorf("%w: size %d chunk %d", ErrGeometry, size, chunk)
	}
	n := (size + uint64(chunk) - 1) / uint64(chunk)
	if n > protocol.MaxChunks {
		return g, fmt.Errorf("%w: %d data chunks", ErrGeometry, n)
	}
	g.n = int(n)
	for c := g.n; ; {
		b := (c + g.k - 1) / g.k
		g.levels = append(g.levels, b)
		g.h += b
		if b == 1 {
			break
		}
		c = b
	}
	g.t = g.h + g.n
	if g.t > protocol.MaxChunks {
		return g, fmt.Errorf("%w: %d chunks in all, max %d", ErrGeometry, g.t, protocol.MaxChunks)
	}
	g.off = make([]int, len(g.levels))
	o := 0
	for j := len(g.levels) - 1; j >= 0; j-- {
		g.off[j] = o
		o += g.levels[j]
	}
	return g, nil
}

// level returns the level index j (levels[j]) and block number of hash
// block x < h.
func (g *geometry) level(x int) (j, b int) {
	for j = len(g.levels) - 1; j >= 0; j-- {
		if x < g.off[j]+g.levels[j] {
			return j, x - g.off[j]
		}
	}
	panic("transfer: index is not a hash block")
}

// parent returns the global index of x's parent block and x's position in
// it; top is true for the top block (verified against the root).
func (g *geometry) parent(x int) (p, pos int, top bool) {
	if x >= g.h {
		i := x - g.h
		return g.off[0] + i/g.k, i % g.k, false
	}
	j, b := g.level(x)
	if j == len(g.levels)-1 {
		return 0, 0, true
	}
	return g.off[j+1] + b/g.k, b % g.k, false
}

// children returns the global index of x's first child and their number.
func (g *geometry) children(x int) (first, count int) {
	j, b := g.level(x)
	var below, base int
	if j == 0 {
		below, base = g.n, g.h
	} else {
		below, base = g.levels[j-1], g.off[j-1]
	}
	first = b * g.k
	count = min(g.k, below-first)
	return base + first, count
}

// length is the exact length chunk x must have.
func (g *geometry) length(x int) int {
	if x < g.h {
		_, c := g.children(x)
		return c * HashLen
	}
	if x == g.t-1 {
		return int(g.size - uint64(g.n-1)*uint64(g.chunk))
	}
	return g.chunk
}

// hash is the truncated hash of chunk x with content b, as its parent lists it.
func (g *geometry) hash(x int, b []byte) [HashLen]byte {
	h := sha256.New()
	var hdr [9]byte
	if x >= g.h {
		h.Write([]byte(leafDomain))
		binary.BigEndian.PutUint64(hdr[1:], uint64(x-g.h))
		h.Write(hdr[1:])
	} else {
		j, blk := g.level(x)
		h.Write([]byte(nodeDomain))
		hdr[0] = byte(j + 1)
		binary.BigEndian.PutUint64(hdr[1:], uint64(blk))
		h.Write(hdr[:])
	}
	h.Write(b)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	var out [HashLen]byte
	copy(out[:], sum[:])
	return out
}

// root is the full hash of the top block, committed to by the signed offer.
func (g *geometry) root(top []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(rootDomain))
	var hdr [12]byte
	binary.BigEndian.PutUint64(hdr[:8], g.size)
	binary.BigEndian.PutUint32(hdr[8:], uint32(g.chunk))
	h.Write(hdr[:])
	h.Write(top)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// bitset is a fixed-size set of chunk indices.
type bitset []uint64

func newBitset(n int) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) has(i int) bool { return b[i>>6]&(1<<(uint(i)&63)) != 0 }
func (b bitset) set(i int)      { b[i>>6] |= 1 << (uint(i) & 63) }
func (b bitset) clear(i int)    { b[i>>6] &^= 1 << (uint(i) & 63) }
func (b bitset) nextClear(i, end int) int {
	for i < end {
		w := ^b[i>>6] >> (uint(i) & 63)
		if w != 0 {
			i += bits.TrailingZeros64(w)
			return min(i, end)
		}
		i = (i | 63) + 1
	}
	return end
}
func (b bitset) nextSet(i, end int) int {
	for i < end {
		w := b[i>>6] >> (uint(i) & 63)
		if w != 0 {
			i += bits.TrailingZeros64(w)
			return min(i, end)
		}
		i = (i | 63) + 1
	}
	return end
}
