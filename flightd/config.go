package flightd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/bootorbit/bootorbit/slots"
)

// MaxConfigSize bounds the configuration file: a config is a few kilobytes,
// and a larger file is a mistake (or an attack) rather than a config.
const MaxConfigSize = 1 << 20

// ErrConfig is wrapped by every configuration error, so that callers can tell
// a bad configuration from an I/O failure with errors.Is.
var ErrConfig = errors.New("flightd: bad config")

// Config is the flightd configuration file: JSON, strict (unknown fields are
// errors), one section per area. docs/flightd.md lists every key with its
// default. The bench commands use slots and boot; `flightd run` needs the
// rest too (ValidateRun).
type Config struct {
	Vehicle   VehicleConfig   `json:"vehicle"`
	Links     []LinkConfig    `json:"links,omitempty"`
	Keys      KeysConfig      `json:"keys"`
	Slots     SlotsConfig     `json:"slots"`
	Boot      BootConfig      `json:"boot"`
	Health    HealthConfig    `json:"health"`
	Storage   StorageConfig   `json:"storage"`
	Telemetry TelemetryConfig `json:"telemetry"`
	Control   ControlConfig   `json:"control"`
	// MemoryLimit is the Go runtime's soft memory limit of `flightd run`
	// ("24MiB" or bytes; 0 means DefaultMemoryLimit), applied at start by
	// ApplyMemoryLimit unless GOMEMLIMIT is set.
	MemoryLimit Size `json:"memory_limit,omitempty"`
}

// SlotsConfig says where the two slots and the slot state live.
type SlotsConfig struct {
	// StateDir holds the durable slot state file (and nothing that is part
	// of a slot). It must be on persistent storage outside both slots.
	StateDir string `json:"state_dir"`
	// Cmdline is the file the booted slot is read from (rauc.slot=A|B);
	// empty means /proc/cmdline.
	Cmdline string `json:"cmdline,omitempty"`
	// VarDir is the persistent /var, shared by both slots and never written
	// by an image install; empty means the slots carry no /var policy.
	VarDir string `json:"var_dir,omitempty"`
	// A and B are the two slots.
	A SlotConfig `json:"a"`
	B SlotConfig `json:"b"`
}

// SlotConfig describes one slot's backend.
type SlotConfig struct {
	// Backend is "dir" (a mounted filesystem the image's root filesystem is
	// extracted into) or "raw" (a block device or file a filesystem image is
	// streamed into).
	Backend string `json:"backend"`
	// Path is the directory (dir) or device/file (raw).
	Path string `json:"path"`
	// Size is the usable size of a raw slot in bytes, a multiple of 4096;
	// 0 for a block device means "ask the device". Not allowed for dir.
	Size int64 `json:"size,omitempty"`
	// Device is a directory slot's block device (e.g. /dev/mmcblk0p3);
	// only with Format.
	Device string `json:"device,omitempty"`
	// Format "ext4" makes a new filesystem on Device at every install and
	// mounts it on Path, instead of deleting the old tree file by file.
	Format string `json:"format,omitempty"`
	// MkfsOptions are extra mkfs.ext4 arguments (after "-q -F"), e.g.
	// ["-E", "nodiscard"].
	MkfsOptions []string `json:"mkfs_options,omitempty"`
	// MountOptions are the comma-separated options Path is mounted with,
	// e.g. "noatime".
	MountOptions string `json:"mount_options,omitempty"`
}

// LoadConfig reads and validates the configuration file at path.
func LoadConfig(path string) (*Config, error) {
	return loadConfig(path, ParseConfig)
}

// LoadRunConfig reads the configuration file at path as `flightd run`
// needs it: ValidateRun's checks and the key files, every problem of
// both reported at once.
func LoadRunConfig(path string) (*Config, error) {
	return loadConfig(path, func(data []byte) (*Config, error) {
		c, err := decodeConfig(data)
		if err != nil {
			return nil, err
		}
		verr := c.ValidateRun()
		_, kerr := c.LoadKeys()
		if err := errors.Join(verr, kerr); err != nil {
			return nil, err
		}
		return c, nil
	})
}

