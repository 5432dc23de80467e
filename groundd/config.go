package groundd

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/protocol"
)

// Config is groundd's configuration: `groundd run --config FILE` reads it
// as JSON (see docs/groundd.md). Relative paths are relative to the
// configuration file's directory.
type Config struct {
	// StateDir holds the store (state.db) and the bundles (bundles/).
	StateDir string `json:"state_dir"`
	// Store is "bolt" (the default, an embedded bbolt file) or "etcd" (a
	// cluster shared by several stations: see docs/stations.md).
	Store string `json:"store,omitempty"`
	// Etcd is the cluster of the etcd store.
	Etcd store.EtcdConfig `json:"etcd,omitzero"`
	// Station names this ground station among those sharing the etcd
	// store (default: the host name).
	Station string `json:"station,omitempty"`
	// Lease is the station's lease time on the etcd store (default 10s):
	// a station that dies or loses etcd stops transmitting within it, and
	// another takes its vehicles over at their next contact.
	Lease Duration `json:"lease,omitempty"`
	// GroundKey is a file holding the ground's ed25519 plan-signing key:
	// its 32-byte seed in hex. GroundKeyID names it on the vehicles.
	GroundKey   string `json:"ground_key"`
	GroundKeyID uint32 `json:"ground_key_id"`
	// MaxFrame is the link's frame size (default 1024).
	MaxFrame int `json:"max_frame,omitempty"`
	// PartSize is the delta part size (default delta.DefaultPartSize).
	PartSize int64 `json:"part_size,omitempty"`
	// ReleaseKeys is the release authority's public keys (a .pub file or
	// a directory of them, as groundd keygen writes): only images signed by
	// one are planned.
	ReleaseKeys string `json:"release_keys,omitempty"`
	// ImageStore is the image store's directory (default StateDir/images).
	ImageStore string `json:"image_store,omitempty"`
	// Platform picks the manifest of a multi-arch index: "os/arch[/variant]"
	// (default linux on the running architecture).
	Platform string `json:"platform,omitempty"`
	// Registry are the settings registries need.
	Registry RegistryConfig `json:"registry,omitzero"`
	// Bundles, if set, keeps every planned uplink (its signed plan and
	// delta bundle) in a registry as an OCI artifact, so that a station
	// without a copy fetches it by digest (docs/stations.md). Off by
	// default: one station keeps its bundles in StateDir/bundles alone.
	Bundles *BundlesConfig `json:"bundles,omitempty"`
	// Schedule is a pass schedule file (JSON or CSV: see passes); empty:
	// the links are taken as up at all times unless Signals say otherwise.
	Schedule string `json:"schedule,omitempty"`
	// Vehicles are the vehicles this station serves.
	Vehicles []VehicleConfig `json:"vehicles"`
}

// VehicleConfig is one vehicle.
type VehicleConfig struct {
	ID   uint32 `json:"id"`
	Name string `json:"name,omitempty"`
	// Link is how to reach it: {"kind":"udp","listen":"127.0.0.1:0","peer":"HOST:PORT"}.
	Link LinkConfig `json:"link"`
	// MACKey authenticates everything the vehicle sends: a file of
	// protocol.MACKeyLen bytes in hex, with its id.
	MACKey KeyRef `json:"mac_key"`
	// SealKey, if set, seals every uplink frame (AES-256-GCM).
	SealKey *KeyRef `json:"seal_key,omitempty"`
	// Rate is the uplink rate in bits per second outside a scheduled pass
	// that names one (default 9600).
	Rate float64 `json:"rate,omitempty"`
	// RTT is the expected round trip (default 1s).
	RTT Duration `json:"rtt,omitempty"`
	// HardwareID, if set, is the vehicle's hardware: only releases for it
	// are planned.
	HardwareID string `json:"hardware_id,omitempty"`
	// Follow, if set, is a tag the vehicle follows: when it moves to a newer
	// image signed for the vehicle, an uplink is queued.
	Follow *FollowConfig `json:"follow,omitempty"`
}

