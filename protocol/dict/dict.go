package dict

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"

	"github.com/bootorbit/bootorbit/protocol"
)

// ErrValue is wrapped by every error about a value that does not match its
// definition (wrong type, out of range, unknown label, too long, missing,
// unknown id). Errors start with "dict: ".
var ErrValue = errors.New("dict: bad value")

// Kind is the type of an argument, parameter or event argument.
type Kind uint8

// Kinds.
const (
	Bool   Kind = iota + 1 // 1 bit
	Uint                   // unsigned integer of Bits bits
	Int                    // two's complement integer of Bits bits
	Float                  // IEEE 754 of Bits (32 or 64) bits
	String                 // UTF-8 text of at most MaxLen bytes
	Bytes                  // binary of at most MaxLen bytes
	Enum                   // unsigned integer of Bits bits with labelled values
)

var kindNames = [...]string{Bool: "bool", Uint: "uint", Int: "int", Float: "float", String: "string", Bytes: "bytes", Enum: "enum"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Label is one value of an enumeration.
type Label struct {
	Value       uint64
	Name        string
	Description string
}

// Enumeration is a named set of labelled values, shared by the items that
// use it (one enumeration type in XTCE).
type Enumeration struct {
	Name        string
	Description string
	Labels      []Label
}

// Lookup returns the label of value v.
func (e *Enumeration) Lookup(v uint64) (Label, bool) {
	for _, l := range e.Labels {
		if l.Value == v {
			return l, true
		}
	}
	return Label{}, false
}

// Value returns the value labelled name.
func (e *Enumeration) Value(name string) (uint64, bool) {
	for _, l := range e.Labels {
		if l.Name == name {
			return l.Value, true
		}
	}
	return 0, false
}

// NameOf returns the label name of v, or "name(v)" for a value without one.
func (e *Enumeration) NameOf(v uint64) string {
	if l, ok := e.Lookup(v); ok {
		return l.Name
	}
	return fmt.Sprintf("%s(%d)", e.Name, v)
}

// Range bounds an Uint, Int or Enum item: Min <= v <= Max. For an Int item
// the bounds are compared as int64.
type Range struct {
	Min, Max uint64
}

// Field is one typed item: a command argument, a telemetry parameter or an
// event argument.
type Field struct {
	// ID is the telemetry parameter id (unique over all packets); 0 for
	// command and event arguments, which are positional.
	ID          uint16
	Name        string
	Description string
	Kind        Kind
	// Bits is the size of a Bool (1), Uint, Int or Enum (1..64) or Float
	// (32 or 64) item. String and Bytes items have MaxLen instead.
	Bits   int
	MaxLen int // String, Bytes: the most bytes
	Unit   string
	// Range, if set, is the valid range of a Uint, Int or Enum item.
	Range *Range
	// Enum is the enumeration of an Enum item. Values without a label are
	// invalid.
	Enum *Enumeration
	// Optional marks a trailing command argument that may be left out.
	Optional bool
}

// SizeInBits is the item's size in bits, its largest for String and Bytes.
func (f *Field) SizeInBits() int {
	if f.Kind == String || f.Kind == Bytes {
		return 8 * f.MaxLen
	}
	return f.Bits
}

// Command is a telecommand of the updater (protocol.Command.Target 0).
type Command struct {
	Opcode      uint16
	Name        string
	Description string
	Args        []Field
}

// Packet is a housekeeping telemetry packet (protocol.Telemetry.Packet).
type Packet struct {
	ID          uint16
	Name        string
	Description string
	Params      []Field
}

// Event is an event the vehicle reports (protocol.Event.ID).
type Event struct {
	ID          uint16
	Name        string
	Description string
	Severity    protocol.Severity
	Args        []Field
}

// Values are item values by item name.
type Values map[string]any

// check validates v against f and returns it normalized: uint64 for Uint and
// Enum (an Enum also takes its label name), int64, float64, bool, string,
// []byte.
func (f *Field) check(owner string, v any) (any, error) {
	bad := func(format string, a ...any) (any, error) {
		return nil, fmt.Errorf("%w: %s.%s: %s", ErrValue, owner, f.Name, fmt.Sprintf(format, a...))
	}
	switch f.Kind {
	case Bool:
		b, ok := v.(bool)
		if !ok {
			return bad("%T, want bool", v)
		}
		return b, nil
	case Uint, Enum:
		if s, ok := v.(string); ok && f.Enum != nil {
			u, ok := f.Enum.Value(s)
			if !ok {
				return bad("no label %q in %s", s, f.Enum.Name)
			}
			v = u
		}
		u, ok := asUint(v)
		if !ok {
			return bad("%T %v, want an unsigned integer", v, v)
		}
		if f.Bits < 64 && u>>f.Bits != 0 {
			return bad("%d does not fit %d bits", u, f.Bits)
		}
		if f.Range != nil && (u < f.Range.Min || u > f.Range.Max) {
			return bad("%d out of range [%d, %d]", u, f.Range.Min, f.Range.Max)
		}
		if f.Kind == Enum {
			if _, ok := f.Enum.Lookup(u); !ok {
				return bad("%d is not a value of %s", u, f.Enum.Name)
			}
		}
		return u, nil
	case Int:
		i, ok := asInt(v)
		if !ok {
			return bad("%T %v, want an integer", v, v)
		}
		if f.Bits < 64 && (i < -(1<<(f.Bits-1)) || i >= 1<<(f.Bits-1)) {
			return bad("%d does not fit %d bits", i, f.Bits)
		}
		if f.Range != nil && (i < int64(f.Range.Min) || i > int64(f.Range.Max)) {
			return bad("%d out of range [%d, %d]", i, int64(f.Range.Min), int64(f.Range.Max))
		}
		return i, nil
	case Float:
		var x float64
		switch y := v.(type) {
		case float64:
			x = y
		case float32:
			x = float64(y)
		default:
			return bad("%T, want a float", v)
		}
		if math.IsNaN(x) {
			return bad("NaN")
		}
		if f.Bits == 32 {
			x = float64(float32(x))
		}
		return x, nil
	case String:
		s, ok := v.(string)
		if !ok {
			return bad("%T, want a string", v)
		}
		if len(s) > f.MaxLen || !utf8.ValidString(s) {
			return bad("%d bytes of text, want at most %d of UTF-8", len(s), f.MaxLen)
		}
		return s, nil
	case Bytes:
		b, ok := v.([]byte)
		if !ok {
			return bad("%T, want bytes", v)
		}
		if len(b) > f.MaxLen {
			return bad("%d bytes, want at most %d", len(b), f.MaxLen)
		}
		// Never nil: a nil byte string encodes as null, which a decoder
		// refuses, so the frame would be lost.
		return append([]byte{}, b...), nil
	}
	return bad("kind %v", f.Kind)
}

// checkWire is check for a value from the wire: an enumerated value must be
// its number, not its label, so every value has one encoding.
func (f *Field) checkWire(owner string, v any) (any, error) {
	if _, ok := v.(string); ok && f.Kind == Enum {
		return nil, fmt.Errorf("%w: %s.%s: a label on the wire, want the number", ErrValue, owner, f.Name)
	}
	return f.check(owner, v)
}

func asUint(v any) (uint64, bool) {
	switch x := v.(type) {
	case uint64:
		return x, true
	case uint:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint8:
		return uint64(x), true
	}
	if i, ok := asInt(v); ok && i >= 0 {
		return uint64(i), true
	}
	return 0, false
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int:
		return int64(x), true
	case int32:
		return int64(x), true
	case int16:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true
		}
	case uint32:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint8:
		return int64(x), true
	case uint:
		if uint64(x) <= math.MaxInt64 {
			return int64(x), true
		}
	}
	return 0, false
}

