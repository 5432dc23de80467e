package protocol

import (
	"errors"
	"fmt"
)

// Transfer message bounds. They bound what a decoder accepts; the transfer
// engine (protocol/transfer) may impose tighter limits of its own.
const (
	// MaxTransferSize bounds Offer.Size: 4 GiB.
	MaxTransferSize = 1 << 32
	// MinChunkSize and MaxChunkSize bound Offer.ChunkSize. A chunk carries at
	// least two 16-byte hashes when it is a hash block.
	MinChunkSize = 32
	MaxChunkSize = MaxMaxFrame
	// MaxChunks bounds the number of chunks of a transfer (data and hash
	// blocks together): 2^24, so a receiver's bitmap stays under 2 MiB.
	MaxChunks = 1 << 24
	// RootLen is the length of Offer.Root: a full SHA-256.
	RootLen = 32
	// SignatureLen is the length of an ed25519 signature.
	SignatureLen = 64
	// MaxTargetLen bounds Offer.Target (an image digest or a short name).
	MaxTargetLen = 48
	// MaxReportRanges bounds the missing ranges of one Report.
	MaxReportRanges = 4096
)

// Cancel reasons (Cancel.Reason). Values are part of the wire format.
const (
	// CancelByGround: the ground abandons the transfer (signed).
	CancelByGround uint8 = 1
	// CancelReplayed: the receiver refuses an offer for a transfer it has
	// already finished, or one older than the newest it finished.
	CancelReplayed uint8 = 2
	// CancelConflict: an offer reuses the id of another transfer.
	CancelConflict uint8 = 3
	// CancelResources: the receiver cannot take the transfer (too large,
	// too many at once).
	CancelResources uint8 = 4
	// CancelAck: the receiver acknowledges a ground cancel.
	CancelAck uint8 = 5
	// CancelRefused: the vehicle's acceptance policy refused the transfer
	// or abandoned it (a bundle for a plan it did not accept, a plan over
	// its storage quota, an operator's abort); the vehicle's events and
	// verification reports carry the detailed reason code.
	CancelRefused uint8 = 6
)

// Offer announces a transfer: the plan, signed by the ground with ed25519.
// The signature covers OfferSigningBytes (a fixed binary layout with a
// domain-separation prefix), not the CBOR encoding, and binds the offer to
// the one vehicle it is for: captured frames of one vehicle's transfer
// complete nothing on another.
type Offer struct {
	ID        uint64 `cbor:"1,keyasint,omitempty"` // transfer id, > 0, increasing per ground key
	KeyID     uint32 `cbor:"2,keyasint,omitempty"` // which ground key signed
	Size      uint64 `cbor:"3,keyasint,omitempty"` // data bytes, > 0
	ChunkSize uint32 `cbor:"4,keyasint,omitempty"` // bytes per chunk (the last data chunk may be shorter)
	Root      []byte `cbor:"5,keyasint,omitempty"` // hash tree root, RootLen bytes
	Target    []byte `cbor:"6,keyasint,omitempty"` // what the data is (opaque to the transfer), at most MaxTargetLen
	Sig       []byte `cbor:"7,keyasint,omitempty"` // ed25519 signature, SignatureLen bytes
	Vehicle   uint32 `cbor:"8,keyasint,omitempty"` // the vehicle the transfer is for
}

// Chunk carries one chunk of a transfer: a hash block (indices below the
// number of hash blocks) or data.
type Chunk struct {
	ID    uint64 `cbor:"1,keyasint,omitempty"`
	Index uint32 `cbor:"2,keyasint,omitempty"`
	Data  []byte `cbor:"3,keyasint,omitempty"`
}

// Report tells what the receiver holds durably. Every chunk below Watermark
// is journaled; in [Cursor, End) exactly the chunks in the Missing ranges
// are not; no chunk at or above High is. Missing is a list of pairs
// (gap, length): a range starts gap chunks after the end of the previous
// one (the first after Cursor) and is length chunks long.
type Report struct {
	ID        uint64  `cbor:"1,keyasint,omitempty"`
	Watermark uint32  `cbor:"2,keyasint,omitempty"`
	Cursor    uint32  `cbor:"3,keyasint,omitempty"`
	End       uint32  `cbor:"4,keyasint,omitempty"`
	High      uint32  `cbor:"5,keyasint,omitempty"`
	Last      uint32  `cbor:"6,keyasint,omitempty"` // 1 + index of the last chunk that arrived; 0: none since start
	Ack       uint64  `cbor:"7,keyasint,omitempty"` // Seq of the latest ReportRequest received
	Missing   Ranges  `cbor:"8,keyasint,omitempty"`
	NeedOffer bool    `cbor:"9,keyasint,omitempty"`  // the receiver does not know the transfer: send the offer
	MAC       *MACTag `cbor:"15,keyasint,omitempty"` // return-link authentication
}

