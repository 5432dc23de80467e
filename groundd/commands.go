package groundd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/bootorbit/bootorbit/groundd/gateway"
	"github.com/bootorbit/bootorbit/protocol"
)

// Commands go through groundd/gateway: checked against the dictionary,
// numbered by the store's counter, signed with the ground key, archived
// before they are sent, resent while unacknowledged (the same frame, a
// bounded number of times: the vehicle runs it at most once), and followed through the
// vehicle's verification reports or timed out visibly. The types below are
// the daemon API's view of them.

// CommandStage is where a command is (gateway.Stage's names).
type CommandStage string

// Command stages; Completed, Failed, Rejected, TimedOut and Cancelled are
// final.
const (
	CmdQueued    CommandStage = "queued"
	CmdSent      CommandStage = "sent"
	CmdAccepted  CommandStage = "accepted"
	CmdRejected  CommandStage = "rejected"
	CmdStarted   CommandStage = "started"
	CmdProgress  CommandStage = "progress"
	CmdCompleted CommandStage = "completed"
	CmdFailed    CommandStage = "failed"
	CmdTimedOut  CommandStage = "timeout"
	CmdCancelled CommandStage = "cancelled"
)

// Command is a command sent to a vehicle and what became of it. Its ID is
// its sequence number under the ground key.
type Command struct {
	ID      uint64         `json:"id"`
	Vehicle uint32         `json:"vehicle"`
	Opcode  string         `json:"opcode"`
	Args    map[string]any `json:"args,omitempty"`
	Seq     uint64         `json:"seq"`
	Stage   CommandStage   `json:"stage"`
	// Code is the vehicle's reason code for a rejection or failure, with
	// its label.
	Code    uint16          `json:"code,omitempty"`
	Reason  string          `json:"reason,omitempty"`
	Created time.Time       `json:"created"`
	Updated time.Time       `json:"updated"`
	History []gateway.Entry `json:"history,omitempty"`
	// Resends counts the copies of its frame sent again while the vehicle
	// had not acknowledged it.
	Resends int `json:"resends,omitempty"`
	// SentBy is the station that sent it (the holder of the vehicle then;
	// with several stations, not necessarily the one that queued it).
	SentBy string `json:"sent_by,omitempty"`
}

func fromGateway(c *gateway.Command) Command {
	out := Command{ID: c.Seq, Vehicle: c.Vehicle, Opcode: c.Name, Seq: c.Seq, Stage: CommandStage(c.Stage.String()),
		Code: uint16(c.Code), Reason: c.Reason, Created: c.Submitted, Updated: c.Submitted, History: c.History, Resends: c.Resends}
	if vals, err := c.Values(); err == nil && len(vals) > 0 {
		out.Args = vals
	}
	if len(c.History) > 0 {
		out.Updated = c.Last().Time
	}
	out.SentBy = c.SentBy()
	return out
}

