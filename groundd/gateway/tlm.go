package gateway

import (
	"fmt"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// Value is one decoded telemetry parameter or event argument.
type Value struct {
	Name string `json:"name"`
	// Value is uint64 (unsigned and enumerated items), int64, float64,
	// bool, string or []byte, as dict.Values.
	Value any    `json:"value"`
	Unit  string `json:"unit,omitempty"`
	// Label is an enumerated value's label ("good").
	Label string `json:"label,omitempty"`
}

// Sample is an archived telemetry packet, decoded.
type Sample struct {
	Vehicle  uint32    `json:"vehicle"`
	PacketID uint16    `json:"packet_id"`
	Packet   string    `json:"packet"` // the dictionary name ("hk.slots"); empty if unknown
	Time     time.Time `json:"time"`
	Received time.Time `json:"received"`
	Seq      uint32    `json:"seq"`
	// Values are the parameters in dictionary order.
	Values []Value `json:"values"`
	// Error says why the packet did not decode (then Values is empty).
	Error string `json:"error,omitempty"`
}

// EventReport is an archived event, decoded.
type EventReport struct {
	Vehicle  uint32    `json:"vehicle"`
	EventID  uint16    `json:"event_id"`
	Event    string    `json:"event"` // the dictionary name ("plan_refused"); empty if unknown
	Severity string    `json:"severity"`
	Time     time.Time `json:"time"`
	Received time.Time `json:"received"`
	Seq      uint32    `json:"seq"`
	Text     string    `json:"text,omitempty"`
	Args     []Value   `json:"args"`
	Error    string    `json:"error,omitempty"`
}

// Telemetry returns the archived telemetry that matches q, decoded.
func (g *Gateway) Telemetry(q Query) ([]Sample, error) {
	q.Kind = KindTelemetry
	rs, err := g.cfg.Archive.Records(q)
	if err != nil {
		return nil, fmt.Errorf("gateway: telemetry: %w", err)
	}
	out := make([]Sample, 0, len(rs))
	for _, r := range rs {
		s := Sample{Vehicle: r.Vehicle, PacketID: r.ID, Time: r.Time, Received: r.Received, Seq: r.Seq}
		if p, ok := dict.PacketByID(r.ID); ok {
			s.Packet = p.Name
		}
		d, err := decodeRecord(g.arch, r)
		if err != nil {
			s.Error = err.Error()
		} else {
			s.Values = d.values
		}
		out = append(out, s)
	}
	return out, nil
}

// Events returns the archived events that match q, decoded.
func (g *Gateway) Events(q Query) ([]EventReport, error) {
	q.Kind = KindEvent
	rs, err := g.cfg.Archive.Records(q)
	if err != nil {
		return nil, fmt.Errorf("gateway: events: %w", err)
	}
	out := make([]EventReport, 0, len(rs))
	for _, r := range rs {
		e := EventReport{Vehicle: r.Vehicle, EventID: r.ID, Time: r.Time, Received: r.Received, Seq: r.Seq}
		if d, ok := dict.EventByID(r.ID); ok {
			e.Event = d.Name
		}
		d, err := decodeRecord(g.arch, r)
		if err != nil {
			e.Error = err.Error()
		} else {
			e.Args, e.Severity, e.Text = d.values, d.severity.String(), d.text
		}
		out = append(out, e)
	}
	return out, nil
}

// Commands returns the archived commands that match q.
func (g *Gateway) Commands(q CommandQuery) ([]*Command, error) {
	cs, err := g.cfg.Archive.Commands(q)
	if err != nil {
		return nil, fmt.Errorf("gateway: commands: %w", err)
	}
	return cs, nil
}

// Command returns the command (key, seq).
func (g *Gateway) Command(key protocol.KeyID, seq uint64) (*Command, error) {
	cs, err := g.Commands(CommandQuery{Key: key, Seq: seq})
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 || seq == 0 {
		return nil, fmt.Errorf("%w: key %d seq %d", ErrNotFound, key, seq)
	}
	return cs[0], nil
}

// decoded is a record's content.
type decoded struct {
	values   []Value
	severity protocol.Severity
	text     string
}

// decodeRecord decodes r's frame and its values through the dictionary.
func decodeRecord(codec *protocol.Codec, r *Record) (decoded, error) {
	m, err := codec.Decode(r.Frame)
	if err != nil {
		return decoded{}, fmt.Errorf("%w: %v %d: %w", ErrDecode, r.Kind, r.ID, err)
	}
	switch m := m.(type) {
	case *protocol.Telemetry:
		p, ok := dict.PacketByID(m.Packet)
		if !ok || r.Kind != KindTelemetry {
			return decoded{}, fmt.Errorf("%w: no telemetry packet %d", ErrDecode, m.Packet)
		}
		vals, err := p.Decode(m.Params)
		if err != nil {
			return decoded{}, fmt.Errorf("%w: %w", ErrDecode, err)
		}
		return decoded{values: named(p.Params, vals)}, nil
	case *protocol.Event:
		e, ok := dict.EventByID(m.ID)
		if !ok || r.Kind != KindEvent {
			return decoded{}, fmt.Errorf("%w: no event %d", ErrDecode, m.ID)
		}
		vals, err := e.Decode(m.Args)
		if err != nil {
			return decoded{}, fmt.Errorf("%w: %w", ErrDecode, err)
		}
		return decoded{values: named(e.Args, vals), severity: m.Severity, text: m.Text}, nil
	}
	return decoded{}, fmt.Errorf("%w: a %v frame archived as %v", ErrDecode, m.Type(), r.Kind)
}

// named lists vals in the order of fields, with units and labels.
func named(fields []dict.Field, vals dict.Values) []Value {
	out := make([]Value, 0, len(vals))
	for i := range fields {
		f := &fields[i]
		v, ok := vals[f.Name]
		if !ok {
			continue
		}
		nv := Value{Name: f.Name, Value: v, Unit: f.Unit}
		if f.Enum != nil {
			if u, ok := v.(uint64); ok {
				nv.Label = f.Enum.NameOf(u)
			}
		}
		out = append(out, nv)
	}
	return out
}
