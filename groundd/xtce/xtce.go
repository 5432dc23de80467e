// Package xtce exports bootorbit's command and telemetry dictionary
// (protocol/dict) as an XTCE 1.2 mission database (OMG XML Telemetric and
// Command Exchange, namespace http://www.omg.org/spec/XTCE/20180204), the
// format Yamcs and OpenC3 COSMOS load. It is generated from the same Go
// definitions the daemons encode and decode with, so the two cannot drift.
//
// The document describes every command (opcode and typed arguments with
// units, valid ranges and enumerations), every housekeeping packet and
// every event (as containers of typed parameters), and nothing else but
// the envelope fields they share (vehicle, ids, time, sequence number).
// Names follow XTCE's rules (no '.'): a packet "hk.slots" is the space
// system and container hk_slots, with the dictionary name as an alias in
// the "bootorbit" name space; ids, opcodes and severities ride as
// ancillary data.
//
// Our wire is CBOR, not the fixed binary layouts XTCE describes: the
// containers and command containers describe the flat "bridge form" of
// docs/cmdtlm.md (big endian, each item at its dictionary size, text and
// bytes at their largest size, padded with zeros), which a bridge between
// groundd and a mission control system reads and writes.
package xtce

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// Namespace is the XTCE 1.2 namespace.
const Namespace = "http://www.omg.org/spec/XTCE/20180204"

// Root is the name of the root space system; AliasNameSpace the alias name
// space that carries the dictionary's own names.
const (
	Root           = "bootorbit"
	AliasNameSpace = "bootorbit"
)

// Envelope parameters, in the root space system: the fields of the
// protocol.Telemetry and protocol.Event envelopes that the abstract
// containers "telemetry" and "event" hold.
var Envelope = []string{"vehicle", "packet_id", "event_id", "severity", "time", "seq", "text"}

// Write writes the XTCE document of the dictionary to w.
func Write(w io.Writer) error {
	root, err := build()
	if err != nil {
		return err
	}
	return writeDoc(w, root)
}

// types collects the parameter or argument types items need, one per
// distinct definition, named after it.
type types struct {
	arg   bool              // argument types (CommandMetaData) or parameter types
	names map[string]string // definition key -> name
	used  map[string]bool   // names
	set   *node
}

func newTypes(arg bool) *types {
	name := "ParameterTypeSet"
	if arg {
		name = "ArgumentTypeSet"
	}
	return &types{arg: arg, names: map[string]string{}, used: map[string]bool{}, set: el(name)}
}

// ref returns the absolute reference of f's type, adding the type.
func (ts *types) ref(f *dict.Field) (string, error) {
	key := fmt.Sprintf("%v/%d/%d/%s/%v/%p", f.Kind, f.Bits, f.MaxLen, f.Unit, f.Range, f.Enum)
	if f.Range != nil {
		key = fmt.Sprintf("%s/%d-%d", key, f.Range.Min, f.Range.Max)
	}
	if n, ok := ts.names[key]; ok {
		return "/" + Root + "/" + n, nil
	}
	base := typeName(f)
	name := base
	for i := 2; ts.used[name]; i++ {
		name = base + "_" + strconv.Itoa(i)
	}
	t, err := ts.typeNode(f, name)
	if err != nil {
		return "", err
	}
	ts.names[key], ts.used[name] = name, true
	ts.set.add(t)
	return "/" + Root + "/" + name, nil
}

// typeName names a type after its definition: uint32_bytes, slot, string48.
func typeName(f *dict.Field) string {
	var s string
	switch f.Kind {
	case dict.Bool:
		s = "bool"
	case dict.Uint:
		s = "uint" + strconv.Itoa(f.Bits)
	case dict.Int:
		s = "int" + strconv.Itoa(f.Bits)
	case dict.Float:
		s = "float" + strconv.Itoa(f.Bits)
	case dict.String:
		s = "string" + strconv.Itoa(f.MaxLen)
	case dict.Bytes:
		s = "bytes" + strconv.Itoa(f.MaxLen)
	case dict.Enum:
		s = f.Enum.Name
	}
	if f.Unit != "" {
		s += "_" + f.Unit
	}
	if f.Range != nil {
		if f.Kind == dict.Int {
			s += fmt.Sprintf("_%d_%d", int64(f.Range.Min), int64(f.Range.Max))
		} else {
			s += fmt.Sprintf("_%d_%d", f.Range.Min, f.Range.Max)
		}
	}
	return name(s)
}

