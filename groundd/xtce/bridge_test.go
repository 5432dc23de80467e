package xtce_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/groundd/xtce"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// The tests below read and write the bridge form the way a mission control
// system would: from the XTCE document alone (a small interpreter of the
// XTCE subset the export uses), and compare with what the bridge codec
// and the dictionary say. They are what makes the document's containers a
// faithful description, not a comment.

// xbits reads big endian, most significant bit first.
type xbits struct {
	b   []byte
	off int
}

func (r *xbits) read(t *testing.T, n int) uint64 {
	t.Helper()
	if r.off+n > 8*len(r.b) {
		t.Fatalf("packet too short: bit %d + %d of %d", r.off, n, 8*len(r.b))
	}
	var v uint64
	for range n {
		v = v<<1 | uint64(r.b[r.off/8]>>(7-r.off%8)&1)
		r.off++
	}
	return v
}

// xvalue decodes one item of type typ, as XTCE describes it.
func xvalue(t *testing.T, typ *xnode, r *xbits) any {
	t.Helper()
	kind := strings.TrimSuffix(strings.TrimSuffix(typ.XMLName.Local, "ParameterType"), "ArgumentType")
	switch kind {
	case "Integer", "Enumerated", "Boolean":
		enc := typ.child("IntegerDataEncoding")
		n := atoi(t, enc.attr("sizeInBits"))
		u := r.read(t, n)
		switch {
		case kind == "Boolean":
			return u != 0
		case kind == "Enumerated":
			for _, e := range typ.child("EnumerationList").Children {
				if e.attr("value") == fmt.Sprint(u) {
					return e.attr("label")
				}
			}
			t.Fatalf("%s: value %d not in the enumeration", typ.attr("name"), u)
		case enc.attr("encoding") == "twosComplement":
			if n < 64 && u>>(n-1)&1 == 1 {
				u |= ^uint64(0) << n
			}
			return int64(u)
		}
		return u
	case "Float":
		n := atoi(t, typ.child("FloatDataEncoding").attr("sizeInBits"))
		u := r.read(t, n)
		if n == 32 {
			return float64(math.Float32frombits(uint32(u)))
		}
		return math.Float64frombits(u)
	case "String":
		enc := typ.path("StringDataEncoding", "SizeInBits")
		b := make([]byte, atoi(t, enc.path("Fixed", "FixedValue").Text)/8)
		for i := range b {
			b[i] = byte(r.read(t, 8))
		}
		if enc.child("TerminationChar") != nil {
			if i := bytes.IndexByte(b, 0); i >= 0 {
				b = b[:i]
			}
		}
		return string(b)
	case "Binary":
		b := make([]byte, atoi(t, typ.path("BinaryDataEncoding", "SizeInBits", "FixedValue").Text)/8)
		for i := range b {
			b[i] = byte(r.read(t, 8))
		}
		return b
	}
	t.Fatalf("type %s: kind %s", typ.attr("name"), kind)
	return nil
}

// xcontainer is a concrete container: where it is, its base and the value
// of the id its restriction compares.
type xcontainer struct {
	ss   []string
	node *xnode
}

