package xtce

import (
	"bytes"
	"errors"
	"fmt"
	"math"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// The bridge form is the fixed binary layout the XTCE document describes,
// for a bridge between groundd and a mission control system that decodes
// packets by their XTCE containers (Yamcs, COSMOS): big endian, most
// significant bit first, every item at its dictionary size in definition
// order, booleans as one byte (0 or 1), text and bytes at their largest
// size padded with zero bytes (text ends at its first zero byte).
//
//	telemetry: vehicle u32, packet_id u16, time i64 (ms), seq u32, parameters
//	event:     vehicle u32, event_id u16, severity u8, time i64, seq u32, text [64], arguments
//	command:   opcode u16, arguments
//
// A parameter the packet left out is zeros. Every argument of a command is
// present: the bridge form has no way to leave out an optional one.

// ErrBridge is wrapped by the errors of the bridge form's codec.
var ErrBridge = errors.New("xtce: bad bridge-form packet")

// EncodeTelemetry returns t in the bridge form; its parameters must decode
// with the dictionary.
func EncodeTelemetry(t *protocol.Telemetry) ([]byte, error) {
	p, ok := dict.PacketByID(t.Packet)
	if !ok {
		return nil, fmt.Errorf("%w: no telemetry packet %d", ErrBridge, t.Packet)
	}
	vals, err := p.Decode(t.Params)
	if err != nil {
		return nil, err
	}
	var w bitWriter
	env := envelope()
	w.put(&env[0], uint64(t.Vehicle))
	w.put(&env[1], uint64(t.Packet))
	w.put(&env[4], t.Time)
	w.put(&env[5], uint64(t.Seq))
	for i := range p.Params {
		w.put(&p.Params[i], vals[p.Params[i].Name])
	}
	return w.bytes()
}

// EncodeEvent returns e in the bridge form; its arguments must decode with
// the dictionary.
func EncodeEvent(e *protocol.Event) ([]byte, error) {
	d, ok := dict.EventByID(e.ID)
	if !ok {
		return nil, fmt.Errorf("%w: no event %d", ErrBridge, e.ID)
	}
	vals, err := d.Decode(e.Args)
	if err != nil {
		return nil, err
	}
	if len(e.Text) > dict.MaxEventText {
		return nil, fmt.Errorf("%w: event text of %d bytes, max %d", ErrBridge, len(e.Text), dict.MaxEventText)
	}
	var w bitWriter
	env := envelope()
	w.put(&env[0], uint64(e.Vehicle))
	w.put(&env[2], uint64(e.ID))
	w.put(&env[3], uint64(e.Severity))
	w.put(&env[4], e.Time)
	w.put(&env[5], uint64(e.Seq))
	w.put(&env[6], e.Text)
	for i := range d.Args {
		w.put(&d.Args[i], vals[d.Args[i].Name])
	}
	return w.bytes()
}

// EncodeCommand returns command name with args in the bridge form, every
// argument given.
func EncodeCommand(name string, args dict.Values) ([]byte, error) {
	c, ok := dict.CommandByName(name)
	if !ok {
		return nil, fmt.Errorf("%w: no command %q", ErrBridge, name)
	}
	pc, err := c.NewCommand(0, 1, args)
	if err != nil {
		return nil, err
	}
	norm, err := c.DecodeArgs(pc) // the values as the dictionary holds them
	if err != nil {
		return nil, err
	}
	var w bitWriter
	w.putBits(uint64(c.Opcode), 16)
	for i := range c.Args {
		f := &c.Args[i]
		v, ok := norm[f.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s: %s missing: the bridge form carries every argument", ErrBridge, name, f.Name)
		}
		w.put(f, v)
	}
	return w.bytes()
}

// DecodeCommand reads a command in the bridge form (from a mission control
// system that encoded it with the XTCE document) and returns it with its
// arguments, checked against the dictionary: what gateway.Request takes.
func DecodeCommand(b []byte) (*dict.Command, dict.Values, error) {
	r := bitReader{b: b}
	op, err := r.getBits(16)
	if err != nil {
		return nil, nil, err
	}
	c, ok := dict.CommandByOpcode(uint16(op))
	if !ok {
		return nil, nil, fmt.Errorf("%w: no command with opcode %d", ErrBridge, op)
	}
	vals := dict.Values{}
	for i := range c.Args {
		f := &c.Args[i]
		v, err := r.get(f)
		if err != nil {
			return nil, nil, fmt.Errorf("%w (%s.%s)", err, c.Name, f.Name)
		}
		vals[f.Name] = v
	}
	if r.off != 8*len(b) {
		return nil, nil, fmt.Errorf("%w: %s: %d bytes after the arguments", ErrBridge, c.Name, len(b)-r.off/8)
	}
	// The dictionary's checks: ranges, enumerations, UTF-8.
	if _, err := c.NewCommand(0, 1, vals); err != nil {
		return nil, nil, err
	}
	return c, vals, nil
}

// bitWriter writes big endian, most significant bit first.
type bitWriter struct {
	buf  []byte
	nbit int
	err  error
}

func (w *bitWriter) putBits(v uint64, n int) {
	for i := n - 1; i >= 0; i-- {
		if w.nbit%8 == 0 {
			w.buf = append(w.buf, 0)
		}
		if v>>i&1 == 1 {
			w.buf[len(w.buf)-1] |= 0x80 >> (w.nbit % 8)
		}
		w.nbit++
	}
}

// put writes v, a value of f's kind (as dict.Values holds them), in the
// bridge form; nil (a parameter left out) writes zeros.
func (w *bitWriter) put(f *dict.Field, v any) {
	if w.err != nil {
		return
	}
	bad := func() { w.err = fmt.Errorf("%w: %s: %T %v for a %v item", ErrBridge, f.Name, v, v, f.Kind) }
	switch f.Kind {
	case dict.Bool:
		b, ok := v.(bool)
		if !ok && v != nil {
			bad()
		}
		var u uint64
		if b {
			u = 1
		}
		w.putBits(u, 8)
	case dict.Uint, dict.Enum:
		u, ok := v.(uint64)
		if !ok && v != nil {
			bad()
		}
		w.putBits(u, f.Bits)
	case dict.Int:
		i, ok := v.(int64)
		if !ok && v != nil {
			bad()
		}
		w.putBits(uint64(i), f.Bits)
	case dict.Float:
		x, ok := v.(float64)
		if !ok && v != nil {
			bad()
		}
		if f.Bits == 32 {
			w.putBits(uint64(math.Float32bits(float32(x))), 32)
		} else {
			w.putBits(math.Float64bits(x), 64)
		}
	case dict.String, dict.Bytes:
		var b []byte
		switch x := v.(type) {
		case string:
			b = []byte(x)
		case []byte:
			b = x
		case nil:
		default:
			bad()
		}
		if len(b) > f.MaxLen {
			w.err = fmt.Errorf("%w: %s: %d bytes, max %d", ErrBridge, f.Name, len(b), f.MaxLen)
			return
		}
		for i := range f.MaxLen {
			var c byte
			if i < len(b) {
				c = b[i]
			}
			w.putBits(uint64(c), 8)
		}
	default:
		w.err = fmt.Errorf("%w: %s: kind %v", ErrBridge, f.Name, f.Kind)
	}
}

func (w *bitWriter) bytes() ([]byte, error) { return w.buf, w.err }

// bitReader reads what bitWriter writes.
type bitReader struct {
	b   []byte
	off int // bits
}

func (r *bitReader) getBits(n int) (uint64, error) {
	if r.off+n > 8*len(r.b) {
		return 0, fmt.Errorf("%w: truncated at bit %d", ErrBridge, r.off)
	}
	var v uint64
	for range n {
		v = v<<1 | uint64(r.b[r.off/8]>>(7-r.off%8)&1)
		r.off++
	}
	return v, nil
}

func (r *bitReader) get(f *dict.Field) (any, error) {
	switch f.Kind {
	case dict.Bool:
		u, err := r.getBits(8)
		if err == nil && u > 1 {
			err = fmt.Errorf("%w: boolean %d", ErrBridge, u)
		}
		return u == 1, err
	case dict.Uint, dict.Enum:
		return r.getBits(f.Bits)
	case dict.Int:
		u, err := r.getBits(f.Bits)
		if f.Bits < 64 && u>>(f.Bits-1)&1 == 1 {
			u |= ^uint64(0) << f.Bits // sign extension
		}
		return int64(u), err
	case dict.Float:
		u, err := r.getBits(f.Bits)
		if f.Bits == 32 {
			return float64(math.Float32frombits(uint32(u))), err
		}
		return math.Float64frombits(u), err
	case dict.String, dict.Bytes:
		b := make([]byte, f.MaxLen) // MaxLen is the dictionary's, not the input's
		for i := range b {
			u, err := r.getBits(8)
			if err != nil {
				return nil, err
			}
			b[i] = byte(u)
		}
		if f.Kind == dict.String {
			if i := bytes.IndexByte(b, 0); i >= 0 {
				b = b[:i]
			}
			return string(b), nil
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: %s: kind %v", ErrBridge, f.Name, f.Kind)
}
