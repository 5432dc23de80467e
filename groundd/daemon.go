package groundd

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/groundd/gateway"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/groundd/passes"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// Options are what a Daemon gets besides its Config: the parts tests and
// embedders replace.
type Options struct {
	// Store is the state; nil opens the Config's (bolt in StateDir).
	Store store.Store
	// Images resolves references; nil: a StoreSource over the Config's
	// image store and release keys.
	Images ImageSource
	// Schedule is the pass schedule; nil: the Config's file, if any.
	Schedule *passes.Schedule
	// Now is the clock (nil: time.Now). Poll takes the time as an argument;
	// Now stamps API records.
	Now func() time.Time
	// Log receives the daemon's structured log (nil: discard).
	Log *slog.Logger
	// MACKeys, SealKeys and GroundKey override the key files of the Config
	// (tests, and embedders with a key store of their own).
	MACKeys   map[uint32]protocol.MACKey
	SealKeys  map[uint32]protocol.SealKey
	GroundKey ed25519.PrivateKey
	// PlanInline plans uplinks inside Poll, as a caller that drives Poll
	// with a clock of its own (a simulation, a test) needs: its clock
	// does not move while the delta is computed, so the run stays
	// deterministic. By default planning runs in the background
	// (plannings) and the vehicle's session goes on meanwhile.
	PlanInline bool
}

// Daemon is groundd: the queue, the vehicles' knowledge, the planner and
// the per-vehicle sessions that send plans and bundles and receive
// telemetry. Its state lives in its Store, so a new Daemon on the same store
// (a restart) carries on where the last one was. Its methods are safe for
// concurrent use.
type Daemon struct {
	cfg       Config
	st        store.Store
	ownStore  bool
	images    ImageSource
	schedule  *passes.Schedule
	now       func() time.Time
	log       *slog.Logger
	groundKey ed25519.PrivateKey
	codec     *protocol.Codec
	bundleDir string

	mu       sync.Mutex
	sessions map[uint32]*session
	signals  map[uint32]bool // link up/down signals from the station
	subs     map[int]*subscriber
	nextSub  int
	wake     map[uint32]chan struct{}
	gw       *gateway.Gateway
	// station, on a store several stations share (etcd), elects the
	// one station that transmits to each vehicle (station.go).
	station *station
	// fetch are the bundle artifacts being fetched from the bundle
	// registry (regbundle.go).
	fetch fetches
	// pushes are the plans being pushed to the bundle registry, in the
	// background, or whose push failed, to be tried again.
	pushes pushes
	// plans are the plannings under way in the background, one per
	// vehicle at most, or ended and not yet taken by the vehicle's loop.
	plans plannings
	// planHook, if set, is called by every planning before it computes
	// the bundle (tests: a slow planning).
	planHook func(ctx context.Context)
	// planInline: Options.PlanInline.
	planInline bool
}

