package protocol

import (
	"fmt"
	"testing"
)

// Benchmarks of the codec on chunk-like frames. The "reference" sub-benchmarks
// run plain fxamacker/cbor on the same body in the same run, so the cost of
// the framing checks (CRC, header, canonical re-encode, Validate) reads
// directly: go test ./protocol -run '^$' -bench 'Chunk' -benchmem

func chunkFor(b *testing.B, c *Codec) (*testChunk, []byte) {
	m := &testChunk{Transfer: 0x9abcdef0, Part: 3, Index: 4000}
	n, _ := chunkOverhead(b, c, m)
	m.Data = make([]byte, n)
	for i := range m.Data {
		m.Data[i] = byte(i * 7)
	}
	f, err := c.Encode(m)
	if err != nil {
		b.Fatal(err)
	}
	return m, f
}

func BenchmarkEncodeChunk(b *testing.B) {
	for _, max := range []int{256, 1024, 65536} {
		c := mustCodec(b, max)
		m, f := chunkFor(b, c)
		b.Run(fmt.Sprintf("frame=%d", max), func(b *testing.B) {
			b.SetBytes(int64(len(f)))
			b.ReportAllocs()
			buf := make([]byte, 0, max)
			for b.Loop() {
				var err error
				if buf, err = c.AppendEncode(buf[:0], m); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("frame=%d/reference-cbor-marshal", max), func(b *testing.B) {
			b.SetBytes(int64(len(f)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.enc.Marshal(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeChunk(b *testing.B) {
	for _, max := range []int{256, 1024, 65536} {
		c := mustCodec(b, max)
		_, f := chunkFor(b, c)
		body := f[4 : len(f)-trailerLen] // test type 240 has a 2-byte type head
		b.Run(fmt.Sprintf("frame=%d", max), func(b *testing.B) {
			b.SetBytes(int64(len(f)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Decode(f); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("frame=%d/reference-cbor-unmarshal", max), func(b *testing.B) {
			b.SetBytes(int64(len(f)))
			b.ReportAllocs()
			for b.Loop() {
				var m testChunk
				if err := c.dec.Unmarshal(body, &m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeReject measures the cost of rejecting a corrupted frame:
// the CRC is checked before any parsing.
func BenchmarkDecodeReject(b *testing.B) {
	c := mustCodec(b, 1024)
	_, f := chunkFor(b, c)
	f[100] ^= 1
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Decode(f); err == nil {
			b.Fatal("decoded")
		}
	}
}

func BenchmarkDeframer(b *testing.B) {
	c := mustCodec(b, 1024)
	_, f := chunkFor(b, c)
	rec := AppendStreamFrame(nil, f)
	d := NewDeframer(1024)
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		if _, fr, err := d.Feed(rec); fr == nil || err != nil {
			b.Fatal("no frame", err)
		}
	}
}
