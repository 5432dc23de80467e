// Package demo is `hil demo`: the whole story of bootorbit on the virtual
// board, in one command that needs nothing but Go and the repository. A
// release is signed and queued, uplinked over a UHF link in passes (time
// compressed), installed into slot B, activated, rebooted into, health
// checked and marked good; then a bad release, which hangs at boot, is
// uplinked into slot A and activated: the watchdog resets the board until
// the bootloader gives up on A and boots B again.
package demo

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/hil/scenario"
)

// Options configures the demo.
type Options struct {
	// Dir is the working directory (boards, stores, logs); it is kept.
	Dir string
	// Out receives the progress and the summary.
	Out io.Writer
	// Seed seeds the images, keys and link.
	Seed uint64
	// Short skips the bad release (the update alone) and compresses time
	// further: the form the default test runs.
	Short bool
}

// Scenario is the demo's scenario.
func Scenario(short bool) *scenario.Scenario {
	s := &scenario.Scenario{
		Name:        "demo",
		Description: "the update over UHF in passes, then a release that hangs at boot and its watchdog rollback",
		// UHF: 9.6 kbit/s, 256-byte frames, burst loss; a pass of 20 s
		// every minute, ten times faster: 2 s up every 6 s.
		Link:     scenario.LinkSpec{Profile: "uhf", TimeScale: 10, PassUp: scenario.Duration(20 * time.Second), PassPeriod: scenario.Duration(time.Minute)},
		Updates:  []scenario.Update{{Image: "update"}, {Image: "hang"}},
		Attempts: 2,
		Timeout:  scenario.Duration(110 * time.Second),
		Expect: scenario.Expect{Booted: "B", Version: 2, Outcome: "rolled_back", Slots: map[string]string{"A": "bad", "B": "good"},
			Board: map[string]int{"watchdog_reset": 2}},
	}
	if short {
		s.Link.TimeScale = 30
		s.Updates = s.Updates[:1]
		s.Expect = scenario.Expect{Booted: "B", Version: 2, Outcome: "good", Slots: map[string]string{"A": "good", "B": "good"}}
	}
	return s
}

// Run runs the demo and prints its story and summary to o.Out.
func Run(ctx context.Context, o Options) (*scenario.Result, error) {
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	start := time.Now()
	fmt.Fprintf(out, "bootorbit demo: building flightd and a signed synthetic image pair...\n")
	env, err := scenario.Prepare(ctx, o.Dir, "", o.Seed, 0)
	if err != nil {
		return nil, err
	}
	set := env.Images
	fmt.Fprintf(out, "  release key %d (ed25519); base v1 %s, update v2 %s, bad v3 %s (hangs at boot)\n",
		set.KeyID, short(set.Base.Manifest.String()), short(set.Update.Manifest.String()), short(set.Hang.Manifest.String()))
	fmt.Fprintf(out, "  the virtual board: flightd (a real process), slots A and B in %s, U-Boot environment file, watchdog\n\n", o.Dir)
	env.Progress = func(_, line string) { fmt.Fprintf(out, "  %s\n", line) }
	sc := Scenario(o.Short)
	res, err := scenario.Run(ctx, env, sc)
	if err != nil {
		return nil, err
	}
	writeSummary(out, sc, res, time.Since(start), env, o.Short)
	if !res.Passed {
		return res, fmt.Errorf("demo: the story did not end as expected: %s", strings.Join(res.Failures, "; "))
	}
	return res, nil
}

func short(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[i+1 : i+13]
	}
	return d
}

func writeSummary(w io.Writer, sc *scenario.Scenario, r *scenario.Result, took time.Duration, env *scenario.Env, shortForm bool) {
	mark := "OK"
	if !r.Passed {
		mark = "FAILED"
	}
	fw := r.Link.Forward
	var imageBytes int
	for _, t := range env.Images.Update.Tars {
		imageBytes += len(t)
	}
	fmt.Fprintf(w, "\n=== bootorbit demo: %s in %.0f s (flightd %s on the virtual board, UHF link, time x%g)\n", mark, took.Seconds(), r.Arch, sc.Link.TimeScale)
	var first uint64
	if len(r.Bundles) > 0 {
		first = r.Bundles[0]
	}
	fmt.Fprintf(w, "  1. release v2 signed and queued; uplinked as a %d-byte delta of a %.1f MB image; %d pass(es) in all;\n", first, float64(imageBytes)/1e6, r.Passes)
	fmt.Fprintf(w, "     the link carried %d frames up, lost %d, refused %d out of pass\n", fw.Frames, fw.Dropped.Loss+fw.Dropped.Queue+fw.Dropped.Corrupt, fw.Dropped.Outage)
	fmt.Fprintf(w, "  2. installed into slot B, activated, rebooted, health check passed: B marked good\n")
	if !shortForm {
		fmt.Fprintf(w, "  3. bad release v3 into slot A, activated: it hangs at boot; the watchdog reset the board %d times,\n", r.BoardEvents["watchdog_reset"])
		fmt.Fprintf(w, "     the bootloader fell back to B, flightd recorded A bad (outcome %s)\n", r.Outcome)
	}
	fmt.Fprintf(w, "  now: booted %s running v%d; slots A %s, B %s\n", r.Booted, r.Version, r.Slots["A"], r.Slots["B"])
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  FAILED: %s\n", f)
	}
}