// Open returns the daemon of cfg. Close it.
func Open(cfg Config, o Options) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, st: o.Store, images: o.Images, schedule: o.Schedule, now: o.Now, log: o.Log, planInline: o.PlanInline,
		sessions: map[uint32]*session{}, signals: map[uint32]bool{}, subs: map[int]*subscriber{}}
	if d.now == nil {
		d.now = time.Now
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	maxFrame := cmp.Or(cfg.MaxFrame, 1024)
	var err error
	if d.codec, err = protocol.NewCodec(maxFrame); err != nil {
		return nil, fmt.Errorf("groundd: %w", err)
	}
	d.groundKey = o.GroundKey
	if d.groundKey == nil {
		if d.groundKey, err = LoadGroundKey(cfg.GroundKey); err != nil {
			return nil, err
		}
	}
	if d.schedule == nil && cfg.Schedule != "" {
		if d.schedule, err = passes.Load(cfg.Schedule); err != nil {
			return nil, err
		}
	}
	d.bundleDir = filepath.Join(cfg.StateDir, "bundles")
	if err := os.MkdirAll(d.bundleDir, 0o700); err != nil {
		return nil, fmt.Errorf("groundd: %w", err)
	}
	if d.images == nil {
		if d.images, err = openImages(cfg, d.log); err != nil {
			return nil, err
		}
	}
	if d.st == nil {
		if d.st, err = openStore(cfg); err != nil {
			return nil, err
		}
		d.ownStore = true
	}
	if es, ok := d.st.(etcdStore); ok {
		if d.station, err = newStation(es, cfg.Station, time.Duration(cfg.Lease), d.log); err != nil {
			d.Close()
			return nil, err
		}
		d.station.won = d.poke
		if err := d.checkGroundKey(context.Background()); err != nil {
			d.Close()
			return nil, err
		}
	}
	// Commands and telemetry: the gateway, on the store. Frames it builds
	// must fit the link once sealed, if any vehicle's uplink is.
	gwFrame := maxFrame
	for _, vc := range cfg.Vehicles {
		if _, ok := o.SealKeys[vc.ID]; ok || vc.SealKey != nil {
			gwFrame = protocol.InnerMaxFrame(maxFrame)
		}
	}
	arch := storeArchive{st: d.st, log: d.log}
	if err := arch.indexOpen(context.Background()); err != nil {
		d.Close()
		return nil, fmt.Errorf("groundd: index open commands: %w", err)
	}
	if d.gw, err = gateway.New(gateway.Config{Key: protocol.KeyID(cfg.GroundKeyID), Priv: d.groundKey, Seq: arch, Archive: arch,
		MaxFrame: gwFrame, Station: cfg.Station, Log: d.log}); err != nil {
		d.Close()
		return nil, err
	}
	for _, vc := range cfg.Vehicles {
		s, err := d.newSession(context.Background(), vc, o)
		if err != nil {
			d.Close()
			return nil, err
		}
		d.sessions[vc.ID] = s
	}
	return d, nil
}

// Close releases the daemon (and its store, if Open opened it).
func (d *Daemon) Close() error {
	d.fetch.close()
	d.pushes.close()
	d.plans.close()
	if d.station != nil {
		d.station.close()
	}
	if d.ownStore {
		return d.st.Close()
	}
	return nil
}

// keyGroundKey holds the ground key of the stations sharing the store
// (groundKeyRec), recorded by the first one to open.
const keyGroundKey = "groundkey"

// groundKeyRec is the ground key every station sharing the store signs
// with.
type groundKeyRec struct {
	ID      uint32 `json:"ground_key_id"`
	Public  string `json:"public_key"` // ed25519, hex
	Station string `json:"station"`    // the station that recorded it
}

// checkGroundKey records this station's ground key in the shared store if
// none is, and refuses any other. The gateway tracks a command by vehicle
// and sequence number and a verification report names no key: stations
// signing with different keys would mix up each other's commands, and
// plans signed with a key a vehicle does not hold are refused at every
// pass. Changing the key is done with every station stopped: delete the
// record (etcdctl del PREFIX/kv/groundkey), start them with the new key.
func (d *Daemon) checkGroundKey(ctx context.Context) error {
	pub, _ := d.groundKey.Public().(ed25519.PublicKey)
	mine := groundKeyRec{ID: d.cfg.GroundKeyID, Public: hex.EncodeToString(pub), Station: d.cfg.Station}
	for range 3 {
		kv, err := d.st.Get(ctx, keyGroundKey)
		if errors.Is(err, store.ErrNotFound) {
			b, _ := json.Marshal(mine)
			ok, err := d.st.Txn(ctx, []store.Cmp{{Key: keyGroundKey}}, []store.Op{{Key: keyGroundKey, Value: b}})
			if err != nil {
				return fmt.Errorf("groundd: record the stations' ground key: %w", err)
			}
			if ok {
				d.log.Info("groundd: ground key recorded for the stations", "ground_key_id", mine.ID, "public_key", mine.Public)
				return nil
			}
			continue // another station recorded one first
		}
		if err != nil {
			return fmt.Errorf("groundd: the stations' ground key: %w", err)
		}
		var r groundKeyRec
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return fmt.Errorf("groundd: record %s: %w", keyGroundKey, err)
		}
		if r.ID != mine.ID || r.Public != mine.Public {
			return fmt.Errorf("groundd: this station's ground key (ground_key_id %d, public key %s) is not the stations' "+
				"(ground_key_id %d, public key %s, recorded by station %s): every station sharing the store must sign with the same "+
				"ground key; to change it, stop every station, delete the store key %s and start them with the new key",
				mine.ID, mine.Public, r.ID, r.Public, r.Station, keyGroundKey)
		}
		return nil
	}
	return fmt.Errorf("groundd: the stations' ground key: %w", store.ErrConflict)
}

