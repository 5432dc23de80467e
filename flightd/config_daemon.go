package flightd

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
)

// The daemon's sections of the configuration (flightd run). The bench
// commands (boot, slot, update) read only slots and boot, so these
// sections are optional for Validate and required by ValidateRun.

// VehicleConfig says who this vehicle is.
type VehicleConfig struct {
	// ID is the vehicle id every signed ground message names (> 0).
	ID uint32 `json:"id"`
	// HardwareID is what a release must be signed for ("obc-rev-c").
	HardwareID string `json:"hardware_id"`
}

// LinkConfig is one link to the ground, as protocol/link opens it.
type LinkConfig struct {
	// Name is used in logs, counters and telemetry, 1..16 bytes.
	Name string `json:"name"`
	// Kind is "udp", "tcp" or "serial".
	Kind string `json:"kind"`
	// Listen is the local address (udp, tcp listener; with peer, a udp
	// link's local address to send from).
	Listen string `json:"listen,omitempty"`
	// Peer is the ground's address (udp, tcp dialer).
	Peer string `json:"peer,omitempty"`
	// Device is the serial device (serial).
	Device string `json:"device,omitempty"`
	// Baud is the serial rate; 0 means 115200.
	Baud int `json:"baud,omitempty"`
	// MaxFrame is the largest frame the link carries, 256..65536; 0 means 1024.
	MaxFrame int `json:"max_frame,omitempty"`
}

// MaxFrameOrDefault is the link's frame size.
func (l LinkConfig) MaxFrameOrDefault() int {
	if l.MaxFrame == 0 {
		return DefaultMaxFrame
	}
	return l.MaxFrame
}

// KeyFile names a key by id and the file that holds it.
type KeyFile struct {
	ID   uint32 `json:"id"`
	File string `json:"file"`
}

// KeysConfig lists the keys the vehicle trusts and its own.
type KeysConfig struct {
	// Release are the release authority's ed25519 public keys (PEM
	// "PUBLIC KEY" or 64 hex digits): an image must be signed by one.
	Release []KeyFile `json:"release,omitempty"`
	// Ground are the ground's ed25519 public keys: plans, offers and
	// commands must be signed by one.
	Ground []KeyFile `json:"ground,omitempty"`
	// Vehicle is the vehicle's return-link MAC key (32 bytes, 64 hex
	// digits, `flightd keygen` writes it with mode 0600).
	Vehicle *KeyFile `json:"vehicle,omitempty"`
	// Seal are optional AES-256 keys (64 hex digits) of sealed uplink
	// frames; when set, only sealed frames are accepted.
	Seal []KeyFile `json:"seal,omitempty"`
}

// HealthConfig is what decides that a booted slot is healthy.
type HealthConfig struct {
	// Checks run at start (and at every Interval): each must exit 0 within
	// its timeout.
	Checks []HealthCheck `json:"checks,omitempty"`
	// GroundWithin: a trial boot is healthy only once an authenticated
	// frame from the ground was heard within this time of the start; 0
	// means not checked.
	GroundWithin Duration `json:"ground_heard_within,omitempty"`
	// Interval between reruns of the checks while the daemon runs; the
	// watchdog is petted only while the last run passed. 0 means 1m.
	Interval Duration `json:"interval,omitempty"`
}

// HealthCheck is a command that must exit 0.
type HealthCheck struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	// Timeout is how long it may run; 0 means 30s.
	Timeout Duration `json:"timeout,omitempty"`
}

// StorageConfig is where received data lives and how much of it may.
type StorageConfig struct {
	// Dir holds the journal and staged bundles; empty means
	// slots.state_dir/uplink. It must be outside both slots.
	Dir string `json:"dir,omitempty"`
	// Quota bounds the staged bytes ("2GiB" or a number of bytes); 0
	// means 1GiB. A plan whose Staging exceeds it is refused.
	Quota Size `json:"quota,omitempty"`
}

// TelemetryConfig is the housekeeping schedule.
type TelemetryConfig struct {
	// Period between housekeeping rounds; 0 means 30s.
	Period Duration `json:"period,omitempty"`
}

