package update

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/fxamacker/cbor/v2"
	"github.com/opencontainers/go-digest"
)

// Signature domains (see protocol.SignedMessage).
const (
	DomainRelease = "release/v1"
	DomainPlan    = "plan/v1"
)

// MediaTypeRelease is the media type of an encoded ReleaseSignature, e.g. as
// an OCI artifact or referrer beside the image it signs.
const MediaTypeRelease = "application/vnd.bootorbit.release.v1+cbor"

// Media types of a planned uplink kept as an OCI artifact in a registry
// (groundd/images.PushBundle), so that any ground station can send it:
// MediaTypePlan is an encoded, signed Plan (EncodePlan) and MediaTypeBundle
// a delta bundle (package delta), the one a plan's BundleDigest names. The
// artifact's artifactType is MediaTypeBundle.
const (
	MediaTypePlan   = "application/vnd.bootorbit.plan.v1+cbor"
	MediaTypeBundle = "application/vnd.bootorbit.bundle.v1"
)

// Bounds of the documents, checked by the decoders before anything else.
const (
	MaxHardwareIDLen = 64
	MaxManifestSize  = 64 << 10 // Plan.Manifest
	MaxConfigSize    = 8 << 20  // Plan.Config (delta.MaxConfigSize)
	// MaxReleaseSize bounds an encoded ReleaseSignature.
	MaxReleaseSize = 512
	// MaxPlanSize bounds an encoded Plan: the manifest and config at their
	// bounds, the release and the fixed fields.
	MaxPlanSize = MaxManifestSize + MaxConfigSize + 4096
	// MaxBundleSize bounds Plan.BundleSize: the largest transfer
	// (protocol.MaxTransferSize).
	MaxBundleSize = protocol.MaxTransferSize
)

// Sentinel errors. Signature and vehicle failures also wrap protocol's
// ErrUnknownKey, ErrBadSignature and ErrWrongVehicle.
var (
	// ErrMalformed: the bytes are not a valid encoding of the document (bad
	// CBOR, unknown or duplicate keys, not deterministic, a field out of its
	// bounds).
	ErrMalformed = errors.New("update: malformed document")
	// ErrTooLarge: a document, field or bundle is over its bound.
	ErrTooLarge = errors.New("update: too large")
	// ErrReleaseSignature: the release signature does not verify (with
	// protocol.ErrUnknownKey: an untrusted release key).
	ErrReleaseSignature = errors.New("update: bad release signature")
	// ErrPlanSignature: the plan signature does not verify (with
	// protocol.ErrUnknownKey: an unknown ground key).
	ErrPlanSignature = errors.New("update: bad plan signature")
	// ErrWrongVehicle: the plan is for another vehicle (also wraps
	// protocol.ErrWrongVehicle).
	ErrWrongVehicle = errors.New("update: wrong vehicle")
	// ErrManifestDigest: the plan's manifest does not hash to the digest the
	// release signs.
	ErrManifestDigest = errors.New("update: manifest digest mismatch")
	// ErrConfigDigest: the plan's config is not the one the manifest's
	// config descriptor names (digest or size), or the manifest has none.
	ErrConfigDigest = errors.New("update: config digest mismatch")
	// ErrBundleDigest: a bundle's bytes do not hash to Plan.BundleDigest.
	ErrBundleDigest = errors.New("update: bundle digest mismatch")
	// ErrTruncated: a file or bundle ends early.
	ErrTruncated = errors.New("update: truncated")
	// ErrBadTarget: a transfer target is not one of this package's.
	ErrBadTarget = errors.New("update: bad transfer target")
)

// Release is the release authority's statement about an image: this
// manifest is release Version for hardware HardwareID.
type Release struct {
	Manifest   digest.Digest `cbor:"1,keyasint,omitempty"` // the image manifest digest (sha256)
	Version    uint64        `cbor:"2,keyasint,omitempty"` // monotonic release version, > 0
	HardwareID string        `cbor:"3,keyasint,omitempty"` // target hardware, 1..64 bytes of [A-Za-z0-9._-]
}

// Validate checks the release's fields.
func (r *Release) Validate() error {
	if err := checkDigest(r.Manifest, "release manifest"); err != nil {
		return err
	}
	if r.Version == 0 {
		return fmt.Errorf("%w: release version 0", ErrMalformed)
	}
	return checkHardwareID(r.HardwareID)
}

func checkHardwareID(s string) error {
	if len(s) == 0 || len(s) > MaxHardwareIDLen {
		return fmt.Errorf("%w: hardware id of %d bytes, want 1..%d", ErrMalformed, len(s), MaxHardwareIDLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: hardware id %q: byte %d is not [A-Za-z0-9._-]", ErrMalformed, s, i)
		}
	}
	return nil
}

