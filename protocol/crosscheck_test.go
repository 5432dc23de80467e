package protocol

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/internal/testtool"
)

// cbor2Script reads hex frames, one per line, and for each prints "ok" if
// the bytes are exactly one CBOR item (no trailing bytes) that the Python
// cbor2 library re-encodes canonically to the same bytes, else "diff" and
// the reason. cbor2's canonical encoding (shortest heads and floats, keys
// sorted length-first then bytewise) equals RFC 8949 Core Deterministic
// Encoding for the small integer keys frames use.
const cbor2Script = `
import sys, io, cbor2
for line in sys.stdin:
    b = bytes.fromhex(line.strip())
    try:
        fp = io.BytesIO(b)
        obj = cbor2.CBORDecoder(fp).decode()
        if fp.tell() != len(b):
            print("diff trailing", len(b) - fp.tell())
            continue
        again = cbor2.dumps(obj, canonical=True)
        print("ok" if again == b else "diff " + again.hex())
    except Exception as e:
        print("diff error", type(e).__name__)
`

// python3WithCBOR2 finds a python3 that has the cbor2 module (Debian:
// python3-cbor2).
func python3WithCBOR2() string {
	cands := []string{"python3", "/usr/bin/python3"}
	for _, c := range cands {
		if p, err := exec.LookPath(c); err == nil {
			if exec.Command(p, "-c", "import cbor2").Run() == nil {
				return p
			}
		}
	}
	return ""
}

// TestCrossCheckCBOR2 has an independent CBOR implementation (Python's
// cbor2) read every sample frame: each must be one well-formed CBOR item in
// deterministic encoding. Frames this package rejects as non-canonical must
// be found non-canonical by cbor2 too, so the check is not vacuous.
func TestCrossCheckCBOR2(t *testing.T) {
	py := python3WithCBOR2()
	if py == "" {
		testtool.Missing(t, testtool.RequireTools, "python3 with the cbor2 module (Debian package python3-cbor2) not found")
	}
	c := mustCodec(t, 1024)
	var good [][]byte
	for _, m := range sampleMessages(t) {
		f, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		good = append(good, f)
	}
	var bad [][]byte
	var badNames []string
	for _, tc := range malformedCases() {
		// Two cases break the schema's rule (zero fields absent, others
		// present), not CBOR's: a generic CBOR library cannot see those.
		schemaOnly := strings.Contains(tc.name, "omitempty") || strings.Contains(tc.name, "absent")
		if tc.want == ErrNonCanonical && !schemaOnly {
			bad = append(bad, tc.frame)
			badNames = append(badNames, tc.name)
		}
	}
	var in bytes.Buffer
	for _, f := range append(append([][]byte(nil), good...), bad...) {
		in.WriteString(hex.EncodeToString(f) + "\n")
	}
	cmd := exec.Command(py, "-c", cbor2Script)
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", py, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(good)+len(bad) {
		t.Fatalf("cbor2 answered %d lines for %d frames:\n%s", len(lines), len(good)+len(bad), out)
	}
	for i, f := range good {
		if lines[i] != "ok" {
			t.Errorf("cbor2 on our frame %x: %s", f, lines[i])
		}
	}
	for i, name := range badNames {
		if l := lines[len(good)+i]; !strings.HasPrefix(l, "diff") {
			t.Errorf("cbor2 finds %q canonical: %s", name, l)
		}
	}
	t.Logf("cbor2 (%s) agrees on %d frames and %d non-canonical ones", py, len(good), len(bad))
}

// macScript reads lines "vehicle keyhex framehex" and prints, for each, the
// 16-byte MAC that docs/protocol.md §5.7 gives the frame, computed from the
// frame's bytes alone with cbor2 and Python's own hmac, or "notag".
const macScript = `
import sys, io, hmac, hashlib, struct, cbor2
for line in sys.stdin:
    vehicle, key, frame = line.split()
    b = bytes.fromhex(frame)
    arr = cbor2.loads(b)
    typ, body = arr[1], arr[2]
    tag = body.pop(15, None)
    if tag is None:
        print("notag")
        continue
    kid, epoch, counter, _ = tag
    inp = b"bootorbit\x00return/v1\x00" + struct.pack(">IIIIB", int(vehicle), kid, epoch, counter, typ) + cbor2.dumps(body, canonical=True)
    print(hmac.new(bytes.fromhex(key), inp, hashlib.sha256).digest()[:16].hex())
`

// TestCrossCheckReturnMAC has Python (cbor2 and its own hmac) recompute the
// return-link MAC of tagged frames of every vehicle-to-ground type from the
// frame bytes and the spec alone: a second implementation can verify what
// this one sends.
func TestCrossCheckReturnMAC(t *testing.T) {
	py := python3WithCBOR2()
	if py == "" {
		testtool.Missing(t, testtool.RequireTools, "python3 with the cbor2 module (Debian package python3-cbor2) not found")
	}
	c := mustCodec(t, 1024)
	key := MACKey{ID: 300, Key: []byte("0123456789abcdef0123456789abcdef")}
	auth, err := NewReturnAuth(70000, key, 5)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []ReturnMessage{
		&Report{ID: 1 << 40, Watermark: 3, Cursor: 3, End: 300, High: 301, Last: 9, Ack: 77, Missing: Ranges{1, 2, 30, 4}},
		&Complete{ID: 7},
		&Cancel{ID: 7, Reason: CancelResources},
		&Verification{Vehicle: 70000, Seq: 1001, Stage: StageFailed, Code: 300, Opcode: 7},
		&Telemetry{Vehicle: 70000, Packet: 1, Time: 1_790_000_000_000, Params: []Param{{ID: 1, Value: int64(-3)}, {ID: 2, Value: 1.5}, {ID: 3, Value: "B"}}},
		&Event{Vehicle: 70000, ID: 12, Severity: SeverityError, Text: "slot B: boot failed", Args: []any{"B", uint64(2)}},
	}
	var in bytes.Buffer
	for i, m := range msgs {
		if i == 2 {
			auth.counter = 70000 // a counter beyond two bytes
		}
		if err := auth.Sign(m); err != nil {
			t.Fatal(err)
		}
		f, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&in, "%d %x %x\n", 70000, key.Key, f)
	}
	cmd := exec.Command(py, "-c", macScript)
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", py, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(msgs) {
		t.Fatalf("python answered %d lines for %d frames:\n%s", len(lines), len(msgs), out)
	}
	for i, m := range msgs {
		if want := hex.EncodeToString(TagOf(m).Sum); lines[i] != want {
			t.Errorf("%v: python computes mac %s, we sent %s", m.Type(), lines[i], want)
		}
	}
	t.Logf("python's hmac agrees on the macs of %d tagged frames", len(msgs))
}
