package update

import (
	"bytes"
	"crypto/ed25519"
	"io"
	"testing"
)

// The decoders of outside input: a plan or release from the link or a file,
// an update file, a transfer target. Each must fail cleanly, and what it
// accepts must re-encode to the same bytes (one encoding per document).

func FuzzDecodePlan(f *testing.F) {
	good, err := EncodePlan(plan(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{0xa0})
	f.Add([]byte{0xa1, 0x01, 0x01})
	kr := keyring(f, map[uint32]ed25519.PrivateKey{5: groundKey})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePlan(b)
		if err != nil {
			return
		}
		again, err := EncodePlan(p)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded plan re-encodes differently (%v)", err)
		}
		if VerifyPlan(kr, vehicle, p) == nil && !bytes.Equal(b, good) {
			t.Fatalf("a plan the fuzzer made verifies")
		}
	})
}

func FuzzDecodeRelease(f *testing.F) {
	rs := plan(f).Release
	good, err := EncodeRelease(&rs)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:10])
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := DecodeRelease(b)
		if err != nil {
			return
		}
		again, err := EncodeRelease(rs)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded release re-encodes differently (%v)", err)
		}
	})
}

func FuzzReadFile(f *testing.F) {
	var buf bytes.Buffer
	if err := WriteFile(&buf, plan(f), bytes.NewReader(bundleBytes())); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:20])
	f.Add([]byte(FileMagic + "\x00\x00\x00\x01\xa0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, br, err := ReadFile(bytes.NewReader(b))
		if err != nil {
			return
		}
		data, err := io.ReadAll(br)
		if err == nil && uint64(len(data)) != p.BundleSize {
			t.Fatalf("bundle of %d bytes accepted, plan says %d", len(data), p.BundleSize)
		}
	})
}

func FuzzParseTarget(f *testing.F) {
	f.Add(TargetPlan(1))
	f.Add(TargetBundle(1 << 40))
	f.Add([]byte("P"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, id, err := ParseTarget(b)
		if err != nil {
			return
		}
		if !bytes.Equal(target(k, id), b) {
			t.Fatalf("target %x parses as %v %d", b, k, id)
		}
	})
}
