package groundd

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/bootorbit/bootorbit/groundd/store"
)

// openStore opens the store cfg names: the embedded bbolt file in the state
// directory, or the etcd cluster several stations share.
func openStore(cfg Config) (store.Store, error) {
	if cfg.Store == "etcd" {
		return store.OpenEtcd(cfg.Etcd)
	}
	return store.OpenBolt(filepath.Join(cfg.StateDir, "state.db"))
}

// DefaultLease is a station's lease time when the config names none: a
// station that dies or is cut off from etcd stops holding its vehicles
// within it, and another takes over at its next contact.
const DefaultLease = 10 * time.Second

// etcdStore is what a store must offer for stations to elect on it: the
// etcd store's client and key prefix.
type etcdStore interface {
	Client() *clientv3.Client
	Prefix() string
}

// station is this groundd's part in a network of ground stations sharing an
// etcd store: per vehicle, a lease-based election (etcd's concurrency
// package) decides which station transmits. A station campaigns for a
// vehicle while its link to it is up (a pass), transmits only while it
// holds the vehicle, and resigns when its pass ends; the lease is one per
// station, kept alive while the station lives and reaches etcd, so a dead or
// cut-off station's holds end with it and another station's campaign wins.
//
// Every station receives: telemetry and verification reports heard at any
// station are archived (once: their keys are the frames' own), and the
// vehicle's knowledge is updated by compare-and-swap. Only the holder sends,
// advances the queue and persists the replay window.
type station struct {
	name string
	cli  *clientv3.Client
	pfx  string // election keys: PREFIX/station/vehicle/ID/LEASE
	ttl  time.Duration
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc

	// won, if set, is told of every vehicle the station wins (the
	// daemon wakes the vehicle's loop, which would otherwise wait up to
	// maxIdle to transmit).
	won func(vehicle uint32)

	mu    sync.Mutex
	lease *lease
	votes map[uint32]*vote
}

// lease is one station lease and what the station knows of it.
type lease struct {
	sess *concurrency.Session
	// stop ends the lease's keepalives (the session's and the station's).
	stop context.CancelFunc
	// ok is when etcd last confirmed the lease (granted or kept alive).
	ok   time.Time
	dead bool
}

// vote is the station's campaign for, or hold of, one vehicle.
type vote struct {
	cancel context.CancelFunc
	lease  *lease
	el     *concurrency.Election
	held   bool
	fresh  bool // held, and Poll has not been told yet
}

// leaseMargin: a station stops trusting its lease this much (a fraction of
// the lease time) before etcd would expire it, so that a station cut off
// from etcd has stopped before another can win the vehicle. The client
// renews every third of the lease time, so a live lease never comes close.
const leaseMargin = 4

func newStation(es etcdStore, name string, ttl time.Duration, log *slog.Logger) (*station, error) {
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("groundd: station name: %w", err)
		}
		name = h
	}
	if ttl == 0 {
		ttl = DefaultLease
	}
	if ttl < 2*time.Second {
		return nil, fmt.Errorf("groundd: lease %v: at least 2s (etcd's minimum lease time)", ttl)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &station{name: name, cli: es.Client(), pfx: es.Prefix() + "station/", ttl: ttl, log: log,
		ctx: ctx, cancel: cancel, votes: map[uint32]*vote{}}, nil
}

func (st *station) electionKey(vehicle uint32) string {
	return fmt.Sprintf("%svehicle/%010d/", st.pfx, vehicle)
}

// valid says whether etcd confirmed l recently enough to act on it.
// Called under st.mu.
func (st *station) valid(l *lease) bool {
	return !l.dead && time.Since(l.ok) < st.ttl-st.ttl/leaseMargin
}

// hold says whether this station may transmit to vehicle, whose link is up
// or not, and whether the hold is new (the station takes over: what it
// knew of the vehicle's session may be stale). It never blocks: campaigns
// run in the background and Poll asks again.
func (st *station) hold(vehicle uint32, up bool) (held, fresh bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	v := st.votes[vehicle]
	if !up {
		if v != nil {
			st.drop(vehicle, v, true)
		}
		return false, false
	}
	if v != nil && v.lease != nil && !st.valid(v.lease) {
		if v.held {
			st.log.Warn("groundd: station lease lost: not transmitting", "station", st.name, "vehicle", vehicle)
		}
		if st.lease == v.lease {
			st.lease = nil
		}
		st.abandon(v.lease)
		st.drop(vehicle, v, false)
		v = nil
	}
	if v == nil {
		ctx, cancel := context.WithCancel(st.ctx)
		v = &vote{cancel: cancel}
		st.votes[vehicle] = v
		go st.campaign(ctx, vehicle, v)
		return false, false
	}
	if !v.held {
		return false, false
	}
	fresh = v.fresh
	v.fresh = false
	return true, fresh
}

// holds says whether the station still holds vehicle on a valid lease.
func (st *station) holds(vehicle uint32) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	v := st.votes[vehicle]
	return v != nil && v.held && v.lease != nil && st.valid(v.lease)
}

