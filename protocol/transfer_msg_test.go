package protocol

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
)

func testOffer() *Offer {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))
	o := &Offer{ID: 42, KeyID: 1, Vehicle: 7, Size: 1 << 20, ChunkSize: 238, Root: bytes.Repeat([]byte{0xaa}, RootLen), Target: []byte("sha256:0123")}
	o.Sig = ed25519.Sign(priv, OfferSigningBytes(o))
	return o
}

// TestTransferMessagesRoundTrip encodes and decodes one of each transfer
// message and checks each fits a 256-byte frame.
func TestTransferMessagesRoundTrip(t *testing.T) {
	c, err := NewCodec(256)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Message{
		testOffer(),
		&Chunk{ID: 42, Index: 65535, Data: bytes.Repeat([]byte{1}, 200)},
		&Report{ID: 42, Watermark: 10, Cursor: 12, End: 40, High: 50, Last: 33, Ack: 1 << 40, Missing: Ranges{0, 2, 5, 1}},
		&Report{ID: 42, NeedOffer: true},
		&ReportRequest{ID: 42, Seq: 7},
		&Complete{ID: 42},
		&Cancel{ID: 42, Reason: CancelByGround, Sig: bytes.Repeat([]byte{9}, SignatureLen)},
	}
	for _, m := range msgs {
		f, err := c.Encode(m)
		if err != nil {
			t.Fatalf("%v: %v", m.Type(), err)
		}
		got, err := c.Decode(f)
		if err != nil {
			t.Fatalf("%v: decode: %v", m.Type(), err)
		}
		f2, err := c.Encode(got)
		if err != nil || !bytes.Equal(f, f2) {
			t.Fatalf("%v: does not round-trip (%v)", m.Type(), err)
		}
		t.Logf("%v: %d bytes", m.Type(), len(f))
	}
}

