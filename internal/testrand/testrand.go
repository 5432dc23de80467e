// Package testrand gives every randomized test of the module one seed and
// every test binary one switch for long campaigns, so that a failure seen
// anywhere replays with the same one command.
//
// The run seed comes from, in order of precedence:
//
//   - the -seed flag of the test binary (go test ./pkg -args -seed=7);
//   - the BOOTORBIT_SEED environment variable (BOOTORBIT_SEED=7 go test ./...);
//   - DefaultSeed.
//
// Either may be "random" for a fresh seed from the system's randomness,
// drawn once per test binary. With no seed given, a run is the same run
// every time: CI is reproducible, a failure in CI fails again on a laptop,
// and a bisection compares like with like. Exploring new inputs is asked
// for explicitly (BOOTORBIT_SEED=random, and the -long campaigns), and is
// the job of the fuzzers besides.
//
// A test does not use the run seed itself: Seed derives the test's own seed
// from the run seed and the test's full name (subtests included), so that
// adding, removing or reordering tests never changes another test's inputs,
// and -run on one test replays exactly what it did in the full run. Seed
// logs both seeds and the command that replays the test.
//
// A randomized test is one whose inputs are drawn from its seed and whose
// assertions hold for any seed; it takes the seed from here. Bytes drawn
// from a constant seed to serve as fixture content (a "binary-like" file, a
// benchmark's text, a fuzz target's seed pair) are the same in every run,
// like a file in testdata, and do not come from here.
//
// Long campaigns (more seeds, larger images, more cuts) run when the -long
// flag is given or BOOTORBIT_LONG is true (1, t, true, as strconv.ParseBool
// reads it); an explicit -long=false wins over the variable.
//
// Every test package of the module imports this package, so that every test
// binary accepts -seed and -long and go test ./... -args -long -seed=7 runs
// everywhere (internal/repotest checks it). The environment variables do
// the same without that: they are the recommended form across packages.
package testrand

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The environment variables that stand for the flags.
const (
	SeedEnv = "BOOTORBIT_SEED"
	LongEnv = "BOOTORBIT_LONG"
)

// DefaultSeed is the run seed when neither -seed nor BOOTORBIT_SEED gives
// one.
const DefaultSeed = 1

// Random is the seed value that asks for a fresh run seed.
const Random = "random"

var (
	seedFlag optFlag
	longFlag optFlag
)

func init() {
	flag.Var(&seedFlag, "seed", "run seed of randomized tests: a number, or \"random\" for a fresh one (default: "+SeedEnv+", else "+strconv.Itoa(DefaultSeed)+"); each test derives its own seed from it and its name")
	longFlag.isBool = true
	flag.Var(&longFlag, "long", "run the long campaigns (default: "+LongEnv+")")
}

// optFlag is a flag that knows whether it was given, so that a given flag
// wins over the environment and an absent one does not.
type optFlag struct {
	set    bool
	val    string
	isBool bool
}

func (f *optFlag) String() string { return f.val }

func (f *optFlag) Set(s string) error {
	if f.isBool {
		if _, err := strconv.ParseBool(s); err != nil {
			return err
		}
	} else if _, err := parseSeed(s); err != nil {
		return err
	}
	f.set, f.val = true, s
	return nil
}

func (f *optFlag) IsBoolFlag() bool { return f.isBool }

// ErrSeed is returned for a seed that is neither a number nor "random".
var ErrSeed = errors.New("testrand: seed must be a decimal number or \"random\"")

// parseSeed checks a seed value; "random" reads as 0 (the caller draws
// the fresh seed).
func parseSeed(s string) (seed uint64, err error) {
	if s == Random {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q", ErrSeed, s)
	}
	return n, nil
}

// Source says where the run seed came from.
type Source string

// The sources of a run seed.
const (
	FromFlag    Source = "-seed"
	FromEnv     Source = SeedEnv
	FromDefault Source = "default"
)

// resolveSeed picks the run seed from the flag (when given), the
// environment value (when not empty) and the default, in that order;
// fresh is called for "random".
func resolveSeed(flagSet bool, flagVal, env string, fresh func() uint64) (uint64, Source, error) {
	s, src := "", FromDefault
	switch {
	case flagSet:
		s, src = flagVal, FromFlag
	case env != "":
		s, src = env, FromEnv
	default:
		return DefaultSeed, src, nil
	}
	n, err := parseSeed(s)
	if err != nil {
		return 0, src, fmt.Errorf("%s: %w", src, err)
	}
	if s == Random {
		n = fresh()
	}
	return n, src, nil
}

// resolveLong is the flag when given, else the environment value (false
// when empty).
func resolveLong(flagSet bool, flagVal, env string) (bool, error) {
	s, src := env, LongEnv
	if flagSet {
		s, src = flagVal, "-long"
	}
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("testrand: %s=%q: %w", src, s, err)
	}
	return b, nil
}

var run struct {
	once sync.Once
	seed uint64
	src  Source
	err  error
}

// RunSeed returns the run seed and where it came from. It is resolved
// once per test binary, after the flags are parsed, so "random" gives
// every test of a binary the same run seed.
func RunSeed() (uint64, Source, error) {
	run.once.Do(func() {
		run.seed, run.src, run.err = resolveSeed(seedFlag.set, seedFlag.val, os.Getenv(SeedEnv), rand.Uint64)
	})
	return run.seed, run.src, run.err
}

// Derive returns the seed of the test named name in the run with the given
// seed: the first 8 bytes, big-endian, of SHA-256("<run seed in
// decimal>/<name>"). It is a plain function of its inputs, so a seed can be
// recomputed by hand, and distinct tests get unrelated seeds.
func Derive(runSeed uint64, name string) uint64 {
	sum := sha256.Sum256([]byte(strconv.FormatUint(runSeed, 10) + "/" + name))
	return binary.BigEndian.Uint64(sum[:8])
}

// Seed returns the seed of test t, derived from the run seed and t's full
// name, and logs it with the command that replays the test. It fails the
// test on a malformed -seed or BOOTORBIT_SEED.
func Seed(t testing.TB) uint64 {
	t.Helper()
	rs, src, err := RunSeed()
	if err != nil {
		t.Fatal(err)
	}
	s := Derive(rs, t.Name())
	t.Logf("seed %d: run seed %d (%s); replay: %s=%d go test -run '%s'", s, rs, src, SeedEnv, rs, RunPattern(t.Name()))
	return s
}

// New returns a generator seeded with Seed(t).
func New(t testing.TB) *rand.Rand {
	t.Helper()
	return rand.New(rand.NewPCG(Seed(t), 0))
}

var long struct {
	once sync.Once
	on   bool
	err  error
}

// Long reports whether the long campaigns are asked for. It panics on a
// malformed BOOTORBIT_LONG (the flag is checked when it is parsed): a
// typo must not silently run the short tests instead.
func Long() bool {
	long.once.Do(func() {
		long.on, long.err = resolveLong(longFlag.set, longFlag.val, os.Getenv(LongEnv))
	})
	if long.err != nil {
		panic(long.err)
	}
	return long.on
}

// RunPattern returns the -run pattern that selects exactly the test (or
// subtest) with the given full name.
func RunPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}