// encodeList checks vals against fields and returns them in field order.
// Optional fields may be absent, then so is every field after them.
func encodeList(what string, fields []Field, vals Values) ([]any, error) {
	out := make([]any, 0, len(fields))
	seen := 0
	for i := range fields {
		f := &fields[i]
		v, ok := vals[f.Name]
		if !ok {
			if !f.Optional {
				return nil, fmt.Errorf("%w: %s: %s missing", ErrValue, what, f.Name)
			}
			break
		}
		n, err := f.check(what, v)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
		seen++
	}
	if seen != len(vals) {
		return nil, fmt.Errorf("%w: %s: %d values, %d of them known arguments (an optional one left out before a later one?)", ErrValue, what, len(vals), seen)
	}
	return out, nil
}

// decodeList checks the positional values list against fields.
func decodeList(what string, fields []Field, list []any) (Values, error) {
	if len(list) > len(fields) {
		return nil, fmt.Errorf("%w: %s: %d values, %d defined", ErrValue, what, len(list), len(fields))
	}
	vals := make(Values, len(list))
	for i := range fields {
		f := &fields[i]
		if i >= len(list) {
			if !f.Optional {
				return nil, fmt.Errorf("%w: %s: %s missing", ErrValue, what, f.Name)
			}
			break
		}
		n, err := f.checkWire(what, list[i])
		if err != nil {
			return nil, err
		}
		vals[f.Name] = n
	}
	return vals, nil
}

