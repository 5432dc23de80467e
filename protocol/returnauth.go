package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Return-link authentication. Everything the vehicle sends to the ground
// (transfer reports, completions and refusals, command verification reports,
// telemetry, events) carries a MACTag: HMAC-SHA256 under a per-vehicle
// symmetric key, truncated to MACLen bytes, with a key id for rotation and a
// per-vehicle sequence number against replay. A 64-byte ed25519 signature
// would take a quarter of a 256-byte frame; the tag takes 24 to 28 bytes
// (docs/protocol.md §5.7), as the 8-16 byte MACs of CCSDS SDLS do.

// Return-link authentication constants.
const (
	// MACLen is the length of MACTag.Sum: HMAC-SHA256 truncated to 128 bits.
	MACLen = 16
	// MACKeyLen is the length of a per-vehicle MAC key.
	MACKeyLen = 32
	// DomainReturn is the domain of return-link MACs (see SignedMessage).
	DomainReturn = "return/v1"
)

// MACTag authenticates a vehicle-to-ground message. It is encoded as a
// 4-element array [key, epoch, counter, sum] under map key 15 of every
// vehicle-to-ground message.
//
// (Epoch, Counter) is the vehicle's return-link sequence number, Seq =
// Epoch·2^32 + Counter: the vehicle durably increments Epoch every time it
// starts, before it sends anything, and counts Counter from 1 within the
// epoch, so a reboot never reuses a number without a write per frame.
type MACTag struct {
	_       struct{} `cbor:",toarray"`
	Key     KeyID
	Epoch   uint32
	Counter uint32
	Sum     []byte
}

// Seq is the tag's return-link sequence number: Epoch·2^32 + Counter.
func (t *MACTag) Seq() uint64 { return uint64(t.Epoch)<<32 | uint64(t.Counter) }

// check bounds a tag as its message's Validate does (nil is fine: whether a
// tag is required is the verifier's business).
func (t *MACTag) check() error {
	switch {
	case t == nil:
		return nil
	case t.Epoch == 0 || t.Counter == 0:
		return fmt.Errorf("%w: mac epoch %d counter %d: both start at 1", ErrInvalidField, t.Epoch, t.Counter)
	case len(t.Sum) != MACLen:
		return fmt.Errorf("%w: mac is %d bytes, want %d", ErrInvalidField, len(t.Sum), MACLen)
	}
	return nil
}

// ReturnMessage is a vehicle-to-ground message: it carries a MACTag.
type ReturnMessage interface {
	Message
	macTag() **MACTag
}

func (m *Report) macTag() **MACTag       { return &m.MAC }
func (m *Complete) macTag() **MACTag     { return &m.MAC }
func (m *Cancel) macTag() **MACTag       { return &m.MAC }
func (m *Verification) macTag() **MACTag { return &m.MAC }
func (m *Telemetry) macTag() **MACTag    { return &m.MAC }
func (m *Event) macTag() **MACTag        { return &m.MAC }

// TagOf returns m's MACTag, or nil if m carries none.
func TagOf(m Message) *MACTag {
	if rm, ok := m.(ReturnMessage); ok {
		return *rm.macTag()
	}
	return nil
}

// MACKey is a per-vehicle symmetric key with its id. Operators assign ids
// per vehicle; a new key gets a new id, so keys rotate without ambiguity.
type MACKey struct {
	ID  KeyID
	Key []byte // MACKeyLen bytes
}

// ReturnMACInput returns the bytes the MAC of m covers, m's own tag aside:
//
//	"bootorbit" 00 "return/v1" 00 vehicle(4) key(4) epoch(4) counter(4) type(1) body
//
// (integers big endian), where body is m's deterministic CBOR encoding
// without its tag (key 15 absent). Binding the vehicle id means a tag made
// for one vehicle never verifies for another, even under a shared key.
func ReturnMACInput(vehicle uint32, tag *MACTag, m ReturnMessage) ([]byte, error) {
	p := m.macTag()
	saved := *p
	*p = nil
	body, err := encMode.Marshal(m)
	*p = saved
	if err != nil {
		return nil, fmt.Errorf("protocol: mac input: %v", err)
	}
	b := make([]byte, 0, 17+len(body))
	b = binary.BigEndian.AppendUint32(b, vehicle)
	b = binary.BigEndian.AppendUint32(b, uint32(tag.Key))
	b = binary.BigEndian.AppendUint32(b, tag.Epoch)
	b = binary.BigEndian.AppendUint32(b, tag.Counter)
	b = append(b, byte(m.Type()))
	return SignedMessage(DomainReturn, append(b, body...))
}

