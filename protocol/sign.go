package protocol

import (
	"crypto/ed25519"
	"fmt"
	"strings"
)

// DomainCommand is the signature domain of commands. A signature made for
// one domain never verifies in another. (The transfer engine signs offers
// and cancels under its own prefixes, "bootorbit/transfer/...": they differ
// from signPrefix at byte 9, so no signature crosses between the two.)
const DomainCommand = "command/v1"

// signPrefix starts every signed message.
const signPrefix = "bootorbit\x00"

// MaxDomainLen bounds a signature domain string.
const MaxDomainLen = 64

// SignedMessage returns the bytes that Sign signs for domain and msg:
//
//	"bootorbit" 0x00 domain 0x00 msg
//
// domain must be 1..MaxDomainLen bytes without NUL, so the split is
// unambiguous. It is plain Ed25519 (RFC 8032, not Ed25519ctx) over these
// bytes, which any ed25519 library can reproduce.
func SignedMessage(domain string, msg []byte) ([]byte, error) {
	if len(domain) == 0 || len(domain) > MaxDomainLen || strings.IndexByte(domain, 0) >= 0 {
		return nil, fmt.Errorf("protocol: bad signature domain %q", domain)
	}
	b := make([]byte, 0, len(signPrefix)+len(domain)+1+len(msg))
	b = append(b, signPrefix...)
	b = append(b, domain...)
	b = append(b, 0)
	return append(b, msg...), nil
}

// Sign signs msg under domain with priv. It panics on a bad domain or key (a
// programming error: domains are constants).
func Sign(priv ed25519.PrivateKey, domain string, msg []byte) []byte {
	sm, err := SignedMessage(domain, msg)
	if err != nil {
		panic(err)
	}
	if len(priv) != ed25519.PrivateKeySize {
		panic("protocol: Sign: bad ed25519 private key length")
	}
	return ed25519.Sign(priv, sm)
}

// Verify checks sig over msg under domain with pub. It returns nil or an
// error wrapping ErrBadSignature. It never panics, whatever the lengths.
func Verify(pub ed25519.PublicKey, domain string, msg, sig []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is %d bytes", ErrBadSignature, len(pub))
	}
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is %d bytes", ErrBadSignature, len(sig))
	}
	sm, err := SignedMessage(domain, msg)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if !ed25519.Verify(pub, sm, sig) {
		return fmt.Errorf("%w: %s signature does not verify", ErrBadSignature, domain)
	}
	return nil
}

// KeyID names a verification key on the wire. Operators assign ids; a new
// key gets a new id, so keys can be rotated (both valid for a while, then the
// old one removed) without ambiguity.
type KeyID uint32

// Key is a public key with its id.
type Key struct {
	ID  KeyID
	Pub ed25519.PublicKey
}

// MaxKeys bounds a Keyring.
const MaxKeys = 16

// Keyring is a small immutable set of verification keys, looked up by id.
type Keyring struct {
	keys []Key
}

// NewKeyring returns a keyring of keys. It fails on more than MaxKeys keys,
// a duplicate id, or a key of the wrong length.
func NewKeyring(keys ...Key) (*Keyring, error) {
	if len(keys) > MaxKeys {
		return nil, fmt.Errorf("protocol: %d keys, max %d", len(keys), MaxKeys)
	}
	kr := &Keyring{keys: make([]Key, 0, len(keys))}
	for _, k := range keys {
		if len(k.Pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("protocol: key %d: public key is %d bytes, want %d", k.ID, len(k.Pub), ed25519.PublicKeySize)
		}
		if kr.key(k.ID) != nil {
			return nil, fmt.Errorf("protocol: key %d listed twice", k.ID)
		}
		kr.keys = append(kr.keys, Key{ID: k.ID, Pub: append(ed25519.PublicKey(nil), k.Pub...)})
	}
	return kr, nil
}

// Lookup returns a copy of the public key with id: changing it does not
// change the keyring.
func (kr *Keyring) Lookup(id KeyID) (ed25519.PublicKey, bool) {
	pub := kr.key(id)
	if pub == nil {
		return nil, false
	}
	return append(ed25519.PublicKey(nil), pub...), true
}

// key returns the keyring's own public key with id, or nil.
func (kr *Keyring) key(id KeyID) ed25519.PublicKey {
	if kr == nil {
		return nil
	}
	for _, k := range kr.keys {
		if k.ID == id {
			return k.Pub
		}
	}
	return nil
}

// Verify checks sig over msg under domain with the key named id: nil, or an
// error wrapping ErrUnknownKey or ErrBadSignature.
func (kr *Keyring) Verify(id KeyID, domain string, msg, sig []byte) error {
	pub := kr.key(id)
	if pub == nil {
		return fmt.Errorf("%w: key id %d", ErrUnknownKey, id)
	}
	return Verify(pub, domain, msg, sig)
}