// checkDigest accepts a well-formed sha256 digest only: one algorithm keeps
// every verifier's job the same, and sha256 is what OCI uses.
func checkDigest(d digest.Digest, what string) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: %s digest %.80q: %v", ErrMalformed, what, d, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%w: %s digest is %s, want sha256", ErrMalformed, what, d.Algorithm())
	}
	return nil
}

// ReleaseSignature is a Release signed by a release key. The signature
// covers domain "release/v1" and the deterministic CBOR encoding of the
// ReleaseSignature without its Sig field, so the key id is signed too.
type ReleaseSignature struct {
	Release Release `cbor:"1,keyasint"`
	KeyID   uint32  `cbor:"2,keyasint,omitempty"`
	Sig     []byte  `cbor:"3,keyasint,omitempty"`
}

// Validate checks the fields (not the signature: VerifyRelease does).
func (rs *ReleaseSignature) Validate() error {
	if err := rs.Release.Validate(); err != nil {
		return err
	}
	if len(rs.Sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: release signature is %d bytes, want %d", ErrMalformed, len(rs.Sig), ed25519.SignatureSize)
	}
	return nil
}

func (rs *ReleaseSignature) signedBytes() ([]byte, error) {
	c := *rs
	c.Sig = nil
	return marshal(&c)
}

