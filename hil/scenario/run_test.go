package scenario_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/xml"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/bootorbit/bootorbit/hil/scenario"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// TestShippedParse: every shipped scenario parses and validates, and the
// quick subset is small.
func TestShippedParse(t *testing.T) {
	all, err := scenario.Shipped(false)
	if err != nil {
		t.Fatal(err)
	}
	short, _ := scenario.Shipped(true)
	if len(all) < 14 || len(short) < 2 || len(short) > 3 {
		t.Fatalf("%d scenarios, %d short", len(all), len(short))
	}
	profiles := map[string]bool{}
	for _, s := range all {
		if strings.HasPrefix(s.Name, "nominal-") {
			profiles[s.Link.Profile] = true
		}
	}
	for _, p := range []string{"uhf", "sband", "leo-fast", "geo", "lunar", "stress"} {
		if !profiles[p] {
			t.Errorf("no nominal scenario over %s", p)
		}
	}
	// The long ones (the Debian pair) are named or added with --long,
	// never in --all or --short: a fresh clone and CI do not have the
	// pair.
	every, err := scenario.ShippedAll()
	if err != nil {
		t.Fatal(err)
	}
	long := map[string]bool{}
	for _, s := range every {
		if s.Pair() == images.PairDebian && !s.Long {
			t.Errorf("%s runs on the Debian pair and is not long", s.Name)
		}
		if s.Long {
			long[s.Name] = true
		}
	}
	for _, s := range all {
		if long[s.Name] {
			t.Errorf("Shipped lists the long %s", s.Name)
		}
	}
	if len(long) < 2 || len(every) != len(all)+len(long) {
		t.Errorf("%d long scenarios of %d, %d others", len(long), len(every), len(all))
	}
}

// TestParseRefuses: unknown keys, images, faults and phases are refused,
// every problem at once.
func TestParseRefuses(t *testing.T) {
	_, err := scenario.Parse(strings.NewReader(`{"name": "x", "link": {"profile": "uhf"}, "updates": [{"image": "nope"}],
		"faults": [{"kind": "meteor", "during": "lunch"}], "expect": {"booted": "C"}}`))
	for _, want := range []string{`image "nope"`, `kind "meteor"`, `during "lunch"`, `expect.booted "C"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	if _, err := scenario.Parse(strings.NewReader(`{"name": "x", "bogus": 1}`)); err == nil {
		t.Error("an unknown key was taken")
	}
	_, err = scenario.Parse(strings.NewReader(`{"name": "x", "link": {"profile": "uhf"}, "updates": [{"image": "update"}],
		"images": "fedora", "short": true, "long": true, "expect": {"booted": "B"}}`))
	for _, want := range []string{`images "fedora"`, "short and long"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// TestLinkScale: time_scale shortens the schedule and multiplies the
// rates; delays are kept.
func TestLinkScale(t *testing.T) {
	sp, err := scenario.LinkSpec{Profile: "uhf", TimeScale: 10}.Spec()
	if err != nil {
		t.Fatal(err)
	}
	if sp.Forward.Rate != 96000 || sp.TimeScale != 10 || sp.Forward.Delay != 25*time.Millisecond {
		t.Fatalf("%+v", sp)
	}
}

// TestJUnit: the JUnit report is XML with a test case per scenario and
// the failure's message.
func TestJUnit(t *testing.T) {
	rep := &scenario.Report{Arch: "arm64", Board: "virtual", Results: []*scenario.Result{
		{Name: "a", Passed: true}, {Name: "b", Failures: []string{"slot B \"bad\", want \"good\""}}}}
	var b bytes.Buffer
	if err := rep.WriteJUnit(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Suites []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Cases    []struct {
				Name    string `xml:"name,attr"`
				Failure *struct {
					Message string `xml:"message,attr"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.Suites[0]
	if s.Tests != 2 || s.Failures != 1 || s.Cases[1].Failure == nil || !strings.Contains(s.Cases[1].Failure.Message, "want") {
		t.Fatalf("%s", b.String())
	}
}

// TestScenarios runs the quick subset of the shipped scenarios on this
// machine's architecture; with -long, every scenario, on amd64 and on
// arm64 (qemu-user; skipped when qemu-aarch64 is missing).
func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("builds flightd and runs the virtual board")
	}
	seed := testrand.New(t).Uint64()
	scs, err := scenario.Shipped(!testrand.Long())
	if err != nil {
		t.Fatal(err)
	}
	archs := []string{runtime.GOARCH}
	if testrand.Long() && runtime.GOARCH == "amd64" {
		archs = append(archs, "arm64")
	}
	for _, arch := range archs {
		t.Run(arch, func(t *testing.T) {
			env, err := scenario.Prepare(context.Background(), t.TempDir(), arch, seed, 1<<20)
			if err != nil {
				if arch != runtime.GOARCH && strings.Contains(err.Error(), "qemu-user-static") {
					t.Skip(err)
				}
				t.Fatal(err)
			}
			for _, sc := range scs {
				t.Run(sc.Name, func(t *testing.T) {
					res, err := scenario.Run(context.Background(), env, sc)
					if err != nil {
						t.Fatal(err)
					}
					if !res.Passed {
						t.Fatalf("%s on %s: %s\n%s", sc.Name, arch, strings.Join(res.Failures, "\n"), strings.Join(res.Timeline, "\n"))
					}
					// Each boot of the board has its own boot id: flightd
					// counts the factory boot and the reboot into the
					// update, and says it rebooted itself.
					if strings.HasPrefix(sc.Name, "nominal-") && (res.BootCount < 2 || res.ResetCause != "reboot") {
						t.Fatalf("%s on %s: the vehicle reports %d boots, reset cause %q; want 2 or more, reboot", sc.Name, arch, res.BootCount, res.ResetCause)
					}
					t.Logf("%s on %s: passed in %.1fs", sc.Name, arch, res.Duration.Seconds())
				})
			}
		})
	}
}

