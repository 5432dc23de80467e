package passes

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC)

func TestParseJSONAndCSVAgree(t *testing.T) {
	js := `[{"vehicle": 7, "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T10:08:00Z", "rate": 64000},
	        {"vehicle": 7, "start": "2030-01-01T11:30:00Z", "end": "2030-01-01T11:40:00Z"}]`
	cs := "# vehicle,start,end,rate_bps\n7,2030-01-01T11:30:00Z,2030-01-01T11:40:00Z,\n7,2030-01-01T10:00:00Z,2030-01-01T10:08:00Z,64000\n"
	for _, in := range []string{js, cs} {
		s, err := Parse(strings.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		ws := s.Windows(7)
		if len(ws) != 2 || !ws[0].Start.Equal(t0) || ws[0].Rate != 64000 || ws[1].Rate != 0 {
			t.Fatalf("windows %+v", ws)
		}
		if _, ok := s.At(7, t0.Add(time.Minute)); !ok {
			t.Fatal("not in the first pass")
		}
		if _, ok := s.At(7, t0.Add(8*time.Minute)); ok {
			t.Fatal("in a pass at its end")
		}
		if c := s.Change(7, t0.Add(time.Minute)); !c.Equal(t0.Add(8 * time.Minute)) {
			t.Fatalf("change %v", c)
		}
		if c := s.Change(7, t0.Add(9*time.Minute)); !c.Equal(t0.Add(90 * time.Minute)) {
			t.Fatalf("change %v", c)
		}
		if _, ok := s.At(8, t0); ok {
			t.Fatal("another vehicle's pass")
		}
	}
}

func TestParseRefusesBadSchedules(t *testing.T) {
	for name, in := range map[string]string{
		"overlap":   "7,2030-01-01T10:00:00Z,2030-01-01T10:08:00Z\n7,2030-01-01T10:05:00Z,2030-01-01T10:09:00Z\n",
		"backwards": "7,2030-01-01T10:08:00Z,2030-01-01T10:00:00Z\n",
		"rate":      "7,2030-01-01T10:00:00Z,2030-01-01T10:08:00Z,-5\n",
		"nan":       "7,2030-01-01T10:00:00Z,2030-01-01T10:08:00Z,NaN\n",
		"vehicle":   "x,2030-01-01T10:00:00Z,2030-01-01T10:08:00Z\n",
		"fields":    "7,2030-01-01T10:00:00Z\n",
		"json":      `[{"vehicle": 7, "start": "x"}]`,
		"unknown":   `[{"vehicle": 7, "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T10:08:00Z", "bogus": 1}]`,
	} {
		if _, err := Parse(strings.NewReader(in)); !errors.Is(err, ErrSchedule) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestEstimate(t *testing.T) {
	var ws []Window
	for i := range 5 {
		st := t0.Add(time.Duration(i) * 90 * time.Minute)
		ws = append(ws, Window{Vehicle: 1, Start: st, End: st.Add(100 * time.Second), Rate: 8000})
	}
	s, err := New(ws)
	if err != nil {
		t.Fatal(err)
	}
	// 100 s at 8000 bit/s = 100 000 bytes per pass.
	for _, c := range []struct {
		at    time.Time
		bytes uint64
		n     int
		ok    bool
	}{
		{t0.Add(-time.Hour), 0, 0, true},
		{t0.Add(-time.Hour), 100000, 1, true},
		{t0.Add(-time.Hour), 100001, 2, true},
		{t0.Add(50 * time.Second), 100000, 2, true}, // half the open pass is left
		{t0.Add(-time.Hour), 500000, 5, true},
		{t0.Add(-time.Hour), 500001, 5, false},
	} {
		n, ok := s.Estimate(1, c.at, c.bytes, 1000, 1)
		if n != c.n || ok != c.ok {
			t.Errorf("estimate(%v, %d) = %d %v, want %d %v", c.at.Sub(t0), c.bytes, n, ok, c.n, c.ok)
		}
	}
}
