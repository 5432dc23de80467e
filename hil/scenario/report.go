package scenario

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/hil/scenarios"
)

// Shipped returns the shipped scenarios (hil/scenarios), sorted by name,
// but the long ones (Scenario.Long): all the others, or only those marked
// short.
func Shipped(short bool) ([]*Scenario, error) {
	all, err := ShippedAll()
	if err != nil {
		return nil, err
	}
	var out []*Scenario
	for _, s := range all {
		if !s.Long && (!short || s.Short) {
			out = append(out, s)
		}
	}
	return out, nil
}

// ShippedAll returns every shipped scenario, the long ones (Scenario.Long)
// too, sorted by file name.
func ShippedAll() ([]*Scenario, error) {
	names, err := fs.Glob(scenarios.FS, "*.json")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []*Scenario
	for _, n := range names {
		f, err := scenarios.FS.Open(n)
		if err != nil {
			return nil, err
		}
		s, err := Parse(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// Find returns the scenario named by arg: a shipped scenario's name, or a
// file.
func Find(arg string) (*Scenario, error) {
	if !strings.ContainsAny(arg, "/.") {
		all, err := ShippedAll()
		if err != nil {
			return nil, err
		}
		for _, s := range all {
			if s.Name == arg {
				return s, nil
			}
		}
		return nil, fmt.Errorf("scenario: no shipped scenario %q", arg)
	}
	return Load(arg)
}

// Report is the results of a run of scenarios.
type Report struct {
	Arch    string        `json:"arch"`
	Board   string        `json:"board"`
	Seed    uint64        `json:"seed"`
	Started time.Time     `json:"started"`
	Results []*Result     `json:"results"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Failed counts the results that did not pass (a skipped scenario did
// not fail).
func (r *Report) Failed() int {
	n := 0
	for _, x := range r.Results {
		if !x.Passed && x.Skipped == "" {
			n++
		}
	}
	return n
}

// WriteSummary writes the report for a person: one line per scenario,
// then the failures with their timelines.
func (r *Report) WriteSummary(w io.Writer) error {
	fmt.Fprintf(w, "hil run: %d scenarios on the %s board, flightd %s, seed %d\n\n", len(r.Results), r.Board, r.Arch, r.Seed)
	fmt.Fprintf(w, "  %-24s %-6s %-9s %7s  %-6s %-8s %-11s %s\n", "scenario", "result", "profile", "time", "booted", "version", "outcome", "slots")
	for _, x := range r.Results {
		res := "PASS"
		switch {
		case x.Skipped != "":
			res = "SKIP"
		case !x.Passed:
			res = "FAIL"
		}
		fmt.Fprintf(w, "  %-24s %-6s %-9s %6.1fs  %-6s %-8d %-11s %s\n", x.Name, res, x.Profile, x.Duration.Seconds(), x.Booted, x.Version, x.Outcome, slotList(x.Slots))
	}
	fmt.Fprintf(w, "\nuplinks (image as stored, bundle sent, queued to installed, of which the transfer and the install; flightd's peak RSS):\n")
	for _, x := range r.Results {
		for _, u := range x.Updates {
			rss := "-"
			if u.FlightdRSS > 0 {
				rss = fmt.Sprintf("%.1f MiB", float64(u.FlightdRSS)/(1<<20))
			}
			fmt.Fprintf(w, "  %-24s %-9s %s v%d: image %.1f MB in %d layer(s), bundle %.2f MB, uplink %.1fs (transfer %s, install %s), RSS %s\n",
				x.Name, x.Images, u.Image, u.Version, float64(u.ImageBytes)/1e6, u.Layers, float64(u.BundleBytes)/1e6,
				u.Uplink.Seconds(), orDash(u.Transfer), orDash(u.Install), rss)
		}
	}
	skipped := 0
	for _, x := range r.Results {
		if x.Skipped != "" {
			skipped++
		}
	}
	fmt.Fprintf(w, "\n%d passed, %d failed", len(r.Results)-r.Failed()-skipped, r.Failed())
	if skipped > 0 {
		fmt.Fprintf(w, ", %d skipped", skipped)
	}
	fmt.Fprintf(w, " in %.1fs\n", r.Elapsed.Seconds())
	for _, x := range r.Results {
		if x.Skipped != "" {
			fmt.Fprintf(w, "\n--- %s %s\n", x.Name, x.Skipped)
		}
	}
	for _, x := range r.Results {
		if x.Passed || x.Skipped != "" {
			continue
		}
		fmt.Fprintf(w, "\n--- %s failed:\n", x.Name)
		for _, f := range x.Failures {
			fmt.Fprintf(w, "  - %s\n", f)
		}
		fmt.Fprintln(w, "  timeline:")
		for _, l := range x.Timeline {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
	return nil
}

func slotList(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	return fmt.Sprintf("A=%s B=%s", m["A"], m["B"])
}

// WriteJSON writes the report as JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr"`
	Properties []junitProperty `xml:"properties>property"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
	Skipped   *junitSkipped `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitSkipped struct {
	Message string `xml:"message,attr"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes the report as JUnit XML (one suite, a test case per
// scenario, the timeline as its output), as CI systems read it.
func (r *Report) WriteJUnit(w io.Writer) error {
	suite := junitSuite{Name: path.Join("hil", r.Board, r.Arch), Tests: len(r.Results), Failures: r.Failed(),
		Time: secs(r.Elapsed), Timestamp: r.Started.UTC().Format(time.RFC3339),
		Properties: []junitProperty{{"arch", r.Arch}, {"board", r.Board}, {"seed", fmt.Sprint(r.Seed)}}}
	for _, x := range r.Results {
		c := junitCase{Name: x.Name, Classname: "hil." + r.Board + "." + r.Arch, Time: secs(x.Duration), SystemOut: strings.Join(x.Timeline, "\n")}
		switch {
		case x.Skipped != "":
			c.Skipped = &junitSkipped{Message: x.Skipped}
		case !x.Passed:
			c.Failure = &junitFailure{Message: strings.Join(x.Failures, "; "), Type: "scenario", Text: strings.Join(x.Failures, "\n")}
		}
		suite.Cases = append(suite.Cases, c)
	}
	doc := junitSuites{Name: "hil", Tests: suite.Tests, Failures: suite.Failures, Time: suite.Time, Suites: []junitSuite{suite}}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	e := xml.NewEncoder(w)
	e.Indent("", "  ")
	if err := e.Encode(doc); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

// orDash formats a measured time, "-" for one not measured (a slot write
// shorter than the runner's 100 ms poll is not seen).
func orDash(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}
