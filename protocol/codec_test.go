package protocol

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// Test-only message types live at 240..249 so they never collide with real
// ones (transfer 1..15, CMD/TLM 16..31).
const (
	typeTestChunk  MsgType = 240
	typeTestAny    MsgType = 241
	typeTestBound  MsgType = 242
	typeTestSmall  MsgType = 20 // a one-byte type head, unregistered on purpose
	typeTestStruct MsgType = 243
)

// testChunk is shaped like a transfer data chunk: ids, an offset, the data.
type testChunk struct {
	Transfer uint64 `cbor:"1,keyasint"`
	Part     uint32 `cbor:"2,keyasint,omitempty"`
	Index    uint64 `cbor:"3,keyasint,omitempty"`
	Data     []byte `cbor:"4,keyasint"`
}

func (*testChunk) Type() MsgType { return typeTestChunk }

// testAny holds arbitrary CBOR, to feed nesting and count bombs to the decoder.
type testAny struct {
	V any `cbor:"1,keyasint,omitempty"`
}

func (*testAny) Type() MsgType { return typeTestAny }

// testBound has a Validate method.
type testBound struct {
	N    uint64   `cbor:"1,keyasint,omitempty"`
	List []uint32 `cbor:"2,keyasint,omitempty"`
	Name string   `cbor:"3,keyasint,omitempty"`
}

func (*testBound) Type() MsgType { return typeTestBound }

func (b *testBound) Validate() error {
	if b.N > 1000 {
		return fmt.Errorf("n %d > 1000", b.N)
	}
	if len(b.List) > 8 {
		return fmt.Errorf("%w: list has %d items, max 8", ErrLimit, len(b.List))
	}
	return nil
}

func init() {
	Register(typeTestChunk, func() Message { return new(testChunk) })
	Register(typeTestAny, func() Message { return new(testAny) })
	Register(typeTestBound, func() Message { return new(testBound) })
}

func mustCodec(t testing.TB, max int) *Codec {
	t.Helper()
	c, err := NewCodec(max)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewCodecBounds(t *testing.T) {
	for _, n := range []int{-1, 0, 255, 65537, 1 << 20} {
		if _, err := NewCodec(n); err == nil {
			t.Errorf("NewCodec(%d) succeeded", n)
		}
	}
	for _, n := range []int{256, 1024, 65536} {
		c, err := NewCodec(n)
		if err != nil {
			t.Fatalf("NewCodec(%d): %v", n, err)
		}
		if c.MaxFrame() != n {
			t.Errorf("MaxFrame = %d, want %d", c.MaxFrame(), n)
		}
	}
}

func TestChecksumParameters(t *testing.T) {
	// The CRC-32C check value from the catalogue of parametrised CRCs.
	if got := Checksum([]byte("123456789")); got != 0xE3069283 {
		t.Fatalf("CRC-32C check value %08x, want e3069283", got)
	}
}

func TestRoundTrip(t *testing.T) {
	c := mustCodec(t, 1024)
	msgs := []Message{
		&testChunk{Transfer: 7, Part: 2, Index: 99, Data: []byte("hello")},
		&testChunk{Transfer: 1<<64 - 1, Data: []byte{}},
		&testChunk{},
		&testBound{N: 1000, List: []uint32{1, 2, 3}, Name: "x"},
		&testBound{},
		&testAny{V: []any{uint64(1), "a", []byte{2}}},
	}
	for _, m := range msgs {
		f, err := c.Encode(m)
		if err != nil {
			t.Fatalf("Encode(%#v): %v", m, err)
		}
		got, err := c.Decode(f)
		if err != nil {
			t.Fatalf("Decode(%x): %v", f, err)
		}
		f2, err := c.Encode(got)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f, f2) {
			t.Fatalf("re-encode differs:\n%x\n%x", f, f2)
		}
		if got.Type() != m.Type() {
			t.Fatalf("type %v, want %v", got.Type(), m.Type())
		}
	}
}

