package testrand

import (
	"errors"
	"fmt"
	"regexp"
	"testing"
)

// The derivation is part of the contract (a seed can be recomputed from the
// log by hand): these values must never change. They were computed outside
// Go: python3 -c "import hashlib; print(int.from_bytes(hashlib.sha256(b'1/TestX').digest()[:8], 'big'))"
func TestDeriveIsStable(t *testing.T) {
	for _, tc := range []struct {
		run  uint64
		name string
		want uint64
	}{
		{1, "TestX", 11247652287930109170},
		{4000, "TestRoundTripProperty/pair3", 11080766260308819218},
		{0, "", 2303325988620907383},
	} {
		if got := Derive(tc.run, tc.name); got != tc.want {
			t.Errorf("Derive(%d, %q) = %d, want %d", tc.run, tc.name, got, tc.want)
		}
	}
}

// Tests get unrelated seeds: a different name or a different run seed
// changes the seed, and a test's seed depends on nothing else.
func TestDeriveSeparatesTests(t *testing.T) {
	seen := map[uint64]string{}
	for _, run := range []uint64{0, 1, 2, 4000} {
		for _, name := range []string{"TestA", "TestB", "TestA/sub", "TestA/sub#01", "TestAB"} {
			s := Derive(run, name)
			key := fmt.Sprintf("%s@%d", name, run)
			if prev, ok := seen[s]; ok {
				t.Errorf("%s and %s share seed %d", prev, key, s)
			}
			seen[s] = key
			if Derive(run, name) != s {
				t.Errorf("Derive(%d, %q) not a function of its inputs", run, name)
			}
		}
	}
}

func TestResolveSeedPrecedence(t *testing.T) {
	fresh := func() uint64 { return 99 }
	for _, tc := range []struct {
		flagSet bool
		flagVal string
		env     string
		want    uint64
		src     Source
		err     bool
	}{
		{want: DefaultSeed, src: FromDefault},
		{env: "4000", want: 4000, src: FromEnv},
		{flagSet: true, flagVal: "7", env: "4000", want: 7, src: FromFlag},
		{flagSet: true, flagVal: "0", env: "4000", want: 0, src: FromFlag}, // 0 is a seed like any other
		{env: "random", want: 99, src: FromEnv},
		{flagSet: true, flagVal: "random", env: "4000", want: 99, src: FromFlag},
		{flagSet: true, flagVal: "5", env: "junk", want: 5, src: FromFlag}, // an overridden variable is not read
		{env: "junk", src: FromEnv, err: true},
		{env: "-1", src: FromEnv, err: true},
		{flagSet: true, flagVal: "", src: FromFlag, err: true},
	} {
		got, src, err := resolveSeed(tc.flagSet, tc.flagVal, tc.env, fresh)
		if (err != nil) != tc.err || (err != nil && !errors.Is(err, ErrSeed)) {
			t.Errorf("%+v: error %v", tc, err)
			continue
		}
		if src != tc.src || (!tc.err && got != tc.want) {
			t.Errorf("%+v: seed %d from %s, want %d from %s", tc, got, src, tc.want, tc.src)
		}
	}
}

func TestResolveLongPrecedence(t *testing.T) {
	for _, tc := range []struct {
		flagSet bool
		flagVal string
		env     string
		want    bool
		err     bool
	}{
		{},
		{env: "1", want: true},
		{env: "true", want: true},
		{env: "0"},
		{flagSet: true, flagVal: "true", want: true},
		{flagSet: true, flagVal: "true", env: "0", want: true},
		{flagSet: true, flagVal: "false", env: "1"}, // an explicit -long=false wins
		{env: "yes", err: true},
	} {
		got, err := resolveLong(tc.flagSet, tc.flagVal, tc.env)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("%+v: %v, %v", tc, got, err)
		}
	}
}

func TestFlagValidatesOnSet(t *testing.T) {
	var f optFlag
	for _, ok := range []string{"0", "18446744073709551615", "random"} {
		if err := f.Set(ok); err != nil {
			t.Errorf("Set(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "x", "-3", "18446744073709551616", "Random"} {
		if err := f.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	b := optFlag{isBool: true}
	if err := b.Set("maybe"); err == nil {
		t.Error("-long=maybe accepted")
	}
}

// The logged pattern selects the test and nothing else.
func TestRunPattern(t *testing.T) {
	p := RunPattern("TestA/pair_3.x+")
	if p != `^TestA$/^pair_3\.x\+$` {
		t.Fatalf("pattern %q", p)
	}
	for _, part := range []struct {
		re, name string
		match    bool
	}{{`^TestA$`, "TestA", true}, {`^TestA$`, "TestAB", false}, {`^pair_3\.x\+$`, "pair_3.x+", true}, {`^pair_3\.x\+$`, "pair_3yx+", false}} {
		if regexp.MustCompile(part.re).MatchString(part.name) != part.match {
			t.Errorf("%s on %s", part.re, part.name)
		}
	}
}

// Seed is the derivation from the run seed of this binary and the test's
// name, and the same on every call.
func TestSeedOfThisTest(t *testing.T) {
	rs, _, err := RunSeed()
	if err != nil {
		t.Fatal(err)
	}
	s := Seed(t)
	if s != Derive(rs, t.Name()) || Seed(t) != s {
		t.Fatalf("Seed = %d, want Derive(%d, %q) = %d", s, rs, t.Name(), Derive(rs, t.Name()))
	}
	t.Run("sub", func(t *testing.T) {
		if Seed(t) == s {
			t.Fatal("a subtest shares its parent's seed")
		}
	})
	if New(t).Uint64() != New(t).Uint64() {
		t.Fatal("New(t) twice gives different streams")
	}
}
