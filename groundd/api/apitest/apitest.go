// Package apitest has a fake groundd Daemon for tests of the API server
// and of its clients (the groundd CLI): in memory, with the real Daemon's
// errors and rules where a client can see them, and hooks to set what the
// vehicles report.
package apitest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/metrics"
)

// Fake is an in-memory Daemon. Its zero value is not usable: call New.
type Fake struct {
	mu        sync.Mutex
	now       func() time.Time
	uplinks   map[uint64]*groundd.Uplink
	nextID    uint64
	vehicles  map[uint32]groundd.Vehicle
	transfers []groundd.Transfer
	commands  map[uint64]groundd.Command
	nextCmd   uint64
	tlm       []groundd.TelemetryRecord
	subs      map[chan groundd.TelemetryRecord]uint32
	counters  map[uint32]metrics.Counters
	// Err, if set, is returned by every method (a failing daemon).
	Err error
	// Subscribed receives a value each time a telemetry follower
	// subscribes, so a test knows when to publish.
	Subscribed chan struct{}
}

// New returns a Fake with the given vehicles and clock (nil: a fixed
// time).
func New(now func() time.Time, vehicles ...groundd.Vehicle) *Fake {
	if now == nil {
		t := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
		now = func() time.Time { return t }
	}
	f := &Fake{now: now, uplinks: map[uint64]*groundd.Uplink{}, vehicles: map[uint32]groundd.Vehicle{},
		commands: map[uint64]groundd.Command{}, subs: map[chan groundd.TelemetryRecord]uint32{},
		Subscribed: make(chan struct{}, 16)}
	for _, v := range vehicles {
		f.vehicles[v.ID] = v
	}
	return f
}

// SetTransfers sets the transfers in flight.
func (f *Fake) SetTransfers(ts ...groundd.Transfer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.transfers = slices.Clone(ts)
}

// SetCounters sets a vehicle's traffic counters (VehicleCounters).
func (f *Fake) SetCounters(vehicle uint32, c metrics.Counters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.counters == nil {
		f.counters = map[uint32]metrics.Counters{}
	}
	f.counters[vehicle] = c
}

// SetStage moves a command to a stage, with a reason code.
func (f *Fake) SetStage(id uint64, st groundd.CommandStage, code uint16, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.commands[id]
	c.Stage, c.Code, c.Reason, c.Updated = st, code, reason, f.now()
	f.commands[id] = c
}

// SetUplink replaces an uplink (to move it along its states).
func (f *Fake) SetUplink(u groundd.Uplink) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.uplinks[u.ID] = &u
}

// Publish archives a record and sends it to the followers of its vehicle.
func (f *Fake) Publish(r groundd.TelemetryRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tlm = append(f.tlm, r)
	for ch, v := range f.subs {
		if v == 0 || v == r.Vehicle {
			select {
			case ch <- r:
			default:
			}
		}
	}
}

// uplink returns uplink id, for a method that holds f.mu: the injected
// error if there is one, else ErrNotFound for an unknown id.
func (f *Fake) uplink(id uint64) (*groundd.Uplink, error) {
	if f.Err != nil {
		return nil, f.Err
	}
	u, ok := f.uplinks[id]
	if !ok {
		return nil, fmt.Errorf("%w: uplink %d", groundd.ErrNotFound, id)
	}
	return u, nil
}

// transfersWhere returns the transfers that keep selects, or the injected
// error.
func (f *Fake) transfersWhere(keep func(groundd.Transfer) bool) ([]groundd.Transfer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return nil, f.Err
	}
	var out []groundd.Transfer
	for _, t := range f.transfers {
		if keep(t) {
			out = append(out, t)
		}
	}
	return out, nil
}

func (f *Fake) vehicle(id uint32) error {
	if _, ok := f.vehicles[id]; !ok {
		return fmt.Errorf("%w: vehicle %d", groundd.ErrNotFound, id)
	}
	return nil
}

