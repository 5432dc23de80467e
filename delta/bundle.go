package delta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"
	"github.com/opencontainers/go-digest"
)

// Magic opens every bundle file; the version follows in the header.
const Magic = "BODELTA\n"

// Version is the bundle format version this package writes and reads.
const Version = 1

// Limits on what a bundle may declare. A decoder checks every count and
// length against these before it allocates or trusts anything.
const (
	MaxHeaderSize  = 64 << 20 // the CBOR header
	MaxLayers      = 4096
	MaxParts       = 1 << 16        // per layer
	MaxRanges      = 1 << 16        // per part
	MaxPartOut     = 1 << 30        // output bytes of one part
	MaxStreamRaw   = 1 << 30        // decompressed bytes of one stream
	MaxConfigSize  = 8 << 20        // the target image config
	MaxPathLen     = 4096           // a path naming a base range
	MaxWindow      = 8 << 20        // zstd window of the diff and lit streams
	MaxSmallWindow = 1 << 20        // zstd window of the ops and run streams
	maxDecoderMem  = 2 * MaxWindow  // zstd decoder memory bound
	maxLayerSize   = int64(1) << 46 // 64 TiB: larger is certainly hostile
	maxPayloadSize = int64(1) << 46
)

// ApplyMemoryBound is the most heap an apply needs, whatever the layer size:
// the windows of the zstd stream decoders (8 MiB each for diff and lit; the
// ops and run streams are written with 1 MiB), their block buffers, and the
// fixed copy buffers. Measured by TestApplyMemoryBound.
const ApplyMemoryBound = 32 << 20

// Decisions for a target layer.
const (
	Reuse = "reuse" // the vehicle holds a layer with this diff_id
	Delta = "delta" // rebuilt from parts that reference base layers
	Full  = "full"  // rebuilt from parts that reference nothing
)

// Errors. Every error from this package wraps one of these.
var (
	ErrFormat       = errors.New("delta: malformed bundle")
	ErrLimit        = errors.New("delta: bundle exceeds a limit")
	ErrBaseMismatch = errors.New("delta: base mismatch")
	ErrBaseMissing  = errors.New("delta: base layer missing")
	ErrOutput       = errors.New("delta: output does not match")
)

// Header is the bundle's self-description, CBOR-encoded (core deterministic)
// after the magic and a 4-byte big-endian length. Payload offsets are
// relative to the first byte after the header.
type Header struct {
	Version int `cbor:"v"`
	// Base is the diff_ids of the layers the bundle references (the old
	// image's layers), bottom first; ranges name them by index.
	Base []digest.Digest `cbor:"base"`
	// Config is the target image's config, verbatim: its diff_ids are the
	// layers the bundle rebuilds.
	Config []byte `cbor:"config"`
	// Tag is the name the target image had on the ground (may be empty).
	Tag string `cbor:"tag,omitempty"`
	// Annotations are the target manifest's, so that the vehicle writes an
	// equivalent manifest.
	Annotations map[string]string `cbor:"ann,omitempty"`
	Layers      []LayerPlan       `cbor:"layers"`
	PayloadSize int64             `cbor:"psize"`
}

// LayerPlan says how one target layer is rebuilt.
type LayerPlan struct {
	DiffID   digest.Digest `cbor:"diff_id"`
	Size     int64         `cbor:"size"` // of the uncompressed tar
	Decision string        `cbor:"dec"`
	Parts    []Part        `cbor:"parts,omitempty"`
}