// xdecode decodes a telemetry or event packet in the bridge form from the
// XTCE document: the abstract base container's entries, then the entries of
// the container whose restriction criteria they match.
func xdecode(t *testing.T, root *xnode, base string, packet []byte) (name string, vals map[string]any) {
	t.Helper()
	r := &resolver{root: root}
	rd := &xbits{b: packet}
	vals = map[string]any{}
	entries := func(ss []string, c *xnode) {
		for _, e := range c.child("EntryList").Children {
			p := r.lookup(ss, e.attr("parameterRef"), "TelemetryMetaData", "ParameterSet")
			typ := r.lookup(ss, p.attr("parameterTypeRef"), "TelemetryMetaData", "ParameterTypeSet")
			vals[p.attr("name")] = xvalue(t, typ, rd)
		}
	}
	entries(nil, root.path("TelemetryMetaData", "ContainerSet").named(base))
	var cs []xcontainer
	var walk func(ss []string, n *xnode)
	walk = func(ss []string, n *xnode) {
		for _, c := range n.Children {
			switch c.XMLName.Local {
			case "SpaceSystem":
				walk(append(clonePath(ss), c.attr("name")), c)
			case "TelemetryMetaData":
				if set := c.child("ContainerSet"); set != nil {
					for _, sc := range set.Children {
						if sc.child("BaseContainer") != nil {
							cs = append(cs, xcontainer{ss: ss, node: sc})
						}
					}
				}
			}
		}
	}
	walk(nil, root)
	var match *xcontainer
	for i, c := range cs {
		bc := c.node.child("BaseContainer")
		if bc.attr("containerRef") != "/"+xtce.Root+"/"+base {
			continue
		}
		cmp := bc.path("RestrictionCriteria", "Comparison")
		param := cmp.attr("parameterRef")[strings.LastIndex(cmp.attr("parameterRef"), "/")+1:]
		if fmt.Sprint(vals[param]) == cmp.attr("value") {
			if match != nil {
				t.Fatalf("two containers match %s=%v", param, vals[param])
			}
			match = &cs[i]
		}
	}
	if match == nil {
		t.Fatalf("no container matches %v", vals)
	}
	entries(match.ss, match.node)
	if rd.off != 8*len(packet) {
		t.Fatalf("%s: %d bits read of %d", match.node.attr("name"), rd.off, 8*len(packet))
	}
	return match.node.alias(), vals
}

func clonePath(s []string) []string { return append([]string(nil), s...) }

// randomValues draws a valid value for every field.
func randomValues(r *rand.Rand, fields []dict.Field) dict.Values {
	vals := dict.Values{}
	for i := range fields {
		f := &fields[i]
		switch f.Kind {
		case dict.Bool:
			vals[f.Name] = r.IntN(2) == 1
		case dict.Uint:
			lo, hi := uint64(0), uint64(math.MaxUint64)
			if f.Bits < 64 {
				hi = 1<<f.Bits - 1
			}
			if f.Range != nil {
				lo, hi = f.Range.Min, f.Range.Max
			}
			if hi-lo == math.MaxUint64 {
				vals[f.Name] = r.Uint64()
			} else {
				vals[f.Name] = lo + r.Uint64N(hi-lo+1)
			}
		case dict.Int:
			lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
			if f.Bits < 64 {
				lo, hi = -(1 << (f.Bits - 1)), 1<<(f.Bits-1)-1
			}
			if f.Range != nil {
				lo, hi = int64(f.Range.Min), int64(f.Range.Max)
			}
			if span := uint64(hi) - uint64(lo); span == math.MaxUint64 {
				vals[f.Name] = int64(r.Uint64())
			} else {
				vals[f.Name] = lo + int64(r.Uint64N(span+1))
			}
		case dict.Float:
			vals[f.Name] = r.NormFloat64()
		case dict.Enum:
			var ok []dict.Label
			for _, l := range f.Enum.Labels {
				if f.Range == nil || (l.Value >= f.Range.Min && l.Value <= f.Range.Max) {
					ok = append(ok, l)
				}
			}
			vals[f.Name] = ok[r.IntN(len(ok))].Value
		case dict.String:
			b := make([]byte, r.IntN(f.MaxLen+1))
			for i := range b {
				b[i] = byte('a' + r.IntN(26))
			}
			vals[f.Name] = string(b)
		case dict.Bytes:
			b := make([]byte, r.IntN(f.MaxLen+1))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			vals[f.Name] = b
		}
	}
	return vals
}

// same compares a dictionary value with what the XTCE interpreter read.
func same(f *dict.Field, want, got any) bool {
	switch f.Kind {
	case dict.Enum:
		l, _ := f.Enum.Lookup(want.(uint64))
		return got == l.Name
	case dict.Bytes:
		padded := make([]byte, f.MaxLen)
		copy(padded, want.([]byte))
		return bytes.Equal(padded, got.([]byte))
	}
	return reflect.DeepEqual(want, got)
}

