// Package metrics exports groundd's state to Prometheus, with the usual
// client library (prometheus/client_golang): queue depth, transfers in
// flight, traffic and drops per vehicle, commands by stage, the age of the
// last contact and the passes an uplink still needs.
//
// The values are read from a Source at every scrape, not kept in a second
// set of counters that could drift from the daemon's state: the collector
// is a view of the Snapshot, as node_exporter's collectors are of /proc.
package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Snapshot is the state the metrics show, read at one instant.
type Snapshot struct {
	// Queue counts the uplinks by state (queued, active, sent, ...; the
	// final states too, so that a dashboard sees failures).
	Queue map[string]int
	// TransfersActive is the number of transfers in flight.
	TransfersActive int
	// Commands counts the commands by stage (queued, sent, accepted, ...).
	Commands map[string]int
	Vehicles []Vehicle
}

// Vehicle is one vehicle's part of a Snapshot.
type Vehicle struct {
	ID          uint32
	Link        bool
	LastContact time.Time // zero: never heard
	// PassesRemaining is the estimate for the uplink in flight (-1: no
	// pass scheduled can carry it); HasPasses says whether one is in
	// flight.
	PassesRemaining int
	HasPasses       bool
	// Counters, when the daemon keeps them (Counted).
	Counted bool
	Counters
}

// Counters are a vehicle's monotonic traffic counters, since the daemon
// started.
type Counters struct {
	FramesSent, BytesSent         uint64
	FramesReceived, BytesReceived uint64
	// Drops counts the received frames dropped, by reason ("mac",
	// "replay", "decode", "wrong_vehicle", ...).
	Drops map[string]uint64
	// Passes counts the passes begun (link up transitions).
	Passes uint64
	// BundleFetches counts the fetches of the vehicle's bundle artifacts
	// from the bundle registry (a station that lacks a plan's blobs), by
	// result ("ok", "failed"; docs/stations.md).
	BundleFetches map[string]uint64
}

// Source gives the state at scrape time.
type Source interface {
	Snapshot(ctx context.Context) (Snapshot, error)
}

// ScrapeTimeout bounds the Source's answer at a scrape.
const ScrapeTimeout = 10 * time.Second

var (
	descQueue      = prometheus.NewDesc("groundd_queue_uplinks", "Uplinks in the queue, by state.", []string{"state"}, nil)
	descTransfers  = prometheus.NewDesc("groundd_transfers_active", "Transfers in flight.", nil, nil)
	descCommands   = prometheus.NewDesc("groundd_commands", "Commands, by their current stage.", []string{"stage"}, nil)
	descLink       = prometheus.NewDesc("groundd_vehicle_link_up", "1 while the link to the vehicle is up.", []string{"vehicle"}, nil)
	descContact    = prometheus.NewDesc("groundd_vehicle_last_contact_age_seconds", "Seconds since the vehicle was last heard (absent: never).", []string{"vehicle"}, nil)
	descPassesLeft = prometheus.NewDesc("groundd_vehicle_passes_remaining", "Estimate of the passes the uplink in flight still needs (-1: none scheduled can carry it).", []string{"vehicle"}, nil)
	descFramesOut  = prometheus.NewDesc("groundd_vehicle_frames_sent_total", "Frames sent to the vehicle.", []string{"vehicle"}, nil)
	descBytesOut   = prometheus.NewDesc("groundd_vehicle_bytes_sent_total", "Bytes sent to the vehicle.", []string{"vehicle"}, nil)
	descFramesIn   = prometheus.NewDesc("groundd_vehicle_frames_received_total", "Frames received from the vehicle.", []string{"vehicle"}, nil)
	descBytesIn    = prometheus.NewDesc("groundd_vehicle_bytes_received_total", "Bytes received from the vehicle.", []string{"vehicle"}, nil)
	descDrops      = prometheus.NewDesc("groundd_vehicle_frames_dropped_total", "Received frames dropped, by reason.", []string{"vehicle", "reason"}, nil)
	descPasses     = prometheus.NewDesc("groundd_vehicle_passes_total", "Passes begun (link up transitions).", []string{"vehicle"}, nil)
	descFetches    = prometheus.NewDesc("groundd_vehicle_bundle_fetches_total", "Bundle artifacts fetched from the bundle registry, by result (ok, failed).", []string{"vehicle", "result"}, nil)
)

// collector is the Snapshot as Prometheus metrics.
type collector struct {
	src Source
	now func() time.Time
}

// NewCollector returns the collector of src's metrics; now is the clock of
// the contact ages (nil: time.Now).
func NewCollector(src Source, now func() time.Time) prometheus.Collector {
	if now == nil {
		now = time.Now
	}
	return &collector{src, now}
}

// NewRegistry returns a registry with the collector of src and the Go
// runtime's and the process's collectors.
func NewRegistry(src Source, now func() time.Time) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src, now),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueue, descTransfers, descCommands, descLink, descContact, descPassesLeft,
		descFramesOut, descBytesOut, descFramesIn, descBytesIn, descDrops, descPasses, descFetches} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
	defer cancel()
	s, err := c.src.Snapshot(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descQueue, err)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for state, n := range s.Queue {
		gauge(descQueue, float64(n), state)
	}
	gauge(descTransfers, float64(s.TransfersActive))
	for stage, n := range s.Commands {
		gauge(descCommands, float64(n), stage)
	}
	now := c.now()
	for _, v := range s.Vehicles {
		id := strconv.FormatUint(uint64(v.ID), 10)
		up := 0.0
		if v.Link {
			up = 1
		}
		gauge(descLink, up, id)
		if !v.LastContact.IsZero() {
			gauge(descContact, max(0, now.Sub(v.LastContact).Seconds()), id)
		}
		if v.HasPasses {
			gauge(descPassesLeft, float64(v.PassesRemaining), id)
		}
		if !v.Counted {
			continue
		}
		counter(descFramesOut, v.FramesSent, id)
		counter(descBytesOut, v.BytesSent, id)
		counter(descFramesIn, v.FramesReceived, id)
		counter(descBytesIn, v.BytesReceived, id)
		counter(descPasses, v.Passes, id)
		for reason, n := range v.Drops {
			counter(descDrops, n, id, reason)
		}
		for result, n := range v.BundleFetches {
			counter(descFetches, n, id, result)
		}
	}
}