// abandon lets a lease the station no longer trusts go in etcd too: its
// keepalives stop and it is revoked if etcd can be reached. Otherwise the
// client would renew it again once its connection came back (a member
// died under it, a partition healed), and the holds made on it would live
// on with the station not transmitting on them: no other station could
// win those vehicles. Called under st.mu.
func (st *station) abandon(l *lease) {
	l.dead = true
	l.stop()
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(st.ctx), st.ttl)
		defer cancel()
		st.cli.Revoke(ctx, l.sess.Lease())
	}()
}

// drop ends a vote; resign says to give the vehicle up in etcd at once
// (the pass ended) rather than let the lease carry it. Called under st.mu.
func (st *station) drop(vehicle uint32, v *vote, resign bool) {
	delete(st.votes, vehicle)
	v.cancel()
	if v.held && resign && v.el != nil {
		el := v.el
		go func() {
			ctx, cancel := context.WithTimeout(st.ctx, st.ttl)
			defer cancel()
			if err := el.Resign(ctx); err != nil {
				st.log.Debug("groundd: resign", "station", st.name, "vehicle", vehicle, "err", err)
			}
		}()
	}
}

// campaign runs v's election until it wins or ctx ends.
func (st *station) campaign(ctx context.Context, vehicle uint32, v *vote) {
	l, err := st.getLease(ctx)
	if err != nil {
		st.log.Warn("groundd: station lease", "station", st.name, "err", err)
		// Poll starts a new campaign on its next step; not sooner than a
		// second, so a cluster that does not answer is not hammered.
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		st.mu.Lock()
		if st.votes[vehicle] == v {
			delete(st.votes, vehicle)
		}
		st.mu.Unlock()
		return
	}
	st.mu.Lock()
	v.lease = l
	st.mu.Unlock()
	el := concurrency.NewElection(l.sess, st.electionKey(vehicle))
	if err := el.Campaign(ctx, st.name); err != nil {
		if ctx.Err() == nil {
			st.log.Warn("groundd: campaign", "station", st.name, "vehicle", vehicle, "err", err)
		}
		st.mu.Lock()
		if st.votes[vehicle] == v {
			delete(st.votes, vehicle)
		}
		st.mu.Unlock()
		return
	}
	st.mu.Lock()
	if st.votes[vehicle] != v {
		st.mu.Unlock()
		// Dropped while campaigning: give the vehicle back.
		go el.Resign(context.WithoutCancel(ctx))
		return
	}
	v.el, v.held, v.fresh = el, true, true
	st.mu.Unlock()
	st.log.Info("groundd: station holds the vehicle", "station", st.name, "vehicle", vehicle, "lease", fmt.Sprintf("%x", l.sess.Lease()))
	if st.won != nil {
		st.won(vehicle)
	}
}

// getLease returns the station's live lease, or grants a new one.
func (st *station) getLease(ctx context.Context) (*lease, error) {
	st.mu.Lock()
	if l := st.lease; l != nil && st.valid(l) {
		st.mu.Unlock()
		return l, nil
	}
	st.mu.Unlock()
	gctx, cancel := context.WithTimeout(ctx, st.ttl)
	defer cancel()
	g, err := st.cli.Grant(gctx, int64(st.ttl/time.Second))
	if err != nil {
		return nil, err
	}
	granted := time.Now()
	lctx, stop := context.WithCancel(st.ctx)
	sess, err := concurrency.NewSession(st.cli, concurrency.WithLease(g.ID), concurrency.WithContext(lctx))
	if err != nil {
		stop()
		return nil, err
	}
	ka, err := st.cli.KeepAlive(lctx, g.ID)
	if err != nil {
		stop()
		sess.Close()
		return nil, err
	}
	l := &lease{sess: sess, stop: stop, ok: granted}
	go func() {
		for range ka {
			st.mu.Lock()
			l.ok = time.Now()
			st.mu.Unlock()
		}
		st.mu.Lock()
		l.dead = true
		st.mu.Unlock()
	}()
	st.mu.Lock()
	defer st.mu.Unlock()
	if old := st.lease; old != nil && st.valid(old) {
		// Another campaign granted one meanwhile: one lease per station.
		go func() { sess.Close(); stop() }()
		return old, nil
	}
	st.lease = l
	return l, nil
}

// close gives up every vehicle and revokes the lease, so that the other
// stations need not wait for it to expire.
func (st *station) close() {
	st.mu.Lock()
	for id, v := range st.votes {
		st.drop(id, v, false)
	}
	l := st.lease
	st.lease = nil
	st.mu.Unlock()
	if l != nil {
		done := make(chan struct{})
		go func() { l.sess.Close(); close(done) }() // revokes: bounded by the client's timeouts
		select {
		case <-done:
		case <-time.After(st.ttl):
		}
	}
	st.cancel()
}