// SignRelease signs r with the release key priv named keyID. It fails on an
// invalid release or key rather than sign something no vehicle would accept.
// (The contract had it return no error; signing an invalid release must not
// succeed silently.)
func SignRelease(priv ed25519.PrivateKey, keyID uint32, r Release) (ReleaseSignature, error) {
	if err := r.Validate(); err != nil {
		return ReleaseSignature{}, err
	}
	if len(priv) != ed25519.PrivateKeySize {
		return ReleaseSignature{}, fmt.Errorf("update: release key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	rs := ReleaseSignature{Release: r, KeyID: keyID}
	msg, err := rs.signedBytes()
	if err != nil {
		return ReleaseSignature{}, err
	}
	rs.Sig = protocol.Sign(priv, DomainRelease, msg)
	return rs, nil
}

// VerifyRelease checks rs's fields and signature against the release
// keyring kr: nil, or an error wrapping ErrMalformed, or ErrReleaseSignature
// together with protocol.ErrUnknownKey (an untrusted key) or
// protocol.ErrBadSignature (forged or altered).
func VerifyRelease(kr *protocol.Keyring, rs *ReleaseSignature) error {
	if err := rs.Validate(); err != nil {
		return err
	}
	msg, err := rs.signedBytes()
	if err != nil {
		return err
	}
	if err := kr.Verify(protocol.KeyID(rs.KeyID), DomainRelease, msg, rs.Sig); err != nil {
		return fmt.Errorf("%w: %w", ErrReleaseSignature, err)
	}
	return nil
}

// EncodeRelease returns the file form of rs (media type MediaTypeRelease).
func EncodeRelease(rs *ReleaseSignature) ([]byte, error) {
	if err := rs.Validate(); err != nil {
		return nil, err
	}
	return marshal(rs)
}

// DecodeRelease decodes and validates (not verifies) an encoded
// ReleaseSignature.
func DecodeRelease(b []byte) (*ReleaseSignature, error) {
	if len(b) > MaxReleaseSize {
		return nil, fmt.Errorf("%w: release of %d bytes, max %d", ErrTooLarge, len(b), MaxReleaseSize)
	}
	rs := new(ReleaseSignature)
	if err := unmarshal(b, rs, "release"); err != nil {
		return nil, err
	}
	if err := rs.Validate(); err != nil {
		return nil, err
	}
	return rs, nil
}

// Plan is the ground's instruction to one vehicle: install the image of
// Release from the delta bundle that follows. The ground key signs it under
// domain "plan/v1", over the deterministic CBOR encoding of the plan without
// its Sig field.
type Plan struct {
	ID             uint64           `cbor:"1,keyasint,omitempty"`  // ground plan id, > 0, increasing per ground key (replay floor)
	Vehicle        uint32           `cbor:"2,keyasint,omitempty"`  // the vehicle it is for
	Release        ReleaseSignature `cbor:"3,keyasint"`            // the release authority's statement
	Manifest       []byte           `cbor:"4,keyasint,omitempty"`  // the image manifest, verbatim; its digest is Release.Manifest
	Config         []byte           `cbor:"5,keyasint,omitempty"`  // the image config, verbatim; its descriptor is in Manifest
	Base           digest.Digest    `cbor:"6,keyasint,omitempty"`  // manifest digest the plan assumes the booted slot holds ("": none)
	AllowDowngrade bool             `cbor:"7,keyasint,omitempty"`  // signed permission to install a lower Version
	BundleSize     uint64           `cbor:"8,keyasint,omitempty"`  // bytes of the delta bundle, > 0
	BundleDigest   digest.Digest    `cbor:"9,keyasint,omitempty"`  // sha256 of those bytes
	Staging        uint64           `cbor:"10,keyasint,omitempty"` // staging bytes the vehicle needs, >= BundleSize
	Supplement     uint64           `cbor:"11,keyasint,omitempty"` // 0, or the plan ID this one supplements (< ID)
	KeyID          uint32           `cbor:"12,keyasint,omitempty"` // ground key id
	Sig            []byte           `cbor:"13,keyasint,omitempty"` // ed25519, domain "plan/v1"
}

// Validate checks the plan's fields and bounds, and the release's fields;
// not the signatures nor the digests of the manifest and config.
func (p *Plan) Validate() error {
	switch {
	case p.ID == 0:
		return fmt.Errorf("%w: plan id 0", ErrMalformed)
	case len(p.Manifest) == 0:
		return fmt.Errorf("%w: plan %d has no manifest", ErrMalformed, p.ID)
	case len(p.Manifest) > MaxManifestSize:
		return fmt.Errorf("%w: plan %d manifest of %d bytes, max %d", ErrTooLarge, p.ID, len(p.Manifest), MaxManifestSize)
	case len(p.Config) == 0:
		return fmt.Errorf("%w: plan %d has no config", ErrMalformed, p.ID)
	case len(p.Config) > MaxConfigSize:
		return fmt.Errorf("%w: plan %d config of %d bytes, max %d", ErrTooLarge, p.ID, len(p.Config), MaxConfigSize)
	case p.BundleSize == 0:
		return fmt.Errorf("%w: plan %d bundle size 0", ErrMalformed, p.ID)
	case p.BundleSize > MaxBundleSize:
		return fmt.Errorf("%w: plan %d bundle of %d bytes, max %d", ErrTooLarge, p.ID, p.BundleSize, uint64(MaxBundleSize))
	case p.Staging < p.BundleSize:
		return fmt.Errorf("%w: plan %d staging %d < bundle size %d", ErrMalformed, p.ID, p.Staging, p.BundleSize)
	case p.Supplement >= p.ID:
		return fmt.Errorf("%w: plan %d supplements plan %d, not an earlier one", ErrMalformed, p.ID, p.Supplement)
	case len(p.Sig) != ed25519.SignatureSize:
		return fmt.Errorf("%w: plan %d signature is %d bytes, want %d", ErrMalformed, p.ID, len(p.Sig), ed25519.SignatureSize)
	}
	if p.Base != "" {
		if err := checkDigest(p.Base, "plan base"); err != nil {
			return err
		}
	}
	if err := checkDigest(p.BundleDigest, "plan bundle"); err != nil {
		return err
	}
	return p.Release.Validate()
}

func (p *Plan) signedBytes() ([]byte, error) {
	c := *p
	c.Sig = nil
	return marshal(&c)
}

// SignPlan sets p.KeyID to keyID and p.Sig to the ground key priv's
// signature. It fails on a plan VerifyPlan would refuse for its shape or its
// digests (it checks them first).
func SignPlan(priv ed25519.PrivateKey, keyID uint32, p *Plan) error {
	if len(priv) != ed25519.PrivateKeySize {
		return fmt.Errorf("update: ground key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	p.KeyID = keyID
	p.Sig = make([]byte, ed25519.SignatureSize) // so Validate sees a complete plan
	if err := p.Validate(); err != nil {
		p.Sig = nil
		return err
	}
	if err := checkContent(p); err != nil {
		p.Sig = nil
		return err
	}
	msg, err := p.signedBytes()
	if err != nil {
		p.Sig = nil
		return err
	}
	p.Sig = protocol.Sign(priv, DomainPlan, msg)
	return nil
}

// VerifyPlan checks, in this order: p's fields and bounds (ErrMalformed,
// ErrTooLarge), that it is for vehicle (ErrWrongVehicle), the ground
// signature against the ground keyring kr (ErrPlanSignature with
// protocol.ErrUnknownKey or protocol.ErrBadSignature), that the manifest
// hashes to Release.Manifest (ErrManifestDigest), and that the config is
// the one the manifest's config descriptor names (ErrConfigDigest).
//
// It does not verify the release signature, which needs the release
// keyring: call VerifyRelease(releaseKeys, &p.Release) as well. Nor does it
// check what depends on the vehicle's state (hardware, version, quota, base,
// replay floor).
func VerifyPlan(kr *protocol.Keyring, vehicle uint32, p *Plan) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.Vehicle != vehicle {
		return fmt.Errorf("%w: %w: plan %d is for vehicle %d, this is %d", ErrWrongVehicle, protocol.ErrWrongVehicle, p.ID, p.Vehicle, vehicle)
	}
	msg, err := p.signedBytes()
	if err != nil {
		return err
	}
	if err := kr.Verify(protocol.KeyID(p.KeyID), DomainPlan, msg, p.Sig); err != nil {
		return fmt.Errorf("%w: plan %d: %w", ErrPlanSignature, p.ID, err)
	}
	return checkContent(p)
}

// checkContent checks the manifest and config against the digests that
// vouch for them.
func checkContent(p *Plan) error {
	if got := digest.FromBytes(p.Manifest); got != p.Release.Release.Manifest {
		return fmt.Errorf("%w: plan %d manifest is %s, release signs %s", ErrManifestDigest, p.ID, got, p.Release.Release.Manifest)
	}
	desc, err := configDescriptor(p.Manifest)
	if err != nil {
		return fmt.Errorf("%w: plan %d: %v", ErrConfigDigest, p.ID, err)
	}
	if desc.Size != int64(len(p.Config)) {
		return fmt.Errorf("%w: plan %d config is %d bytes, manifest says %d", ErrConfigDigest, p.ID, len(p.Config), desc.Size)
	}
	if got := digest.SHA256.FromBytes(p.Config); got != desc.Digest {
		return fmt.Errorf("%w: plan %d config is %s, manifest says %.80q", ErrConfigDigest, p.ID, got, desc.Digest)
	}
	return nil
}

type descriptor struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

// configDescriptor reads the config descriptor of an OCI (or Docker v2)
// image manifest.
func configDescriptor(manifest []byte) (descriptor, error) {
	var m struct {
		Config *descriptor `json:"config"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil {
		return descriptor{}, fmt.Errorf("manifest: %v", err)
	}
	if m.Config == nil {
		return descriptor{}, errors.New("manifest has no config descriptor")
	}
	return *m.Config, nil
}

// DiffIDs returns the rootfs.diff_ids of an image config (Plan.Config, which
// VerifyPlan has tied to the signed release): the uncompressed layer digests
// the vehicle must reconstruct, in order. Each must be a sha256 digest.
func DiffIDs(config []byte) ([]digest.Digest, error) {
	if len(config) > MaxConfigSize {
		return nil, fmt.Errorf("%w: config of %d bytes, max %d", ErrTooLarge, len(config), MaxConfigSize)
	}
	var c struct {
		RootFS struct {
			Type    string          `json:"type"`
			DiffIDs []digest.Digest `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(config, &c); err != nil {
		return nil, fmt.Errorf("%w: config: %v", ErrMalformed, err)
	}
	if c.RootFS.Type != "layers" {
		return nil, fmt.Errorf("%w: config rootfs type %.40q, want \"layers\"", ErrMalformed, c.RootFS.Type)
	}
	for i, d := range c.RootFS.DiffIDs {
		if err := checkDigest(d, fmt.Sprintf("diff_id %d", i)); err != nil {
			return nil, err
		}
	}
	return c.RootFS.DiffIDs, nil
}

// EncodePlan returns the encoding of p (the payload of a "P" transfer and of
// a File), after checking its fields.
func EncodePlan(p *Plan) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	b, err := marshal(p)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxPlanSize {
		return nil, fmt.Errorf("%w: plan of %d bytes, max %d", ErrTooLarge, len(b), MaxPlanSize)
	}
	return b, nil
}

// DecodePlan decodes and validates (not verifies: see VerifyPlan) an
// encoded plan. It allocates in proportion to len(b) only.
func DecodePlan(b []byte) (*Plan, error) {
	if len(b) > MaxPlanSize {
		return nil, fmt.Errorf("%w: plan of %d bytes, max %d", ErrTooLarge, len(b), MaxPlanSize)
	}
	p := new(Plan)
	if err := unmarshal(b, p, "plan"); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

var (
	encMode = protocol.EncMode()
	// decMode bounds the documents tightly: releases and plans are shallow
	// records of a few fields (the counts cannot go below the library's
	// floor of 16).
	decMode = func() cbor.DecMode {
		dm, err := protocol.NewDecMode(4, 16, 16)
		if err != nil {
			panic(err)
		}
		return dm
	}()
)

func marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("update: encode: %v", err)
	}
	return b, nil
}

// unmarshal decodes b into v and insists b is v's deterministic encoding:
// the bytes a signature covers are then the only bytes that decode to the
// document.
func unmarshal(b []byte, v any, what string) error {
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	canon, err := encMode.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %s does not re-encode: %v", ErrMalformed, what, err)
	}
	if !bytes.Equal(canon, b) {
		return fmt.Errorf("%w: %s is not in deterministic encoding", ErrMalformed, what)
	}
	return nil
}