// Store keys. Numbers are zero-padded so that keys sort as numbers.
func keyUplink(id uint64) string { return fmt.Sprintf("uplink/%016x", id) }

// keyOpen indexes the uplinks of a vehicle that have not ended, so that a
// step of its session does not read the whole history of the queue.
func keyOpen(v uint32, id uint64) string { return fmt.Sprintf("open/%010d/%016x", v, id) }

// uplinkOps are the writes that store u: the record and its index entry.
func uplinkOps(u *Uplink) []store.Op {
	b, _ := json.Marshal(u)
	return []store.Op{{Key: keyUplink(u.ID), Value: b}, {Key: keyOpen(u.Vehicle, u.ID), Delete: !u.open()}}
}

// open says whether the uplink's session still has work: not ended, or
// ended after planning with its plan not yet abandoned on the vehicle.
func (u *Uplink) open() bool {
	if !u.State.Final() {
		return true
	}
	return (u.State == UplinkCancelled || u.State == UplinkExpired) && len(u.Plans) > 0 && u.Abort == 0
}

// updateUplink is a compare-and-swap read-modify-write of an uplink and
// its index entry, in one transaction (fn's store.ErrSkip leaves it).
func (d *Daemon) updateUplink(ctx context.Context, id uint64, fn func(u *Uplink, found bool) error) error {
	for range 64 {
		var u Uplink
		kv, err := d.st.Get(ctx, keyUplink(id))
		found := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if found {
			if err := json.Unmarshal(kv.Value, &u); err != nil {
				return fmt.Errorf("groundd: record %s: %w", kv.Key, err)
			}
		}
		if err := fn(&u, found); err != nil {
			if errors.Is(err, store.ErrSkip) {
				return nil
			}
			return err
		}
		ok, err := d.st.Txn(ctx, []store.Cmp{{Key: keyUplink(id), Rev: kv.Rev}}, uplinkOps(&u))
		if err != nil || ok {
			return err
		}
	}
	return fmt.Errorf("%w: uplink %d", store.ErrConflict, id)
}
func keyVehicle(id uint32) string    { return fmt.Sprintf("vehicle/%010d", id) }
func keyVerifier(id uint32) string   { return fmt.Sprintf("verifier/%010d", id) }
func keyTransfer(id uint64) string   { return fmt.Sprintf("transfer/%016x", id) }
func keySealMark(v, k uint32) string { return fmt.Sprintf("sealmark/%010d/%010d", v, k) }

func getJSON[T any](ctx context.Context, s store.Store, key string) (T, int64, error) {
	var v T
	kv, err := s.Get(ctx, key)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return v, 0, fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		return v, 0, err
	}
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return v, 0, fmt.Errorf("groundd: record %s: %w", key, err)
	}
	return v, kv.Rev, nil
}

