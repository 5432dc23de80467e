package flightd

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/bootorbit/bootorbit/protocol"
)

// Keys are the keys a configuration names, read from their files.
type Keys struct {
	Release *protocol.Keyring
	Ground  *protocol.Keyring
	// GroundPub is Ground by id, as protocol/transfer's ReceiverConfig
	// takes it.
	GroundPub map[uint32]ed25519.PublicKey
	// ReleasePub is Release by id.
	ReleasePub map[uint32]ed25519.PublicKey
	Vehicle    protocol.MACKey
	Seal       []protocol.SealKey
}

// maxKeyFile bounds a key file read: a PEM public key is ~113 bytes.
const maxKeyFile = 4096

// LoadKeys reads every key file the keys section names and reports every
// problem (errors.Join, each wrapping ErrConfig). A key file that other
// users may read is refused for the secret keys (vehicle, seal): a
// flight computer's secrets are 0600 or tighter.
func (c *Config) LoadKeys() (*Keys, error) {
	var p problems
	k := &Keys{GroundPub: map[uint32]ed25519.PublicKey{}, ReleasePub: map[uint32]ed25519.PublicKey{}}
	pubs := func(name string, files []KeyFile) []protocol.Key {
		var out []protocol.Key
		for i, kf := range files {
			pub, err := readPublicKey(kf.File)
			if err != nil {
				p.add("keys.%s[%d] (id %d): %v", name, i, kf.ID, err)
				continue
			}
			out = append(out, protocol.Key{ID: protocol.KeyID(kf.ID), Pub: pub})
		}
		return out
	}
	rel := pubs("release", c.Keys.Release)
	gnd := pubs("ground", c.Keys.Ground)
	var err error
	if k.Release, err = protocol.NewKeyring(rel...); err != nil {
		p.add("keys.release: %v", err)
	}
	if k.Ground, err = protocol.NewKeyring(gnd...); err != nil {
		p.add("keys.ground: %v", err)
	}
	for _, g := range gnd {
		k.GroundPub[uint32(g.ID)] = g.Pub
	}
	for _, r := range rel {
		k.ReleasePub[uint32(r.ID)] = r.Pub
	}
	if c.Keys.Vehicle != nil {
		b, err := readSecretKey(c.Keys.Vehicle.File, protocol.MACKeyLen)
		if err != nil {
			p.add("keys.vehicle (id %d): %v", c.Keys.Vehicle.ID, err)
		}
		k.Vehicle = protocol.MACKey{ID: protocol.KeyID(c.Keys.Vehicle.ID), Key: b}
	}
	for i, kf := range c.Keys.Seal {
		b, err := readSecretKey(kf.File, 32)
		if err != nil {
			p.add("keys.seal[%d] (id %d): %v", i, kf.ID, err)
			continue
		}
		k.Seal = append(k.Seal, protocol.SealKey{ID: protocol.KeyID(kf.ID), Key: b})
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return k, nil
}

func readKeyFile(path string) ([]byte, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, nil, err
	}
	if len(b) > maxKeyFile {
		return nil, nil, fmt.Errorf("%s is larger than %d bytes", path, maxKeyFile)
	}
	return b, fi, nil
}

// readPublicKey reads an ed25519 public key: PEM "PUBLIC KEY" (PKIX, as
// openssl and groundd keygen write it) or 64 hex digits.
func readPublicKey(path string) (ed25519.PublicKey, error) {
	b, _, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	return ParsePublicKey(b)
}

// ParsePublicKey decodes an ed25519 public key: PEM "PUBLIC KEY" (PKIX)
// or 64 hex digits.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("PEM block %q, want PUBLIC KEY", blk.Type)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, err
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("a %T public key, want ed25519", k)
		}
		return pub, nil
	}
	raw, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("not an ed25519 public key (PEM PUBLIC KEY or 64 hex digits)")
	}
	return ed25519.PublicKey(raw), nil
}

// readSecretKey reads n bytes written as 2n hex digits from a file that
// only its owner may read.
func readSecretKey(path string, n int) ([]byte, error) {
	b, fi, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: a secret key must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	raw, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(raw) != n {
		return nil, fmt.Errorf("%s: want %d hex digits", path, 2*n)
	}
	return raw, nil
}

// ErrKeyExists is returned by WriteVehicleKey for a path that exists.
var ErrKeyExists = errors.New("flightd: key file exists")

// WriteVehicleKey creates a new random return-link MAC key at path, mode
// 0600, written and synced before it is renamed into place (the directory
// synced too), and never over an existing file: a lost vehicle key means
// the ground can no longer authenticate the vehicle. The key is not
// returned: the ground gets it from the file, through the operator's
// key-handling procedure, not from a terminal.
func WriteVehicleKey(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%w: %s", ErrKeyExists, path)
	}
	key := make([]byte, protocol.MACKeyLen)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("flightd: keygen: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".vehicle-key.tmp*")
	if err != nil {
		return fmt.Errorf("flightd: keygen: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("flightd: keygen: %w", err)
	}
	if _, err := tmp.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("flightd: keygen: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("flightd: keygen: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("flightd: keygen: %w", err)
	}
	// Link, not rename: link fails if path appeared meanwhile.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrKeyExists, path)
		}
		return fmt.Errorf("flightd: keygen: %w", err)
	}
	return vfs.SyncDir(vfs.Default, dir)
}