// Ranges is the (gap, length) list of a Report. Its decoder rejects an
// array declaring more than 2*MaxReportRanges elements before allocating.
type Ranges []uint32

// UnmarshalCBOR implements cbor.Unmarshaler.
func (r *Ranges) UnmarshalCBOR(data []byte) error {
	var s []uint32
	if err := decodeBoundedArray(data, 2*MaxReportRanges, "report ranges", &s); err != nil {
		return err
	}
	*r = s
	return nil
}

// ReportRequest asks the receiver for a Report.
type ReportRequest struct {
	ID  uint64      `cbor:"1,keyasint,omitempty"`
	Seq uint64      `cbor:"2,keyasint,omitempty"`  // the sender's send sequence number, echoed in Report.Ack
	MAC *RequestTag `cbor:"15,keyasint,omitempty"` // the ground's MAC under the vehicle's key
}

// Complete says the receiver holds every chunk of the transfer, verified
// and durable.
type Complete struct {
	ID  uint64  `cbor:"1,keyasint,omitempty"`
	MAC *MACTag `cbor:"15,keyasint,omitempty"` // return-link authentication
}

// Cancel abandons a transfer. From the ground it must be signed
// (CancelSigningBytes) with the key of the transfer's offer and names the
// vehicle it is for; from the vehicle it is a refusal or an acknowledgement
// and carries no signature.
type Cancel struct {
	ID      uint64  `cbor:"1,keyasint,omitempty"`
	Reason  uint8   `cbor:"2,keyasint,omitempty"`
	Sig     []byte  `cbor:"3,keyasint,omitempty"`
	Vehicle uint32  `cbor:"4,keyasint,omitempty"`  // ground cancels: the vehicle the transfer is for
	MAC     *MACTag `cbor:"15,keyasint,omitempty"` // vehicle cancels: return-link authentication
}

// Type implements Message for each transfer message.
func (*Offer) Type() MsgType         { return TypeOffer }
func (*Chunk) Type() MsgType         { return TypeChunk }
func (*Report) Type() MsgType        { return TypeReport }
func (*ReportRequest) Type() MsgType { return TypeReportRequest }
func (*Complete) Type() MsgType      { return TypeComplete }
func (*Cancel) Type() MsgType        { return TypeCancel }

func init() {
	Register(TypeOffer, func() Message { return new(Offer) })
	Register(TypeChunk, func() Message { return new(Chunk) })
	Register(TypeReport, func() Message { return new(Report) })
	Register(TypeReportRequest, func() Message { return new(ReportRequest) })
	Register(TypeComplete, func() Message { return new(Complete) })
	Register(TypeCancel, func() Message { return new(Cancel) })
}

var errNoID = errors.New("transfer id is 0")

// Validate bounds the offer's fields. A missing signature is
// ErrUnauthenticated.
func (m *Offer) Validate() error {
	switch {
	case m.ID == 0:
		return errNoID
	case m.Size == 0 || m.Size > MaxTransferSize:
		return fmt.Errorf("offer size %d not in [1, %d]", m.Size, uint64(MaxTransferSize))
	case m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize:
		return fmt.Errorf("offer chunk size %d not in [%d, %d]", m.ChunkSize, MinChunkSize, MaxChunkSize)
	case (m.Size+uint64(m.ChunkSize)-1)/uint64(m.ChunkSize) > MaxChunks/2:
		return fmt.Errorf("%w: offer has %d data chunks, max %d", ErrLimit, (m.Size+uint64(m.ChunkSize)-1)/uint64(m.ChunkSize), MaxChunks/2)
	case len(m.Root) != RootLen:
		return fmt.Errorf("offer root is %d bytes, want %d", len(m.Root), RootLen)
	case len(m.Target) > MaxTargetLen:
		return fmt.Errorf("offer target is %d bytes, max %d", len(m.Target), MaxTargetLen)
	case len(m.Sig) == 0:
		return fmt.Errorf("%w: offer %d has no signature", ErrUnauthenticated, m.ID)
	case len(m.Sig) != SignatureLen:
		return fmt.Errorf("offer signature is %d bytes, want %d", len(m.Sig), SignatureLen)
	}
	return nil
}

// OfferSigningBytes is what the ground signs for an offer: a domain
// separation prefix, then Vehicle, ID, KeyID, Size, ChunkSize (big endian,
// 4, 8, 4, 8, 4 bytes), Root, one length byte and Target.
func OfferSigningBytes(m *Offer) []byte {
	b := make([]byte, 0, 100+len(m.Target))
	b = append(b, "bootorbit/transfer/offer/v2\x00"...)
	b = appendBE(b, uint64(m.Vehicle), 4)
	b = appendBE(b, m.ID, 8)
	b = appendBE(b, uint64(m.KeyID), 4)
	b = appendBE(b, m.Size, 8)
	b = appendBE(b, uint64(m.ChunkSize), 4)
	b = append(b, m.Root...)
	b = append(b, byte(len(m.Target)))
	return append(b, m.Target...)
}