// name makes s an XTCE NameType: no '.', '/', ':', '[', ']' or space.
func name(s string) string {
	return strings.Map(func(r rune) rune {
		if strings.ContainsRune("./:[] ", r) {
			return '_'
		}
		return r
	}, s)
}

func (ts *types) typeNode(f *dict.Field, n string) (*node, error) {
	suffix := "ParameterType"
	if ts.arg {
		suffix = "ArgumentType"
	}
	units := func() *node {
		if f.Unit == "" {
			return nil
		}
		return el("UnitSet").add(el("Unit").withText(f.Unit))
	}
	intEnc := func(bits int, signed bool) *node {
		enc := "unsigned"
		if signed {
			enc = "twosComplement"
		}
		return el("IntegerDataEncoding", "sizeInBits", strconv.Itoa(bits), "encoding", enc)
	}
	desc := f.Kind.String()
	switch f.Kind {
	case dict.Bool:
		// One bit in the dictionary, a byte in the bridge form (0 or 1).
		return el("Boolean"+suffix, "name", n, "shortDescription", "boolean").add(intEnc(8, false)), nil
	case dict.Uint, dict.Int:
		signed := f.Kind == dict.Int
		t := el("Integer"+suffix, "name", n, "shortDescription", fmt.Sprintf("%s of %d bits", desc, f.Bits),
			"signed", strconv.FormatBool(signed), "sizeInBits", strconv.Itoa(f.Bits))
		t.add(units(), intEnc(f.Bits, signed))
		if r := intRange(f); r != nil {
			if ts.arg {
				t.add(el("ValidRangeSet").add(r))
			} else {
				t.add(r)
			}
		}
		return t, nil
	case dict.Float:
		return el("Float"+suffix, "name", n, "shortDescription", fmt.Sprintf("IEEE 754 of %d bits", f.Bits), "sizeInBits", strconv.Itoa(f.Bits)).
			add(units(), el("FloatDataEncoding", "sizeInBits", strconv.Itoa(f.Bits), "encoding", "IEEE754_1985")), nil
	case dict.String:
		return el("String"+suffix, "name", n, "shortDescription", fmt.Sprintf("UTF-8 text of at most %d bytes", f.MaxLen)).add(units(),
			el("StringDataEncoding", "encoding", "UTF-8").add(el("SizeInBits").add(
				el("Fixed").add(el("FixedValue").withText(strconv.Itoa(8*f.MaxLen))),
				el("TerminationChar").withText("00")))), nil
	case dict.Bytes:
		return el("Binary"+suffix, "name", n, "shortDescription", fmt.Sprintf("at most %d bytes", f.MaxLen)).add(units(),
			el("BinaryDataEncoding").add(el("SizeInBits").add(el("FixedValue").withText(strconv.Itoa(8*f.MaxLen))))), nil
	case dict.Enum:
		list := el("EnumerationList")
		for _, l := range f.Enum.Labels {
			if f.Range != nil && (l.Value < f.Range.Min || l.Value > f.Range.Max) {
				continue // not a valid value of this item
			}
			if l.Value > math.MaxInt64 {
				return nil, fmt.Errorf("xtce: %s: value %d does not fit XTCE's long", f.Enum.Name, l.Value)
			}
			list.add(el("Enumeration", "value", strconv.FormatUint(l.Value, 10), "label", l.Name, "shortDescription", l.Description))
		}
		if len(list.children) == 0 {
			return nil, fmt.Errorf("xtce: %s: no value in range", f.Name)
		}
		return el("Enumerated"+suffix, "name", n, "shortDescription", f.Enum.Description).add(units(), intEnc(f.Bits, false), list), nil
	}
	return nil, fmt.Errorf("xtce: %s: kind %v", f.Name, f.Kind)
}

// intRange is the ValidRange of an integer item with a Range.
func intRange(f *dict.Field) *node {
	if f.Range == nil {
		return nil
	}
	lo, hi := strconv.FormatUint(f.Range.Min, 10), strconv.FormatUint(f.Range.Max, 10)
	if f.Kind == dict.Int {
		lo, hi = strconv.FormatInt(int64(f.Range.Min), 10), strconv.FormatInt(int64(f.Range.Max), 10)
	} else if f.Range.Max > math.MaxInt64 {
		hi = "" // XTCE's bounds are longs; the type's size bounds it anyway
	}
	return el("ValidRange", "minInclusive", lo, "maxInclusive", hi)
}

