package vm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/watchdog"
)

func TestEventRoundTrip(t *testing.T) {
	st := uint32(watchdog.WDIOFCardReset)
	in := Event{Ev: "record", Boot: 2, Up: 1.5, Cause: "watchdog", Count: 2, WatchdogResets: 1, BootStatus: &st, BootID: "b1"}
	// The kernel may interleave its own output before ours on a line.
	out, ok, err := ParseEvent("[    1.2] noise " + in.Format() + "\r")
	if !ok || err != nil {
		t.Fatalf("ParseEvent: ok %v, err %v", ok, err)
	}
	if out.Ev != in.Ev || out.Boot != 2 || out.Up != 1.5 || *out.BootStatus != st || out.Cause != "watchdog" || out.BootID != "b1" {
		t.Errorf("round trip: %+v, want %+v", out, in)
	}
}

func TestParseEventRejects(t *testing.T) {
	if _, ok, err := ParseEvent("[    0.000000] Booting Linux on physical CPU 0x0"); ok || err != nil {
		t.Errorf("kernel line: ok %v, err %v; want not an event", ok, err)
	}
	for _, line := range []string{
		EventPrefix + `{"ev":"init"`,                               // cut by a reset
		EventPrefix + `{"up":1}`,                                   // no ev
		EventPrefix + `{"ev":"x","n":"one"}`,                       // wrong type
		EventPrefix + `{"ev":"` + strings.Repeat("a", 5000) + `"}`, // too long
	} {
		if _, ok, err := ParseEvent(line); !ok || !errors.Is(err, ErrEvent) {
			t.Errorf("%.40q: ok %v, err %v; want an event that does not parse", line, ok, err)
		}
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add(Event{Ev: "keepalive", Boot: 1, Up: 2.25, N: 3}.Format())
	f.Add(EventPrefix + `{"ev":"sysfs","msg":"state=active timeout=2"}`)
	f.Add("[    0.1] " + EventPrefix + `{"ev":"init"`)
	f.Fuzz(func(t *testing.T, line string) {
		e, ok, err := ParseEvent(line)
		if !ok || err != nil {
			return
		}
		// What parses formats and parses back the same.
		again, ok, err := ParseEvent(e.Format())
		if !ok || err != nil || again.Ev != e.Ev || again.N != e.N || again.Msg != e.Msg {
			t.Fatalf("%q -> %+v -> %+v (%v)", line, e, again, err)
		}
	})
}

// console builds console lines at the given host times (seconds).
func console(lines ...any) []Line {
	var out []Line
	for i := 0; i < len(lines); i += 2 {
		l := Line{T: time.Duration(lines[i].(float64) * float64(time.Second)), Text: lines[i+1].(string)}
		if e, ok, err := ParseEvent(l.Text); ok && err == nil {
			l.Event = &e
		}
		out = append(out, l)
	}
	return out
}

func ev(e Event) string { return e.Format() }

func TestParseBoots(t *testing.T) {
	cr := uint32(watchdog.WDIOFCardReset)
	zero := uint32(0)
	lines := console(
		0.2, "[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x411fd070]",
		1.9, ev(Event{Ev: "init", Up: 1.25}),
		2.0, ev(Event{Ev: "boot", Boot: 1, Up: 1.3, BootID: "id-1"}),
		2.1, ev(Event{Ev: "open", Boot: 1, Up: 1.35, Identity: "i6300ESB timer", Options: 0x8180}),
		2.2, ev(Event{Ev: "bootstatus", Boot: 1, Up: 1.4, BootStatus: &zero}),
		2.25, ev(Event{Ev: "second-open-refused", Boot: 1, Up: 1.45, Err: "busy"}),
		2.3, ev(Event{Ev: "settimeout", Boot: 1, Up: 1.5, Asked: 2, Applied: 2}),
		2.9, ev(Event{Ev: "keepalive", Boot: 1, Up: 2.1, N: 1}),
		3.7, ev(Event{Ev: "keepalive", Boot: 1, Up: 2.9, N: 2}),
		3.7, ev(Event{Ev: "reopened", Boot: 1, Up: 2.91, N: 2}),
		3.7, "[    2.9] watchdog: watchdog0: watchdog did not stop!",
		3.8, ev(Event{Ev: "stopped", Boot: 1, Up: 2.95, N: 2}),
		4.0, ev(Event{Ev: "sysfs", Boot: 1, Up: 3.0, Msg: "state=active timeout=2"}),
		5.5, ev(Event{Ev: "alive", Boot: 1, Up: 4.8}),
		5.6, `@bootorbit {"ev":"alive","boot":1,"up":4.9[    0.000000] Booting Linux on physical CPU 0x0`,
		7.5, ev(Event{Ev: "init", Up: 1.3}),
		7.55, "[    1.32] EXT4-fs (vda): recovery complete",
		7.6, ev(Event{Ev: "boot", Boot: 2, Up: 1.35, BootID: "id-2"}),
		7.7, ev(Event{Ev: "bootstatus", Boot: 2, Up: 1.4, BootStatus: &cr}),
		7.8, ev(Event{Ev: "record", Boot: 2, Up: 1.45, BootStatus: &cr, Cause: "watchdog", Count: 2, WatchdogResets: 1, BootID: "id-2"}),
		7.9, ev(Event{Ev: "done", Boot: 2, Up: 1.5}),
	)
	boots, err := parse(lines)
	if err != nil {
		t.Fatal(err)
	}
	if len(boots) != 2 {
		t.Fatalf("%d boots, want 2", len(boots))
	}
	a, b := boots[0], boots[1]
	ms := time.Millisecond
	if a.N != 1 || a.InitUp != 1250*ms || a.InitHost != 1900*ms || a.Banner != 200*ms || a.BootID != "id-1" {
		t.Errorf("first boot's start: %+v", a)
	}
	if a.Applied != 2*time.Second || a.Keepalives != 2 || a.FirstPet != 2100*ms || a.LastPet != 2900*ms || a.MaxGap != 800*ms || a.LastPetHost != 3700*ms {
		t.Errorf("first boot's petting: applied %v, %d pets, first %v last %v gap %v host %v", a.Applied, a.Keepalives, a.FirstPet, a.LastPet, a.MaxGap, a.LastPetHost)
	}
	if !a.Stopped || !a.DidNotStop || !a.Reopened || a.Busy != "busy" || a.LastAlive != 4800*ms || a.Sysfs[0]["state"] != "active" || a.Done {
		t.Errorf("first boot's end: %+v", a)
	}
	if b.N != 2 || b.Banner != 5600*ms || !b.BootStatus.WatchdogReset() || b.Record.Cause != watchdog.CauseWatchdog || b.Record.WatchdogResets != 1 || !b.Done || !b.FSRecovered || a.FSRecovered {
		t.Errorf("second boot: %+v", b)
	}

	for name, bad := range map[string][]Line{
		"guest error": console(0.1, ev(Event{Ev: "error", Boot: 1, Err: "mount: no such device"})),
		"panic":       console(0.1, "[    1.0] Kernel panic - not syncing: Attempted to kill init!"),
		"bad event":   console(0.1, EventPrefix+`{"up":1}`),
	} {
		if _, err := parse(bad); !errors.Is(err, ErrBoard) && !errors.Is(err, ErrEvent) {
			t.Errorf("%s: %v, want ErrBoard or ErrEvent", name, err)
		}
	}
}
