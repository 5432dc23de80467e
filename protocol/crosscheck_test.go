package protocol

import (
	"bytes"
	"encoding/hex"
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
