// Package scenario runs the bench's scenarios: a declarative file (the
// link profile and its overrides, the images to uplink, faults at phases
// of the update, the expected outcome) driving groundd (in-process, its
// library) and the virtual board (flightd as a process) over the link
// emulator, and a report of each run (a summary a person reads, JSON,
// JUnit XML).
package scenario

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/bootorbit/bootorbit/hil/link"
)

// Scenario is one scenario file (JSON, strict: an unknown key is an
// error).
type Scenario struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Link is the emulated link.
	Link LinkSpec `json:"link"`
	// Updates are uplinked in order; each is activated and rebooted into
	// unless Activate is false.
	Updates []Update `json:"updates"`
	// Faults are injected at phases of the updates.
	Faults []Fault `json:"faults,omitempty"`
	// Expect is the outcome.
	Expect Expect `json:"expect"`
	// Timeout bounds the whole run (default 90s).
	Timeout Duration `json:"timeout,omitempty"`
	// Attempts is the boot attempts the activation gives (default 2).
	Attempts int `json:"attempts,omitempty"`
	// WatchdogTimeout is the board's watchdog timeout (default 3s, whole
	// seconds; flight configurations use a minute). flightd does not pet
	// while a slot write holds the slots lock (docs/hil.md "Findings"):
	// the Debian pair's write outlasts 3 s on a loaded machine.
	WatchdogTimeout Duration `json:"watchdog_timeout,omitempty"`
	// Short marks the scenarios of the quick subset (the default test
	// run and CI).
	Short bool `json:"short,omitempty"`
	// Images is the image pair: "synthetic" (the default: hil/images'
	// generated set, a few MB) or "debian" (the realistic pair of
	// hil/deltabench/mkimages.sh, built beforehand as root).
	Images string `json:"images,omitempty"`
	// Long marks the scenarios that take minutes or need what a fresh
	// clone lacks (the Debian pair): --all and --short leave them out,
	// --long adds them, naming one runs it.
	Long bool `json:"long,omitempty"`
}

// Pair is the scenario's image pair (images.PairSynthetic by default).
func (s *Scenario) Pair() string {
	if s.Images == "" {
		return images.PairSynthetic
	}
	return s.Images
}

// LinkSpec is the link: a hil/link profile, compressed in time, with
// overrides. Durations of the schedule are in the profile's time (before
// compression).
type LinkSpec struct {
	Profile string `json:"profile"`
	// TimeScale compresses the run: the schedule (passes, outages) is
	// TimeScale times shorter and the rates TimeScale times higher, so a
	// pass carries the same share of the update as in flight; delays are
	// kept. 0 means 1.
	TimeScale float64 `json:"time_scale,omitempty"`
	// Loss, if set, replaces both directions' random loss (and clears the
	// Gilbert-Elliott bursts).
	Loss *float64 `json:"loss,omitempty"`
	// Delay, if set, replaces the one-way delay.
	Delay *Duration `json:"delay,omitempty"`
	// ForwardRate and ReturnRate, if set, replace the rates (bits/s,
	// before scaling).
	ForwardRate float64 `json:"forward_rate,omitempty"`
	ReturnRate  float64 `json:"return_rate,omitempty"`
	// PassUp and PassPeriod, if set, replace the pass schedule.
	PassUp     Duration `json:"pass_up,omitempty"`
	PassPeriod Duration `json:"pass_period,omitempty"`
	// LosePassEvery loses every n-th pass (announced, carrying nothing).
	LosePassEvery int `json:"lose_pass_every,omitempty"`
	// NoOutages clears the profile's periodic outages.
	NoOutages bool `json:"no_outages,omitempty"`
}

// Update is one uplink: an image of the set by name (update, hang,
// unhealthy, shadowed, reuse).
type Update struct {
	Image string `json:"image"`
	// Activate, default true: activate and reboot once installed.
	Activate *bool `json:"activate,omitempty"`
}