// NewCommand returns the protocol command of c with args, for vehicle and
// seq, unsigned (protocol.SignCommand signs it).
func (c *Command) NewCommand(vehicle uint32, seq uint64, args Values) (*protocol.Command, error) {
	list, err := encodeList(c.Name, c.Args, args)
	if err != nil {
		return nil, err
	}
	pc := &protocol.Command{Vehicle: vehicle, Seq: seq, Opcode: c.Opcode}
	if len(list) > 0 {
		if err := pc.SetArgs(list); err != nil {
			return nil, fmt.Errorf("dict: %s: %w", c.Name, err)
		}
	}
	return pc, nil
}

// DecodeArgs checks pc's arguments against c's and returns them. It does
// not check pc's opcode: look c up with CommandByOpcode(pc.Opcode).
func (c *Command) DecodeArgs(pc *protocol.Command) (Values, error) {
	var list []any
	if err := pc.DecodeArgs(&list); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrValue, c.Name, err)
	}
	if len(pc.Args) > 0 && len(list) == 0 {
		// No arguments are sent as absent args: an empty array would be a
		// second encoding of the same command.
		return nil, fmt.Errorf("%w: %s: args are not a non-empty array", ErrValue, c.Name)
	}
	return decodeList(c.Name, c.Args, list)
}

// Encode returns the parameters of p from vals, which must hold a value for
// every parameter and no other, in definition order.
func (p *Packet) Encode(vals Values) (protocol.Params, error) {
	if len(vals) != len(p.Params) {
		return nil, fmt.Errorf("%w: %s: %d values for %d parameters", ErrValue, p.Name, len(vals), len(p.Params))
	}
	out := make(protocol.Params, 0, len(p.Params))
	for i := range p.Params {
		f := &p.Params[i]
		v, ok := vals[f.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s: %s missing", ErrValue, p.Name, f.Name)
		}
		n, err := f.check(p.Name, v)
		if err != nil {
			return nil, err
		}
		out = append(out, protocol.Param{ID: f.ID, Value: n})
	}
	return out, nil
}

// NewTelemetry returns the telemetry packet p from vals for vehicle, with
// time (ms since the Unix epoch) and sequence number seq, without its MAC
// (protocol.ReturnAuth.Sign adds it).
func (p *Packet) NewTelemetry(vehicle uint32, timeMs int64, seq uint32, vals Values) (*protocol.Telemetry, error) {
	params, err := p.Encode(vals)
	if err != nil {
		return nil, err
	}
	return &protocol.Telemetry{Vehicle: vehicle, Packet: p.ID, Time: timeMs, Seq: seq, Params: params}, nil
}