// TestBridgeFormMatchesXTCE: every packet and event, with random valid
// values, encoded by the bridge codec, decodes from the XTCE document alone
// to the same values; every command encoded from the XTCE document alone
// decodes with the bridge codec to the same arguments.
func TestBridgeFormMatchesXTCE(t *testing.T) {
	r := testrand.New(t)
	root := parse(t)
	rounds := 20
	if testrand.Long() {
		rounds = 500
	}
	for range rounds {
		for _, p := range dict.Packets() {
			vals := randomValues(r, p.Params)
			tm, err := p.NewTelemetry(r.Uint32(), r.Int64(), r.Uint32(), vals)
			if err != nil {
				t.Fatal(err)
			}
			b, err := xtce.EncodeTelemetry(tm)
			if err != nil {
				t.Fatal(err)
			}
			name, got := xdecode(t, root, "telemetry", b)
			if name != p.Name || got["vehicle"] != uint64(tm.Vehicle) || got["time"] != tm.Time || got["seq"] != uint64(tm.Seq) {
				t.Fatalf("%s: read as %s %v", p.Name, name, got)
			}
			for i := range p.Params {
				f := &p.Params[i]
				if !same(f, vals[f.Name], got[f.Name]) {
					t.Fatalf("%s.%s: wrote %v, XTCE reads %v", p.Name, f.Name, vals[f.Name], got[f.Name])
				}
			}
		}
		for _, e := range dict.Events() {
			vals := randomValues(r, e.Args)
			ev, err := e.NewEvent(r.Uint32(), r.Int64(), r.Uint32(), "text "+fmt.Sprint(r.IntN(1000)), vals)
			if err != nil {
				t.Fatal(err)
			}
			b, err := xtce.EncodeEvent(ev)
			if err != nil {
				t.Fatal(err)
			}
			name, got := xdecode(t, root, "event", b)
			if name != e.Name || got["text"] != ev.Text || got["severity"] != e.Severity.String() {
				t.Fatalf("%s: read as %s %v", e.Name, name, got)
			}
			for i := range e.Args {
				f := &e.Args[i]
				if !same(f, vals[f.Name], got[f.Name]) {
					t.Fatalf("%s.%s: wrote %v, XTCE reads %v", e.Name, f.Name, vals[f.Name], got[f.Name])
				}
			}
		}
		for _, c := range dict.Commands() {
			vals := randomValues(r, c.Args)
			b := xencodeCommand(t, root, c.Name, c.Args, vals)
			want, err := xtce.EncodeCommand(c.Name, vals)
			if err != nil || !bytes.Equal(b, want) {
				t.Fatalf("%s: XTCE encodes %x, the bridge %x (%v)", c.Name, b, want, err)
			}
			d, got, err := xtce.DecodeCommand(b)
			if err != nil || d != c {
				t.Fatalf("%s: decoded %v, %v", c.Name, d, err)
			}
			for i := range c.Args {
				f := &c.Args[i]
				w := vals[f.Name]
				if f.Kind == dict.Bytes {
					p := make([]byte, f.MaxLen)
					copy(p, w.([]byte))
					w = p
				}
				if !reflect.DeepEqual(got[f.Name], w) {
					t.Fatalf("%s.%s: %v, want %v", c.Name, f.Name, got[f.Name], w)
				}
			}
		}
	}
}