// FollowConfig is a followed tag.
type FollowConfig struct {
	// Ref is the tag: docker://HOST/REPO:TAG or oci:PATH:TAG.
	Ref string `json:"ref"`
	// Policy is "auto" (queue at once) or "approve" (queue as pending,
	// for an operator to approve).
	Policy string `json:"policy"`
	// Interval between polls of the tag (default one minute).
	Interval Duration `json:"interval,omitempty"`
}

// RegistryConfig are the settings registries need (groundd/images).
type RegistryConfig struct {
	// AuthFile is a docker config.json (default: the docker keychain).
	AuthFile string `json:"auth_file,omitempty"`
	// CAFile is a PEM file of extra CA certificates.
	CAFile string `json:"ca_file,omitempty"`
	// PlainHTTP allows plain HTTP: only when asked.
	PlainHTTP bool `json:"plain_http,omitempty"`
}

// BundlesConfig says where planned uplinks are pushed. The registry is
// reached with the Registry settings (credentials, CA, plain HTTP).
type BundlesConfig struct {
	// Registry is the registry's "HOST[:PORT]".
	Registry string `json:"registry"`
	// Repository is the repository on it. Empty: the target image's own
	// repository when the image is in that registry (the artifact then
	// sits beside the image it refers to), else "bootorbit/bundles".
	Repository string `json:"repository,omitempty"`
}

// DefaultBundleRepository is the repository of bundles whose image is not
// in the bundle registry, when the config names none.
const DefaultBundleRepository = "bootorbit/bundles"

// repo returns the repository ("docker" reference) the bundle artifacts of
// image (a reference as uplinks name it) go to.
func (b *BundlesConfig) repo(image string) (images.Ref, error) {
	repo := b.Repository
	if repo == "" {
		repo = DefaultBundleRepository
		if r, err := images.ParseRef(image); err == nil && r.Transport == images.TransportDocker && strings.HasPrefix(r.Repo, b.Registry+"/") {
			repo = strings.TrimPrefix(r.Repo, b.Registry+"/")
		}
	}
	r, err := images.ParseRef("docker://" + b.Registry + "/" + repo + ":bundles")
	if err != nil {
		return images.Ref{}, fmt.Errorf("groundd: config: bundles: %w", err)
	}
	return r, nil
}

// LinkConfig is a vehicle's link (protocol/link): "udp" (one frame per
// datagram), "tcp" (COBS framing, dialer or listener) or "serial" (COBS on
// a tty at Baud).
type LinkConfig struct {
	Name   string `json:"name,omitempty"` // for logs (default vehicle-ID)
	Kind   string `json:"kind"`
	Listen string `json:"listen,omitempty"`
	Peer   string `json:"peer,omitempty"`
	Device string `json:"device,omitempty"`
	Baud   int    `json:"baud,omitempty"`
}

// KeyRef names a symmetric key file and the key's id.
type KeyRef struct {
	ID   uint32 `json:"id"`
	File string `json:"file"`
}