// TestFrameLayout pins the exact bytes of a frame: the layout docs/protocol.md
// documents with this same example.
func TestFrameLayout(t *testing.T) {
	c := mustCodec(t, 256)
	f, err := c.Encode(&testChunk{Transfer: 7, Index: 3, Data: []byte{0xde, 0xad}})
	if err != nil {
		t.Fatal(err)
	}
	// 84 array(4); 02 version 2; 18 f0 type 240; a3 map(3): 01 07, 03 03, 04 42 de ad;
	// 44 + crc32c of everything before the crc bytes.
	head := "840218f0a30107030304 42dead44"
	head = strings.ReplaceAll(head, " ", "")
	if got := hex.EncodeToString(f[:len(f)-4]); got != head {
		t.Fatalf("frame %s, want %s", got, head)
	}
	if crc := binary.BigEndian.Uint32(f[len(f)-4:]); crc != Checksum(f[:len(f)-4]) {
		t.Fatalf("crc %08x", crc)
	}
	t.Logf("frame: % x", f)
}

func TestAppendEncode(t *testing.T) {
	c := mustCodec(t, 256)
	m := &testChunk{Transfer: 1, Data: []byte("abc")}
	f1, err := c.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	prefix := []byte("prefix")
	out, err := c.AppendEncode(append([]byte(nil), prefix...), m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, append(prefix, f1...)) {
		t.Fatalf("AppendEncode = %x", out)
	}
	// Too large: dst comes back at its old length.
	big := &testChunk{Transfer: 1, Data: make([]byte, 300)}
	out, err = c.AppendEncode([]byte("keep"), big)
	if !errors.Is(err, ErrFrameTooLarge) || string(out) != "keep" {
		t.Fatalf("AppendEncode too large: %q, %v", out, err)
	}
}

// chunkOverhead returns the largest Data length whose frame fits max, and the
// overhead (frame length minus data length) of that frame.
func chunkOverhead(t testing.TB, c *Codec, m *testChunk) (data, overhead int) {
	for n := c.MaxFrame(); n >= 0; n-- {
		m.Data = make([]byte, n)
		f, err := c.Encode(m)
		if err == nil {
			if len(f) > c.MaxFrame() {
				t.Fatalf("frame %d > max %d", len(f), c.MaxFrame())
			}
			return n, len(f) - n
		}
		if !errors.Is(err, ErrFrameTooLarge) {
			t.Fatal(err)
		}
	}
	t.Fatal("nothing fits")
	return 0, 0
}

// TestChunkOverhead measures the bytes a chunk-like message spends on
// anything but data, at the frame sizes the link profiles use.
func TestChunkOverhead(t *testing.T) {
	for _, max := range []int{256, 1024, 65536} {
		c := mustCodec(t, max)
		// Realistic ids: a 32-bit transfer id, part 3, a chunk index in the thousands.
		data, ov := chunkOverhead(t, c, &testChunk{Transfer: 0x9abcdef0, Part: 3, Index: 4000})
		t.Logf("max frame %5d: %5d data bytes, overhead %2d bytes (%.2f%%), of which frame %d (test type %d has a 2-byte type head)",
			max, data, ov, 100*float64(ov)/float64(max), FrameOverhead+1, typeTestChunk)
		// Frame (8, +1 for a test type >= 24) + map head (1) + keys (4) +
		// ids (5+1+3) + bstr head (<=3). A real type (< 24) saves one byte.
		if ov > 9+1+4+5+1+3+3 {
			t.Errorf("overhead %d bytes at %d", ov, max)
		}
	}
}

func TestRegisterPanics(t *testing.T) {
	cases := map[string]func(){
		"nil":       func() { Register(244, nil) },
		"nil msg":   func() { Register(244, func() Message { return nil }) },
		"duplicate": func() { Register(typeTestChunk, func() Message { return new(testChunk) }) },
		"wrong type": func() {
			Register(245, func() Message { return new(testChunk) })
		},
		"not pointer": func() { Register(typeTestStruct, func() Message { return valueMsg{} }) },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			f()
		})
	}
}