// Part is an independently applicable unit: it rebuilds the layer bytes
// [OutOff, OutOff+OutSize) from its payload and the base ranges it lists.
type Part struct {
	OutOff    int64  `cbor:"out_off"`
	OutSize   int64  `cbor:"out_size"`
	OutDigest []byte `cbor:"out_sha256"` // sha256 of this part's output
	// Payload is where the part's streams lie in the payload area.
	PayloadOff    int64  `cbor:"off"`
	PayloadSize   int64  `cbor:"len"`
	PayloadDigest []byte `cbor:"sha256"`
	// Streams gives, for the ops, zero-runs, nonzero-runs, diff and lit
	// streams in that order, the compressed and decompressed lengths. The
	// compressed streams are consecutive.
	Streams [numStreams]Stream `cbor:"streams"`
	// Ranges are the base bytes the part reads, in the order of the
	// part's virtual base (their concatenation).
	Ranges []Range `cbor:"ranges,omitempty"`
}

// Stream is one zstd frame of a part.
type Stream struct {
	Len int64 `cbor:"len"` // compressed
	Raw int64 `cbor:"raw"` // decompressed
}

// Range is a stretch of a base layer's uncompressed tar that a part reads,
// with the digest it must have.
type Range struct {
	Layer  int    `cbor:"layer"` // index into Header.Base
	Off    int64  `cbor:"off"`
	Len    int64  `cbor:"len"`
	Digest []byte `cbor:"sha256"`
	Path   string `cbor:"path,omitempty"` // the first file in the range, for messages
	Files  int    `cbor:"files,omitempty"`
}

var encMode = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

var decMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		MaxNestedLevels:   8,
		MaxArrayElements:  max(MaxParts, MaxRanges, MaxLayers), // the longest array a valid header holds
		MaxMapPairs:       1024,
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// writeHeader writes the magic, the header length and the header.
func writeHeader(w io.Writer, h *Header) (int64, error) {
	b, err := encMode.Marshal(h)
	if err != nil {
		return 0, fmt.Errorf("delta: encode header: %w", err)
	}
	if len(b) > MaxHeaderSize {
		return 0, fmt.Errorf("%w: header of %d bytes", ErrLimit, len(b))
	}
	var pre [len(Magic) + 4]byte
	copy(pre[:], Magic)
	binary.BigEndian.PutUint32(pre[len(Magic):], uint32(len(b)))
	if _, err := w.Write(pre[:]); err != nil {
		return 0, err
	}
	if _, err := w.Write(b); err != nil {
		return 0, err
	}
	return int64(len(pre) + len(b)), nil
}

// ReadHeader reads and validates a bundle's header from r and returns it with
// the offset of the payload area. size is the bundle's total size.
func ReadHeader(r io.ReaderAt, size int64) (*Header, int64, error) {
	var pre [len(Magic) + 4]byte
	if _, err := r.ReadAt(pre[:], 0); err != nil {
		return nil, 0, fmt.Errorf("%w: reading magic: %v", ErrFormat, err)
	}
	if string(pre[:len(Magic)]) != Magic {
		return nil, 0, fmt.Errorf("%w: not a delta bundle (bad magic)", ErrFormat)
	}
	n := int64(binary.BigEndian.Uint32(pre[len(Magic):]))
	if n > MaxHeaderSize {
		return nil, 0, fmt.Errorf("%w: header of %d bytes (max %d)", ErrLimit, n, MaxHeaderSize)
	}
	if int64(len(pre))+n > size {
		return nil, 0, fmt.Errorf("%w: header of %d bytes in a bundle of %d", ErrFormat, n, size)
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, int64(len(pre))); err != nil {
		return nil, 0, fmt.Errorf("%w: reading header: %v", ErrFormat, err)
	}
	h, err := DecodeHeader(b)
	if err != nil {
		return nil, 0, err
	}
	start := int64(len(pre)) + n
	if h.PayloadSize != size-start {
		return nil, 0, fmt.Errorf("%w: payload of %d bytes, header says %d", ErrFormat, size-start, h.PayloadSize)
	}
	return h, start, nil
}

// DecodeHeader decodes and validates a CBOR header.
func DecodeHeader(b []byte) (*Header, error) {
	if err := decMode.Wellformed(b); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	if err := checkElementSizes(b); err != nil {
		return nil, err
	}
	var h Header
	if err := decMode.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	if err := h.validate(); err != nil {
		return nil, err
	}
	return &h, nil
}