// listJSON decodes every record under prefix. A record that does not
// decode is left out, so that one bad record does not stop every listing
// of its kind (the queue, every poll of a vehicle's session) for good:
//   - a record that is not even a JSON object (a bad record in the store
//     file) is set aside (setAside), logged as an error on log;
//   - a JSON object that does not fit this release's type (a newer
//     release, in a rolling upgrade of stations sharing the store, changed
//     a field's type) is left in place, logged as a warning once per
//     revision: a reader (an API listing, a standby station's look) must
//     not delete for every station a record the newer ones read.
func listJSON[T any](ctx context.Context, s store.Store, prefix string, log *slog.Logger) ([]T, error) {
	kvs, err := s.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			var obj map[string]any
			if json.Unmarshal(kv.Value, &obj) == nil {
				if _, seen := undecoded.LoadOrStore(undecodedMark{kv.Key, kv.Rev}, true); !seen && log != nil {
					log.Warn("groundd: a record this release cannot read is left out (another release's?)", "key", kv.Key, "rev", kv.Rev, "err", err)
				}
				continue
			}
			if qerr := setAside(ctx, s, kv); qerr != nil {
				return nil, errors.Join(fmt.Errorf("groundd: record %s: %w", kv.Key, err), qerr)
			}
			if log != nil {
				log.Error("groundd: a record that does not decode was set aside", "key", kv.Key, "quarantine", quarantineKey(kv.Key), "err", err)
			}
			continue
		}
		out = append(out, v)
	}
	return out, nil
}

// undecoded are the records listJSON left out and logged, by key and
// revision (undecodedMark): each is logged once, not at every listing.
var undecoded sync.Map

type undecodedMark struct {
	key string
	rev int64
}

// quarantineKey is where the record at key is set aside.
func quarantineKey(key string) string { return "quarantine/" + key }

// setAside moves a record out of the way, to quarantineKey, in one
// transaction and only if nobody wrote it since it was read: kept for a
// person to look at, out of every listing.
func setAside(ctx context.Context, s store.Store, kv store.KV) error {
	_, err := s.Txn(ctx, []store.Cmp{{Key: kv.Key, Rev: kv.Rev}},
		[]store.Op{{Key: quarantineKey(kv.Key), Value: kv.Value}, {Key: kv.Key, Delete: true}})
	return err
}

// updateJSON is a compare-and-swap read-modify-write of one record.
func updateJSON[T any](ctx context.Context, s store.Store, key string, fn func(v *T, found bool) error) error {
	return store.Update(ctx, s, key, func(old []byte, found bool) ([]byte, error) {
		var v T
		if found {
			if err := json.Unmarshal(old, &v); err != nil {
				return nil, fmt.Errorf("groundd: record %s: %w", key, err)
			}
		}
		if err := fn(&v, found); err != nil {
			return nil, err
		}
		return json.Marshal(v)
	})
}

// ---- the queue ----

// QueueAdd queues an uplink.
func (d *Daemon) QueueAdd(ctx context.Context, r UplinkRequest) (Uplink, error) {
	r.Source = ""
	return d.queueAdd(ctx, r, false)
}

func (d *Daemon) queueAdd(ctx context.Context, r UplinkRequest, pending bool) (Uplink, error) {
	if _, ok := d.sessionOf(r.Vehicle); !ok {
		return Uplink{}, fmt.Errorf("%w: vehicle %d is not configured", ErrInvalid, r.Vehicle)
	}
	if r.Image == "" {
		return Uplink{}, fmt.Errorf("%w: no image", ErrInvalid)
	}
	if _, err := images.ParseRef(r.Image); err != nil {
		return Uplink{}, fmt.Errorf("%w: image: %v", ErrInvalid, err)
	}
	if !r.Deadline.IsZero() && !r.NotBefore.IsZero() && !r.Deadline.After(r.NotBefore) {
		return Uplink{}, fmt.Errorf("%w: deadline before not-before", ErrInvalid)
	}
	id, err := d.st.Next(ctx, "uplink")
	if err != nil {
		return Uplink{}, err
	}
	now := d.now().UTC()
	u := Uplink{ID: id, UplinkRequest: r, State: UplinkQueued, Order: int64(id) << 20, Created: now, Updated: now}
	if pending {
		u.State = UplinkPending
	}
	ok, err := d.st.Txn(ctx, []store.Cmp{{Key: keyUplink(id)}}, uplinkOps(&u))
	if err != nil {
		return Uplink{}, err
	}
	if !ok {
		return Uplink{}, fmt.Errorf("groundd: uplink id %d handed out twice", id)
	}
	d.log.Info("groundd: uplink queued", "uplink", id, "vehicle", r.Vehicle, "image", r.Image)
	d.poke(r.Vehicle)
	return u, nil
}

