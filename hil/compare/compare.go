//go:build linux

// Package compare runs bootorbit's uplink and the baseline that RAUC and
// Mender use, an HTTP download with range-resume over TCP, over the same
// emulated link (hil/link, same profile, same seed) in one run, and
// reports both times and their ratio.
//
// bootorbit crosses the emulator in its UDP mode (datagrams between two
// loopback sockets); TCP crosses it in its IP mode (TUN devices in two
// network namespaces), so that the kernel's TCP meets the link's rate,
// delay, loss and outages. Both move the same bytes.
package compare

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bootorbit/bootorbit/hil/link"
)

// Method is one way of moving the update and what it took.
type Method struct {
	Name      string        `json:"name"`
	Transport string        `json:"transport"`
	Time      time.Duration `json:"time_ns"`
	Bytes     int64         `json:"bytes"`
	// WireBytes: bootorbit's uplink frames sent (headers, hash blocks and
	// resends included); HTTP's body bytes received over all attempts.
	WireBytes   int64      `json:"wire_bytes"`
	Retransmits int64      `json:"retransmits,omitempty"` // bootorbit: chunks sent again
	Resumes     int        `json:"resumes,omitempty"`     // HTTP: Range requests after a failure
	Err         string     `json:"error,omitempty"`
	Link        link.Stats `json:"link"`
}

// Case is one profile's comparison.
type Case struct {
	Profile   string  `json:"profile"`
	TimeScale float64 `json:"time_scale"`
	Seed      uint64  `json:"seed"`
	Bytes     int     `json:"bytes"`
	Bootorbit Method  `json:"bootorbit"`
	HTTP      Method  `json:"http"`
	// Ratio is HTTP's time over bootorbit's (> 1: bootorbit is faster);
	// 0 when either failed.
	Ratio float64 `json:"ratio"`
}

// Config is one run.
type Config struct {
	// Profiles are hil/link profile names (geo, leo-fast, ...).
	Profiles []string
	// Size is the update's size in bytes when Data is nil: that many
	// seeded random bytes (incompressible, as a compressed delta bundle
	// or image layer is).
	Size int
	// Data, if set, is the update (a real bundle or image file).
	Data []byte
	Seed uint64
	// TimeScale compresses the profiles' schedules (passes, outages);
	// rates and delays are not scaled. 0: DefaultTimeScale.
	TimeScale float64
	// Timeout bounds each method on each profile.
	Timeout time.Duration
	HTTP    HTTPConfig
	// Progress, if set, gets a line as each method starts and ends.
	Progress io.Writer
}

// DefaultTimeScale compresses the schedules 60 times: geo's 5-minute
// outage every hour becomes 5 s every minute (55 s after the start), and
// leo-fast's 12-minute pass every 107 minutes 12 s every 107 s (from the
// start).
const DefaultTimeScale = 60

// Run compares both methods on every profile, one after the other (never
// at once: they would share the machine's CPUs).
func Run(ctx context.Context, cfg Config) ([]Case, error) {
	data := cfg.Data
	if data == nil {
		data = make([]byte, cfg.Size)
		r := rand.New(rand.NewPCG(cfg.Seed, 0x636d70))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("compare: nothing to send (size 0)")
	}
	scale := cfg.TimeScale
	if scale == 0 {
		scale = DefaultTimeScale
	}
	var out []Case
	for _, name := range cfg.Profiles {
		spec, err := link.Profile(name)
		if err != nil {
			return out, fmt.Errorf("compare: %w", err)
		}
		spec.TimeScale = scale
		c := Case{Profile: name, TimeScale: scale, Seed: cfg.Seed, Bytes: len(data)}
		run := func(f func(context.Context) (Method, error)) Method {
			rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			defer cancel()
			m, err := f(rctx)
			if err != nil {
				m.Err = err.Error()
			}
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "%s %s: %s\n", name, m.Name, orErr(m))
			}
			return m
		}
		c.Bootorbit = run(func(ctx context.Context) (Method, error) { return Bootorbit(ctx, spec, cfg.Seed, data) })
		c.HTTP = run(func(ctx context.Context) (Method, error) { return HTTP(ctx, spec, cfg.Seed, data, cfg.HTTP) })
		if c.Bootorbit.Err == "" && c.HTTP.Err == "" && c.Bootorbit.Time > 0 {
			c.Ratio = c.HTTP.Time.Seconds() / c.Bootorbit.Time.Seconds()
		}
		out = append(out, c)
		if err := ctx.Err(); err != nil {
			return out, err
		}
	}
	return out, nil
}

func orErr(m Method) string {
	if m.Err != "" {
		return "failed: " + m.Err
	}
	return m.Time.Round(10 * time.Millisecond).String()
}

// WriteTable prints the comparison as a Markdown table.
func WriteTable(w io.Writer, cases []Case) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "| profile\t| bytes\t| bootorbit (UDP)\t| HTTP range-resume (TCP)\t| HTTP / bootorbit\t| bootorbit resent chunks\t| HTTP resumes\t|")
	fmt.Fprintln(tw, "|---\t|---\t|---\t|---\t|---\t|---\t|---\t|")
	for _, c := range cases {
		ratio := "-"
		if c.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", c.Ratio)
		}
		fmt.Fprintf(tw, "| %s\t| %d\t| %s\t| %s\t| %s\t| %d\t| %d\t|\n", c.Profile, c.Bytes, orErr(c.Bootorbit), orErr(c.HTTP), ratio, c.Bootorbit.Retransmits, c.HTTP.Resumes)
	}
	return tw.Flush()
}

// WriteJSON prints the cases as one JSON document.
func WriteJSON(w io.Writer, cases []Case) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(cases)
}

// ProfileList splits a comma-separated list of profile names.
func ProfileList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