// TestSkipOnLimits: on a board with limits (a real board), the scenarios
// that need what it cannot give are skipped with the reason, and the
// report says so (SKIP, not a failure; JUnit's skipped).
func TestSkipOnLimits(t *testing.T) {
	all, err := scenario.Shipped(false)
	if err != nil {
		t.Fatal(err)
	}
	l := scenario.Limits{SlotWrite: "polled over SSH", ImageBehaviour: "the board boots its own images"}
	skipped := map[string]string{}
	for _, s := range all {
		if why := s.SkipReason(l); why != "" {
			skipped[s.Name] = why
		}
		if why := s.SkipReason(scenario.Limits{}); why != "" {
			t.Errorf("%s skipped on the virtual board: %s", s.Name, why)
		}
	}
	for _, name := range []string{"powercut-install", "watchdog-rollback", "health-rollback"} {
		if skipped[name] == "" {
			t.Errorf("%s not skipped on a real board", name)
		}
	}
	for _, name := range []string{"nominal-uhf", "powercut-receive", "powercut-activate", "tampered-chunk", "forged-command"} {
		if skipped[name] != "" {
			t.Errorf("%s skipped on a real board: %s", name, skipped[name])
		}
	}
	env := &scenario.Env{Board: "real", Limits: l}
	var sc *scenario.Scenario
	for _, s := range all {
		if s.Name == "watchdog-rollback" {
			sc = s
		}
	}
	res, err := scenario.Run(context.Background(), env, sc)
	if err != nil || res.Skipped == "" || !strings.HasPrefix(res.Skipped, "skipped on a real board: ") || res.Board != "real" {
		t.Fatalf("run: %+v, %v", res, err)
	}
	rep := &scenario.Report{Arch: "arm64", Board: "real", Results: []*scenario.Result{res, {Name: "b", Passed: true}}}
	var sum, ju bytes.Buffer
	rep.WriteSummary(&sum)
	rep.WriteJUnit(&ju)
	if rep.Failed() != 0 || !strings.Contains(sum.String(), "SKIP") || !strings.Contains(sum.String(), "1 passed, 0 failed, 1 skipped") ||
		!strings.Contains(sum.String(), res.Skipped) || !strings.Contains(ju.String(), "<skipped message=") {
		t.Fatalf("summary:\n%s\njunit:\n%s", sum.String(), ju.String())
	}
}

// TestDebianScenarios runs the long scenarios on the Debian pair (-long,
// as root, with the pair built by hil/deltabench/mkimages.sh: its layout
// in $BOOTORBIT_DEBIAN_LAYOUT or the repository's testdata-gen/oci).
func TestDebianScenarios(t *testing.T) {
	if !testrand.Long() {
		t.Skip("minutes: run with -long")
	}
	layout := cmp.Or(os.Getenv(images.DebianLayoutEnv), filepath.Join("..", "..", images.DefaultDebianLayout))
	if _, err := os.Stat(filepath.Join(layout, "index.json")); err != nil {
		t.Skipf("no Debian pair at %s: build it as root with hil/deltabench/mkimages.sh testdata-gen", layout)
	}
	if os.Getuid() != 0 {
		t.Skip("the Debian root filesystem's owners need root")
	}
	every, err := scenario.ShippedAll()
	if err != nil {
		t.Fatal(err)
	}
	env, err := scenario.Prepare(context.Background(), t.TempDir(), runtime.GOARCH, testrand.New(t).Uint64(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	env.DebianLayout = layout
	for _, sc := range every {
		if sc.Pair() != images.PairDebian {
			continue
		}
		t.Run(sc.Name, func(t *testing.T) {
			res, err := scenario.Run(context.Background(), env, sc)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Passed {
				t.Fatalf("%s: %s\n%s", sc.Name, strings.Join(res.Failures, "\n"), strings.Join(res.Timeline, "\n"))
			}
			t.Logf("%s: passed in %.1fs, %+v", sc.Name, res.Duration.Seconds(), res.Updates)
		})
	}
}

// TestSummaryUplinks: the summary gives each uplink's figures, "-" for a
// time the runner did not see.
func TestSummaryUplinks(t *testing.T) {
	rep := &scenario.Report{Arch: "amd64", Board: "virtual", Results: []*scenario.Result{{Name: "nominal-debian-sband", Images: "debian", Passed: true,
		Updates: []scenario.UpdateFigures{{Image: "update", Version: 2, ImageBytes: 84732723, Layers: 1, BundleBytes: 3231458,
			Uplink: 118400 * time.Millisecond, Transfer: 90600 * time.Millisecond, FlightdRSS: 30 << 20}}}}}
	var b bytes.Buffer
	if err := rep.WriteSummary(&b); err != nil {
		t.Fatal(err)
	}
	want := "nominal-debian-sband     debian    update v2: image 84.7 MB in 1 layer(s), bundle 3.23 MB, uplink 118.4s (transfer 90.6s, install -), RSS 30.0 MiB"
	if !strings.Contains(b.String(), want) {
		t.Fatalf("summary lacks %q:\n%s", want, b.String())
	}
}