// ancillary returns an AncillaryDataSet of name/value pairs.
func ancillary(kv ...string) *node {
	set := el("AncillaryDataSet")
	for i := 0; i+1 < len(kv); i += 2 {
		set.add(el("AncillaryData", "name", kv[i]).withText(kv[i+1]))
	}
	return set
}

func alias(dictName string) *node {
	return el("AliasSet").add(el("Alias", "nameSpace", AliasNameSpace, "alias", dictName))
}

func long(s string) *node {
	if s == "" {
		return nil
	}
	return el("LongDescription").withText(s)
}

// envelope returns the fields of the telemetry and event envelopes.
func envelope() []dict.Field {
	sev := &dict.Enumeration{Name: "severity", Description: "an event's severity (protocol.Severity)"}
	for s := protocol.SeverityInfo; s <= protocol.SeverityCritical; s++ {
		sev.Labels = append(sev.Labels, dict.Label{Value: uint64(s), Name: s.String(), Description: "severity " + s.String()})
	}
	return []dict.Field{
		{Name: "vehicle", Kind: dict.Uint, Bits: 32, Description: "the reporting vehicle's id"},
		{Name: "packet_id", Kind: dict.Uint, Bits: 16, Description: "the telemetry packet id (dictionary)"},
		{Name: "event_id", Kind: dict.Uint, Bits: 16, Description: "the event id (dictionary)"},
		{Name: "severity", Kind: dict.Enum, Bits: 8, Enum: sev, Description: "the event's severity"},
		{Name: "time", Kind: dict.Int, Bits: 64, Unit: "ms", Description: "vehicle time of the sample or event, ms since the Unix epoch (0: unknown)"},
		{Name: "seq", Kind: dict.Uint, Bits: 32, Description: "the vehicle's packet or event counter (wraps)"},
		{Name: "text", Kind: dict.String, MaxLen: dict.MaxEventText, Description: "the event's text"},
	}
}

// names checks that the XTCE names of one scope do not collide: two
// dictionary names that differ only where XTCE forbids a character
// ("hk.a" and "hk_a") would name one item.
type names map[string]string

func (ns names) take(dictName string) (string, error) {
	n := name(dictName)
	if other, ok := ns[n]; ok {
		return "", fmt.Errorf("xtce: %q and %q are both %q in XTCE", other, dictName, n)
	}
	ns[n] = dictName
	return n, nil
}