// minElement is, for the arrays under these header keys, fewer bytes than
// the smallest valid element encodes in (a part carries two 32-byte
// digests and five streams, a range a 32-byte digest, a layer its diff_id).
// Checked before decoding, it keeps the decoded header within a small
// multiple of its encoded size: without it, a one-byte empty map per
// element would decode to a part of some 180 bytes.
var minElement = map[string]int{"layers": 64, "parts": 100, "ranges": 40}

// checkElementSizes walks the well-formed CBOR b and rejects an array
// under a key of minElement with an element shorter than its minimum.
func checkElementSizes(b []byte) error {
	var walk func(i int, key string) (int, error)
	walk = func(i int, key string) (int, error) {
		if i >= len(b) {
			return 0, formatf("header: truncated")
		}
		major, ai := b[i]>>5, b[i]&31
		i++
		var v uint64
		switch {
		case ai < 24:
			v = uint64(ai)
		case ai <= 27:
			n := 1 << (ai - 24)
			if len(b)-i < n {
				return 0, formatf("header: truncated")
			}
			for _, c := range b[i : i+n] {
				v = v<<8 | uint64(c)
			}
			i += n
		default:
			return 0, formatf("header: indefinite or reserved length")
		}
		var err error
		switch major {
		case 2, 3: // byte and text strings
			if v > uint64(len(b)-i) {
				return 0, formatf("header: truncated")
			}
			i += int(v)
		case 4: // array: each element consumes at least a byte
			for k := uint64(0); k < v; k++ {
				start := i
				if i, err = walk(i, ""); err != nil {
					return 0, err
				}
				if m := minElement[key]; i-start < m {
					return 0, formatf("header: %s element %d of %d bytes is too short to be valid (min %d)", key, k, i-start, m)
				}
			}
		case 5: // map: text keys name the arrays they hold
			for k := uint64(0); k < v; k++ {
				name := ""
				if i < len(b) && b[i]>>5 == 3 && b[i]&31 < 24 && int(b[i]&31) <= len(b)-i-1 {
					name = string(b[i+1 : i+1+int(b[i]&31)])
				}
				if i, err = walk(i, ""); err != nil {
					return 0, err
				}
				if i, err = walk(i, name); err != nil {
					return 0, err
				}
			}
		case 6: // tag
			return walk(i, key)
		}
		return i, nil
	}
	// Recursion depth is bounded: decMode.Wellformed has checked the
	// nesting against MaxNestedLevels.
	_, err := walk(0, "")
	return err
}

func formatf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}

