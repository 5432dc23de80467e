package protocol

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestSpecExamples keeps docs/protocol.md honest: every hex example in it is
// what this implementation produces, and decodes and verifies.
func TestSpecExamples(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- frame-example:([a-z-]+) -->\n```hex\n(.*?)```")
	examples := map[string][]byte{}
	for _, m := range re.FindAllSubmatch(doc, -1) {
		b, err := hex.DecodeString(strings.Join(strings.Fields(string(m[2])), ""))
		if err != nil {
			t.Fatalf("example %s: %v", m[1], err)
		}
		examples[string(m[1])] = b
	}
	if len(examples) != 5 {
		t.Fatalf("found %d hex examples, want 5", len(examples))
	}
	c := mustCodec(t, 256)

	ver, err := c.Encode(&Verification{Vehicle: 42, Seq: 1001, Stage: StageAccepted, Opcode: 7})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(examples["verification"], ver) {
		t.Errorf("verification example:\n%x\nimplementation:\n%x", examples["verification"], ver)
	}
	if want := AppendStreamFrame(nil, ver); !bytes.Equal(examples["verification-stream"], want) {
		t.Errorf("stream example:\n%x\nimplementation:\n%x", examples["verification-stream"], want)
	}

	tlm := &Telemetry{Vehicle: 42, Packet: 1, Time: 1_790_000_000_000, Seq: 77, Params: []Param{
		{ID: 1, Value: uint64(3)}, {ID: 2, Value: int64(-40)}, {ID: 3, Value: 1.5}, {ID: 4, Value: true}, {ID: 5, Value: "B"}}}
	if want, err := c.Encode(tlm); err != nil || !bytes.Equal(examples["telemetry"], want) {
		t.Errorf("telemetry example:\n%x\nimplementation:\n%x (%v)", examples["telemetry"], want, err)
	}
	if m, err := c.Decode(examples["telemetry"]); err != nil || !reflect.DeepEqual(m, tlm) {
		t.Errorf("telemetry example decodes to %#v, %v", m, err)
	}

	key := testKey(1)
	pub := hex.EncodeToString(key.Public().(ed25519.PublicKey))
	if !bytes.Contains(doc, []byte(pub)) {
		t.Errorf("the documented public key is not %s", pub)
	}
	cmd := &Command{Vehicle: 42, Seq: 1001, Opcode: 7}
	if err := cmd.SetArgs([]string{"B"}); err != nil {
		t.Fatal(err)
	}
	signed, _ := CommandSignedBytes(cmd, 1)
	if !bytes.Contains(doc, []byte(spaced(signed))) {
		t.Errorf("the documented signed payload is not %s", spaced(signed))
	}
	if err := SignCommand(cmd, 1, key); err != nil {
		t.Fatal(err)
	}
	want, err := c.Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(examples["command"], want) {
		t.Errorf("command example:\n%x\nimplementation:\n%x", examples["command"], want)
	}
	m, err := c.Decode(examples["command"])
	if err != nil {
		t.Fatalf("command example does not decode: %v", err)
	}
	kr, _ := NewKeyring(Key{ID: 1, Pub: key.Public().(ed25519.PublicKey)})
	if err := VerifyCommand(kr, m.(*Command)); err != nil {
		t.Errorf("command example does not verify: %v", err)
	}
	// The authenticated Complete of §5.7.
	macKey := MACKey{ID: 1, Key: bytes.Repeat([]byte{0x11}, MACKeyLen)}
	auth, err := NewReturnAuth(42, macKey, 1)
	if err != nil {
		t.Fatal(err)
	}
	done := &Complete{ID: 7}
	in, err := ReturnMACInput(42, &MACTag{Key: 1, Epoch: 1, Counter: 1}, done)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte(spaced(in))) {
		t.Errorf("the documented MAC input is not %s", spaced(in))
	}
	if err := auth.Sign(done); err != nil {
		t.Fatal(err)
	}
	if want, err := c.Encode(done); err != nil || !bytes.Equal(examples["complete-mac"], want) {
		t.Errorf("complete-mac example:\n%x\nimplementation:\n%x (%v)", examples["complete-mac"], want, err)
	}
	v, _ := NewReturnVerifier(42, macKey)
	if m, err := c.Decode(examples["complete-mac"]); err != nil || v.Verify(m) != nil {
		t.Errorf("complete-mac example does not decode and verify: %v", err)
	}
	// The COBS example in the text.
	if got := AppendStreamFrame(nil, hx("11 22 00 33")); !bytes.Equal(got, hx("00 03 11 22 02 33 00")) {
		t.Errorf("COBS example: %x", got)
	}
}

// spaced formats b as "87 10 18 2a".
func spaced(b []byte) string {
	var s []string
	for _, x := range b {
		s = append(s, hex.EncodeToString([]byte{x}))
	}
	return strings.Join(s, " ")
}

// TestSpecBounds keeps the numbers docs/protocol.md states in step with the
// constants that enforce them: a changed bound must change the spec too.
func TestSpecBounds(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Join(strings.Fields(string(raw)), " ")
	for _, phrase := range []string{
		fmt.Sprintf("adds **%d bytes** around the body (`FrameOverhead`)", FrameOverhead),
		fmt.Sprintf("The shortest possible frame is %d bytes (`MinFrameLen`", MinFrameLen),
		fmt.Sprintf("from %d bytes (a UHF radio frame) to %d bytes", MinMaxFrame, MaxMaxFrame),
		fmt.Sprintf("more than %d levels deep (the body's own map is level 1)", MaxNesting),
		fmt.Sprintf("At most %d bytes (`MaxCommandArgs`)", MaxCommandArgs),
		fmt.Sprintf("nesting at most %d levels", MaxArgsNesting),
		fmt.Sprintf("at most %d (`MaxParams`)", MaxParams),
		fmt.Sprintf("a byte string of at most %d bytes (`MaxValueLen`)", MaxValueLen),
		fmt.Sprintf("at most %d bytes of UTF-8 [limit]", MaxEventText),
		fmt.Sprintf("omitted when empty; at most %d [limit]; values as in", MaxEventArgs),
		fmt.Sprintf("(1..%d bytes) without `00`", MaxDomainLen),
		fmt.Sprintf("(at most %d keys)", MaxKeys),
		fmt.Sprintf("the %d numbers top, top − 1, …, top − %d", ReplayWindowSize, ReplayWindowSize-1),
		fmt.Sprintf("The persisted state is %d bytes", ReplayWindowStateLen),
		fmt.Sprintf("sig is exactly %d bytes", ed25519.SignatureSize),
		fmt.Sprintf("sum exactly %d bytes [invalid-field]", MACLen),
		fmt.Sprintf("K is the vehicle's %d-byte symmetric key", MACKeyLen),
		fmt.Sprintf("This document is version %d.", Version),
	} {
		if !strings.Contains(doc, phrase) {
			t.Errorf("docs/protocol.md does not say %q", phrase)
		}
	}
}