func (u Update) activate() bool { return u.Activate == nil || *u.Activate }

// Fault kinds.
const (
	FaultPowerCut      = "power_cut"      // SIGKILL flightd, power on after Off
	FaultGroundRestart = "ground_restart" // close groundd, open it again on its state
	FaultForgedCommand = "forged_command" // a command signed with a key the vehicle does not trust
	FaultTamperedChunk = "tampered_chunk" // bundle chunks altered in flight, frame re-encoded
)

// Phases of an update at which a fault fires.
const (
	PhaseReceive  = "receive"  // the bundle transfer has begun
	PhaseInstall  = "install"  // the inactive slot is being written
	PhaseActivate = "activate" // the activate command was sent
	PhaseBoot     = "boot"     // the reboot into the new slot was asked for
)

// Fault is one fault.
type Fault struct {
	Kind string `json:"kind"`
	// During is the phase (default receive); Update the index of the
	// update (default 0); After the delay from the phase's start.
	During string   `json:"during,omitempty"`
	Update int      `json:"update,omitempty"`
	After  Duration `json:"after,omitempty"`
	// Off is how long the power stays off (power_cut; default 1s).
	Off Duration `json:"off,omitempty"`
	// Count is how many frames (tampered_chunk; default 3).
	Count int `json:"count,omitempty"`
}

// Expect is the outcome a scenario must reach.
type Expect struct {
	// Booted is the slot running at the end (A or B), Version its
	// release version as the ground knows it from telemetry.
	Booted  string `json:"booted"`
	Version uint64 `json:"version,omitempty"`
	// Outcome is the last trial's outcome the ground knows from hk.boot
	// (good, rolled_back): housekeeping is repeated, events are not, so
	// on a lossy link the outcome is what to expect, not an event.
	Outcome string `json:"outcome,omitempty"`
	// Slots are slot states on the board (slots.json): good, bad, ...
	Slots map[string]string `json:"slots,omitempty"`
	// Uplinks is the final state of every uplink (default done).
	Uplinks string `json:"uplinks,omitempty"`
	// Events are vehicle events the ground must have received.
	Events []string `json:"events,omitempty"`
	// Board are minimum counts of board events (watchdog_reset, ...).
	Board map[string]int `json:"board,omitempty"`
	// Tampered is the minimum number of chunk frames the tampered_chunk
	// faults must have altered (a tampering that altered nothing proves
	// nothing).
	Tampered int `json:"tampered,omitempty"`
	// Counters are minimum counts of the vehicle's drop reasons from
	// hk.counters (bad-signature, ...).
	Counters map[string]uint64 `json:"counters,omitempty"`
}

