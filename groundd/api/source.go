package api

import (
	"context"

	"github.com/bootorbit/bootorbit/groundd/metrics"
)

// Counterer is an optional method of a Daemon: its per-vehicle traffic
// counters (frames and bytes each way, drops by reason, passes). A Daemon
// without it serves metrics without those series.
type Counterer interface {
	VehicleCounters(ctx context.Context) (map[uint32]metrics.Counters, error)
}

// daemonSource reads a metrics snapshot from a Daemon's listings.
type daemonSource struct{ d Daemon }

func (s daemonSource) Snapshot(ctx context.Context) (metrics.Snapshot, error) {
	snap := metrics.Snapshot{Queue: map[string]int{}, Commands: map[string]int{}}
	us, err := s.d.QueueList(ctx)
	if err != nil {
		return snap, err
	}
	for _, u := range us {
		snap.Queue[string(u.State)]++
	}
	ts, err := s.d.Transfers(ctx)
	if err != nil {
		return snap, err
	}
	snap.TransfersActive = len(ts)
	cs, err := s.d.Commands(ctx, 0)
	if err != nil {
		return snap, err
	}
	for _, c := range cs {
		snap.Commands[string(c.Stage)]++
	}
	vs, err := s.d.Vehicles(ctx)
	if err != nil {
		return snap, err
	}
	var counters map[uint32]metrics.Counters
	if c, ok := s.d.(Counterer); ok {
		if counters, err = c.VehicleCounters(ctx); err != nil {
			return snap, err
		}
	}
	for _, v := range vs {
		mv := metrics.Vehicle{ID: v.ID, Link: v.Link, LastContact: v.LastContact}
		for _, t := range v.Transfers {
			if !t.Done {
				mv.PassesRemaining, mv.HasPasses = t.Passes, true
				break
			}
		}
		if c, ok := counters[v.ID]; ok {
			mv.Counted, mv.Counters = true, c
		}
		snap.Vehicles = append(snap.Vehicles, mv)
	}
	return snap, nil
}