func build() (*node, error) {
	ptypes, atypes := newTypes(false), newTypes(true)
	param := func(f *dict.Field, kv ...string) (*node, error) {
		ref, err := ptypes.ref(f)
		if err != nil {
			return nil, err
		}
		p := el("Parameter", "name", name(f.Name), "parameterTypeRef", ref, "shortDescription", f.Description)
		if len(kv) > 0 {
			p.add(ancillary(kv...))
		}
		return p, nil
	}
	// Envelope parameters and the two abstract containers.
	env := envelope()
	envParams := el("ParameterSet")
	for i := range env {
		p, err := param(&env[i])
		if err != nil {
			return nil, err
		}
		envParams.add(p)
	}
	entries := func(names ...string) *node {
		l := el("EntryList")
		for _, n := range names {
			l.add(el("ParameterRefEntry", "parameterRef", n))
		}
		return l
	}
	envContainers := el("ContainerSet").add(
		el("SequenceContainer", "name", "telemetry", "abstract", "true", "shortDescription", "the envelope of every housekeeping packet (protocol.Telemetry)").
			add(entries("vehicle", "packet_id", "time", "seq")),
		el("SequenceContainer", "name", "event", "abstract", "true", "shortDescription", "the envelope of every event (protocol.Event)").
			add(entries("vehicle", "event_id", "severity", "time", "seq", "text")))

	// A space system per packet and per event: their parameters' names are
	// local to them (several events have a "plan" or a "slot").
	container := func(ssName, dictName, desc, base, idParam string, id uint16, fields []dict.Field, kv ...string) (*node, error) {
		params := el("ParameterSet")
		list := el("EntryList")
		local := names{}
		for i := range fields {
			f := &fields[i]
			if _, err := local.take(f.Name); err != nil {
				return nil, err
			}
			var pkv []string
			if f.ID != 0 {
				pkv = []string{"id", strconv.Itoa(int(f.ID))}
			}
			p, err := param(f, pkv...)
			if err != nil {
				return nil, err
			}
			params.add(p)
			list.add(el("ParameterRefEntry", "parameterRef", name(f.Name)))
		}
		c := el("SequenceContainer", "name", ssName, "shortDescription", desc).add(alias(dictName), ancillary(kv...), list,
			el("BaseContainer", "containerRef", "/"+Root+"/"+base).add(
				el("RestrictionCriteria").add(el("Comparison", "parameterRef", "/"+Root+"/"+idParam, "value", strconv.Itoa(int(id))))))
		tm := el("TelemetryMetaData")
		if len(params.children) > 0 {
			tm.add(params)
		}
		tm.add(el("ContainerSet").add(c))
		return el("SpaceSystem", "name", ssName, "shortDescription", desc).add(alias(dictName), tm), nil
	}
	var children []*node
	top := names{"events": "events"} // the root's space systems
	for _, p := range dict.Packets() {
		n, err := top.take(p.Name)
		if err != nil {
			return nil, err
		}
		ss, err := container(n, p.Name, p.Description, "telemetry", "packet_id", p.ID, p.Params, "id", strconv.Itoa(int(p.ID)))
		if err != nil {
			return nil, err
		}
		children = append(children, ss)
	}
	events := el("SpaceSystem", "name", "events", "shortDescription", "the events the vehicle reports")
	evNames := names{}
	for _, e := range dict.Events() {
		n, err := evNames.take(e.Name)
		if err != nil {
			return nil, err
		}
		ss, err := container(n, e.Name, e.Description, "event", "event_id", e.ID, e.Args,
			"id", strconv.Itoa(int(e.ID)), "severity", e.Severity.String())
		if err != nil {
			return nil, err
		}
		events.add(ss)
	}

	// Commands.
	cmds := el("MetaCommandSet")
	cmdNames := names{}
	for _, c := range dict.Commands() {
		n, err := cmdNames.take(c.Name)
		if err != nil {
			return nil, err
		}
		argNames := names{}
		for i := range c.Args {
			if _, err := argNames.take(c.Args[i].Name); err != nil {
				return nil, err
			}
		}
		mc := el("MetaCommand", "name", n, "shortDescription", c.Description).add(
			alias(c.Name), ancillary("opcode", strconv.Itoa(int(c.Opcode))))
		list := el("EntryList").add(el("FixedValueEntry", "name", "opcode", "binaryValue", fmt.Sprintf("%04x", c.Opcode), "sizeInBits", "16"))
		if len(c.Args) > 0 {
			args := el("ArgumentList")
			for i := range c.Args {
				f := &c.Args[i]
				ref, err := atypes.ref(f)
				if err != nil {
					return nil, err
				}
				a := el("Argument", "name", name(f.Name), "argumentTypeRef", ref, "shortDescription", f.Description)
				if f.Optional {
					a.add(ancillary("optional", "true"))
				}
				args.add(a)
				list.add(el("ArgumentRefEntry", "argumentRef", name(f.Name)))
			}
			mc.add(args)
		}
		mc.add(el("CommandContainer", "name", name(c.Name)).add(list))
		cmds.add(mc)
	}

	root := el("SpaceSystem", "xmlns", Namespace, "name", Root,
		"shortDescription", "bootorbit updater: commands, housekeeping telemetry and events (protocol/dict)")
	root.add(long("Generated by `groundd xtce` from protocol/dict. The wire is CBOR (protocol version "+strconv.Itoa(protocol.Version)+
		"); containers describe the flat bridge form of docs/cmdtlm.md: big endian, each item at its dictionary size, booleans as one byte, text and bytes at their largest size padded with zeros."),
		el("Header", "version", "protocol "+strconv.Itoa(protocol.Version), "validationStatus", "Working"))
	tm := el("TelemetryMetaData").add(ptypes.set, envParams, envContainers)
	cm := el("CommandMetaData").add(atypes.set, cmds)
	root.add(tm, cm)
	root.add(children...)
	root.add(events)
	return root, nil
}