// QueueList returns every uplink, in queue order: waiting ones by priority
// and order, then the rest by id.
func (d *Daemon) QueueList(ctx context.Context) ([]Uplink, error) {
	us, err := listJSON[Uplink](ctx, d.st, "uplink/", d.log)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(us, queueOrder)
	return us, nil
}

func queueOrder(a, b Uplink) int {
	if c := cmp.Compare(stateRank(a.State), stateRank(b.State)); c != 0 {
		return c
	}
	if a.State.Final() {
		return cmp.Compare(a.ID, b.ID)
	}
	if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
		return c
	}
	return cmp.Compare(a.Order, b.Order)
}

// stateRank orders the queue: uplinks being sent, waiting ones, those
// waiting for an operator's approval, then ended ones.
func stateRank(s UplinkState) int {
	switch {
	case s == UplinkActive || s == UplinkSent:
		return 0
	case s == UplinkQueued:
		return 1
	case s == UplinkPending:
		return 2
	}
	return 3
}

// QueueShow returns one uplink.
func (d *Daemon) QueueShow(ctx context.Context, id uint64) (Uplink, error) {
	u, _, err := getJSON[Uplink](ctx, d.st, keyUplink(id))
	return u, err
}

// QueueCancel cancels an uplink that has not ended. An uplink being sent
// stops at once; the vehicle discards what it staged when told (the
// transfer's cancel).
func (d *Daemon) QueueCancel(ctx context.Context, id uint64) (Uplink, error) {
	var out Uplink
	err := d.updateUplink(ctx, id, func(u *Uplink, found bool) error {
		if !found {
			return fmt.Errorf("%w: uplink %d", ErrNotFound, id)
		}
		if u.State.Final() {
			return fmt.Errorf("%w: uplink %d is %s", ErrState, id, u.State)
		}
		u.State, u.Updated = UplinkCancelled, d.now().UTC()
		if u.Error == "" {
			u.Error = "cancelled by an operator"
		}
		out = *u
		return nil
	})
	if err == nil {
		d.log.Info("groundd: uplink cancelled", "uplink", id)
		d.poke(out.Vehicle)
	}
	return out, err
}

// QueueApprove approves an uplink waiting for an operator (a tag a vehicle
// follows moved, under the "approve" policy): it joins the queue.
func (d *Daemon) QueueApprove(ctx context.Context, id uint64) (Uplink, error) {
	var out Uplink
	err := d.updateUplink(ctx, id, func(u *Uplink, found bool) error {
		if !found {
			return fmt.Errorf("%w: uplink %d", ErrNotFound, id)
		}
		if u.State != UplinkPending {
			return fmt.Errorf("%w: uplink %d is %s, not pending", ErrState, id, u.State)
		}
		u.State, u.Updated = UplinkQueued, d.now().UTC()
		out = *u
		return nil
	})
	if err == nil {
		d.log.Info("groundd: uplink approved", "uplink", id)
		d.poke(out.Vehicle)
	}
	return out, err
}

