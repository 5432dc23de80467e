package update

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/opencontainers/go-digest"
)

// key returns a deterministic ed25519 key for n.
func key(n byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
}

func keyring(t testing.TB, keys map[uint32]ed25519.PrivateKey) *protocol.Keyring {
	t.Helper()
	var ks []protocol.Key
	for id, k := range keys {
		ks = append(ks, protocol.Key{ID: protocol.KeyID(id), Pub: k.Public().(ed25519.PublicKey)})
	}
	kr, err := protocol.NewKeyring(ks...)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

var (
	releaseKey = key(1)
	groundKey  = key(2)
	otherKey   = key(3)
)

const vehicle = 42

// image returns a config and the manifest that names it.
func image(configExtra string) (manifest, config []byte) {
	config = []byte(`{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":["` +
		string(digest.FromString("layer0")) + `","` + string(digest.FromString("layer1")) + `"]}` + configExtra + `}`)
	manifest = []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}`,
		digest.FromBytes(config), len(config)))
	return manifest, config
}

func bundleBytes() []byte { return []byte("BODELTA\n pretend this is a delta bundle") }

// plan returns a signed plan for vehicle.
func plan(t testing.TB) *Plan {
	t.Helper()
	m, c := image("")
	rs, err := SignRelease(releaseKey, 7, Release{Manifest: digest.FromBytes(m), Version: 3, HardwareID: "obc-rev-c"})
	if err != nil {
		t.Fatal(err)
	}
	b := bundleBytes()
	p := &Plan{
		ID: 10, Vehicle: vehicle, Release: rs, Manifest: m, Config: c,
		Base:       digest.FromString("old manifest"),
		BundleSize: uint64(len(b)), BundleDigest: digest.FromBytes(b), Staging: uint64(len(b)) + 1000,
	}
	if err := SignPlan(groundKey, 5, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// resign signs p as it is, without SignPlan's checks, as a hostile or buggy
// ground could.
func resign(t testing.TB, p *Plan, priv ed25519.PrivateKey) {
	t.Helper()
	msg, err := p.signedBytes()
	if err != nil {
		t.Fatal(err)
	}
	p.Sig = protocol.Sign(priv, DomainPlan, msg)
}

func TestReleaseRoundTrip(t *testing.T) {
	kr := keyring(t, map[uint32]ed25519.PrivateKey{7: releaseKey})
	rs := plan(t).Release
	b, err := EncodeRelease(&rs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRelease(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyRelease(kr, got); err != nil {
		t.Fatal(err)
	}
	if got.Release != rs.Release || got.KeyID != 7 || !bytes.Equal(got.Sig, rs.Sig) {
		t.Fatalf("round trip: %+v, want %+v", got, rs)
	}
	if len(b) > MaxReleaseSize {
		t.Fatalf("release of %d bytes over MaxReleaseSize", len(b))
	}
}

func TestReleaseRefusals(t *testing.T) {
	kr := keyring(t, map[uint32]ed25519.PrivateKey{7: releaseKey})
	good := plan(t).Release
	tests := []struct {
		name  string
		alter func(rs *ReleaseSignature)
		want  []error
	}{
		{"unknown key", func(rs *ReleaseSignature) { rs.KeyID = 8 }, []error{ErrReleaseSignature, protocol.ErrUnknownKey}},
		{"bad sig", func(rs *ReleaseSignature) { rs.Sig[5] ^= 1 }, []error{ErrReleaseSignature, protocol.ErrBadSignature}},
		{"altered version", func(rs *ReleaseSignature) { rs.Release.Version++ }, []error{ErrReleaseSignature, protocol.ErrBadSignature}},
		{"altered hardware", func(rs *ReleaseSignature) { rs.Release.HardwareID = "obc-rev-d" }, []error{ErrReleaseSignature, protocol.ErrBadSignature}},
		{"signed by another key", func(rs *ReleaseSignature) {
			o, _ := SignRelease(otherKey, 7, rs.Release)
			*rs = o
		}, []error{ErrReleaseSignature, protocol.ErrBadSignature}},
		{"version 0", func(rs *ReleaseSignature) { rs.Release.Version = 0 }, []error{ErrMalformed}},
		{"empty hardware", func(rs *ReleaseSignature) { rs.Release.HardwareID = "" }, []error{ErrMalformed}},
		{"hardware slash", func(rs *ReleaseSignature) { rs.Release.HardwareID = "obc/c" }, []error{ErrMalformed}},
		{"hardware too long", func(rs *ReleaseSignature) { rs.Release.HardwareID = strings.Repeat("a", 65) }, []error{ErrMalformed}},
		{"sha512 manifest", func(rs *ReleaseSignature) { rs.Release.Manifest = digest.Digest("sha512:" + strings.Repeat("ab", 64)) }, []error{ErrMalformed}},
		{"bad digest", func(rs *ReleaseSignature) { rs.Release.Manifest = "sha256:zz" }, []error{ErrMalformed}},
		{"short sig", func(rs *ReleaseSignature) { rs.Sig = rs.Sig[:63] }, []error{ErrMalformed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := good
			rs.Sig = append([]byte(nil), good.Sig...)
			tt.alter(&rs)
			err := VerifyRelease(kr, &rs)
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("VerifyRelease = %v, want %v", err, w)
				}
			}
			if err != nil && !strings.HasPrefix(err.Error(), "update: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
	if _, err := SignRelease(releaseKey, 7, Release{Manifest: good.Release.Manifest, HardwareID: "x"}); !errors.Is(err, ErrMalformed) {
		t.Errorf("SignRelease of version 0 = %v, want ErrMalformed", err)
	}
}

func TestPlanRoundTrip(t *testing.T) {
	p := plan(t)
	b, err := EncodePlan(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodePlan(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyPlan(keyring(t, map[uint32]ed25519.PrivateKey{5: groundKey}), vehicle, got); err != nil {
		t.Fatal(err)
	}
	if err := VerifyRelease(keyring(t, map[uint32]ed25519.PrivateKey{7: releaseKey}), &got.Release); err != nil {
		t.Fatal(err)
	}
	b2, err := EncodePlan(got)
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("re-encoding differs (%v)", err)
	}
	ids, err := DiffIDs(got.Config)
	if err != nil || len(ids) != 2 || ids[0] != digest.FromString("layer0") {
		t.Fatalf("DiffIDs = %v, %v", ids, err)
	}
	t.Logf("plan encodes in %d bytes (manifest %d, config %d)", len(b), len(p.Manifest), len(p.Config))
}

func TestPlanRefusals(t *testing.T) {
	kr := keyring(t, map[uint32]ed25519.PrivateKey{5: groundKey})
	tests := []struct {
		name  string
		alter func(t *testing.T, p *Plan)
		want  []error
	}{
		{"wrong vehicle", func(t *testing.T, p *Plan) { p.Vehicle = 43; resign(t, p, groundKey) }, []error{ErrWrongVehicle, protocol.ErrWrongVehicle}},
		{"bad sig", func(t *testing.T, p *Plan) { p.Sig[0] ^= 0x80 }, []error{ErrPlanSignature, protocol.ErrBadSignature}},
		{"altered after signing", func(t *testing.T, p *Plan) { p.AllowDowngrade = true }, []error{ErrPlanSignature, protocol.ErrBadSignature}},
		{"altered release", func(t *testing.T, p *Plan) { p.Release.KeyID = 9 }, []error{ErrPlanSignature, protocol.ErrBadSignature}},
		{"unknown key", func(t *testing.T, p *Plan) { p.KeyID = 6; resign(t, p, groundKey) }, []error{ErrPlanSignature, protocol.ErrUnknownKey}},
		{"other key", func(t *testing.T, p *Plan) { resign(t, p, otherKey) }, []error{ErrPlanSignature, protocol.ErrBadSignature}},
		{"manifest digest mismatch", func(t *testing.T, p *Plan) {
			p.Manifest, _ = image(`,"x":1`)
			resign(t, p, groundKey)
		}, []error{ErrManifestDigest}},
		{"config digest mismatch", func(t *testing.T, p *Plan) {
			p.Config = bytes.Replace(p.Config, []byte("arm64"), []byte("arm65"), 1) // same size, other bytes
			resign(t, p, groundKey)
		}, []error{ErrConfigDigest}},
		{"config size mismatch", func(t *testing.T, p *Plan) { p.Config = append(p.Config, ' '); resign(t, p, groundKey) }, []error{ErrConfigDigest}},
		{"manifest without config", func(t *testing.T, p *Plan) {
			p.Manifest = []byte(`{"schemaVersion":2}`)
			p.Release, _ = SignRelease(releaseKey, 7, Release{Manifest: digest.FromBytes(p.Manifest), Version: 3, HardwareID: "h"})
			resign(t, p, groundKey)
		}, []error{ErrConfigDigest}},
		{"oversize manifest", func(t *testing.T, p *Plan) { p.Manifest = make([]byte, MaxManifestSize+1) }, []error{ErrTooLarge}},
		{"oversize config", func(t *testing.T, p *Plan) { p.Config = make([]byte, MaxConfigSize+1) }, []error{ErrTooLarge}},
		{"oversize bundle", func(t *testing.T, p *Plan) { p.BundleSize = MaxBundleSize + 1; p.Staging = p.BundleSize }, []error{ErrTooLarge}},
		{"staging below bundle", func(t *testing.T, p *Plan) { p.Staging = p.BundleSize - 1 }, []error{ErrMalformed}},
		{"supplement not earlier", func(t *testing.T, p *Plan) { p.Supplement = p.ID }, []error{ErrMalformed}},
		{"id 0", func(t *testing.T, p *Plan) { p.ID = 0 }, []error{ErrMalformed}},
		{"bad base", func(t *testing.T, p *Plan) { p.Base = "sha256:abc" }, []error{ErrMalformed}},
		{"no bundle digest", func(t *testing.T, p *Plan) { p.BundleDigest = "" }, []error{ErrMalformed}},
		{"no bundle", func(t *testing.T, p *Plan) { p.BundleSize = 0 }, []error{ErrMalformed}},
		{"no sig", func(t *testing.T, p *Plan) { p.Sig = nil }, []error{ErrMalformed}},
		{"bad release fields", func(t *testing.T, p *Plan) { p.Release.Release.HardwareID = "a b"; resign(t, p, groundKey) }, []error{ErrMalformed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := plan(t)
			tt.alter(t, p)
			err := VerifyPlan(kr, vehicle, p)
			if err == nil {
				t.Fatal("VerifyPlan accepted")
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("VerifyPlan = %v, want %v", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "update: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			// The ground cannot sign it either, except where only the
			// vehicle, the key id or the signature is wrong.
			q := *p
			if serr := SignPlan(groundKey, 5, &q); serr == nil && !errors.Is(err, protocol.ErrBadSignature) &&
				!errors.Is(err, ErrWrongVehicle) && !errors.Is(err, protocol.ErrUnknownKey) && !errors.Is(err, ErrMalformed) {
				t.Errorf("SignPlan signed a plan VerifyPlan refuses with %v", err)
			}
		})
	}
}

func TestDecodePlanRefusals(t *testing.T) {
	good, err := EncodePlan(plan(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"truncated", good[:len(good)-1], ErrMalformed},
		{"trailing byte", append(append([]byte(nil), good...), 0), ErrMalformed},
		{"oversize", make([]byte, MaxPlanSize+1), ErrTooLarge},
		{"not a map", []byte{0x80}, ErrMalformed},
		{"unknown key", mapWith(good, 0x18, 0x63, 0x01), ErrMalformed},      // key 99: 1
		{"non-canonical int", []byte{0xa1, 0x01, 0x18, 0x05}, ErrMalformed}, // {1: 5} with a long head
		{"explicit zero", mapWith(good, 0x0b, 0x00), ErrMalformed},          // Supplement: 0 spelled out
		// The protocol's decoding rules (protocol.NewDecMode) apply to plans.
		{"undefined", mapWith(good, 0x07, 0xf7), ErrMalformed},         // AllowDowngrade: undefined
		{"unassigned simple", mapWith(good, 0x07, 0xe0), ErrMalformed}, // AllowDowngrade: simple(0)
		{"tag", mapWith(good, 0x06, 0xc0, 0x60), ErrMalformed},         // Base: tag 0 on ""
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodePlan(tt.b); !errors.Is(err, tt.want) {
				t.Fatalf("DecodePlan = %v, want %v", err, tt.want)
			}
		})
	}
}

// mapWith appends the pair kv to the top-level map of enc (a map of fewer
// than 23 pairs), unsorted where the key belongs elsewhere.
func mapWith(enc []byte, kv ...byte) []byte {
	out := []byte{enc[0] + 1}
	out = append(out, enc[1:]...)
	return append(out, kv...)
}

func TestFile(t *testing.T) {
	p := plan(t)
	var buf bytes.Buffer
	if err := WriteFile(&buf, p, bytes.NewReader(bundleBytes())); err != nil {
		t.Fatal(err)
	}
	file := buf.Bytes()
	got, br, err := ReadFile(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyPlan(keyring(t, map[uint32]ed25519.PrivateKey{5: groundKey}), vehicle, got); err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(br)
	if err != nil || !bytes.Equal(data, bundleBytes()) {
		t.Fatalf("bundle = %q, %v", data, err)
	}

	hdr := len(FileMagic) + 4
	planEnd := len(file) - len(bundleBytes())
	for cut := 0; cut < len(file); cut++ {
		_, br, err := ReadFile(bytes.NewReader(file[:cut]))
		if err == nil {
			_, err = io.ReadAll(br)
		}
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("file cut at %d (header %d, plan end %d): %v, want ErrTruncated", cut, hdr, planEnd, err)
		}
	}

	bad := bytes.Clone(file)
	bad[len(bad)-1] ^= 1
	if _, br, err := ReadFile(bytes.NewReader(bad)); err != nil {
		t.Fatal(err)
	} else if _, err := io.ReadAll(br); !errors.Is(err, ErrBundleDigest) {
		t.Fatalf("altered bundle: %v, want ErrBundleDigest", err)
	}
	if _, br, err := ReadFile(bytes.NewReader(append(bytes.Clone(file), 'x'))); err != nil {
		t.Fatal(err)
	} else if _, err := io.ReadAll(br); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: %v, want ErrMalformed", err)
	}
	bad = bytes.Clone(file)
	bad[0] = 'X'
	if _, _, err := ReadFile(bytes.NewReader(bad)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad magic: %v", err)
	}
	bad = bytes.Clone(file)
	copy(bad[len(FileMagic):], []byte{0xff, 0xff, 0xff, 0xff})
	if _, _, err := ReadFile(bytes.NewReader(bad)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("huge plan length: %v", err)
	}
	if err := WriteFile(io.Discard, p, bytes.NewReader(bundleBytes()[1:])); !errors.Is(err, ErrTruncated) {
		t.Fatalf("WriteFile of a short bundle: %v", err)
	}
}

func TestTargets(t *testing.T) {
	for _, tt := range []struct {
		b    []byte
		kind TargetKind
	}{{TargetPlan(1), KindPlan}, {TargetBundle(^uint64(0)), KindBundle}} {
		k, id, err := ParseTarget(tt.b)
		if err != nil || k != tt.kind || len(tt.b) != TargetLen || len(tt.b) > protocol.MaxTargetLen {
			t.Fatalf("ParseTarget(%x) = %v %d %v", tt.b, k, id, err)
		}
	}
	if k, id, _ := ParseTarget(TargetBundle(77)); k != KindBundle || id != 77 {
		t.Fatalf("bundle 77 parsed as %v %d", k, id)
	}
	for _, b := range [][]byte{nil, TargetPlan(1)[:8], append(TargetPlan(1), 0), TargetPlan(0), append([]byte{'X'}, TargetPlan(1)[1:]...)} {
		if _, _, err := ParseTarget(b); !errors.Is(err, ErrBadTarget) {
			t.Errorf("ParseTarget(%x) = %v, want ErrBadTarget", b, err)
		}
	}
}

func TestDiffIDsRefusals(t *testing.T) {
	for _, c := range []string{`{}`, `{"rootfs":{"type":"x","diff_ids":[]}}`, `{"rootfs":{"type":"layers","diff_ids":["md5:00"]}}`, `[`} {
		if _, err := DiffIDs([]byte(c)); !errors.Is(err, ErrMalformed) {
			t.Errorf("DiffIDs(%s) = %v, want ErrMalformed", c, err)
		}
	}
}

// TestReadFileAllocatesByInput: a 13-byte file whose header claims a plan
// of MaxPlanSize bytes is refused as truncated without allocating what the
// header claims: allocation follows the bytes that arrive, not an
// attacker's number.
func TestReadFileAllocatesByInput(t *testing.T) {
	hdr := append([]byte(FileMagic), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(hdr[len(FileMagic):], MaxPlanSize)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := ReadFile(bytes.NewReader(hdr))
	runtime.ReadMemStats(&after)
	allocs := after.TotalAlloc - before.TotalAlloc
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("header alone: %v, want truncated", err)
	}
	t.Logf("a %d-byte file claiming a %d-byte plan: %d bytes allocated", len(hdr), MaxPlanSize, allocs)
	if allocs > 64<<10 {
		t.Fatalf("a %d-byte file made ReadFile allocate %d bytes", len(hdr), allocs)
	}
}
