package images

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/bootorbit/bootorbit/protocol"
)

// Release keys are PEM files: the private key PKCS#8 ("PRIVATE KEY"), the
// public key PKIX ("PUBLIC KEY"), each with a "Key-Id" header, the id that
// signatures name (protocol.KeyID) so that keys can be rotated.
const (
	pemPrivate  = "PRIVATE KEY"
	pemPublic   = "PUBLIC KEY"
	headerKeyID = "Key-Id"
	maxKeyFile  = 16 << 10
	// PublicKeySuffix names the public key files a key directory holds.
	PublicKeySuffix = ".pub"
)

// ErrKey is wrapped by every key file error.
var ErrKey = errors.New("images: release key")

// KeyFiles are the two files GenerateKey writes.
type KeyFiles struct {
	Private, Public string
	ID              uint32
	Fingerprint     string // sha256 of the public key, hex
}

// Fingerprint identifies a public key in logs and listings.
func Fingerprint(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:])
}

// GenerateKey creates an ed25519 release key named id and writes it as
// base.key (mode 0600, created exclusively: an existing key is never
// overwritten) and base.pub. rnd nil means crypto/rand.
func GenerateKey(base string, id uint32, rnd io.Reader) (KeyFiles, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	pub, priv, err := ed25519.GenerateKey(rnd)
	if err != nil {
		return KeyFiles{}, fmt.Errorf("%w: generate: %v", ErrKey, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return KeyFiles{}, fmt.Errorf("%w: %v", ErrKey, err)
	}
	pder, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return KeyFiles{}, fmt.Errorf("%w: %v", ErrKey, err)
	}
	hdr := map[string]string{headerKeyID: strconv.FormatUint(uint64(id), 10)}
	kf := KeyFiles{Private: base + ".key", Public: base + PublicKeySuffix, ID: id, Fingerprint: Fingerprint(pub)}
	if err := writeExclusive(kf.Private, pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Headers: hdr, Bytes: der}), 0o600); err != nil {
		return KeyFiles{}, err
	}
	if err := writeExclusive(kf.Public, pem.EncodeToMemory(&pem.Block{Type: pemPublic, Headers: hdr, Bytes: pder}), 0o644); err != nil {
		os.Remove(kf.Private)
		return KeyFiles{}, err
	}
	return kf, nil
}

func writeExclusive(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrKey, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%w: write %s: %v", ErrKey, path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%w: sync %s: %v", ErrKey, path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%w: %v", ErrKey, err)
	}
	return syncDir(filepath.Dir(path))
}

func readPEM(path, typ string) (*pem.Block, uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrKey, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrKey, err)
	}
	// A private key others can read is refused, as ssh does: it may
	// already have leaked. (Windows has no such mode bits.)
	if typ == pemPrivate && runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, 0, fmt.Errorf("%w: %s: mode %04o lets others read it (want 0600)", ErrKey, path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrKey, err)
	}
	if len(b) > maxKeyFile {
		return nil, 0, fmt.Errorf("%w: %s: larger than %d bytes", ErrKey, path, maxKeyFile)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != typ {
		return nil, 0, fmt.Errorf("%w: %s: no %q PEM block", ErrKey, path, typ)
	}
	id, err := strconv.ParseUint(blk.Headers[headerKeyID], 10, 32)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %s: %s header: want a number up to 2^32-1", ErrKey, path, headerKeyID)
	}
	return blk, uint32(id), nil
}

// ReadPrivateKey reads a release private key and its id. Error messages
// never contain key material.
func ReadPrivateKey(path string) (uint32, ed25519.PrivateKey, error) {
	blk, id, err := readPEM(path, pemPrivate)
	if err != nil {
		return 0, nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %s: not a PKCS#8 private key", ErrKey, path)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return 0, nil, fmt.Errorf("%w: %s: not an ed25519 key", ErrKey, path)
	}
	return id, priv, nil
}

// ReadPublicKey reads a release public key and its id.
func ReadPublicKey(path string) (protocol.Key, error) {
	blk, id, err := readPEM(path, pemPublic)
	if err != nil {
		return protocol.Key{}, err
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return protocol.Key{}, fmt.Errorf("%w: %s: not a PKIX public key", ErrKey, path)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return protocol.Key{}, fmt.Errorf("%w: %s: not an ed25519 key", ErrKey, path)
	}
	return protocol.Key{ID: protocol.KeyID(id), Pub: pub}, nil
}

// LoadKeyring reads the public keys (*.pub) of a directory, or one file.
func LoadKeyring(path string) (*protocol.Keyring, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	files := []string{path}
	if fi.IsDir() {
		ents, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKey, err)
		}
		files = files[:0]
		for _, e := range ents {
			if !e.IsDir() && strings.HasSuffix(e.Name(), PublicKeySuffix) {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		sort.Strings(files)
		if len(files) == 0 {
			return nil, fmt.Errorf("%w: no *%s file in %s", ErrKey, PublicKeySuffix, path)
		}
	}
	var keys []protocol.Key
	for _, f := range files {
		k, err := ReadPublicKey(f)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	kr, err := protocol.NewKeyring(keys...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKey, path, err)
	}
	return kr, nil
}