type valueMsg struct{}

func (valueMsg) Type() MsgType { return typeTestStruct }

func TestEncodeValidates(t *testing.T) {
	c := mustCodec(t, 256)
	_, err := c.Encode(&testBound{N: 1001})
	if !errors.Is(err, ErrInvalidField) {
		t.Fatalf("Encode invalid: %v", err)
	}
	_, err = c.Encode(&testBound{List: make([]uint32, 9)})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("Encode over limit: %v", err)
	}
	if _, err := c.Encode(nil); !errors.Is(err, ErrInvalidField) {
		t.Fatalf("Encode(nil): %v", err)
	}
	// A type the codec cannot decode is not encoded either.
	if _, err := c.Encode(valueMsg{}); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("Encode(unregistered type): %v", err)
	}
}

// TestTransferChunkOverhead measures the real transfer Chunk (registered by
// transfer_msg.go) the same way, through the registry so this test does not
// depend on the Chunk's field names beyond "a []byte field holds the data".
func TestTransferChunkOverhead(t *testing.T) {
	newMsg := registry[TypeChunk]
	if newMsg == nil {
		t.Skip("no transfer Chunk registered")
	}
	for _, id := range []uint64{7, 1 << 40, 1<<64 - 1} {
		for _, max := range []int{256, 1024} {
			c := mustCodec(t, max)
			m := newMsg()
			rv := reflect.ValueOf(m).Elem()
			var data reflect.Value
			for i := range rv.NumField() {
				switch f := rv.Field(i); {
				case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Uint8:
					data = f
				case f.CanUint() && f.CanSet() && f.Type().Bits() == 64:
					f.SetUint(id) // the transfer id
				case f.CanUint() && f.CanSet():
					f.SetUint(4000) // an index in the thousands
				}
			}
			if !data.IsValid() {
				t.Skip("Chunk has no []byte field")
			}
			n := max
			for ; n > 0; n-- {
				data.SetBytes(make([]byte, n))
				if f, err := c.Encode(m); err == nil {
					t.Logf("Chunk, id %#x, max frame %4d: %4d data bytes, overhead %d bytes (%.2f%%)",
						id, max, n, len(f)-n, 100*float64(len(f)-n)/float64(max))
					if len(f) > max {
						t.Fatalf("frame of %d bytes", len(f))
					}
					break
				}
			}
			if n == 0 {
				t.Fatalf("no chunk fits %d", max)
			}
		}
	}
}

func TestDecodeDoesNotAlias(t *testing.T) {
	c := mustCodec(t, 1024)
	for _, m := range sampleMessages(t) {
		f, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Decode(f)
		if err != nil {
			t.Fatal(err)
		}
		before, _ := c.Encode(got)
		for i := range f {
			f[i] = 0xaa
		}
		after, _ := c.Encode(got)
		if !bytes.Equal(before, after) {
			t.Fatalf("%v message changed with its frame buffer", m.Type())
		}
	}
}

// TestCodecConcurrent shares one Codec and one Counters between goroutines
// (run with -race to check the "safe for concurrent use" promises).
func TestCodecConcurrent(t *testing.T) {
	c := mustCodec(t, 1024)
	msgs := sampleMessages(t)
	var ctr Counters
	done := make(chan error)
	for g := range 4 {
		go func() {
			for i := range 200 {
				m := msgs[(g+i)%len(msgs)]
				f, err := c.Encode(m)
				if err != nil {
					done <- err
					return
				}
				if _, err := c.Decode(f); err != nil {
					done <- err
					return
				}
				f[len(f)-1] ^= 1
				_, err = c.Decode(f)
				ctr.Count(err)
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if got := ctr.Get(ReasonChecksum); got != 800 {
		t.Fatalf("checksum count %d, want 800", got)
	}
}