func (d *Daemon) cmdErr(err error) error {
	switch {
	case errors.Is(err, gateway.ErrNotFound):
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	case errors.Is(err, gateway.ErrState):
		return fmt.Errorf("%w: %v", ErrState, err)
	case errors.Is(err, gateway.ErrDecode), errors.Is(err, gateway.ErrQueueFull):
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return err
}

// SendCommand queues a command for vehicle: it goes out at the vehicle's
// next Poll with the link up (Run wakes the loop at once).
func (d *Daemon) SendCommand(ctx context.Context, vehicle uint32, opcode string, args map[string]any) (Command, error) {
	s, ok := d.sessionOf(vehicle)
	if !ok {
		return Command{}, fmt.Errorf("%w: vehicle %d", ErrNotFound, vehicle)
	}
	return d.sendCommand(ctx, s, d.now(), opcode, args, true)
}

// sendCommand submits a command; wake says whether to wake the vehicle's
// loop (not from inside it).
func (d *Daemon) sendCommand(ctx context.Context, s *session, now time.Time, opcode string, args map[string]any, wake bool) (Command, error) {
	c, err := d.gw.Submit(now, gateway.Request{Vehicle: s.cfg.ID, Name: opcode, Args: args})
	if err != nil {
		return Command{}, d.cmdErr(err)
	}
	d.log.Info("groundd: command queued", "vehicle", s.cfg.ID, "command", c.Seq, "opcode", opcode)
	if wake {
		d.poke(s.cfg.ID)
	}
	return fromGateway(c), nil
}

// CommandShow returns a command and its stage.
func (d *Daemon) CommandShow(ctx context.Context, id uint64) (Command, error) {
	c, err := d.gw.Command(protocol.KeyID(d.cfg.GroundKeyID), id)
	if err != nil {
		return Command{}, d.cmdErr(err)
	}
	return fromGateway(c), nil
}

// CommandCancel cancels a command not yet sent.
func (d *Daemon) CommandCancel(ctx context.Context, vehicle uint32, id uint64) (Command, error) {
	c, err := d.gw.Cancel(d.now(), vehicle, id)
	if err != nil {
		return Command{}, d.cmdErr(err)
	}
	return fromGateway(c), nil
}

// Commands returns the commands sent to vehicle (0: to every vehicle),
// oldest first.
func (d *Daemon) Commands(ctx context.Context, vehicle uint32) ([]Command, error) {
	cs, err := d.gw.Commands(gateway.CommandQuery{Vehicle: vehicle})
	if err != nil {
		return nil, err
	}
	out := make([]Command, 0, len(cs))
	for _, c := range cs {
		out = append(out, fromGateway(c))
	}
	return out, nil
}

// sendCommands hands out s's queued commands and the copies due of those
// not acknowledged (gateway.Resend), sealed if the vehicle's uplink is:
// called with the link up.
//
// With several stations the commands are the store's: whichever station
// holds the vehicle reads its open commands first (gateway.Sync), and
// each hand-out is a compare-and-swap, so a command queued at any
// station's API goes out once, from the holder; one another station moved
// first (gateway.ErrStale) is reloaded and skipped.
func (d *Daemon) sendCommands(s *session, now time.Time) ([][]byte, error) {
	var out [][]byte
	if err := d.gw.Sync(s.cfg.ID); err != nil {
		return out, err
	}
	for stale := 0; ; {
		o, ok, err := d.gw.Next(now, s.cfg.ID)
		if errors.Is(err, gateway.ErrStale) && stale < 8 {
			stale++
			continue
		}
		if err != nil {
			return out, err
		}
		if !ok {
			break
		}
		f, err := d.seal(s, o.Frame)
		if err != nil {
			if uerr := d.gw.Unsend(now, s.cfg.ID, o.Seq); uerr != nil {
				err = errors.Join(err, uerr)
			}
			return out, err
		}
		out = append(out, f)
	}
	// Then the copies of the commands the vehicle has not acknowledged.
	for stale := 0; ; {
		o, ok, err := d.gw.Resend(now, s.cfg.ID, s.resendBase())
		if errors.Is(err, gateway.ErrStale) && stale < 8 {
			stale++
			continue
		}
		if err != nil || !ok {
			return out, err
		}
		f, err := d.seal(s, o.Frame)
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
}

// TelemetryRange returns vehicle's archived telemetry and events whose
// vehicle time is in [from, to) (zero to: no end), oldest first, at most
// limit of each (0: 1000).
func (d *Daemon) TelemetryRange(ctx context.Context, vehicle uint32, from, to time.Time, limit int) ([]TelemetryRecord, error) {
	if _, ok := d.sessionOf(vehicle); !ok {
		return nil, fmt.Errorf("%w: vehicle %d", ErrNotFound, vehicle)
	}
	if limit <= 0 {
		limit = 1000
	}
	tm, err := d.gw.Telemetry(gateway.Query{Kind: gateway.KindTelemetry, Vehicle: vehicle, From: from, To: to, Limit: limit})
	if err != nil {
		return nil, err
	}
	ev, err := d.gw.Events(gateway.Query{Kind: gateway.KindEvent, Vehicle: vehicle, From: from, To: to, Limit: limit})
	if err != nil {
		return nil, err
	}
	var out []TelemetryRecord
	for _, s := range tm {
		out = append(out, TelemetryRecord{Vehicle: s.Vehicle, Received: s.Received, Time: s.Time, Kind: "tm", Name: s.Packet, Seq: s.Seq, Values: valueMap(s.Values)})
	}
	for _, e := range ev {
		out = append(out, TelemetryRecord{Vehicle: e.Vehicle, Received: e.Received, Time: e.Time, Kind: "event", Name: e.Event, Seq: e.Seq,
			Values: valueMap(e.Args), Text: e.Text, Severity: e.Severity})
	}
	slices.SortStableFunc(out, func(a, b TelemetryRecord) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return a.Received.Compare(b.Received)
	})
	return out, nil
}

func valueMap(vs []gateway.Value) map[string]any {
	if len(vs) == 0 {
		return nil
	}
	m := make(map[string]any, len(vs))
	for _, v := range vs {
		m[v.Name] = v.Value
	}
	return m
}
