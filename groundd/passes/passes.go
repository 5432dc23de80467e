// Package passes is groundd's pass schedule: the windows in which a station
// sees each vehicle, with the uplink rate of each, and the estimate of how
// many passes an uplink still needs.
//
// A schedule is a file of windows, JSON or CSV (the first non-blank byte
// tells: '[' is JSON):
//
//	[{"vehicle": 7, "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T10:08:00Z", "rate": 64000}]
//
//	# vehicle,start,end,rate_bps
//	7,2030-01-01T10:00:00Z,2030-01-01T10:08:00Z,64000
//
// Times are RFC 3339; rate is bits per second (0 or absent: the vehicle's
// configured rate). Windows of one vehicle must not overlap. Everything in a
// schedule is checked and bounded: it comes from outside.
package passes

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Window is one pass of one vehicle over the station.
type Window struct {
	Vehicle uint32    `json:"vehicle"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	// Rate is the uplink rate during the pass, bits per second (0: default).
	Rate float64 `json:"rate,omitempty"`
}

// Duration is the window's length.
func (w Window) Duration() time.Duration { return w.End.Sub(w.Start) }

// Schedule is a set of windows per vehicle. The zero value has none.
type Schedule struct {
	byVehicle map[uint32][]Window // sorted by Start, not overlapping
}

// Limits of a schedule file.
const (
	MaxFileSize = 16 << 20
	MaxWindows  = 1 << 18
)

// ErrSchedule wraps every error about a schedule's contents.
var ErrSchedule = errors.New("passes: bad schedule")

// New returns the schedule of ws, checked.
func New(ws []Window) (*Schedule, error) {
	if len(ws) > MaxWindows {
		return nil, fmt.Errorf("%w: %d windows, at most %d", ErrSchedule, len(ws), MaxWindows)
	}
	s := &Schedule{byVehicle: map[uint32][]Window{}}
	for i, w := range ws {
		if !w.End.After(w.Start) {
			return nil, fmt.Errorf("%w: window %d ends before it starts", ErrSchedule, i)
		}
		if w.Rate < 0 || math.IsNaN(w.Rate) || math.IsInf(w.Rate, 0) {
			return nil, fmt.Errorf("%w: window %d: bad rate", ErrSchedule, i)
		}
		s.byVehicle[w.Vehicle] = append(s.byVehicle[w.Vehicle], w)
	}
	for v, l := range s.byVehicle {
		sort.Slice(l, func(i, j int) bool { return l[i].Start.Before(l[j].Start) })
		for i := 1; i < len(l); i++ {
			if l[i].Start.Before(l[i-1].End) {
				return nil, fmt.Errorf("%w: vehicle %d: windows at %s and %s overlap", ErrSchedule, v, l[i-1].Start.Format(time.RFC3339), l[i].Start.Format(time.RFC3339))
			}
		}
	}
	return s, nil
}

// Load reads a schedule file.
func Load(path string) (*Schedule, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("passes: %w", err)
	}
	defer f.Close()
	return Parse(f)
}

// Parse reads a schedule in JSON or CSV.
func Parse(r io.Reader) (*Schedule, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("passes: %w", err)
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("%w: over %d bytes", ErrSchedule, MaxFileSize)
	}
	t := bytes.TrimSpace(b)
	if len(t) > 0 && t[0] == '[' {
		var ws []Window
		dec := json.NewDecoder(bytes.NewReader(t))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ws); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSchedule, err)
		}
		return New(ws)
	}
	return parseCSV(t)
}

func parseCSV(b []byte) (*Schedule, error) {
	var ws []Window
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 4096)
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") || (line == 1 && strings.HasPrefix(l, "vehicle")) {
			continue
		}
		rec, err := csv.NewReader(strings.NewReader(l)).Read()
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrSchedule, line, err)
		}
		if len(rec) < 3 || len(rec) > 4 {
			return nil, fmt.Errorf("%w: line %d: want vehicle,start,end[,rate]", ErrSchedule, line)
		}
		v, err := strconv.ParseUint(strings.TrimSpace(rec[0]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: vehicle: %v", ErrSchedule, line, err)
		}
		w := Window{Vehicle: uint32(v)}
		if w.Start, err = time.Parse(time.RFC3339, strings.TrimSpace(rec[1])); err != nil {
			return nil, fmt.Errorf("%w: line %d: start: %v", ErrSchedule, line, err)
		}
		if w.End, err = time.Parse(time.RFC3339, strings.TrimSpace(rec[2])); err != nil {
			return nil, fmt.Errorf("%w: line %d: end: %v", ErrSchedule, line, err)
		}
		if len(rec) == 4 && strings.TrimSpace(rec[3]) != "" {
			if w.Rate, err = strconv.ParseFloat(strings.TrimSpace(rec[3]), 64); err != nil {
				return nil, fmt.Errorf("%w: line %d: rate: %v", ErrSchedule, line, err)
			}
		}
		ws = append(ws, w)
		if len(ws) > MaxWindows {
			return nil, fmt.Errorf("%w: over %d windows", ErrSchedule, MaxWindows)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSchedule, err)
	}
	return New(ws)
}

// Windows returns the windows of vehicle, in order.
func (s *Schedule) Windows(vehicle uint32) []Window {
	if s == nil {
		return nil
	}
	return append([]Window(nil), s.byVehicle[vehicle]...)
}

// At returns the window of vehicle open at t, if any.
func (s *Schedule) At(vehicle uint32, t time.Time) (Window, bool) {
	if s == nil {
		return Window{}, false
	}
	l := s.byVehicle[vehicle]
	i := sort.Search(len(l), func(i int) bool { return l[i].End.After(t) })
	if i < len(l) && !t.Before(l[i].Start) {
		return l[i], true
	}
	return Window{}, false
}

// Next returns the first window of vehicle that ends after t: the one open
// at t, or the next to open.
func (s *Schedule) Next(vehicle uint32, t time.Time) (Window, bool) {
	if s == nil {
		return Window{}, false
	}
	l := s.byVehicle[vehicle]
	i := sort.Search(len(l), func(i int) bool { return l[i].End.After(t) })
	if i < len(l) {
		return l[i], true
	}
	return Window{}, false
}

// Change returns the next time after t at which vehicle's link opens or
// closes by the schedule (zero: never).
func (s *Schedule) Change(vehicle uint32, t time.Time) time.Time {
	w, ok := s.Next(vehicle, t)
	if !ok {
		return time.Time{}
	}
	if t.Before(w.Start) {
		return w.Start
	}
	return w.End
}

// Estimate returns how many passes of vehicle, from t on, it takes to send
// bytes at each window's rate (defaultRate where a window names none), and
// whether the schedule has enough of them: the part of the window open at t
// that is left counts as a pass. Efficiency (0, 1] discounts the rate for
// framing, retransmissions and reports.
func (s *Schedule) Estimate(vehicle uint32, t time.Time, bytes uint64, defaultRate, efficiency float64) (int, bool) {
	if bytes == 0 {
		return 0, true
	}
	if efficiency <= 0 || efficiency > 1 {
		efficiency = 1
	}
	left := float64(bytes) * 8
	n := 0
	for w, ok := s.Next(vehicle, t); ok; w, ok = s.Next(vehicle, w.End) {
		from := w.Start
		if t.After(from) {
			from = t
		}
		rate := w.Rate
		if rate == 0 {
			rate = defaultRate
		}
		n++
		left -= rate * efficiency * w.End.Sub(from).Seconds()
		if left <= 0 {
			return n, true
		}
	}
	return n, false
}