// QueueReorder moves a waiting uplink to position pos (0: first) among the
// waiting uplinks of every vehicle, taking the priority of the uplink it
// lands next to, so that the queue's order is the one the operator asked.
func (d *Daemon) QueueReorder(ctx context.Context, id uint64, pos int) (Uplink, error) {
	us, err := d.QueueList(ctx)
	if err != nil {
		return Uplink{}, err
	}
	var waiting []Uplink
	var me *Uplink
	for i := range us {
		if us[i].State != UplinkQueued {
			continue
		}
		if us[i].ID == id {
			me = &us[i]
			continue
		}
		waiting = append(waiting, us[i])
	}
	if me == nil {
		if _, err := d.QueueShow(ctx, id); err != nil {
			return Uplink{}, err
		}
		return Uplink{}, fmt.Errorf("%w: uplink %d is not waiting", ErrState, id)
	}
	if pos < 0 {
		return Uplink{}, fmt.Errorf("%w: position %d", ErrInvalid, pos)
	}
	pos = min(pos, len(waiting))
	var prio int
	var order int64
	switch {
	case len(waiting) == 0:
		prio, order = me.Priority, me.Order
	case pos == 0:
		prio, order = waiting[0].Priority, waiting[0].Order-1
	case pos == len(waiting):
		prio, order = waiting[pos-1].Priority, waiting[pos-1].Order+1
	default:
		a, b := waiting[pos-1], waiting[pos]
		prio = b.Priority
		order = b.Order - 1
		if a.Priority == b.Priority {
			order = a.Order + (b.Order-a.Order)/2
			if order == a.Order { // no room: the later ones make way
				for _, w := range waiting[pos:] {
					if err := d.updateUplink(ctx, w.ID, func(u *Uplink, _ bool) error {
						u.Order += 1 << 20
						return nil
					}); err != nil {
						return Uplink{}, err
					}
				}
				order = a.Order + 1<<19
			}
		}
	}
	var out Uplink
	err = d.updateUplink(ctx, id, func(u *Uplink, found bool) error {
		if !found || u.State != UplinkQueued {
			return fmt.Errorf("%w: uplink %d is not waiting", ErrState, id)
		}
		u.Priority, u.Order, u.Updated = prio, order, d.now().UTC()
		out = *u
		return nil
	})
	return out, err
}

// ---- vehicles ----

// vehicleRec is the persisted knowledge of a vehicle.
type vehicleRec struct {
	Vehicle
	// HKSeq is, per housekeeping packet folded into the record (hk.slots,
	// hk.boot), the return-link sequence number (MAC epoch and counter)
	// of the newest one folded: an older one heard late is not folded.
	HKSeq map[string]uint64 `json:"hk_seq,omitempty"`
}