// Duration is a time.Duration as a string ("90s").
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("scenario: duration: want a string like \"90s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("scenario: bad duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// maxFile bounds a scenario file.
const maxFile = 1 << 20

// Parse reads a scenario from JSON and validates it.
func Parse(r io.Reader) (*Scenario, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("scenario: over %d bytes", maxFile)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Scenario
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	return &s, s.Validate()
}

// Load reads a scenario file.
func Load(path string) (*Scenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	defer f.Close()
	s, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

var imageNames = map[string]bool{"update": true, "hang": true, "unhealthy": true, "shadowed": true, "reuse": true}

// Validate checks the scenario, every problem at once.
func (s *Scenario) Validate() error {
	var errs []error
	if s.Name == "" || strings.ContainsAny(s.Name, "/\\ ") || len(s.Name) > 64 {
		errs = append(errs, fmt.Errorf("name %q: 1..64 characters, no slash or space", s.Name))
	}
	if _, err := s.Link.Spec(); err != nil {
		errs = append(errs, err)
	}
	if len(s.Updates) == 0 || len(s.Updates) > 4 {
		errs = append(errs, fmt.Errorf("updates: want 1..4, got %d", len(s.Updates)))
	}
	switch s.Images {
	case "", images.PairSynthetic, images.PairDebian:
	default:
		errs = append(errs, fmt.Errorf("images %q: %s or %s", s.Images, images.PairSynthetic, images.PairDebian))
	}
	if s.Short && s.Long {
		errs = append(errs, errors.New("short and long: a scenario is one or the other"))
	}
	for i, u := range s.Updates {
		if !imageNames[u.Image] {
			errs = append(errs, fmt.Errorf("updates[%d]: image %q: update, hang, unhealthy, shadowed or reuse", i, u.Image))
		}
	}
	for i, f := range s.Faults {
		switch f.Kind {
		case FaultPowerCut, FaultGroundRestart, FaultForgedCommand, FaultTamperedChunk:
		default:
			errs = append(errs, fmt.Errorf("faults[%d]: kind %q", i, f.Kind))
		}
		switch f.During {
		case "", PhaseReceive, PhaseInstall, PhaseActivate, PhaseBoot:
		default:
			errs = append(errs, fmt.Errorf("faults[%d]: during %q: receive, install, activate or boot", i, f.During))
		}
		if f.Update < 0 || f.Update >= len(s.Updates) {
			errs = append(errs, fmt.Errorf("faults[%d]: update %d: no such update", i, f.Update))
		}
	}
	if s.Expect.Booted != "A" && s.Expect.Booted != "B" {
		errs = append(errs, fmt.Errorf("expect.booted %q: A or B", s.Expect.Booted))
	}
	if wt := time.Duration(s.WatchdogTimeout); wt != 0 && (wt < 3*time.Second || wt > 5*time.Minute) {
		errs = append(errs, fmt.Errorf("watchdog_timeout %v: 3s..5m", wt))
	}
	if s.Attempts < 0 || s.Attempts > 9 {
		errs = append(errs, fmt.Errorf("attempts %d: 1..9", s.Attempts))
	}
	if len(errs) > 0 {
		return fmt.Errorf("scenario %s: %w", s.Name, errors.Join(errs...))
	}
	return nil
}

// Spec is the emulated link of the scenario.
func (l LinkSpec) Spec() (link.Spec, error) {
	sp, err := link.Profile(l.Profile)
	if err != nil {
		return sp, fmt.Errorf("scenario: %w", err)
	}
	scale := l.TimeScale
	if scale == 0 {
		scale = 1
	}
	if scale < 1 || scale > 10000 {
		return sp, fmt.Errorf("scenario: time_scale %v: 1..10000", scale)
	}
	for _, c := range []*link.Channel{&sp.Forward, &sp.Return} {
		if l.Loss != nil {
			c.Loss = *l.Loss
			c.GE.P, c.GE.R, c.GE.LossGood, c.GE.LossBad = 0, 0, 0, 0
		}
		if l.Delay != nil {
			c.Delay = time.Duration(*l.Delay)
		}
	}
	if l.ForwardRate > 0 {
		sp.Forward.Rate = l.ForwardRate
	}
	if l.ReturnRate > 0 {
		sp.Return.Rate = l.ReturnRate
	}
	sp.Forward.Rate *= scale
	sp.Return.Rate *= scale
	sp.Forward.Queue, sp.Return.Queue = 0, 0
	if l.PassPeriod > 0 {
		sp.Schedule.PassUp, sp.Schedule.PassPeriod = time.Duration(l.PassUp), time.Duration(l.PassPeriod)
	}
	if l.LosePassEvery > 0 {
		sp.Schedule.LosePassEvery = l.LosePassEvery
	}
	if l.NoOutages {
		sp.Schedule.OutageEvery, sp.Schedule.OutageFor = 0, 0
	}
	// The vehicle's power cuts are the board's business (faults).
	sp.Schedule.PowerCutEvery, sp.Schedule.PowerCutFor = 0, 0
	sp.TimeScale = scale
	if err := sp.Validate(); err != nil {
		return sp, fmt.Errorf("scenario: link: %w", err)
	}
	return sp, nil
}
