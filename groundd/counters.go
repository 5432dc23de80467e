package groundd

import (
	"context"
	"maps"

	"github.com/bootorbit/bootorbit/groundd/metrics"
)

// Drop reasons of the traffic counters: why a received frame was not
// believed or not used.
const (
	dropDecode     = "decode"      // not a frame of the protocol
	dropMAC        = "mac"         // return-link MAC missing or wrong
	dropReplay     = "replay"      // a sequence number the replay window has seen (checked before the MAC)
	dropNoTransfer = "no_transfer" // a transfer answer with no transfer in flight
	dropTransfer   = "transfer"    // refused by the transfer in flight (another id, malformed)
)

// countFrames adds a Poll's frames to the session's traffic counters;
// the API reads them under Daemon.mu.
func (d *Daemon) countFrames(s *session, out, in [][]byte) {
	if len(out) == 0 && len(in) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range out {
		s.counters.FramesSent++
		s.counters.BytesSent += uint64(len(f))
	}
	for _, f := range in {
		s.counters.FramesReceived++
		s.counters.BytesReceived += uint64(len(f))
	}
}

func (d *Daemon) countDrop(s *session, reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s.counters.Drops == nil {
		s.counters.Drops = map[string]uint64{}
	}
	s.counters.Drops[reason]++
}

// Results of a bundle fetch (metrics.Counters.BundleFetches).
const (
	fetchOK     = "ok"
	fetchFailed = "failed"
)

// countFetch counts a fetch of one of vehicle's bundle artifacts that
// ended with result (a fetch cancelled by Close is not counted).
func (d *Daemon) countFetch(vehicle uint32, result string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.sessions[vehicle]
	if s == nil {
		return
	}
	if s.counters.BundleFetches == nil {
		s.counters.BundleFetches = map[string]uint64{}
	}
	s.counters.BundleFetches[result]++
}

// VehicleCounters returns every vehicle's traffic counters since the
// daemon opened: frames and bytes each way, received frames dropped by
// reason, passes begun, bundle fetches by result. groundd/api serves them as metrics (api.Counterer).
// They count what Poll saw: a frame the radio lost never reached it.
func (d *Daemon) VehicleCounters(ctx context.Context) (map[uint32]metrics.Counters, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[uint32]metrics.Counters, len(d.sessions))
	for id, s := range d.sessions {
		c := s.counters
		c.Drops = maps.Clone(c.Drops)
		c.BundleFetches = maps.Clone(c.BundleFetches)
		out[id] = c
	}
	return out, nil
}