// ControlConfig is the local control socket `flightd status` asks.
type ControlConfig struct {
	// Socket is the unix socket path; empty means none.
	Socket string `json:"socket,omitempty"`
}

// Defaults of the daemon sections.
const (
	DefaultMaxFrame        = 1024
	DefaultHealthTimeout   = 30 * time.Second
	DefaultHealthInterval  = time.Minute
	DefaultTelemetryPeriod = 30 * time.Second
	DefaultQuota           = 1 << 30
	// DefaultMemoryLimit is memory_limit's default. Left alone, the Go
	// collector lets the heap grow to twice what is live before it runs:
	// during an install (a delta applier, the layer index, slot writes
	// and a bbolt journal at once) that doubling, not the live data, is
	// what makes the peak. A soft limit a little above the live peak of
	// a 200 MB install (docs/flightd.md, "Memory") makes the collector
	// run earlier instead; the limit is soft: a daemon that needs more
	// gets it, at the cost of collector time, and is never killed by it.
	DefaultMemoryLimit = 24 << 20
	// MinMemoryLimit bounds memory_limit from below: under it the
	// collector would run almost continuously.
	MinMemoryLimit  = 8 << 20
	MaxLinks        = 8
	MaxHealthChecks = 32
	MaxLinkName     = 16
)

// DefaultRebootCommand is boot.reboot's default.
var DefaultRebootCommand = []string{"/bin/systemctl", "reboot"}