// TestTransferMessagesValidate checks each bound names its field and the
// right sentinel.
func TestTransferMessagesValidate(t *testing.T) {
	o := testOffer()
	mod := func(f func(*Offer)) *Offer { c := *o; f(&c); return &c }
	cases := []struct {
		name string
		m    Validator
		want error // nil: any error
	}{
		{"offer id 0", mod(func(o *Offer) { o.ID = 0 }), nil},
		{"offer size 0", mod(func(o *Offer) { o.Size = 0 }), nil},
		{"offer too big", mod(func(o *Offer) { o.Size = MaxTransferSize + 1 }), nil},
		{"offer chunk small", mod(func(o *Offer) { o.ChunkSize = 31 }), nil},
		{"offer too many chunks", mod(func(o *Offer) { o.ChunkSize = 32; o.Size = MaxTransferSize }), ErrLimit},
		{"offer root", mod(func(o *Offer) { o.Root = o.Root[:31] }), nil},
		{"offer target", mod(func(o *Offer) { o.Target = make([]byte, MaxTargetLen+1) }), nil},
		{"offer unsigned", mod(func(o *Offer) { o.Sig = nil }), ErrUnauthenticated},
		{"offer sig length", mod(func(o *Offer) { o.Sig = o.Sig[:63] }), nil},
		{"chunk id 0", &Chunk{Index: 1, Data: []byte{1}}, nil},
		{"chunk empty", &Chunk{ID: 1}, nil},
		{"chunk index", &Chunk{ID: 1, Index: MaxChunks, Data: []byte{1}}, nil},
		{"report order", &Report{ID: 1, Watermark: 5, Cursor: 4, End: 6, High: 6}, nil},
		{"report high", &Report{ID: 1, High: MaxChunks + 1, End: MaxChunks + 1, Cursor: MaxChunks + 1, Watermark: MaxChunks + 1}, nil},
		{"report odd ranges", &Report{ID: 1, End: 9, High: 9, Missing: Ranges{1}}, nil},
		{"report empty range", &Report{ID: 1, End: 9, High: 9, Missing: Ranges{1, 0}}, nil},
		{"report touching ranges", &Report{ID: 1, End: 9, High: 9, Missing: Ranges{1, 1, 0, 1}}, nil},
		{"report range past end", &Report{ID: 1, End: 9, High: 9, Missing: Ranges{5, 5}}, nil},
		{"report range overflow", &Report{ID: 1, End: 9, High: 9, Missing: Ranges{0xffffffff, 0xffffffff}}, nil},
		{"report too many ranges", &Report{ID: 1, End: 9, High: 9, Missing: make(Ranges, 2*MaxReportRanges+2)}, ErrLimit},
		{"report need-offer with state", &Report{ID: 1, NeedOffer: true, High: 3, End: 3}, nil},
		{"request id 0", &ReportRequest{}, nil},
		{"complete id 0", &Complete{}, nil},
		{"cancel reason", &Cancel{ID: 1, Reason: 99}, nil},
		{"cancel sig", &Cancel{ID: 1, Reason: 1, Sig: []byte{1}}, nil},
	}
	for _, c := range cases {
		err := c.m.Validate()
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if err := o.Validate(); err != nil {
		t.Errorf("valid offer: %v", err)
	}
}

// TestReportRangesBounded checks a report declaring more ranges than
// allowed is refused by the decoder before it allocates for them.
func TestReportRangesBounded(t *testing.T) {
	c, err := NewCodec(MaxMaxFrame)
	if err != nil {
		t.Fatal(err)
	}
	r := &Report{ID: 1, End: 60000, High: 60000}
	big := make(Ranges, 0, 2*MaxReportRanges+2)
	for i := 0; i < MaxReportRanges+1; i++ {
		big = append(big, 1, 1)
	}
	r.Missing = big
	body, err := encMode.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	frame := append([]byte{frameArrayHead, Version, byte(TypeReport)}, body...)
	frame = append(frame, crcHead)
	frame = append(frame, byte(Checksum(frame)>>24), byte(Checksum(frame)>>16), byte(Checksum(frame)>>8), byte(Checksum(frame)))
	if _, err := c.Decode(frame); !errors.Is(err, ErrLimit) {
		t.Fatalf("oversized report: %v, want ErrLimit", err)
	}
}

// FuzzTransferDecode decodes arbitrary frames as transfer messages: no
// panic, and whatever decodes re-encodes to the same frame and validates.
func FuzzTransferDecode(f *testing.F) {
	c, err := NewCodec(1024)
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range []Message{testOffer(), &Chunk{ID: 1, Index: 3, Data: []byte("abc")},
		&Report{ID: 1, Cursor: 1, End: 9, High: 12, Missing: Ranges{1, 2, 3, 1}}, &ReportRequest{ID: 1, Seq: 2},
		&Complete{ID: 1}, &Cancel{ID: 1, Reason: CancelAck},
		&Complete{ID: 1, MAC: &MACTag{Key: 1, Epoch: 2, Counter: 300, Sum: make([]byte, MACLen)}},
		&ReportRequest{ID: 1, Seq: 2, MAC: &RequestTag{Key: 1, Sum: make([]byte, MACLen)}}} {
		b, err := c.Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := c.Decode(frame)
		if err != nil {
			return
		}
		if v, ok := m.(Validator); ok {
			if err := v.Validate(); err != nil {
				t.Fatalf("decoded %v fails Validate: %v", m.Type(), err)
			}
		}
		if r, ok := m.(*Report); ok {
			n := 0
			r.Ranges(func(s, e uint32) {
				if s < r.Cursor || e > r.End || s >= e {
					t.Fatalf("range [%d,%d) outside [%d,%d)", s, e, r.Cursor, r.End)
				}
				n++
			})
		}
		b, err := c.Encode(m)
		if err != nil || !bytes.Equal(b, frame) {
			t.Fatalf("%v does not re-encode to the same frame: %v", m.Type(), err)
		}
	})
}
