package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// MaxSize bounds every size flag (1 PiB): larger is a typo, and the bound
// keeps unit multiplication from overflowing.
const MaxSize = 1 << 50

// sizeUnits are the suffixes ParseSize accepts. K, M, G and T are binary,
// as in dd and fw_env.config habits; KB, MB, GB and TB are decimal, as
// disk vendors write them.
var sizeUnits = []struct {
	suffix string
	mul    int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// ParseSize reads a byte count: a decimal number with an optional unit
// (64MiB, 5MB, 2M, 4096, 4096B), or plain 0x hex (0x2000, as in
// fw_env.config). A leading 0 before a digit is refused rather than
// guessed (fw_env.config would read 010 as octal 8), as are signs,
// underscores and other bases, and sizes above MaxSize.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if h, ok := strings.CutPrefix(strings.ToLower(t), "0x"); ok {
		n, err := strconv.ParseUint(h, 16, 64)
		if err != nil || h == "" || strings.ContainsAny(h, "_+-") || n > MaxSize {
			return 0, fmt.Errorf("bad size %q: want a byte count such as 4096, 0x1000, 64MiB or 5MB", s)
		}
		return int64(n), nil
	}
	mul := int64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mul = strings.TrimSpace(num), u.mul
			break
		}
	}
	if t == "" || strings.IndexFunc(t, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, fmt.Errorf("bad size %q: want a byte count such as 4096, 0x1000, 64MiB or 5MB", s)
	}
	if len(t) > 1 && t[0] == '0' {
		return 0, fmt.Errorf("bad size %q: a leading 0 is ambiguous (octal in fw_env.config); write decimal or 0x hex", s)
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n > MaxSize/mul {
		return 0, fmt.Errorf("bad size %q: more than %d bytes", s, int64(MaxSize))
	}
	return n * mul, nil
}

// FormatSize writes n the shortest exact way with a binary unit.
func FormatSize(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// sizeValue is a size flag.
type sizeValue struct{ p *int64 }

func (v sizeValue) String() string {
	if v.p == nil {
		return "0"
	}
	return FormatSize(*v.p)
}

func (v sizeValue) Set(s string) error {
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	*v.p = n
	return nil
}

func (sizeValue) Type() string { return "size" }

// SizeVar adds a size flag (ParseSize) bound to p, with default value.
func SizeVar(fs *pflag.FlagSet, p *int64, name string, value int64, usage string) {
	*p = value
	fs.Var(sizeValue{p}, name, usage)
}

// DurationVar adds a duration flag (Go syntax: 90s, 1m30s, 200ms) bound to
// p. A bare number without a unit is refused, so that nobody guesses
// whether 90 meant seconds.
func DurationVar(fs *pflag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	fs.DurationVar(p, name, value, usage)
}