// Duration is a JSON duration written as Go writes it ("90s", "5m").
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler. Its errors are
// *json.UnmarshalTypeError, which encoding/json completes with the field's
// path, so that a bad value is reported with the key it is under.
func (d *Duration) UnmarshalJSON(b []byte) error {
	bad := func(why string) error {
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("%s (%s)", b, why), Type: reflect.TypeFor[Duration]()}
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return bad(`want a duration string like "90s"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return bad(`want a duration like "90s" or "5m"`)
	}
	if v < 0 {
		return bad("negative")
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Or returns d, or def when d is 0.
func (d Duration) Or(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// Size is a byte count written as a number or with a unit ("2GiB", "512MB").
type Size int64

var sizeUnits = map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}

var sizeRE = regexp.MustCompile(`^([0-9]{1,19})\s*([KMGT]i?B|B)?$`)

// UnmarshalJSON implements json.Unmarshaler (errors as Duration's).
func (s *Size) UnmarshalJSON(b []byte) error {
	bad := func(why string) error {
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("%s (%s)", b, why), Type: reflect.TypeFor[Size]()}
	}
	var n int64
	if err := json.Unmarshal(b, &n); err == nil {
		if n < 0 {
			return bad("negative")
		}
		*s = Size(n)
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return bad(`want a number of bytes or a string like "2GiB"`)
	}
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(str))
	if m == nil {
		return bad("want a number and an optional unit: B, KB, KiB, MB, MiB, GB, GiB, TB, TiB")
	}
	v, err := strconv.ParseInt(m[1], 10, 64)
	mul := sizeUnits[m[2]]
	if err != nil || v > (1<<62)/mul {
		return bad("too large")
	}
	*s = Size(v * mul)
	return nil
}

// problems collects every problem of a configuration, so that a bad
// configuration is reported whole at start rather than one fix at a time.
type problems []error

func (p *problems) add(format string, args ...any) {
	*p = append(*p, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
}

func (p *problems) addErr(err error) {
	if err != nil {
		*p = append(*p, err)
	}
}

func (p problems) err() error { return errors.Join(p...) }

var hardwareIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
var linkNameRE = regexp.MustCompile(`^[a-z0-9_-]{1,16}$`)

// validateDaemon checks the daemon sections that are present; required
// says whether they must be (flightd run).
func (c *Config) validateDaemon(p *problems, required bool) {
	if c.Vehicle.ID == 0 && required {
		p.add("vehicle.id is required (> 0)")
	}
	if c.Vehicle.HardwareID == "" {
		if required {
			p.add("vehicle.hardware_id is required")
		}
	} else if !hardwareIDRE.MatchString(c.Vehicle.HardwareID) {
		p.add("vehicle.hardware_id %q: want 1..64 of [A-Za-z0-9._-]", c.Vehicle.HardwareID)
	}
	if len(c.Links) == 0 && required {
		p.add("links: at least one link is required")
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < MinMemoryLimit {
		p.add("memory_limit %d bytes: want at least %d (8MiB)", c.MemoryLimit, MinMemoryLimit)
	}
	if len(c.Links) > MaxLinks {
		p.add("links: %d links, at most %d", len(c.Links), MaxLinks)
	}
	names := map[string]bool{}
	for i, l := range c.Links {
		f := fmt.Sprintf("links[%d]", i)
		if !linkNameRE.MatchString(l.Name) {
			p.add("%s.name %q: want 1..16 of [a-z0-9_-]", f, l.Name)
		} else if names[l.Name] {
			p.add("%s.name %q is used twice", f, l.Name)
		}
		names[l.Name] = true
		switch l.Kind {
		case "udp", "tcp":
			if l.Listen == "" && l.Peer == "" {
				p.add("%s: a %s link needs listen or peer", f, l.Kind)
			}
			if l.Kind == "tcp" && l.Listen != "" && l.Peer != "" {
				p.add("%s: a tcp link listens or dials: listen or peer, not both", f)
			}
			if l.Device != "" || l.Baud != 0 {
				p.add("%s: device and baud are for serial links", f)
			}
		case "serial":
			if !filepath.IsAbs(l.Device) {
				p.add("%s.device %q: a serial link needs an absolute device path", f, l.Device)
			}
			if l.Listen != "" || l.Peer != "" {
				p.add("%s: listen and peer are for udp and tcp links", f)
			}
			if l.Baud < 0 {
				p.add("%s.baud %d is negative", f, l.Baud)
			}
		case "":
			p.add("%s.kind is required (\"udp\", \"tcp\" or \"serial\")", f)
		default:
			p.add("%s.kind %q: want \"udp\", \"tcp\" or \"serial\"", f, l.Kind)
		}
		if l.MaxFrame != 0 && (l.MaxFrame < protocol.MinMaxFrame || l.MaxFrame > protocol.MaxMaxFrame) {
			p.add("%s.max_frame %d out of range [%d, %d]", f, l.MaxFrame, protocol.MinMaxFrame, protocol.MaxMaxFrame)
		}
	}
	c.Keys.validate(p, required)
	if len(c.Health.Checks) > MaxHealthChecks {
		p.add("health.checks: %d checks, at most %d", len(c.Health.Checks), MaxHealthChecks)
	}
	for i, h := range c.Health.Checks {
		f := fmt.Sprintf("health.checks[%d]", i)
		if h.Name == "" {
			p.add("%s.name is required", f)
		}
		if len(h.Command) == 0 || h.Command[0] == "" {
			p.add("%s.command is required (argv, e.g. [\"/usr/bin/systemctl\", \"is-system-running\"])", f)
		} else if !filepath.IsAbs(h.Command[0]) {
			p.add("%s.command[0] %q is not an absolute path", f, h.Command[0])
		}
		if time.Duration(h.Timeout) > time.Hour {
			p.add("%s.timeout %v is over 1h", f, time.Duration(h.Timeout))
		}
	}
	if iv := time.Duration(c.Health.Interval); iv != 0 && iv < time.Second {
		p.add("health.interval %v is under 1s", iv)
	}
	if c.Storage.Dir != "" {
		if !filepath.IsAbs(c.Storage.Dir) {
			p.add("storage.dir %q is not an absolute path", c.Storage.Dir)
		}
		for _, sl := range []SlotConfig{c.Slots.A, c.Slots.B} {
			if sl.Backend == "dir" && sl.Path != "" && within(sl.Path, c.Storage.Dir) {
				p.add("storage.dir %s is inside slot directory %s", c.Storage.Dir, sl.Path)
			}
		}
	}
	if per := time.Duration(c.Telemetry.Period); per != 0 && per < time.Second {
		p.add("telemetry.period %v is under 1s", per)
	}
	if c.Control.Socket != "" && !filepath.IsAbs(c.Control.Socket) {
		p.add("control.socket %q is not an absolute path", c.Control.Socket)
	}
	if len(c.Boot.Reboot) > 0 && !filepath.IsAbs(c.Boot.Reboot[0]) {
		p.add("boot.reboot[0] %q is not an absolute path", c.Boot.Reboot[0])
	}
	if required {
		if !c.Boot.Configured() {
			p.add("boot: flightd run needs a bootloader environment (uboot_env, fw_env_config or grubenv)")
		}
	}
}

func (k *KeysConfig) validate(p *problems, required bool) {
	list := func(name string, ks []KeyFile, need bool) {
		if len(ks) == 0 && need {
			p.add("keys.%s: at least one key is required", name)
		}
		if len(ks) > protocol.MaxKeys {
			p.add("keys.%s: %d keys, at most %d", name, len(ks), protocol.MaxKeys)
		}
		ids := map[uint32]bool{}
		for i, kf := range ks {
			if ids[kf.ID] {
				p.add("keys.%s[%d].id %d is used twice", name, i, kf.ID)
			}
			ids[kf.ID] = true
			if kf.File == "" {
				p.add("keys.%s[%d].file is required", name, i)
			}
		}
	}
	list("release", k.Release, required)
	list("ground", k.Ground, required)
	list("seal", k.Seal, false)
	if k.Vehicle == nil {
		if required {
			p.add("keys.vehicle is required (the return-link MAC key: flightd keygen writes one)")
		}
	} else if k.Vehicle.File == "" {
		p.add("keys.vehicle.file is required")
	}
}

// ValidateRun checks the configuration as `flightd run` needs it: every
// section Validate checks, plus the daemon's required ones (vehicle,
// links, keys, a bootloader environment). All problems are reported, joined.
func (c *Config) ValidateRun() error {
	var p problems
	p.addErr(c.validateBench())
	c.validateDaemon(&p, true)
	return p.err()
}

// MemoryLimitOrDefault is memory_limit or its default.
func (c *Config) MemoryLimitOrDefault() int64 {
	if c.MemoryLimit == 0 {
		return DefaultMemoryLimit
	}
	return int64(c.MemoryLimit)
}

// ApplyMemoryLimit sets the Go runtime's soft memory limit
// (debug.SetMemoryLimit) to memory_limit, unless the GOMEMLIMIT
// environment variable is set (the runtime has applied it: an operator's
// override, "off" included). It returns the limit in force. `flightd run`
// calls it before Run; Run does not, so that tests running Run in-process
// keep their own limit.
func (c *Config) ApplyMemoryLimit() int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1)
	}
	lim := c.MemoryLimitOrDefault()
	debug.SetMemoryLimit(lim)
	return lim
}

// StorageDir is storage.dir or its default.
func (c *Config) StorageDir() string {
	if c.Storage.Dir != "" {
		return c.Storage.Dir
	}
	return filepath.Join(c.Slots.StateDir, "uplink")
}

// RecordDir is boot.record_dir or its default, slots.state_dir.
func (c *Config) RecordDir() string {
	if c.Boot.RecordDir != "" {
		return c.Boot.RecordDir
	}
	return c.Slots.StateDir
}

// QuotaOrDefault is storage.quota or its default.
func (c *Config) QuotaOrDefault() int64 {
	if c.Storage.Quota == 0 {
		return DefaultQuota
	}
	return int64(c.Storage.Quota)
}

// RebootOrDefault is boot.reboot or its default.
func (b BootConfig) RebootOrDefault() []string {
	if len(b.Reboot) == 0 {
		return DefaultRebootCommand
	}
	return b.Reboot
}

// SmallestFrame is the smallest max_frame of the configured links: every
// telemetry packet and event must fit it.
func (c *Config) SmallestFrame() int {
	m := 0
	for _, l := range c.Links {
		if f := l.MaxFrameOrDefault(); m == 0 || f < m {
			m = f
		}
	}
	if m == 0 {
		m = DefaultMaxFrame
	}
	return m
}