func macSum(key []byte, input []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(input)
	return h.Sum(nil)[:MACLen]
}

// ReturnAuth is the vehicle side of return-link authentication: it tags
// every message the vehicle sends. It is sans-IO: the caller persists the
// epoch. Not safe for concurrent use.
type ReturnAuth struct {
	vehicle uint32
	key     MACKey
	epoch   uint32
	counter uint32
}

// NewReturnAuth returns the authenticator of vehicle with key for epoch,
// which must be at least 1 and greater than every epoch this vehicle used
// with any key: the caller increments a durable boot counter and syncs it
// before the first message of a start.
func NewReturnAuth(vehicle uint32, key MACKey, epoch uint32) (*ReturnAuth, error) {
	if len(key.Key) != MACKeyLen {
		return nil, fmt.Errorf("protocol: return auth: key %d is %d bytes, want %d", key.ID, len(key.Key), MACKeyLen)
	}
	if epoch == 0 {
		return nil, fmt.Errorf("protocol: return auth: epoch 0; epochs start at 1")
	}
	return &ReturnAuth{vehicle: vehicle, key: MACKey{ID: key.ID, Key: append([]byte(nil), key.Key...)}, epoch: epoch}, nil
}

// Sign sets m's MACTag under the next sequence number. It fails with
// ErrLimit once the epoch's 2^32−1 numbers are spent: start a new epoch.
func (a *ReturnAuth) Sign(m ReturnMessage) error {
	if a.counter == ^uint32(0) {
		return fmt.Errorf("%w: return-link counter of epoch %d exhausted", ErrLimit, a.epoch)
	}
	a.counter++
	tag := &MACTag{Key: a.key.ID, Epoch: a.epoch, Counter: a.counter}
	in, err := ReturnMACInput(a.vehicle, tag, m)
	if err != nil {
		return err
	}
	tag.Sum = macSum(a.key.Key, in)
	*m.macTag() = tag
	return nil
}

// ReturnVerifier is the ground side of return-link authentication for one
// vehicle: its keys (at most MaxKeys, for rotation) and one replay window
// over the vehicle's sequence numbers, shared by everything that vehicle
// sends (transfers, verification reports, telemetry, events). The ground
// persists the window (MarshalBinary) so a restart does not reopen it. Not
// safe for concurrent use.
type ReturnVerifier struct {
	vehicle uint32
	keys    []MACKey
	win     ReplayWindow
}

// NewReturnVerifier returns the verifier of vehicle's return link.
func NewReturnVerifier(vehicle uint32, keys ...MACKey) (*ReturnVerifier, error) {
	if len(keys) == 0 || len(keys) > MaxKeys {
		return nil, fmt.Errorf("protocol: return verifier: %d keys, want 1..%d", len(keys), MaxKeys)
	}
	v := &ReturnVerifier{vehicle: vehicle}
	for _, k := range keys {
		if len(k.Key) != MACKeyLen {
			return nil, fmt.Errorf("protocol: return verifier: key %d is %d bytes, want %d", k.ID, len(k.Key), MACKeyLen)
		}
		if v.key(k.ID) != nil {
			return nil, fmt.Errorf("protocol: return verifier: key %d listed twice", k.ID)
		}
		v.keys = append(v.keys, MACKey{ID: k.ID, Key: append([]byte(nil), k.Key...)})
	}
	return v, nil
}

func (v *ReturnVerifier) key(id KeyID) []byte {
	for _, k := range v.keys {
		if k.ID == id {
			return k.Key
		}
	}
	return nil
}