// StationHold is one vehicle as the stations see it.
type StationHold struct {
	Vehicle uint32 `json:"vehicle"`
	// Holder is the station that transmits to the vehicle now ("" when
	// none does); Lease is its lease (hex) and TTL what is left of it.
	Holder string   `json:"holder,omitempty"`
	Lease  string   `json:"lease,omitempty"`
	TTL    Duration `json:"ttl,omitempty"`
	// Waiting are the stations campaigning for the vehicle, in order.
	Waiting []string `json:"waiting,omitempty"`
	// Contacts are the last contact of each station with the vehicle.
	Contacts []StationContact `json:"contacts,omitempty"`
}

// StationContact is a station's last contact with a vehicle.
type StationContact struct {
	Station     string    `json:"station"`
	LastContact time.Time `json:"last_contact"`
}

func keyStationContact(vehicle uint32, station string) string {
	return fmt.Sprintf("contact/%010d/%s", vehicle, station)
}

// Station is this station's name.
func (d *Daemon) Station() string {
	if d.station != nil {
		return d.station.name
	}
	return d.cfg.Station
}

// Stations says, per vehicle, which station holds it (transmits), on what
// lease for how long yet, which stations wait, and each station's last
// contact. On a store of one station (bolt) the station holds every
// vehicle it serves, with no lease.
func (d *Daemon) Stations(ctx context.Context) ([]StationHold, error) {
	var out []StationHold
	for _, vc := range d.cfg.Vehicles {
		h := StationHold{Vehicle: vc.ID}
		cs, err := listJSON[StationContact](ctx, d.st, fmt.Sprintf("contact/%010d/", vc.ID), d.log)
		if err != nil {
			return nil, err
		}
		h.Contacts = cs
		if d.station == nil {
			h.Holder = cmpOr(d.cfg.Station, "local")
			out = append(out, h)
			continue
		}
		st := d.station
		r, err := st.cli.Get(ctx, st.electionKey(vc.ID), clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
		if err != nil {
			return nil, fmt.Errorf("groundd: stations: %w", err)
		}
		for i, kv := range r.Kvs {
			if i > 0 {
				h.Waiting = append(h.Waiting, string(kv.Value))
				continue
			}
			h.Holder, h.Lease = string(kv.Value), fmt.Sprintf("%x", kv.Lease)
			if t, err := st.cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease)); err == nil && t.TTL > 0 {
				h.TTL = Duration(time.Duration(t.TTL) * time.Second)
			}
		}
		out = append(out, h)
	}
	return out, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// stationContact records this station's contact with s's vehicle, at most
// once a second.
func (d *Daemon) stationContact(ctx context.Context, s *session, now time.Time) error {
	if now.Sub(s.stationContactSaved) < time.Second && !s.stationContactSaved.IsZero() {
		return nil
	}
	s.stationContactSaved = now
	b, _ := json.Marshal(StationContact{Station: d.Station(), LastContact: now.UTC()})
	return store.Put(ctx, d.st, keyStationContact(s.cfg.ID, d.Station()), b)
}

// takeOver makes s's session fit to transmit after another station held
// the vehicle: the sender in memory is dropped (the transfer resumes from
// the store and the vehicle's next report, as after a restart) and the
// replay window is the one the last holder stored.
func (d *Daemon) takeOver(ctx context.Context, s *session) error {
	d.dropSender(s)
	// A plan whose push failed here before may have been planned again
	// and pushed by another station meanwhile: planned afresh if not.
	d.pushes.drop(s.cfg.ID)
	d.plans.drop(s.cfg.ID)
	s.linkKnown = false
	s.lastStatus = time.Time{}
	kv, err := d.st.Get(ctx, keyVerifier(s.cfg.ID))
	if err == nil && !slices.Equal(kv.Value, s.verState) {
		if err := s.verifier.UnmarshalBinary(kv.Value); err != nil {
			return fmt.Errorf("groundd: vehicle %d: replay window: %w", s.cfg.ID, err)
		}
		s.verState = kv.Value
	}
	d.log.Info("groundd: taking over the vehicle", "station", d.Station(), "vehicle", s.cfg.ID)
	return nil
}

// standby is Poll on a station that does not hold the vehicle: it hears
// what the vehicle sends (telemetry, events and reports are archived and
// folded into the vehicle's knowledge) and sends nothing.
// up is the station's link to the vehicle (up while another holds it).
func (d *Daemon) standby(ctx context.Context, s *session, now time.Time, in [][]byte, up bool) ([][]byte, time.Time, error) {
	// The sender in memory is not the vehicle's any more: its reports
	// must not move a stale copy that could be written over the holder's.
	d.dropSender(s)
	s.linkKnown = false
	// Ahead of a pass it may take over, the station fetches what it
	// lacks of the vehicle's active uplink from the bundle registry.
	d.prefetch(ctx, s, now, up)
	var contact bool
	for _, f := range in {
		if d.receive(ctx, s, now, f) {
			contact = true
		}
	}
	if contact {
		s.contact = now
		if err := d.stationContact(ctx, s, now); err != nil {
			return nil, time.Time{}, err
		}
	}
	if _, err := d.gw.Tick(now); err != nil {
		return nil, time.Time{}, err
	}
	return nil, now.Add(maxIdle), nil
}