// QueueAdd queues an uplink, as the Daemon: a known vehicle, an image, a
// deadline after not-before.
func (f *Fake) QueueAdd(_ context.Context, r groundd.UplinkRequest) (groundd.Uplink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return groundd.Uplink{}, f.Err
	}
	if _, ok := f.vehicles[r.Vehicle]; !ok {
		return groundd.Uplink{}, fmt.Errorf("%w: vehicle %d is not configured", groundd.ErrInvalid, r.Vehicle)
	}
	if r.Image == "" {
		return groundd.Uplink{}, fmt.Errorf("%w: no image", groundd.ErrInvalid)
	}
	if !r.Deadline.IsZero() && !r.NotBefore.IsZero() && !r.Deadline.After(r.NotBefore) {
		return groundd.Uplink{}, fmt.Errorf("%w: deadline before not-before", groundd.ErrInvalid)
	}
	f.nextID++
	now := f.now()
	u := &groundd.Uplink{ID: f.nextID, UplinkRequest: r, State: groundd.UplinkQueued, Order: int64(f.nextID), Created: now, Updated: now}
	f.uplinks[u.ID] = u
	return *u, nil
}

// QueueList lists the uplinks: waiting ones by priority then order, then
// the rest by id.
func (f *Fake) QueueList(context.Context) ([]groundd.Uplink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return nil, f.Err
	}
	var out []groundd.Uplink
	for _, u := range f.uplinks {
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b groundd.Uplink) int {
		if a.State.Final() != b.State.Final() {
			if a.State.Final() {
				return 1
			}
			return -1
		}
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 && !a.State.Final() {
			return c
		}
		return cmp.Or(cmp.Compare(a.Order, b.Order), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// QueueShow returns an uplink.
func (f *Fake) QueueShow(_ context.Context, id uint64) (groundd.Uplink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, err := f.uplink(id)
	if err != nil {
		return groundd.Uplink{}, err
	}
	return *u, nil
}

// QueueCancel cancels an uplink that has not ended.
func (f *Fake) QueueCancel(_ context.Context, id uint64) (groundd.Uplink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, err := f.uplink(id)
	if err != nil {
		return groundd.Uplink{}, err
	}
	if u.State.Final() {
		return groundd.Uplink{}, fmt.Errorf("%w: uplink %d is %s", groundd.ErrState, id, u.State)
	}
	u.State, u.Updated = groundd.UplinkCancelled, f.now()
	return *u, nil
}

// QueueReorder moves a waiting uplink to position pos among the waiting.
func (f *Fake) QueueReorder(ctx context.Context, id uint64, pos int) (groundd.Uplink, error) {
	us, err := f.QueueList(ctx)
	if err != nil {
		return groundd.Uplink{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	u, err := f.uplink(id)
	if err != nil {
		return groundd.Uplink{}, err
	}
	if u.State != groundd.UplinkQueued {
		return groundd.Uplink{}, fmt.Errorf("%w: uplink %d is not waiting", groundd.ErrState, id)
	}
	var waiting []uint64
	for _, w := range us {
		if w.State == groundd.UplinkQueued && w.ID != id {
			waiting = append(waiting, w.ID)
		}
	}
	waiting = slices.Insert(waiting, min(pos, len(waiting)), id)
	for i, w := range waiting {
		f.uplinks[w].Order, f.uplinks[w].Priority = int64(i+1), 0
	}
	u.Updated = f.now()
	return *u, nil
}

// QueueApprove queues a pending uplink.
func (f *Fake) QueueApprove(_ context.Context, id uint64) (groundd.Uplink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, err := f.uplink(id)
	if err != nil {
		return groundd.Uplink{}, err
	}
	if u.State != groundd.UplinkPending {
		return groundd.Uplink{}, fmt.Errorf("%w: uplink %d is %s, not pending", groundd.ErrState, id, u.State)
	}
	u.State, u.Updated = groundd.UplinkQueued, f.now()
	return *u, nil
}

// Vehicles lists the vehicles by id.
func (f *Fake) Vehicles(ctx context.Context) ([]groundd.Vehicle, error) {
	f.mu.Lock()
	if f.Err != nil {
		f.mu.Unlock()
		return nil, f.Err
	}
	var ids []uint32
	for id := range f.vehicles {
		ids = append(ids, id)
	}
	f.mu.Unlock()
	slices.Sort(ids)
	var out []groundd.Vehicle
	for _, id := range ids {
		v, err := f.VehicleShow(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// VehicleShow returns a vehicle with its transfers in flight.
func (f *Fake) VehicleShow(_ context.Context, id uint32) (groundd.Vehicle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return groundd.Vehicle{}, f.Err
	}
	if err := f.vehicle(id); err != nil {
		return groundd.Vehicle{}, err
	}
	v := f.vehicles[id]
	v.Transfers = nil
	for _, t := range f.transfers {
		if t.Vehicle == id && !t.Done {
			v.Transfers = append(v.Transfers, t)
			v.Active = t.Uplink
		}
	}
	return v, nil
}

// Transfers lists the transfers not done.
func (f *Fake) Transfers(context.Context) ([]groundd.Transfer, error) {
	return f.transfersWhere(func(t groundd.Transfer) bool { return !t.Done })
}

// UplinkTransfers lists an uplink's transfers, done or not.
func (f *Fake) UplinkTransfers(_ context.Context, uplink uint64) ([]groundd.Transfer, error) {
	return f.transfersWhere(func(t groundd.Transfer) bool { return t.Uplink == uplink })
}

// SendCommand records a command as queued. It does not check the
// arguments: the API server must have.
func (f *Fake) SendCommand(_ context.Context, vehicle uint32, opcode string, args map[string]any) (groundd.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return groundd.Command{}, f.Err
	}
	if err := f.vehicle(vehicle); err != nil {
		return groundd.Command{}, err
	}
	f.nextCmd++
	now := f.now()
	c := groundd.Command{ID: f.nextCmd, Vehicle: vehicle, Opcode: opcode, Args: args, Seq: 100 + f.nextCmd, Stage: groundd.CmdQueued, Created: now, Updated: now}
	f.commands[c.ID] = c
	return c, nil
}

// CommandShow returns a command.
func (f *Fake) CommandShow(_ context.Context, id uint64) (groundd.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return groundd.Command{}, f.Err
	}
	c, ok := f.commands[id]
	if !ok {
		return groundd.Command{}, fmt.Errorf("%w: command %d", groundd.ErrNotFound, id)
	}
	return c, nil
}

// CommandCancel cancels a queued command of vehicle.
func (f *Fake) CommandCancel(_ context.Context, vehicle uint32, id uint64) (groundd.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return groundd.Command{}, f.Err
	}
	c, ok := f.commands[id]
	if !ok || c.Vehicle != vehicle {
		return groundd.Command{}, fmt.Errorf("%w: command %d of vehicle %d", groundd.ErrNotFound, id, vehicle)
	}
	if c.Stage != groundd.CmdQueued {
		return groundd.Command{}, fmt.Errorf("%w: command %d is %s", groundd.ErrState, id, c.Stage)
	}
	c.Stage, c.Updated = groundd.CmdCancelled, f.now()
	f.commands[id] = c
	return c, nil
}

// Commands lists the commands to vehicle (0: all), oldest first.
func (f *Fake) Commands(_ context.Context, vehicle uint32) ([]groundd.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return nil, f.Err
	}
	var out []groundd.Command
	for _, c := range f.commands {
		if vehicle == 0 || c.Vehicle == vehicle {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b groundd.Command) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// TelemetryRange returns the archived records of vehicle in [from, to).
func (f *Fake) TelemetryRange(_ context.Context, vehicle uint32, from, to time.Time, limit int) ([]groundd.TelemetryRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return nil, f.Err
	}
	if err := f.vehicle(vehicle); err != nil {
		return nil, err
	}
	var out []groundd.TelemetryRecord
	for _, r := range f.tlm {
		if r.Vehicle != vehicle || r.Received.Before(from) || (!to.IsZero() && !r.Received.Before(to)) {
			continue
		}
		if len(out) == cmp.Or(limit, 1000) {
			break
		}
		out = append(out, r)
	}
	return out, nil
}

// TelemetryFollow subscribes to vehicle's records until ctx ends.
func (f *Fake) TelemetryFollow(ctx context.Context, vehicle uint32) (<-chan groundd.TelemetryRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return nil, f.Err
	}
	if vehicle != 0 {
		if err := f.vehicle(vehicle); err != nil {
			return nil, err
		}
	}
	ch := make(chan groundd.TelemetryRecord, 64)
	f.subs[ch] = vehicle
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		delete(f.subs, ch)
		close(ch)
		f.mu.Unlock()
	}()
	select {
	case f.Subscribed <- struct{}{}:
	default:
	}
	return ch, nil
}

// VehicleCounters returns the counters set with SetCounters.
func (f *Fake) VehicleCounters(context.Context) (map[uint32]metrics.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return nil, f.Err
	}
	return f.counters, nil
}