// Verify authenticates m and, if it is genuine and fresh, records its
// sequence number: nil, or an error wrapping ErrUnauthenticated (no tag, or
// a message type the vehicle never sends), ErrReplayed, ErrUnknownKey or
// ErrBadSignature (forged or altered). As for commands, the cheap replay
// check comes first and the window moves only for a message whose MAC
// verified, so no forged frame can make genuine ones look replayed.
func (v *ReturnVerifier) Verify(m Message) error {
	rm, ok := m.(ReturnMessage)
	if !ok {
		return fmt.Errorf("%w: %v is not a vehicle-to-ground message", ErrUnauthenticated, m.Type())
	}
	tag := *rm.macTag()
	if tag == nil {
		return fmt.Errorf("%w: %v has no mac", ErrUnauthenticated, m.Type())
	}
	if err := v.win.Check(tag.Seq()); err != nil {
		return err
	}
	key := v.key(tag.Key)
	if key == nil {
		return fmt.Errorf("%w: mac key id %d", ErrUnknownKey, tag.Key)
	}
	in, err := ReturnMACInput(v.vehicle, tag, rm)
	if err != nil {
		return err
	}
	if !hmac.Equal(macSum(key, in), tag.Sum) {
		return fmt.Errorf("%w: %v mac does not verify", ErrBadSignature, m.Type())
	}
	return v.win.Accept(tag.Seq())
}

// RequestTag authenticates a ground-to-vehicle ReportRequest under the
// vehicle's MAC key: [key, sum], map key 15. It has no sequence number of
// its own: the request's Seq, which increases per sender, is what the
// vehicle checks for freshness (a replayed request is answered, if at
// all, from the receiver's answer budget).
type RequestTag struct {
	_   struct{} `cbor:",toarray"`
	Key KeyID
	Sum []byte
}

// DomainRequest is the domain of report-request MACs: distinct from
// DomainReturn, so that no tag crosses between the directions.
const DomainRequest = "request/v1"

// RequestMACInput returns the bytes a report request's MAC covers:
//
//	"bootorbit" 00 "request/v1" 00 vehicle(4) key(4) type(1) body
//
// with body m's deterministic CBOR without its tag (key 15 absent).
func RequestMACInput(vehicle uint32, key KeyID, m *ReportRequest) ([]byte, error) {
	c := *m
	c.MAC = nil
	body, err := encMode.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("protocol: mac input: %v", err)
	}
	b := make([]byte, 0, 9+len(body))
	b = binary.BigEndian.AppendUint32(b, vehicle)
	b = binary.BigEndian.AppendUint32(b, uint32(key))
	b = append(b, byte(TypeReportRequest))
	return SignedMessage(DomainRequest, append(b, body...))
}

// SignRequest tags m with the verifier's first key: the key the vehicle is
// told to use (rotate by putting the new key first once the vehicle holds
// it).
func (v *ReturnVerifier) SignRequest(m *ReportRequest) error {
	k := v.keys[0]
	in, err := RequestMACInput(v.vehicle, k.ID, m)
	if err != nil {
		return err
	}
	m.MAC = &RequestTag{Key: k.ID, Sum: macSum(k.Key, in)}
	return nil
}

// VerifyRequest checks a report request's tag with the vehicle's key: nil,
// or an error wrapping ErrUnauthenticated, ErrUnknownKey or
// ErrBadSignature. It does not judge freshness: the caller compares Seq
// with the last authenticated one.
func (a *ReturnAuth) VerifyRequest(m *ReportRequest) error {
	switch {
	case m.MAC == nil:
		return fmt.Errorf("%w: report request %d has no mac", ErrUnauthenticated, m.ID)
	case m.MAC.Key != a.key.ID:
		return fmt.Errorf("%w: request mac key id %d", ErrUnknownKey, m.MAC.Key)
	}
	in, err := RequestMACInput(a.vehicle, m.MAC.Key, m)
	if err != nil {
		return err
	}
	if !hmac.Equal(macSum(a.key.Key, in), m.MAC.Sum) {
		return fmt.Errorf("%w: report request mac does not verify", ErrBadSignature)
	}
	return nil
}

// MarshalBinary returns the replay window's state (ReplayWindowStateLen bytes).
func (v *ReturnVerifier) MarshalBinary() ([]byte, error) { return v.win.MarshalBinary() }

// UnmarshalBinary restores the replay window's state.
func (v *ReturnVerifier) UnmarshalBinary(b []byte) error { return v.win.UnmarshalBinary(b) }
