package xtce_test

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/groundd/xtce"
	"github.com/bootorbit/bootorbit/internal/testtool"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

func generate(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := xtce.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// schemaFile finds the XTCE 1.2 schema: shared/xtce beside the repository
// (../shared/xtce from its root, as in CI), or beside an ancestor of it (a
// worktree in a subfolder). Without it the test skips, or fails under
// BOOTORBIT_REQUIRE_TOOLS=1.
func schemaFile(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		p := filepath.Join(d, "shared", "xtce", "SpaceSystemV1.2.xsd")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	testtool.Missing(t, testtool.RequireTools, "no XTCE 1.2 schema at ../shared/xtce/SpaceSystemV1.2.xsd from the repository root")
	return ""
}

// TestValidatesAgainstSchema runs xmllint --schema on the export.
func TestValidatesAgainstSchema(t *testing.T) {
	xmllint := testtool.Need(t, "xmllint")
	xsd := schemaFile(t)
	doc := filepath.Join(t.TempDir(), "bootorbit.xml")
	if err := os.WriteFile(doc, generate(t), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(xmllint, "--noout", "--nonet", "--schema", xsd, doc).CombinedOutput()
	if err != nil {
		t.Fatalf("xmllint --schema: %v\n%s", err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
}

func TestDeterministic(t *testing.T) {
	if a, b := generate(t), generate(t); !bytes.Equal(a, b) {
		t.Fatal("two exports differ")
	}
}

// xnode is any XML element.
type xnode struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []*xnode   `xml:",any"`
}

func (n *xnode) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func (n *xnode) child(name string) *xnode {
	for _, c := range n.Children {
		if c.XMLName.Local == name {
			return c
		}
	}
	return nil
}

// path follows child elements by name; nil if one is missing.
func (n *xnode) path(names ...string) *xnode {
	for _, s := range names {
		if n == nil {
			return nil
		}
		n = n.child(s)
	}
	return n
}

// named returns the child of n named name (attribute), or nil.
func (n *xnode) named(name string) *xnode {
	if n == nil {
		return nil
	}
	for _, c := range n.Children {
		if c.attr("name") == name {
			return c
		}
	}
	return nil
}

func (n *xnode) ancillary(name string) string {
	if a := n.child("AncillaryDataSet"); a != nil {
		for _, d := range a.Children {
			if d.attr("name") == name {
				return d.Text
			}
		}
	}
	return ""
}

func (n *xnode) alias() string {
	if a := n.path("AliasSet", "Alias"); a != nil && a.attr("nameSpace") == xtce.AliasNameSpace {
		return a.attr("alias")
	}
	return ""
}

func parse(t *testing.T) *xnode {
	t.Helper()
	var root xnode
	if err := xml.Unmarshal(generate(t), &root); err != nil {
		t.Fatal(err)
	}
	if root.XMLName.Space != xtce.Namespace || root.attr("name") != xtce.Root {
		t.Fatalf("root element %v name %q", root.XMLName, root.attr("name"))
	}
	return &root
}

// resolver finds what a name reference names, from a space system.
type resolver struct {
	root *xnode
}

// lookup resolves ref, used in space system ss (a path of names from the
// root), to the element in set (a path below the space system).
func (r *resolver) lookup(ss []string, ref string, set ...string) *xnode {
	path := strings.Split(ref, "/")
	if strings.HasPrefix(ref, "/") {
		ss, path = nil, path[1:]
		if len(path) == 0 || path[0] != r.root.attr("name") {
			return nil
		}
		path = path[1:]
	} else {
		ss = slices.Clone(ss)
	}
	for _, p := range path[:len(path)-1] {
		ss = append(ss, p)
	}
	n := r.root
	for _, s := range ss {
		n = n.named(s)
		if n == nil || n.XMLName.Local != "SpaceSystem" {
			return nil
		}
	}
	return n.path(set...).named(path[len(path)-1])
}

// TestCoversDictionary compares the lists: every command (opcode and
// arguments), packet (id and parameters) and event (id, severity and
// arguments) of protocol/dict is in the export, with its types, units,
// ranges and enumerations, and nothing else is, but the envelope; every
// reference resolves.
func TestCoversDictionary(t *testing.T) {
	root := parse(t)
	r := &resolver{root: root}
	var want, got []string

	// describe lists what the dictionary says of an item's type.
	describe := func(f *dict.Field) string {
		s := fmt.Sprintf("%v unit=%q", f.Kind, f.Unit)
		switch f.Kind {
		case dict.Uint, dict.Int, dict.Float:
			s += " bits=" + strconv.Itoa(f.Bits)
		case dict.String, dict.Bytes:
			s += " max=" + strconv.Itoa(8*f.MaxLen)
		}
		if f.Range != nil && f.Kind != dict.Enum {
			lo, hi := strconv.FormatUint(f.Range.Min, 10), strconv.FormatUint(f.Range.Max, 10)
			if f.Kind == dict.Int {
				lo, hi = strconv.FormatInt(int64(f.Range.Min), 10), strconv.FormatInt(int64(f.Range.Max), 10)
			}
			s += " range=" + lo + ".." + hi
		}
		if f.Enum != nil {
			var ls []string
			for _, l := range f.Enum.Labels {
				if f.Range == nil || (l.Value >= f.Range.Min && l.Value <= f.Range.Max) {
					ls = append(ls, fmt.Sprintf("%d=%s", l.Value, l.Name))
				}
			}
			s += " enum=" + strings.Join(ls, ",")
		}
		return s
	}
	// describeXTCE lists what the export says of a type.
	describeXTCE := func(typ *xnode) string {
		if typ == nil {
			return "dangling type reference"
		}
		k := typ.XMLName.Local
		k = strings.TrimSuffix(strings.TrimSuffix(k, "ParameterType"), "ArgumentType")
		var kind string
		switch k {
		case "Boolean":
			kind = "bool"
		case "Integer":
			kind = "uint"
			if typ.attr("signed") == "true" {
				kind = "int"
			}
		case "Float":
			kind = "float"
		case "String":
			kind = "string"
		case "Binary":
			kind = "bytes"
		case "Enumerated":
			kind = "enum"
		default:
			kind = k
		}
		unit := ""
		if u := typ.path("UnitSet", "Unit"); u != nil {
			unit = u.Text
		}
		s := fmt.Sprintf("%s unit=%q", kind, unit)
		switch kind {
		case "uint", "int":
			s += " bits=" + typ.attr("sizeInBits")
			if enc := typ.child("IntegerDataEncoding"); enc == nil || enc.attr("sizeInBits") != typ.attr("sizeInBits") {
				s += " (encoding size differs)"
			}
		case "float":
			s += " bits=" + typ.attr("sizeInBits")
		case "string":
			s += " max=" + typ.path("StringDataEncoding", "SizeInBits", "Fixed", "FixedValue").Text
		case "bytes":
			s += " max=" + typ.path("BinaryDataEncoding", "SizeInBits", "FixedValue").Text
		}
		vr := typ.child("ValidRange")
		if vs := typ.child("ValidRangeSet"); vs != nil {
			vr = vs.child("ValidRange")
		}
		if vr != nil {
			hi := vr.attr("maxInclusive")
			s += " range=" + vr.attr("minInclusive") + ".." + hi
		}
		if l := typ.child("EnumerationList"); l != nil {
			var ls []string
			for _, e := range l.Children {
				ls = append(ls, e.attr("value")+"="+e.attr("label"))
			}
			s += " enum=" + strings.Join(ls, ",")
		}
		return s
	}

	// Commands.
	for _, c := range dict.Commands() {
		want = append(want, fmt.Sprintf("command %s opcode=%d", c.Name, c.Opcode))
		for i := range c.Args {
			f := &c.Args[i]
			want = append(want, fmt.Sprintf("command %s arg %d %s: %s optional=%v", c.Name, i, f.Name, describe(f), f.Optional))
		}
	}
	for _, mc := range root.path("CommandMetaData", "MetaCommandSet").Children {
		n := mc.alias()
		got = append(got, fmt.Sprintf("command %s opcode=%s", n, mc.ancillary("opcode")))
		entries := mc.path("CommandContainer", "EntryList")
		if op := entries.child("FixedValueEntry"); op == nil || op.attr("binaryValue") != fmt.Sprintf("%04x", atoi(t, mc.ancillary("opcode"))) {
			t.Errorf("command %s: opcode entry %+v", n, op)
		}
		var refs []string
		for _, e := range entries.Children {
			if e.XMLName.Local == "ArgumentRefEntry" {
				refs = append(refs, e.attr("argumentRef"))
			}
		}
		var args []string
		if l := mc.child("ArgumentList"); l != nil {
			for i, a := range l.Children {
				args = append(args, a.attr("name"))
				typ := r.lookup(nil, a.attr("argumentTypeRef"), "CommandMetaData", "ArgumentTypeSet")
				got = append(got, fmt.Sprintf("command %s arg %d %s: %s optional=%v", n, i, a.attr("name"), describeXTCE(typ), a.ancillary("optional") == "true"))
			}
		}
		if !slices.Equal(refs, args) {
			t.Errorf("command %s: container entries %v, arguments %v", n, refs, args)
		}
	}

	// Packets and events: a space system each, with one container.
	container := func(ss []string, sys *xnode, kind, base, idParam string) {
		c := sys.path("TelemetryMetaData", "ContainerSet", "SequenceContainer")
		if c == nil {
			t.Errorf("%s %s: no container", kind, sys.attr("name"))
			return
		}
		line := fmt.Sprintf("%s %s id=%s", kind, c.alias(), c.ancillary("id"))
		if kind == "event" {
			line += " severity=" + c.ancillary("severity")
		}
		got = append(got, line)
		bc := c.child("BaseContainer")
		cmp := bc.path("RestrictionCriteria", "Comparison")
		if bc == nil || r.lookup(ss, bc.attr("containerRef"), "TelemetryMetaData", "ContainerSet") == nil ||
			cmp == nil || cmp.attr("value") != c.ancillary("id") || r.lookup(ss, cmp.attr("parameterRef"), "TelemetryMetaData", "ParameterSet") == nil ||
			!strings.HasSuffix(cmp.attr("parameterRef"), "/"+idParam) || !strings.HasSuffix(bc.attr("containerRef"), "/"+base) {
			t.Errorf("%s %s: base container or restriction wrong", kind, c.alias())
		}
		for i, e := range c.path("EntryList").Children {
			p := r.lookup(ss, e.attr("parameterRef"), "TelemetryMetaData", "ParameterSet")
			if p == nil {
				t.Errorf("%s %s: dangling parameter reference %q", kind, c.alias(), e.attr("parameterRef"))
				continue
			}
			typ := r.lookup(ss, p.attr("parameterTypeRef"), "TelemetryMetaData", "ParameterTypeSet")
			line := fmt.Sprintf("%s %s item %d %s: %s", kind, c.alias(), i, p.attr("name"), describeXTCE(typ))
			if kind == "packet" {
				line += " id=" + p.ancillary("id")
			}
			got = append(got, line)
		}
		if n := len(sys.path("TelemetryMetaData", "ParameterSet").childrenOrNil()); n != len(c.path("EntryList").Children) {
			t.Errorf("%s %s: %d parameters, %d in its container", kind, c.alias(), n, len(c.path("EntryList").Children))
		}
	}
	for _, p := range dict.Packets() {
		want = append(want, fmt.Sprintf("packet %s id=%d", p.Name, p.ID))
		for i := range p.Params {
			f := &p.Params[i]
			want = append(want, fmt.Sprintf("packet %s item %d %s: %s id=%d", p.Name, i, f.Name, describe(f), f.ID))
		}
	}
	for _, e := range dict.Events() {
		want = append(want, fmt.Sprintf("event %s id=%d severity=%v", e.Name, e.ID, e.Severity))
		for i := range e.Args {
			f := &e.Args[i]
			want = append(want, fmt.Sprintf("event %s item %d %s: %s", e.Name, i, f.Name, describe(f)))
		}
	}
	for _, sys := range root.Children {
		if sys.XMLName.Local != "SpaceSystem" {
			continue
		}
		if sys.attr("name") == "events" {
			for _, ev := range sys.Children {
				if ev.XMLName.Local == "SpaceSystem" {
					container([]string{"events", ev.attr("name")}, ev, "event", "event", "event_id")
				}
			}
			continue
		}
		container([]string{sys.attr("name")}, sys, "packet", "telemetry", "packet_id")
	}

	// The envelope, and nothing else, in the root.
	var env []string
	for _, p := range root.path("TelemetryMetaData", "ParameterSet").Children {
		env = append(env, p.attr("name"))
	}
	if !slices.Equal(env, xtce.Envelope) {
		t.Errorf("root parameters %v, want the envelope %v", env, xtce.Envelope)
	}

	slices.Sort(want)
	slices.Sort(got)
	for _, w := range want {
		if _, ok := slices.BinarySearch(got, w); !ok {
			t.Errorf("missing from the export: %s", w)
		}
	}
	for _, g := range got {
		if _, ok := slices.BinarySearch(want, g); !ok {
			t.Errorf("in the export, not in the dictionary: %s", g)
		}
	}
	t.Logf("%d commands, %d packets, %d events; %d items compared", len(dict.Commands()), len(dict.Packets()), len(dict.Events()), len(want))
}

func (n *xnode) childrenOrNil() []*xnode {
	if n == nil {
		return nil
	}
	return n.Children
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Errorf("not a number: %q", s)
	}
	return n
}
