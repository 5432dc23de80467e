package linksim

import (
	"fmt"
	"sort"
	"time"
)

// ge builds a Gilbert-Elliott model that loses every frame in the bad state.
func ge(p, r float64) GilbertElliott { return GilbertElliott{P: p, R: r, LossBad: 1} }

// Profiles are the named links of issue 2's table. Rates are bits per
// second, delays one-way (RTT/2).
var profiles = map[string]Profile{
	"uhf": {
		Name:     "uhf",
		Forward:  Channel{Rate: 9600, Delay: 25 * time.Millisecond, MaxFrame: 256, GE: ge(0.01, 0.25)},
		Return:   Channel{Rate: 9600, Delay: 25 * time.Millisecond, MaxFrame: 256, GE: ge(0.01, 0.25)},
		Schedule: Schedule{PassUp: 8 * time.Minute, PassPeriod: 98 * time.Minute},
	},
	"sband": {
		Name:     "sband",
		Forward:  Channel{Rate: 9600, Delay: 25 * time.Millisecond, MaxFrame: 1024, GE: ge(0.002, 0.5)},
		Return:   Channel{Rate: 4.3e6, Delay: 25 * time.Millisecond, MaxFrame: 1024, GE: ge(0.002, 0.5)},
		Schedule: Schedule{PassUp: 10 * time.Minute, PassPeriod: 105 * time.Minute},
	},
	"leo-fast": {
		Name:     "leo-fast",
		Forward:  Channel{Rate: 2e6, Delay: 15 * time.Millisecond, MaxFrame: 1024, Loss: 0.008},
		Return:   Channel{Rate: 10e6, Delay: 15 * time.Millisecond, MaxFrame: 1024, Loss: 0.008},
		Schedule: Schedule{PassUp: 12 * time.Minute, PassPeriod: 107 * time.Minute},
	},
	"geo": {
		Name:     "geo",
		Forward:  Channel{Rate: 64000, Delay: 270 * time.Millisecond, MaxFrame: 1024, Loss: 0.079},
		Return:   Channel{Rate: 1e6, Delay: 270 * time.Millisecond, MaxFrame: 1024, Loss: 0.079},
		Schedule: Schedule{OutageEvery: time.Hour, OutageFor: 5 * time.Minute, OutageOffset: 55 * time.Minute},
	},
	"lunar": {
		Name:     "lunar",
		Forward:  Channel{Rate: 4000, Delay: 1350 * time.Millisecond, MaxFrame: 1024, GE: ge(0.005, 0.2)},
		Return:   Channel{Rate: 2e6, Delay: 1350 * time.Millisecond, MaxFrame: 1024, GE: ge(0.005, 0.2)},
		Schedule: Schedule{PassUp: 8 * time.Hour, PassPeriod: 24 * time.Hour},
	},
	"stress": {
		Name:    "stress",
		Forward: Channel{Rate: 9600, Delay: 25 * time.Millisecond, MaxFrame: 256, GE: ge(0.02, 0.1)},
		Return:  Channel{Rate: 9600, Delay: 25 * time.Millisecond, MaxFrame: 256, GE: ge(0.02, 0.1)},
		Schedule: Schedule{
			PassUp: 8 * time.Minute, PassPeriod: 98 * time.Minute,
			ReturnOddPassesDown: true,
			LosePassEvery:       5,
			PowerCutEvery:       3,
			PowerCutFor:         90 * time.Second,
		},
	},
}

// ProfileNames lists the named profiles in the order of issue 2's table.
func ProfileNames() []string {
	return []string{"uhf", "sband", "leo-fast", "geo", "lunar", "stress"}
}

// Named returns the profile called name.
func Named(name string) (Profile, error) {
	p, ok := profiles[name]
	if !ok {
		names := make([]string, 0, len(profiles))
		for n := range profiles {
			names = append(names, n)
		}
		sort.Strings(names)
		return Profile{}, fmt.Errorf("linksim: unknown profile %q (have %v)", name, names)
	}
	p.Schedule.ForwardOutages = append([]Window(nil), p.Schedule.ForwardOutages...)
	p.Schedule.ReturnOutages = append([]Window(nil), p.Schedule.ReturnOutages...)
	return p, nil
}