func loadConfig(path string, parse func([]byte) (*Config, error)) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("flightd: config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("flightd: config %s: %w", path, err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrConfig, path, MaxConfigSize)
	}
	c, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes and validates a configuration document.
func ParseConfig(data []byte) (*Config, error) {
	c, err := decodeConfig(data)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// decodeConfig decodes a configuration document strictly, without
// validating it.
func decodeConfig(data []byte) (*Config, error) {
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrConfig, MaxConfigSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrConfig, describeJSONError(err, data))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrConfig)
	}
	return &c, nil
}

func describeJSONError(err error, data []byte) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && (typeErr.Type == reflect.TypeFor[Duration]() || typeErr.Type == reflect.TypeFor[Size]()):
		return fmt.Sprintf("field %q: %s", typeErr.Field, typeErr.Value)
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %q: want %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	case errors.As(err, &syntaxErr):
		line := 1 + bytes.Count(data[:min(int(syntaxErr.Offset), len(data))], []byte("\n"))
		return fmt.Sprintf("line %d: %v", line, syntaxErr)
	case errors.Is(err, io.EOF):
		return "empty document"
	}
	// Unknown fields: encoding/json says `json: unknown field "x"`.
	return strings.TrimPrefix(err.Error(), "json: ")
}

// Validate checks every section present and reports every problem found
// (errors.Join; each wraps ErrConfig and names its field). The daemon's
// sections are optional here: ValidateRun requires them.
func (c *Config) Validate() error {
	var p problems
	p.addErr(c.validateBench())
	c.validateDaemon(&p, false)
	return p.err()
}

// validateBench checks the sections the bench commands use, each naming
// its first bad field.
func (c *Config) validateBench() error {
	var p problems
	p.addErr(c.Slots.Validate())
	p.addErr(c.Boot.Validate())
	return p.err()
}

// Validate checks the slots section.
func (s *SlotsConfig) Validate() error {
	if s.StateDir == "" {
		return fmt.Errorf("%w: slots.state_dir is required", ErrConfig)
	}
	for _, sl := range []struct {
		name string
		c    *SlotConfig
	}{{"a", &s.A}, {"b", &s.B}} {
		if err := sl.c.validate("slots." + sl.name); err != nil {
			return err
		}
	}
	if filepath.Clean(s.A.Path) == filepath.Clean(s.B.Path) {
		return fmt.Errorf("%w: slots.a.path and slots.b.path are the same (%s)", ErrConfig, s.A.Path)
	}
	for _, sl := range []SlotConfig{s.A, s.B} {
		if sl.Backend == "dir" && within(sl.Path, s.StateDir) {
			return fmt.Errorf("%w: slots.state_dir %s is inside slot directory %s", ErrConfig, s.StateDir, sl.Path)
		}
		if sl.Backend == "dir" && s.VarDir != "" && within(sl.Path, s.VarDir) {
			return fmt.Errorf("%w: slots.var_dir %s is inside slot directory %s", ErrConfig, s.VarDir, sl.Path)
		}
	}
	if s.A.Backend == "dir" && s.B.Backend == "dir" && (within(s.A.Path, s.B.Path) || within(s.B.Path, s.A.Path)) {
		return fmt.Errorf("%w: slot directories %s and %s nest", ErrConfig, s.A.Path, s.B.Path)
	}
	if s.A.Device != "" && filepath.Clean(s.A.Device) == filepath.Clean(s.B.Device) {
		return fmt.Errorf("%w: slots.a.device and slots.b.device are the same (%s)", ErrConfig, s.A.Device)
	}
	return nil
}