// validate checks every field a decoder of outside input must not trust.
func (h *Header) validate() error {
	if h.Version != Version {
		return fmt.Errorf("%w: version %d (this reader knows %d)", ErrFormat, h.Version, Version)
	}
	if len(h.Base) > MaxLayers || len(h.Layers) > MaxLayers {
		return fmt.Errorf("%w: %d base layers, %d target layers (max %d)", ErrLimit, len(h.Base), len(h.Layers), MaxLayers)
	}
	if len(h.Config) > MaxConfigSize {
		return fmt.Errorf("%w: config of %d bytes", ErrLimit, len(h.Config))
	}
	if h.PayloadSize < 0 || h.PayloadSize > maxPayloadSize {
		return formatf("payload size %d", h.PayloadSize)
	}
	for i, d := range h.Base {
		if err := d.Validate(); err != nil {
			return formatf("base layer %d: %v", i, err)
		}
	}
	for i := range h.Layers {
		if err := h.Layers[i].validate(h); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return nil
}

func (l *LayerPlan) validate(h *Header) error {
	if err := l.DiffID.Validate(); err != nil {
		return formatf("diff_id: %v", err)
	}
	if l.DiffID.Algorithm() != digest.SHA256 {
		return formatf("diff_id %s: only sha256 is supported", l.DiffID)
	}
	if l.Size < 0 || l.Size > maxLayerSize {
		return formatf("size %d", l.Size)
	}
	if len(l.Parts) > MaxParts {
		return fmt.Errorf("%w: %d parts", ErrLimit, len(l.Parts))
	}
	switch l.Decision {
	case Reuse:
		if len(l.Parts) != 0 {
			return formatf("reused layer with parts")
		}
		return nil
	case Delta, Full:
	default:
		return formatf("decision %q", l.Decision)
	}
	var out int64
	for j := range l.Parts {
		p := &l.Parts[j]
		if err := p.validate(h); err != nil {
			return fmt.Errorf("part %d: %w", j, err)
		}
		if p.OutOff != out {
			return formatf("part %d starts at %d, previous ended at %d", j, p.OutOff, out)
		}
		out += p.OutSize
	}
	if out != l.Size {
		return formatf("parts cover %d bytes of %d", out, l.Size)
	}
	return nil
}

func (p *Part) validate(h *Header) error {
	if p.OutSize <= 0 || p.OutSize > MaxPartOut {
		return fmt.Errorf("%w: part output of %d bytes", ErrLimit, p.OutSize)
	}
	if len(p.OutDigest) != 32 || len(p.PayloadDigest) != 32 {
		return formatf("digest length")
	}
	if p.PayloadOff < 0 || p.PayloadSize < 0 || p.PayloadOff > h.PayloadSize || p.PayloadSize > h.PayloadSize-p.PayloadOff {
		return formatf("payload [%d,+%d) outside %d bytes", p.PayloadOff, p.PayloadSize, h.PayloadSize)
	}
	var sum int64
	for i, s := range p.Streams {
		// Each stream must fit in what the payload has left, so that the
		// sum cannot wrap around and a stream never reaches past its part.
		if s.Len < 0 || s.Len > p.PayloadSize-sum || s.Raw < 0 || s.Raw > MaxStreamRaw {
			return formatf("stream %d lengths %d/%d in a payload of %d", i, s.Len, s.Raw, p.PayloadSize)
		}
		sum += s.Len
	}
	if sum != p.PayloadSize {
		return formatf("streams total %d bytes, payload %d", sum, p.PayloadSize)
	}
	if len(p.Ranges) > MaxRanges {
		return fmt.Errorf("%w: %d base ranges", ErrLimit, len(p.Ranges))
	}
	for i, r := range p.Ranges {
		// Ranges are sorted and disjoint, so that a part never makes the
		// vehicle read (and hash) more than the base holds.
		if i > 0 {
			q := p.Ranges[i-1]
			if r.Layer < q.Layer || (r.Layer == q.Layer && r.Off < q.Off+q.Len) {
				return formatf("range %d overlaps or precedes range %d", i, i-1)
			}
		}
		if r.Layer < 0 || r.Layer >= len(h.Base) {
			return formatf("range %d: base layer %d of %d", i, r.Layer, len(h.Base))
		}
		if r.Off < 0 || r.Len <= 0 || r.Off > maxLayerSize || r.Len > maxLayerSize {
			return formatf("range %d: [%d,+%d)", i, r.Off, r.Len)
		}
		if len(r.Digest) != 32 {
			return formatf("range %d: digest length %d", i, len(r.Digest))
		}
		if len(r.Path) > MaxPathLen {
			return fmt.Errorf("%w: range %d: path of %d bytes", ErrLimit, i, len(r.Path))
		}
	}
	return nil
}

// Encode is a convenience for tests and tools: the header as CBOR.
func (h *Header) Encode() ([]byte, error) {
	var buf bytes.Buffer
	if _, err := writeHeader(&buf, h); err != nil {
		return nil, err
	}
	return buf.Bytes()[len(Magic)+4:], nil
}