// Vehicles returns what groundd knows of every configured vehicle.
func (d *Daemon) Vehicles(ctx context.Context) ([]Vehicle, error) {
	var out []Vehicle
	for _, vc := range d.cfg.Vehicles {
		v, err := d.VehicleShow(ctx, vc.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// VehicleShow returns what groundd knows of one vehicle.
func (d *Daemon) VehicleShow(ctx context.Context, id uint32) (Vehicle, error) {
	s, ok := d.sessionOf(id)
	if !ok {
		return Vehicle{}, fmt.Errorf("%w: vehicle %d", ErrNotFound, id)
	}
	rec, _, err := getJSON[vehicleRec](ctx, d.st, keyVehicle(id))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Vehicle{}, err
	}
	v := rec.Vehicle
	v.ID, v.Name, v.Keys = id, s.cfg.Name, s.keys
	d.mu.Lock()
	v.Link = s.linkUp
	d.mu.Unlock()
	if s.cfg.Follow != nil {
		f, _, err := getJSON[Following](ctx, d.st, keyFollow(id))
		if err != nil && !errors.Is(err, ErrNotFound) {
			return Vehicle{}, err
		}
		f.Ref, f.Policy = s.cfg.Follow.Ref, s.cfg.Follow.Policy
		v.Following = &f
	}
	if v.Transfers, err = d.transfersOf(ctx, id); err != nil {
		return Vehicle{}, err
	}
	us, err := d.vehicleUplinks(ctx, id)
	if err != nil {
		return Vehicle{}, err
	}
	for _, u := range us {
		if u.State == UplinkActive || u.State == UplinkSent {
			v.Active = u.ID
			break
		}
	}
	return v, nil
}

// ---- transfers ----

// Transfers returns the progress of every transfer in flight.
func (d *Daemon) Transfers(ctx context.Context) ([]Transfer, error) {
	var out []Transfer
	for _, vc := range d.cfg.Vehicles {
		ts, err := d.transfersOf(ctx, vc.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, ts...)
	}
	return out, nil
}

// UplinkTransfers returns the transfers of one uplink, done or not.
func (d *Daemon) UplinkTransfers(ctx context.Context, uplink uint64) ([]Transfer, error) {
	recs, err := listJSON[transferRec](ctx, d.st, "transfer/", d.log)
	if err != nil {
		return nil, err
	}
	var out []Transfer
	for _, r := range recs {
		if r.Uplink == uplink {
			out = append(out, d.progress(r, recs))
		}
	}
	return out, nil
}

func (d *Daemon) transfersOf(ctx context.Context, vehicle uint32) ([]Transfer, error) {
	recs, err := listJSON[transferRec](ctx, d.st, "transfer/", d.log)
	if err != nil {
		return nil, err
	}
	var out []Transfer
	for _, r := range recs {
		if r.Vehicle == vehicle && !r.Done && !r.Abandoned {
			out = append(out, d.progress(r, recs))
		}
	}
	return out, nil
}

// progress turns a transfer record into its report, with the estimate of
// passes: the bytes left of it and of the uplink's transfers after it.
func (d *Daemon) progress(r transferRec, all []transferRec) Transfer {
	t := Transfer{Uplink: r.Uplink, Vehicle: r.Vehicle, Plan: r.Plan, ID: r.ID, Kind: r.Kind, Size: r.Size,
		Done: r.Done, Chunks: r.Held, Total: r.Total, Sent: r.Sent, Resent: r.Resent, Presumed: r.Presumed}
	if r.Total > 0 {
		t.Bytes = r.Size * uint64(r.Held) / uint64(r.Total)
	}
	if r.Done {
		t.Bytes = r.Size
	}
	for _, o := range all {
		if o.Uplink == r.Uplink && !o.Done && !o.Abandoned && o.ID >= r.ID {
			left := o.Size
			if o.Total > 0 {
				left -= o.Size * uint64(o.Held) / uint64(o.Total)
			}
			t.Remaining += left
		}
	}
	t.Passes = d.estimate(r.Vehicle, t.Remaining)
	return t
}

// linkEfficiency discounts a pass's rate for framing, hash blocks and
// resends in the estimate of passes: the chunk frames of a 1024-byte link
// carry about 90% payload, and a lossy pass resends some.
const linkEfficiency = 0.8

func (d *Daemon) estimate(vehicle uint32, bytes uint64) int {
	s, ok := d.sessionOf(vehicle)
	if !ok {
		return -1
	}
	if d.schedule == nil {
		if bytes == 0 {
			return 0
		}
		return 1 // no schedule: one contact, as long as it takes
	}
	n, ok := d.schedule.Estimate(vehicle, d.now(), bytes, s.rate(), linkEfficiency)
	if !ok {
		return -1
	}
	return n
}

// ---- link signals ----

// SetLink records a station's signal that the link to vehicle is up or
// down; it overrides the schedule until ClearLink.
func (d *Daemon) SetLink(vehicle uint32, up bool) {
	d.mu.Lock()
	d.signals[vehicle] = up
	d.mu.Unlock()
	d.poke(vehicle)
}

// ClearLink returns vehicle's link state to the schedule's.
func (d *Daemon) ClearLink(vehicle uint32) {
	d.mu.Lock()
	delete(d.signals, vehicle)
	d.mu.Unlock()
	d.poke(vehicle)
}

func (d *Daemon) sessionOf(id uint32) (*session, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[id]
	return s, ok
}

// reasonLabel names a verification code.
func reasonLabel(c protocol.Code) string {
	if l, ok := dict.EnumReason.Lookup(uint64(c)); ok {
		return l.Name
	}
	return fmt.Sprintf("code %d", c)
}
