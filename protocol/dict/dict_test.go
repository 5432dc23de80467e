package dict

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
)

// FrameSize is the frame every packet, event and command must fit.
const FrameSize = 256

var (
	itemName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	// Packet names carry a dot ("hk.slots"); XTCE names may not, so the
	// export writes the dot as an underscore, which must not collide.
	packetName = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$`)
)

func checkFields(t *testing.T, owner string, fs []Field) {
	t.Helper()
	names := map[string]bool{}
	for i, f := range fs {
		where := owner + "." + f.Name
		if !itemName.MatchString(f.Name) || names[f.Name] {
			t.Errorf("%s: bad or duplicate name", where)
		}
		names[f.Name] = true
		if f.Description == "" {
			t.Errorf("%s: no description", where)
		}
		if f.Optional && i+1 < len(fs) && !fs[i+1].Optional {
			t.Errorf("%s: optional before a required argument", where)
		}
		switch f.Kind {
		case Bool:
			if f.Bits != 1 {
				t.Errorf("%s: bool of %d bits", where, f.Bits)
			}
		case Uint, Int, Enum:
			if f.Bits < 1 || f.Bits > 64 {
				t.Errorf("%s: %d bits", where, f.Bits)
			}
			if (f.Kind == Enum) != (f.Enum != nil) {
				t.Errorf("%s: kind %v with enumeration %v", where, f.Kind, f.Enum)
			}
			if f.Range != nil && f.Range.Min > f.Range.Max {
				t.Errorf("%s: empty range", where)
			}
			if f.Kind == Enum {
				for _, l := range f.Enum.Labels {
					if f.Bits < 64 && l.Value>>f.Bits != 0 {
						t.Errorf("%s: label %s does not fit %d bits", where, l.Name, f.Bits)
					}
				}
			}
		case Float:
			if f.Bits != 32 && f.Bits != 64 {
				t.Errorf("%s: float of %d bits", where, f.Bits)
			}
		case String, Bytes:
			if f.MaxLen < 1 || f.MaxLen > protocol.MaxValueLen || f.Bits != 0 {
				t.Errorf("%s: max length %d, bits %d", where, f.MaxLen, f.Bits)
			}
		default:
			t.Errorf("%s: kind %v", where, f.Kind)
		}
		if f.Kind != Enum && f.Enum != nil {
			t.Errorf("%s: enumeration on a %v", where, f.Kind)
		}
	}
}

func TestDefinitions(t *testing.T) {
	ops, cmdNames := map[uint16]bool{}, map[string]bool{}
	for _, c := range Commands() {
		if c.Opcode == 0 || ops[c.Opcode] || cmdNames[c.Name] || !itemName.MatchString(c.Name) || c.Description == "" {
			t.Errorf("command %d %q: zero, duplicate or badly named or described", c.Opcode, c.Name)
		}
		ops[c.Opcode], cmdNames[c.Name] = true, true
		for _, a := range c.Args {
			if a.ID != 0 {
				t.Errorf("command %s arg %s has a parameter id", c.Name, a.Name)
			}
		}
		checkFields(t, c.Name, c.Args)
	}
	pids, pnames, params, xtce := map[uint16]bool{}, map[string]bool{}, map[uint16]string{}, map[string]bool{}
	for _, p := range Packets() {
		if p.ID == 0 || pids[p.ID] || pnames[p.Name] || !packetName.MatchString(p.Name) || p.Description == "" {
			t.Errorf("packet %d %q: zero, duplicate or badly named or described", p.ID, p.Name)
		}
		pids[p.ID], pnames[p.Name] = true, true
		for _, f := range p.Params {
			if f.ID == 0 || params[f.ID] != "" {
				t.Errorf("packet %s param %s: id %d zero or also %s", p.Name, f.Name, f.ID, params[f.ID])
			}
			params[f.ID] = p.Name + "." + f.Name
			if f.Optional {
				t.Errorf("packet %s param %s optional", p.Name, f.Name)
			}
			x := strings.ReplaceAll(p.Name, ".", "_") + "_" + f.Name
			if xtce[x] {
				t.Errorf("XTCE name %s twice", x)
			}
			xtce[x] = true
		}
		checkFields(t, p.Name, p.Params)
	}
	eids, enames := map[uint16]bool{}, map[string]bool{}
	for _, e := range Events() {
		if e.ID == 0 || eids[e.ID] || enames[e.Name] || !itemName.MatchString(e.Name) || e.Description == "" || e.Severity > protocol.SeverityCritical {
			t.Errorf("event %d %q: zero, duplicate or badly named, described or graded", e.ID, e.Name)
		}
		eids[e.ID], enames[e.Name] = true, true
		if len(e.Args) > protocol.MaxEventArgs {
			t.Errorf("event %s: %d args", e.Name, len(e.Args))
		}
		for _, a := range e.Args {
			if a.ID != 0 || a.Optional {
				t.Errorf("event %s arg %s has a parameter id or is optional", e.Name, a.Name)
			}
		}
		checkFields(t, e.Name, e.Args)
	}
	for _, en := range Enumerations() {
		vals, names := map[uint64]bool{}, map[string]bool{}
		if !itemName.MatchString(en.Name) || en.Description == "" {
			t.Errorf("enumeration %q badly named or described", en.Name)
		}
		for _, l := range en.Labels {
			if vals[l.Value] || names[l.Name] || !itemName.MatchString(l.Name) || l.Description == "" {
				t.Errorf("enumeration %s label %d %q: duplicate or badly named or described", en.Name, l.Value, l.Name)
			}
			vals[l.Value], names[l.Name] = true, true
		}
	}
	// Lookups find what the lists hold.
	for _, c := range Commands() {
		if x, ok := CommandByOpcode(c.Opcode); !ok || x != c {
			t.Errorf("CommandByOpcode(%d)", c.Opcode)
		}
		if x, ok := CommandByName(c.Name); !ok || x != c {
			t.Errorf("CommandByName(%s)", c.Name)
		}
	}
	for _, p := range Packets() {
		if x, ok := PacketByID(p.ID); !ok || x != p {
			t.Errorf("PacketByID(%d)", p.ID)
		}
		if x, ok := PacketByName(p.Name); !ok || x != p {
			t.Errorf("PacketByName(%s)", p.Name)
		}
		for i := range p.Params {
			if xp, f, ok := ParamByID(p.Params[i].ID); !ok || xp != p || f != &p.Params[i] {
				t.Errorf("ParamByID(%d)", p.Params[i].ID)
			}
		}
	}
	for _, e := range Events() {
		if x, ok := EventByID(e.ID); !ok || x != e {
			t.Errorf("EventByID(%d)", e.ID)
		}
		if x, ok := EventByName(e.Name); !ok || x != e {
			t.Errorf("EventByName(%s)", e.Name)
		}
	}
	if _, ok := CommandByOpcode(0); ok {
		t.Error("opcode 0 found")
	}
}

// largest returns the value of f whose CBOR encoding is the longest.
func largest(f *Field) any {
	switch f.Kind {
	case Bool:
		return true
	case Uint, Enum:
		var m uint64 = math.MaxUint64
		if f.Bits < 64 {
			m = 1<<f.Bits - 1
		}
		if f.Range != nil {
			m = min(m, f.Range.Max)
		}
		if f.Kind == Enum {
			var best uint64
			for _, l := range f.Enum.Labels {
				if l.Value <= m && l.Value >= best {
					best = l.Value
				}
			}
			return best
		}
		return m
	case Int:
		if f.Range != nil {
			return int64(f.Range.Max) // ranges here are non-negative
		}
		return int64(-1) << (f.Bits - 1)
	case Float:
		if f.Bits == 32 {
			return float64(float32(1) / 3)
		}
		return math.Pi
	case String:
		return strings.Repeat("x", f.MaxLen)
	case Bytes:
		return bytes.Repeat([]byte{0xff}, f.MaxLen)
	}
	panic(f.Kind)
}

func largestValues(fs []Field) Values {
	v := Values{}
	for i := range fs {
		v[fs[i].Name] = largest(&fs[i])
	}
	return v
}

var worstTag = &protocol.MACTag{Key: math.MaxUint32, Epoch: math.MaxUint32, Counter: math.MaxUint32, Sum: make([]byte, protocol.MACLen)}

func TestEverythingFitsAFrame(t *testing.T) {
	codec, err := protocol.NewCodec(FrameSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Packets() {
		tm, err := p.NewTelemetry(math.MaxUint32, math.MaxInt64, math.MaxUint32, largestValues(p.Params))
		if err != nil {
			t.Fatal(err)
		}
		tm.MAC = worstTag
		frame, err := codec.Encode(tm)
		if err != nil {
			t.Errorf("packet %s: %v", p.Name, err)
			continue
		}
		t.Logf("packet %-12s %3d bytes at most", p.Name, len(frame))
	}
	for _, e := range Events() {
		ev, err := e.NewEvent(math.MaxUint32, math.MaxInt64, math.MaxUint32, strings.Repeat("x", MaxEventText), largestValues(e.Args))
		if err != nil {
			t.Fatal(err)
		}
		ev.Severity = protocol.SeverityCritical
		ev.MAC = worstTag
		frame, err := codec.Encode(ev)
		if err != nil {
			t.Errorf("event %s: %v", e.Name, err)
			continue
		}
		t.Logf("event %-18s %3d bytes at most", e.Name, len(frame))
	}
	for _, c := range Commands() {
		pc, err := c.NewCommand(math.MaxUint32, math.MaxUint64, largestValues(c.Args))
		if err != nil {
			t.Fatal(err)
		}
		pc.Target = math.MaxUint32
		pc.Auth = &protocol.Auth{Key: math.MaxUint32, Sig: make([]byte, ed25519.SignatureSize)}
		frame, err := codec.Encode(pc)
		if err != nil {
			t.Errorf("command %s: %v", c.Name, err)
			continue
		}
		t.Logf("command %-16s %3d bytes at most", c.Name, len(frame))
	}
}

// TestRoundTrip sends every packet and event through the codec with a real
// return-link MAC, and every command with a real signature, and decodes them.
func TestRoundTrip(t *testing.T) {
	codec, _ := protocol.NewCodec(FrameSize)
	mk := protocol.MACKey{ID: 3, Key: bytes.Repeat([]byte{7}, protocol.MACKeyLen)}
	auth, err := protocol.NewReturnAuth(9, mk, 1)
	if err != nil {
		t.Fatal(err)
	}
	ver, _ := protocol.NewReturnVerifier(9, mk)
	roundTrip := func(m protocol.ReturnMessage) protocol.Message {
		t.Helper()
		if err := auth.Sign(m); err != nil {
			t.Fatal(err)
		}
		frame, err := codec.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := codec.Decode(frame)
		if err != nil {
			t.Fatal(err)
		}
		if err := ver.Verify(got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, p := range Packets() {
		want := normalize(p.Params, largestValues(p.Params))
		tm, err := p.NewTelemetry(9, 1, 1, want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Decode(roundTrip(tm).(*protocol.Telemetry).Params)
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded %v, want %v", p.Name, got, want)
		}
	}
	for _, e := range Events() {
		want := normalize(e.Args, largestValues(e.Args))
		ev, err := e.NewEvent(9, 1, 1, "text", want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.Decode(roundTrip(ev).(*protocol.Event).Args)
		if err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded %v, want %v", e.Name, got, want)
		}
	}
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	kr, _ := protocol.NewKeyring(protocol.Key{ID: 1, Pub: priv.Public().(ed25519.PublicKey)})
	for _, c := range Commands() {
		want := normalize(c.Args, largestValues(c.Args))
		pc, err := c.NewCommand(9, 5, want)
		if err != nil {
			t.Fatal(err)
		}
		if err := protocol.SignCommand(pc, 1, priv); err != nil {
			t.Fatal(err)
		}
		frame, err := codec.Encode(pc)
		if err != nil {
			t.Fatal(err)
		}
		m, err := codec.Decode(frame)
		if err != nil {
			t.Fatal(err)
		}
		gc := m.(*protocol.Command)
		if err := protocol.VerifyCommand(kr, gc); err != nil {
			t.Fatal(err)
		}
		dc, ok := CommandByOpcode(gc.Opcode)
		if !ok || dc != c {
			t.Fatalf("opcode %d", gc.Opcode)
		}
		got, err := dc.DecodeArgs(gc)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded %#v, want %#v", c.Name, got, want)
		}
	}
}

// normalize returns vals as decoding yields them.
func normalize(fs []Field, vals Values) Values {
	out := Values{}
	for i := range fs {
		if v, ok := vals[fs[i].Name]; ok {
			n, err := fs[i].check("test", v)
			if err != nil {
				panic(err)
			}
			out[fs[i].Name] = n
		}
	}
	return out
}

func TestOptionalArgument(t *testing.T) {
	pc, err := CmdActivate.NewCommand(1, 1, Values{"slot": "b", "attempts": 3})
	if err != nil {
		t.Fatal(err)
	}
	got, err := CmdActivate.DecodeArgs(pc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, Values{"slot": uint64(2), "attempts": uint64(3)}) {
		t.Fatalf("activate args %v", got)
	}
	pc, err = CmdNoop.NewCommand(1, 1, nil)
	if err != nil || len(pc.Args) != 0 {
		t.Fatalf("noop: %v %x", err, pc.Args)
	}
	if v, err := CmdNoop.DecodeArgs(pc); err != nil || len(v) != 0 {
		t.Fatalf("noop args %v %v", v, err)
	}
}

func TestBadValues(t *testing.T) {
	tests := []struct {
		name string
		do   func() error
	}{
		{"missing", func() error { _, err := CmdActivate.NewCommand(1, 1, Values{"slot": 1}); return err }},
		{"unknown arg", func() error { _, err := CmdVerify.NewCommand(1, 1, Values{"slot": 1, "x": 1}); return err }},
		{"attempts out of range", func() error { _, err := CmdActivate.NewCommand(1, 1, Values{"slot": 1, "attempts": 10}); return err }},
		{"slot none", func() error { _, err := CmdVerify.NewCommand(1, 1, Values{"slot": "none"}); return err }},
		{"unknown label", func() error { _, err := CmdVerify.NewCommand(1, 1, Values{"slot": "c"}); return err }},
		{"negative time", func() error {
			_, err := CmdActivate.NewCommand(1, 1, Values{"slot": 1, "attempts": 1, "not_before": -1})
			return err
		}},
		{"wrong type", func() error { _, err := CmdDeleteStaged.NewCommand(1, 1, Values{"plan": "7"}); return err }},
		{"negative uint", func() error { _, err := CmdDeleteStaged.NewCommand(1, 1, Values{"plan": -7}); return err }},
		{"too many bits", func() error {
			_, err := HKSlots.Encode(withValue(HKSlots.Params, "slot_a_attempts", 256))
			return err
		}},
		{"enum value without label", func() error {
			_, err := HKSlots.Encode(withValue(HKSlots.Params, "slot_a_state", 6))
			return err
		}},
		{"long text", func() error {
			_, err := HKError.Encode(withValue(HKError.Params, "text", strings.Repeat("x", MaxErrorText+1)))
			return err
		}},
		{"missing param", func() error {
			v := largestValues(HKStorage.Params)
			delete(v, "free")
			_, err := HKStorage.Encode(v)
			return err
		}},
		{"unknown param id", func() error { _, err := HKStorage.Decode(protocol.Params{{ID: 100, Value: uint64(1)}}); return err }},
		{"repeated param", func() error {
			_, err := HKStorage.Decode(protocol.Params{{ID: 400, Value: uint64(1)}, {ID: 400, Value: uint64(1)}})
			return err
		}},
		{"too many args", func() error {
			_, err := EvLinkUp.Decode(protocol.Values{"uhf", "x"})
			return err
		}},
		{"enum label on the wire", func() error {
			_, err := HKBoot.Decode(protocol.Params{{ID: 200, Value: "a"}})
			return err
		}},
		{"too few args", func() error { _, err := EvPlanRefused.Decode(protocol.Values{uint64(1)}); return err }},
		{"event text", func() error {
			_, err := EvLinkUp.NewEvent(1, 1, 1, strings.Repeat("x", MaxEventText+1), Values{"link": "uhf"})
			return err
		}},
		{"args not an array", func() error {
			pc := &protocol.Command{Seq: 1, Opcode: CmdVerify.Opcode}
			if err := pc.SetArgs(map[string]int{"slot": 1}); err != nil {
				return nil
			}
			_, err := CmdVerify.DecodeArgs(pc)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if !errors.Is(err, ErrValue) || !strings.HasPrefix(err.Error(), "dict: ") {
				t.Fatalf("err = %v, want ErrValue", err)
			}
			if CodeOf(err) != CodeBadArgument {
				t.Fatalf("CodeOf = %d", CodeOf(err))
			}
		})
	}
}

func withValue(fs []Field, name string, v any) Values {
	vals := largestValues(fs)
	vals[name] = v
	return vals
}

func TestCodeOf(t *testing.T) {
	w := func(errs ...error) error {
		var s []any
		f := ""
		for _, e := range errs {
			f += "%w: "
			s = append(s, e)
		}
		return fmt.Errorf(f+"x", s...)
	}
	tests := []struct {
		err  error
		want protocol.Code
	}{
		{nil, 0},
		{w(update.ErrReleaseSignature, protocol.ErrUnknownKey), CodeUntrustedReleaseKey},
		{w(update.ErrReleaseSignature, protocol.ErrBadSignature), CodeBadReleaseSignature},
		{w(update.ErrPlanSignature, protocol.ErrUnknownKey), protocol.CodeOf(protocol.ReasonUnknownKey)},
		{w(update.ErrPlanSignature, protocol.ErrBadSignature), CodeBadPlanSignature},
		{w(update.ErrWrongVehicle, protocol.ErrWrongVehicle), protocol.CodeOf(protocol.ReasonWrongVehicle)},
		{w(update.ErrManifestDigest), CodeManifestMismatch},
		{w(update.ErrConfigDigest), CodeConfigMismatch},
		{w(update.ErrBundleDigest), CodeBundleMismatch},
		{w(update.ErrMalformed), CodeBadPlan},
		{w(protocol.ErrReplayed), protocol.CodeOf(protocol.ReasonReplayed)},
		{errors.New("other"), protocol.CodeOf(protocol.ReasonOther)},
	}
	for _, tt := range tests {
		if got := CodeOf(tt.err); got != tt.want {
			t.Errorf("CodeOf(%v) = %d (%s), want %d", tt.err, got, EnumReason.NameOf(uint64(got)), tt.want)
		}
		if _, ok := EnumReason.Lookup(uint64(tt.want)); !ok {
			t.Errorf("code %d has no label", tt.want)
		}
	}
	if EnumReason.NameOf(uint64(CodeDowngrade)) != "downgrade" || EnumReason.NameOf(14) != "replayed" {
		t.Error("reason labels")
	}
}

// TestDocumented checks docs/uplink.md names every item of the dictionary,
// so the specification cannot fall behind the code unnoticed.
func TestDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/uplink.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	has := func(what, name string) {
		if !strings.Contains(doc, "`"+name+"`") && !strings.Contains(doc, "**"+name+"**") {
			t.Errorf("docs/uplink.md does not name %s %s", what, name)
		}
	}
	for _, c := range Commands() {
		has("command", c.Name)
		for _, a := range c.Args {
			has("argument", a.Name)
		}
	}
	for _, p := range Packets() {
		has("packet", p.Name)
		for _, f := range p.Params {
			has("parameter", f.Name)
		}
	}
	for _, e := range Events() {
		has("event", e.Name)
	}
	for _, en := range Enumerations() {
		has("enumeration", en.Name)
		if en == EnumReason {
			for _, l := range updateCodes {
				has("code", l.Name)
			}
			continue
		}
		for _, l := range en.Labels {
			has("label", l.Name)
		}
	}
}

// TestNilBytes: a nil byte string (an empty list of parts, say) is sent as
// an empty one: encoded as null, the receiver's decoder would refuse the
// frame and the event would be lost.
func TestNilBytes(t *testing.T) {
	ev, err := EvBaseMismatch.NewEvent(7, 1, 1, "", Values{"plan": uint64(2), "layer": uint64(0), "diff_id": []byte(nil), "parts": []byte(nil), "more": false})
	if err != nil {
		t.Fatal(err)
	}
	c, err := protocol.NewCodec(256)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Decode(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	v, err := EvBaseMismatch.Decode(m.(*protocol.Event).Args)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := v["parts"].([]byte); !ok || len(p) != 0 {
		t.Fatalf("parts %#v", v["parts"])
	}
}