// CancelSigningBytes is what the ground signs for a cancel: a domain
// separation prefix, the vehicle (4 bytes, big endian), the transfer id (8
// bytes, big endian) and the reason.
func CancelSigningBytes(m *Cancel) []byte {
	b := append([]byte(nil), "bootorbit/transfer/cancel/v2\x00"...)
	b = appendBE(b, uint64(m.Vehicle), 4)
	b = appendBE(b, m.ID, 8)
	return append(b, m.Reason)
}

func appendBE(b []byte, v uint64, n int) []byte {
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

// Validate bounds the chunk's fields.
func (m *Chunk) Validate() error {
	switch {
	case m.ID == 0:
		return errNoID
	case m.Index >= MaxChunks:
		return fmt.Errorf("chunk index %d, max %d", m.Index, MaxChunks-1)
	case len(m.Data) == 0:
		return errors.New("chunk has no data")
	case len(m.Data) > MaxChunkSize:
		return fmt.Errorf("chunk data is %d bytes, max %d", len(m.Data), MaxChunkSize)
	}
	return nil
}

// Validate checks the report's ranges are ordered, non-empty and inside
// [Cursor, End), and that Watermark <= Cursor <= End <= High <= MaxChunks.
func (m *Report) Validate() error {
	switch {
	case m.ID == 0:
		return errNoID
	case m.NeedOffer && (m.Watermark|m.Cursor|m.End|m.High|m.Last != 0 || len(m.Missing) != 0):
		return errors.New("report asking for the offer carries state")
	case !(m.Watermark <= m.Cursor && m.Cursor <= m.End && m.End <= m.High && m.High <= MaxChunks):
		return fmt.Errorf("report bounds out of order: watermark %d cursor %d end %d high %d", m.Watermark, m.Cursor, m.End, m.High)
	case m.Last > MaxChunks:
		return fmt.Errorf("report last %d, max %d", m.Last, MaxChunks)
	case len(m.Missing)%2 != 0:
		return errors.New("report missing ranges: odd count")
	case len(m.Missing) > 2*MaxReportRanges:
		return fmt.Errorf("%w: report has %d missing ranges, max %d", ErrLimit, len(m.Missing)/2, MaxReportRanges)
	}
	if err := m.MAC.check(); err != nil {
		return err
	}
	pos := uint64(m.Cursor)
	for i := 0; i < len(m.Missing); i += 2 {
		start := pos + uint64(m.Missing[i])
		if i > 0 && m.Missing[i] == 0 {
			return fmt.Errorf("report missing range %d touches the previous one", i/2)
		}
		if m.Missing[i+1] == 0 {
			return fmt.Errorf("report missing range %d is empty", i/2)
		}
		pos = start + uint64(m.Missing[i+1])
		if pos > uint64(m.End) {
			return fmt.Errorf("report missing range %d ends at %d, past end %d", i/2, pos, m.End)
		}
	}
	return nil
}

// Ranges calls fn for each missing range [start, end) of the report, in
// order. The report must have been validated.
func (m *Report) Ranges(fn func(start, end uint32)) {
	pos := m.Cursor
	for i := 0; i+1 < len(m.Missing); i += 2 {
		start := pos + m.Missing[i]
		pos = start + m.Missing[i+1]
		fn(start, pos)
	}
}

// Validate bounds the request.
func (m *ReportRequest) Validate() error {
	if m.ID == 0 {
		return errNoID
	}
	if m.MAC != nil && len(m.MAC.Sum) != MACLen {
		return fmt.Errorf("%w: request mac is %d bytes, want %d", ErrInvalidField, len(m.MAC.Sum), MACLen)
	}
	return nil
}

// Validate bounds the completion.
func (m *Complete) Validate() error {
	if m.ID == 0 {
		return errNoID
	}
	return m.MAC.check()
}

// Validate bounds the cancel. Whether a signature is required depends on
// the direction; the receiver of a ground cancel checks it.
func (m *Cancel) Validate() error {
	switch {
	case m.ID == 0:
		return errNoID
	case m.Reason == 0 || m.Reason > CancelRefused:
		return fmt.Errorf("cancel reason %d unknown", m.Reason)
	case len(m.Sig) != 0 && len(m.Sig) != SignatureLen:
		return fmt.Errorf("cancel signature is %d bytes, want %d", len(m.Sig), SignatureLen)
	case len(m.Sig) != 0 && m.MAC != nil:
		return errors.New("cancel carries both a ground signature and a vehicle mac")
	}
	return m.MAC.check()
}