// Duration is a time.Duration written as a Go duration string ("90s").
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("groundd: duration: want a string like \"90s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("groundd: bad duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// maxConfigSize bounds a configuration file.
const maxConfigSize = 1 << 20

// LoadConfig reads a JSON configuration file and resolves its relative
// paths against the file's directory.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("groundd: config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("groundd: config: %w", err)
	}
	if len(b) > maxConfigSize {
		return Config{}, fmt.Errorf("groundd: config: over %d bytes", maxConfigSize)
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("groundd: config %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	rel := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	rel(&c.StateDir)
	rel(&c.GroundKey)
	rel(&c.Schedule)
	rel(&c.ReleaseKeys)
	rel(&c.ImageStore)
	rel(&c.Registry.AuthFile)
	rel(&c.Registry.CAFile)
	rel(&c.Etcd.CAFile)
	rel(&c.Etcd.CertFile)
	rel(&c.Etcd.KeyFile)
	for i := range c.Vehicles {
		rel(&c.Vehicles[i].MACKey.File)
		if c.Vehicles[i].SealKey != nil {
			rel(&c.Vehicles[i].SealKey.File)
		}
	}
	return c, c.Validate()
}

// Validate checks the configuration without touching the files it names.
func (c *Config) Validate() error {
	var errs []error
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir is required"))
	}
	switch c.Store {
	case "", "bolt":
	case "etcd":
		if err := c.Etcd.Validate(); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("store %q: bolt or etcd", c.Store))
	}
	if c.Lease != 0 && time.Duration(c.Lease) < 2*time.Second {
		errs = append(errs, errors.New("lease: at least 2s"))
	}
	if c.GroundKey == "" {
		errs = append(errs, errors.New("ground_key is required"))
	}
	if c.MaxFrame != 0 && (c.MaxFrame < protocol.MinMaxFrame || c.MaxFrame > 1<<16) {
		errs = append(errs, fmt.Errorf("max_frame %d: out of [%d, 65536]", c.MaxFrame, protocol.MinMaxFrame))
	}
	if c.Platform != "" {
		if _, err := parsePlatform(c.Platform); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Bundles != nil {
		switch {
		case c.Bundles.Registry == "" || strings.ContainsAny(c.Bundles.Registry, "/@"):
			errs = append(errs, fmt.Errorf("bundles: registry %q: want HOST[:PORT]", c.Bundles.Registry))
		case c.Bundles.Repository != "" && slices.Contains(strings.Split(c.Bundles.Repository, "/"), ""):
			errs = append(errs, fmt.Errorf("bundles: repository %q: an empty path component", c.Bundles.Repository))
		default:
			if _, err := c.Bundles.repo(""); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if c.PartSize < 0 {
		errs = append(errs, errors.New("part_size must not be negative"))
	}
	seen := map[uint32]bool{}
	for i, v := range c.Vehicles {
		if seen[v.ID] {
			errs = append(errs, fmt.Errorf("vehicles[%d]: vehicle %d twice", i, v.ID))
		}
		seen[v.ID] = true
		if v.MACKey.File == "" || v.MACKey.ID == 0 {
			errs = append(errs, fmt.Errorf("vehicles[%d]: mac_key needs an id and a file", i))
		}
		if v.SealKey != nil && (v.SealKey.File == "" || v.SealKey.ID == 0) {
			errs = append(errs, fmt.Errorf("vehicles[%d]: seal_key needs an id and a file", i))
		}
		if f := v.Follow; f != nil {
			if f.Ref == "" {
				errs = append(errs, fmt.Errorf("vehicles[%d]: follow needs a ref", i))
			}
			if f.Policy != "auto" && f.Policy != "approve" {
				errs = append(errs, fmt.Errorf("vehicles[%d]: follow policy %q: auto or approve", i, f.Policy))
			}
		}
		if v.Rate < 0 {
			errs = append(errs, fmt.Errorf("vehicles[%d]: negative rate", i))
		}
		switch v.Link.Kind {
		case "udp", "tcp":
			if v.Link.Peer == "" && v.Link.Listen == "" {
				errs = append(errs, fmt.Errorf("vehicles[%d]: a %s link needs a peer or a listen address", i, v.Link.Kind))
			}
		case "serial":
			if v.Link.Device == "" {
				errs = append(errs, fmt.Errorf("vehicles[%d]: a serial link needs a device", i))
			}
		case "":
		default:
			errs = append(errs, fmt.Errorf("vehicles[%d]: link kind %q: udp, tcp or serial", i, v.Link.Kind))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("groundd: config: %w", errors.Join(errs...))
	}
	return nil
}

// maxKeyFile bounds a key file.
const maxKeyFile = 4096

// readHexKey reads a key file holding n bytes in hex (whitespace ignored).
func readHexKey(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("groundd: key: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile))
	if err != nil {
		return nil, fmt.Errorf("groundd: key %s: %w", path, err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != n {
		// Never echo key material.
		return nil, fmt.Errorf("groundd: key %s: want %d bytes in hex", path, n)
	}
	return k, nil
}

// LoadGroundKey reads the ground's plan-signing key (a hex ed25519 seed).
func LoadGroundKey(path string) (ed25519.PrivateKey, error) {
	seed, err := readHexKey(path, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
