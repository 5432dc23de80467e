package gateway

import (
	"fmt"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
)

// Archive stores what the gateway must keep across restarts: the commands
// with their stage history, and the telemetry and event records. groundd
// provides it on its store (bbolt by default); gatewaytest has an in-memory
// one and a conformance test for others. Every method must be durable when
// it returns and safe for concurrent use.
type Archive interface {
	// PutCommand stores c, replacing the command with the same Key and Seq.
	PutCommand(c *Command) error
	// Commands returns the commands that match q, by Submitted time then
	// Seq.
	Commands(q CommandQuery) ([]*Command, error)
	// Append stores a telemetry or event record.
	Append(r *Record) error
	// Records returns the records that match q, by Time then Received.
	Records(q Query) ([]*Record, error)
}

// SharedArchive is an Archive that several gateways share, one per ground
// station (groundd on etcd). A command queued at one station is then sent
// by whichever station holds the vehicle, once, and its reports move it
// at whichever station hears them:
//
//   - every change of a command is a compare-and-swap on its Version:
//     PutCommand of a command with Version v > 0 stores it only if the
//     stored command's Version is v-1 (no stored command: 0), atomically,
//     and otherwise stores nothing and returns an error wrapping ErrStale;
//     a Version of 0 replaces unconditionally;
//   - the gateway reads a vehicle's open commands from the archive before
//     it sends (Sync) and at each Tick, and a command before a report or a
//     cancellation moves it, so that it works on what the other stations
//     did; a change that loses the race reloads the command.
type SharedArchive interface {
	Archive
	// Command returns the command (key, seq) as stored, or an error
	// wrapping ErrNotFound.
	Command(key protocol.KeyID, seq uint64) (*Command, error)
	// OpenCommands returns the open commands (Command.Open) of vehicle
	// (0: of every vehicle), by Seq.
	OpenCommands(vehicle uint32) ([]*Command, error)
}

// Sequencer hands out command sequence numbers. Next returns a number for
// key that is > 0 and that it never returned before for key: not after a
// restart (the number is durable before Next returns) and not to another
// ground station sharing the store (an atomic increment). Numbers should
// increase: a vehicle's replay window refuses a number more than
// protocol.ReplayWindowSize below the highest it accepted from key. One
// counter per key serves every vehicle; a new key may start anywhere.
type Sequencer interface {
	Next(key protocol.KeyID) (uint64, error)
}

// Kind says what a Record holds.
type Kind uint8

// Record kinds.
const (
	KindTelemetry Kind = 1 // a protocol.Telemetry
	KindEvent     Kind = 2 // a protocol.Event
)

func (k Kind) String() string {
	switch k {
	case KindTelemetry:
		return "telemetry"
	case KindEvent:
		return "event"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Record is one archived telemetry packet or event, as received.
type Record struct {
	Kind    Kind   `json:"kind"`
	Vehicle uint32 `json:"vehicle"`
	// ID is the packet id (telemetry) or the event id.
	ID uint16 `json:"id"`
	// Time is when the vehicle says the sample was taken or the event
	// happened; the reception time when the vehicle gave none (0).
	Time time.Time `json:"time"`
	// Received is the ground's time of reception.
	Received time.Time `json:"received"`
	// Seq is the vehicle's packet or event counter (it wraps).
	Seq uint32 `json:"seq"`
	// Frame is the message as received, re-encoded as one protocol frame
	// (its MAC included), which Telemetry and Events decode.
	Frame []byte `json:"frame"`
}

// Query selects records. Zero fields select everything.
type Query struct {
	Kind    Kind
	Vehicle uint32
	// ID is the packet or event id (dictionary ids start at 1).
	ID uint16
	// From and To bound Time: From <= Time < To.
	From, To time.Time
	// Limit is the most records to return, the oldest first; 0: no limit.
	Limit int
}

// Match reports whether r matches q (for Archive implementations).
func (q *Query) Match(r *Record) bool {
	return (q.Kind == 0 || r.Kind == q.Kind) &&
		(q.Vehicle == 0 || r.Vehicle == q.Vehicle) &&
		(q.ID == 0 || r.ID == q.ID) &&
		inRange(r.Time, q.From, q.To)
}

func inRange(t, from, to time.Time) bool {
	return (from.IsZero() || !t.Before(from)) && (to.IsZero() || t.Before(to))
}

// CommandQuery selects commands. Zero fields select everything.
type CommandQuery struct {
	Vehicle uint32
	// Key and Seq select one command (both set).
	Key protocol.KeyID
	Seq uint64
	// Name is the command's dictionary name.
	Name string
	// From and To bound Submitted: From <= Submitted < To.
	From, To time.Time
	// Open selects the commands still in flight (Command.Open).
	Open bool
	// Limit is the most commands to return, the oldest first; 0: no limit.
	Limit int
}

// Match reports whether c matches q (for Archive implementations).
func (q *CommandQuery) Match(c *Command) bool {
	return (q.Vehicle == 0 || c.Vehicle == q.Vehicle) &&
		(q.Seq == 0 || (c.Key == q.Key && c.Seq == q.Seq)) &&
		(q.Name == "" || c.Name == q.Name) &&
		inRange(c.Submitted, q.From, q.To) &&
		(!q.Open || c.Open())
}
