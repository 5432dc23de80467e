package passes

import (
	"bytes"
	"testing"
	"time"
)

// FuzzParse: any schedule file either parses into windows that hold the
// promises (ordered, not overlapping, positive, sane rates) or is refused;
// it never panics.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`[{"vehicle": 7, "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T10:08:00Z", "rate": 64000}]`))
	f.Add([]byte("# vehicle,start,end,rate_bps\n7,2030-01-01T10:00:00Z,2030-01-01T10:08:00Z,64000\n7,2030-01-01T11:30:00Z,2030-01-01T11:40:00Z,\n"))
	f.Add([]byte("vehicle,start,end\n1,2030-01-01T10:00:00Z,2030-01-01T10:00:01Z\n"))
	f.Add([]byte("7,2030-01-01T10:00:00Z,2030-01-01T10:08:00Z,1e308\n"))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(bytes.NewReader(b))
		if err != nil {
			return
		}
		for v, ws := range s.byVehicle {
			for i, w := range ws {
				if !w.End.After(w.Start) || w.Rate < 0 || w.Vehicle != v {
					t.Fatalf("bad window %+v", w)
				}
				if i > 0 && w.Start.Before(ws[i-1].End) {
					t.Fatalf("overlap %+v %+v", ws[i-1], w)
				}
				if got, ok := s.At(v, w.Start); !ok || !got.Start.Equal(w.Start) {
					t.Fatalf("At(%v) = %+v %v", w.Start, got, ok)
				}
			}
			if len(ws) > 0 {
				n, _ := s.Estimate(v, ws[0].Start.Add(-time.Hour), 1<<20, 1000, 0.8)
				if n < 0 || n > len(ws) {
					t.Fatalf("estimate %d of %d windows", n, len(ws))
				}
			}
		}
	})
}
