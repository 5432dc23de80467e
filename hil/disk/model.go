package disk

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrModel is a device model specification that does not parse.
var ErrModel = errors.New("disk: bad device model")

// ParseModel parses "RATE[,LATENCY]": RATE in bytes per second with a unit
// (100MB/s, 50MiB/s, 2GB/s; "/s" optional; 0 or "unlimited" for no limit),
// LATENCY a Go duration per request (0.2ms, 200us). An eMMC is about
// "100MB/s,0.2ms".
func ParseModel(spec string) (Model, error) {
	rateS, latS, hasLat := strings.Cut(strings.TrimSpace(spec), ",")
	var m Model
	r := strings.TrimSuffix(strings.TrimSpace(rateS), "/s")
	if r != "0" && r != "unlimited" {
		mul := 1.0
		for _, u := range []struct {
			suf string
			mul float64
		}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
			if strings.HasSuffix(r, u.suf) {
				r, mul = strings.TrimSuffix(r, u.suf), u.mul
				break
			}
		}
		v, err := strconv.ParseFloat(r, 64)
		if err != nil || v <= 0 || v*mul > 1e12 {
			return Model{}, fmt.Errorf("%w: rate %q (want e.g. 100MB/s, or 0 for unlimited)", ErrModel, rateS)
		}
		m.Rate = v * mul
	}
	if hasLat {
		d, err := time.ParseDuration(strings.TrimSpace(latS))
		if err != nil || d < 0 || d > time.Second {
			return Model{}, fmt.Errorf("%w: latency %q (want e.g. 0.2ms)", ErrModel, latS)
		}
		m.Latency = d
	}
	return m, nil
}