// xencodeCommand writes a command in the bridge form from the XTCE
// document alone: its container's fixed value, then each argument by type.
func xencodeCommand(t *testing.T, root *xnode, name string, fields []dict.Field, vals dict.Values) []byte {
	t.Helper()
	r := &resolver{root: root}
	var mc *xnode
	for _, c := range root.path("CommandMetaData", "MetaCommandSet").Children {
		if c.alias() == name {
			mc = c
		}
	}
	var w []byte
	var nbit int
	put := func(v uint64, n int) {
		for i := n - 1; i >= 0; i-- {
			if nbit%8 == 0 {
				w = append(w, 0)
			}
			if v>>i&1 == 1 {
				w[len(w)-1] |= 0x80 >> (nbit % 8)
			}
			nbit++
		}
	}
	for _, e := range mc.path("CommandContainer", "EntryList").Children {
		switch e.XMLName.Local {
		case "FixedValueEntry":
			var v uint64
			fmt.Sscanf(e.attr("binaryValue"), "%x", &v)
			put(v, atoi(t, e.attr("sizeInBits")))
		case "ArgumentRefEntry":
			a := mc.child("ArgumentList").named(e.attr("argumentRef"))
			typ := r.lookup(nil, a.attr("argumentTypeRef"), "CommandMetaData", "ArgumentTypeSet")
			v := vals[a.attr("name")]
			kind := strings.TrimSuffix(typ.XMLName.Local, "ArgumentType")
			switch kind {
			case "Integer", "Enumerated", "Boolean":
				var u uint64
				switch x := v.(type) {
				case uint64:
					u = x
				case int64:
					u = uint64(x)
				case bool:
					if x {
						u = 1
					}
				}
				if kind == "Enumerated" { // check the value is one XTCE lists
					found := false
					for _, l := range typ.child("EnumerationList").Children {
						found = found || l.attr("value") == fmt.Sprint(u)
					}
					if !found {
						t.Fatalf("%s.%s: %d not in the XTCE enumeration", name, a.attr("name"), u)
					}
				}
				put(u, atoi(t, typ.child("IntegerDataEncoding").attr("sizeInBits")))
			case "Float":
				n := atoi(t, typ.child("FloatDataEncoding").attr("sizeInBits"))
				if n == 32 {
					put(uint64(math.Float32bits(float32(v.(float64)))), 32)
				} else {
					put(math.Float64bits(v.(float64)), 64)
				}
			case "String", "Binary":
				var b []byte
				var size int
				if kind == "String" {
					b, size = []byte(v.(string)), atoi(t, typ.path("StringDataEncoding", "SizeInBits", "Fixed", "FixedValue").Text)
				} else {
					b, size = v.([]byte), atoi(t, typ.path("BinaryDataEncoding", "SizeInBits", "FixedValue").Text)
				}
				for i := range size / 8 {
					var c byte
					if i < len(b) {
						c = b[i]
					}
					put(uint64(c), 8)
				}
			default:
				t.Fatalf("argument type %s", typ.XMLName.Local)
			}
		default:
			t.Fatalf("entry %s", e.XMLName.Local)
		}
	}
	return w
}

// TestDecodeCommandRefuses: a bridge-form command from mission control is
// outside input; bad ones are refused, not guessed at.
func TestDecodeCommandRefuses(t *testing.T) {
	good, err := xtce.EncodeCommand("activate", dict.Values{"slot": "b", "attempts": 3, "not_before": 0})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := xtce.DecodeCommand(good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, xtce.ErrBridge},
		{"unknown opcode", []byte{0xff, 0xff}, xtce.ErrBridge},
		{"truncated", good[:len(good)-1], xtce.ErrBridge},
		{"trailing byte", append(bytes.Clone(good), 0), xtce.ErrBridge},
		{"slot out of range", append([]byte{0, 6, 0}, good[3:]...), dict.ErrValue},
		{"attempts out of range", append([]byte{0, 6, 2, 10}, good[4:]...), dict.ErrValue},
	} {
		if _, _, err := xtce.DecodeCommand(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := xtce.EncodeCommand("activate", dict.Values{"slot": "b", "attempts": 3}); !errors.Is(err, xtce.ErrBridge) {
		t.Errorf("optional argument left out: %v", err)
	}
	if _, err := xtce.EncodeTelemetry(&protocol.Telemetry{Packet: 99}); !errors.Is(err, xtce.ErrBridge) {
		t.Errorf("unknown packet: %v", err)
	}
}

// FuzzDecodeCommand: any bytes either decode to a command the dictionary
// accepts, which re-encodes to a packet that decodes the same, or fail
// with an error.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range dict.Commands() {
		vals := randomValues(rand.New(rand.NewPCG(1, uint64(c.Opcode))), c.Args)
		b, err := xtce.EncodeCommand(c.Name, vals)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, vals, err := xtce.DecodeCommand(b)
		if err != nil {
			return
		}
		again, err := xtce.EncodeCommand(c.Name, vals)
		if err != nil {
			t.Fatalf("%s %v decodes but does not encode: %v", c.Name, vals, err)
		}
		c2, vals2, err := xtce.DecodeCommand(again)
		if err != nil || c2 != c || !reflect.DeepEqual(vals, vals2) {
			t.Fatalf("re-encoded %s decodes as %v %v, %v", c.Name, c2, vals2, err)
		}
	})
}