func (c *SlotConfig) validate(field string) error {
	switch c.Backend {
	case "dir", "raw":
	case "":
		return fmt.Errorf("%w: %s.backend is required (\"dir\" or \"raw\")", ErrConfig, field)
	default:
		return fmt.Errorf("%w: %s.backend %q: want \"dir\" or \"raw\"", ErrConfig, field, c.Backend)
	}
	if c.Path == "" {
		return fmt.Errorf("%w: %s.path is required", ErrConfig, field)
	}
	switch {
	case c.Size < 0:
		return fmt.Errorf("%w: %s.size %d is negative", ErrConfig, field, c.Size)
	case c.Backend == "dir" && c.Size != 0:
		return fmt.Errorf("%w: %s.size is only for raw slots", ErrConfig, field)
	case c.Size%4096 != 0:
		return fmt.Errorf("%w: %s.size %d is not a multiple of 4096", ErrConfig, field, c.Size)
	}
	return c.validateFormat(field)
}

// validateFormat checks the fields of a slot formatted at every install.
func (c *SlotConfig) validateFormat(field string) error {
	switch {
	case c.Format == "" && c.Device != "":
		return fmt.Errorf("%w: %s.device without %s.format: an unformatted directory slot is whatever is mounted on its path", ErrConfig, field, field)
	case c.Format == "" && (len(c.MkfsOptions) > 0 || c.MountOptions != ""):
		return fmt.Errorf("%w: %s.mkfs_options and %s.mount_options need %s.format", ErrConfig, field, field, field)
	case c.Format == "":
		return nil
	case c.Format != slots.FormatExt4:
		return fmt.Errorf("%w: %s.format %q: only \"ext4\" is supported", ErrConfig, field, c.Format)
	case c.Backend != "dir":
		return fmt.Errorf("%w: %s.format is only for dir slots", ErrConfig, field)
	case c.Device == "":
		return fmt.Errorf("%w: %s.format needs %s.device (the slot's block device)", ErrConfig, field, field)
	case !filepath.IsAbs(c.Device):
		return fmt.Errorf("%w: %s.device %q is not an absolute path", ErrConfig, field, c.Device)
	}
	for i, o := range c.MkfsOptions {
		if o == "" {
			return fmt.Errorf("%w: %s.mkfs_options[%d] is empty", ErrConfig, field, i)
		}
	}
	if err := slots.CheckMountOptions(c.MountOptions); err != nil {
		return fmt.Errorf("%w: %s.mount_options: %v", ErrConfig, field, err)
	}
	return nil
}

// within reports whether path p is dir or lies below it (lexically).
func within(dir, p string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(p))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// SlotOptions turns the slots section into slots.Options. The booted slot
// is read from the kernel command line file (Cmdline, default
// /proc/cmdline); when it names none, booted is left unknown only if
// allowUnknownBoot is set (a bench host), and is an error otherwise.
func (s *SlotsConfig) SlotOptions(allowUnknownBoot bool) (slots.Options, error) {
	o := slots.Options{
		StateDir: s.StateDir,
		VarDir:   s.VarDir,
		A:        s.A.slot(),
		B:        s.B.slot(),
	}
	path := s.Cmdline
	if path == "" {
		path = "/proc/cmdline"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if allowUnknownBoot {
			return o, nil
		}
		return o, fmt.Errorf("flightd: kernel command line: %w", err)
	}
	booted, err := slots.ParseCmdline(string(data))
	if err != nil {
		if allowUnknownBoot && errors.Is(err, slots.ErrCmdline) && !strings.Contains(string(data), "rauc.slot=") {
			return o, nil
		}
		return o, fmt.Errorf("%s: %w", path, err)
	}
	o.Booted = booted
	return o, nil
}

func (c *SlotConfig) slot() slots.Slot {
	return slots.Slot{Backend: c.Backend, Path: c.Path, Size: c.Size,
		Device: c.Device, Format: c.Format, MkfsOptions: slices.Clone(c.MkfsOptions), MountOptions: c.MountOptions}
}