// Decode checks params against p and returns their values. A parameter may
// be absent (then so is its value); an unknown or repeated id is an error.
func (p *Packet) Decode(params protocol.Params) (Values, error) {
	vals := make(Values, len(params))
	for _, q := range params {
		f := p.param(q.ID)
		if f == nil {
			return nil, fmt.Errorf("%w: %s: no parameter id %d", ErrValue, p.Name, q.ID)
		}
		if _, dup := vals[f.Name]; dup {
			return nil, fmt.Errorf("%w: %s: parameter %s twice", ErrValue, p.Name, f.Name)
		}
		n, err := f.checkWire(p.Name, q.Value)
		if err != nil {
			return nil, err
		}
		vals[f.Name] = n
	}
	return vals, nil
}

func (p *Packet) param(id uint16) *Field {
	for i := range p.Params {
		if p.Params[i].ID == id {
			return &p.Params[i]
		}
	}
	return nil
}

// Encode returns the arguments of e from vals, which must hold every
// argument and no other.
func (e *Event) Encode(vals Values) (protocol.Values, error) {
	list, err := encodeList(e.Name, e.Args, vals)
	if err != nil {
		return nil, err
	}
	return protocol.Values(list), nil
}

// NewEvent returns event e with vals and text (at most MaxEventText bytes)
// for vehicle, with time and sequence number, without its MAC.
func (e *Event) NewEvent(vehicle uint32, timeMs int64, seq uint32, text string, vals Values) (*protocol.Event, error) {
	if len(text) > MaxEventText {
		return nil, fmt.Errorf("%w: %s: text of %d bytes, max %d", ErrValue, e.Name, len(text), MaxEventText)
	}
	args, err := e.Encode(vals)
	if err != nil {
		return nil, err
	}
	return &protocol.Event{Vehicle: vehicle, ID: e.ID, Severity: e.Severity, Time: timeMs, Seq: seq, Text: text, Args: args}, nil
}

// Decode checks an event's arguments against e and returns them.
func (e *Event) Decode(args protocol.Values) (Values, error) {
	return decodeList(e.Name, e.Args, args)
}

// MaxEventText bounds the text of the events this dictionary defines (the
// envelope allows protocol.MaxEventText): with it, every event fits a
// 256-byte frame.
const MaxEventText = 64

// Commands returns every command, by opcode.
func Commands() []*Command { return slices.Clone(commands) }

// Packets returns every telemetry packet, by id.
func Packets() []*Packet { return slices.Clone(packets) }

// Events returns every event, by id.
func Events() []*Event { return slices.Clone(events) }

// Enumerations returns every enumeration.
func Enumerations() []*Enumeration { return slices.Clone(enumerations) }

// CommandByOpcode looks a command up by opcode.
func CommandByOpcode(op uint16) (*Command, bool) {
	return find(commands, func(c *Command) bool { return c.Opcode == op })
}

// CommandByName looks a command up by name.
func CommandByName(name string) (*Command, bool) {
	return find(commands, func(c *Command) bool { return c.Name == name })
}

// PacketByID looks a telemetry packet up by id.
func PacketByID(id uint16) (*Packet, bool) {
	return find(packets, func(p *Packet) bool { return p.ID == id })
}

// PacketByName looks a telemetry packet up by name.
func PacketByName(name string) (*Packet, bool) {
	return find(packets, func(p *Packet) bool { return p.Name == name })
}

// EventByID looks an event up by id.
func EventByID(id uint16) (*Event, bool) {
	return find(events, func(e *Event) bool { return e.ID == id })
}

// EventByName looks an event up by name.
func EventByName(name string) (*Event, bool) {
	return find(events, func(e *Event) bool { return e.Name == name })
}

// ParamByID returns the parameter with telemetry id and its packet.
func ParamByID(id uint16) (*Packet, *Field, bool) {
	for _, p := range packets {
		if f := p.param(id); f != nil {
			return p, f, true
		}
	}
	return nil, nil, false
}

func find[T any](s []*T, ok func(*T) bool) (*T, bool) {
	for _, x := range s {
		if ok(x) {
			return x, true
		}
	}
	return nil, false
}
