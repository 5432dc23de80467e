package transfer

import (
	"errors"
	"fmt"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
)

// Errors of the transfer engine. Decoding errors wrap protocol's sentinels;
// these add what the engine itself refuses.
var (
	// ErrGeometry: an offer's size and chunk size give no valid hash tree.
	ErrGeometry = errors.New("transfer: invalid transfer geometry")
	// ErrUnknownTransfer: a message names a transfer the receiver has no
	// offer for. It wraps protocol.ErrUnknownTransfer, so Counters count it.
	ErrUnknownTransfer = fmt.Errorf("transfer: %w", protocol.ErrUnknownTransfer)
	// ErrChunkIndex: a chunk index past the end of its transfer. It wraps
	// protocol.ErrInvalidField, so Counters count it.
	ErrChunkIndex = fmt.Errorf("transfer: chunk index out of range: %w", protocol.ErrInvalidField)
	// ErrChunkSize: a chunk whose length is not the one the plan gives it.
	// It wraps protocol.ErrInvalidField.
	ErrChunkSize = fmt.Errorf("transfer: chunk length mismatch: %w", protocol.ErrInvalidField)
	// ErrChunkHash: a chunk that does not match the signed hash tree: forged
	// or altered data. It wraps protocol.ErrBadSignature.
	ErrChunkHash = fmt.Errorf("transfer: chunk fails verification: %w", protocol.ErrBadSignature)
	// ErrPendingFull: a chunk whose hash block has not arrived yet, with no
	// room left to hold it in memory until it does.
	ErrPendingFull = errors.New("transfer: no room for unverifiable chunk")
	// ErrConflict: an offer reusing the id of a different transfer.
	ErrConflict = errors.New("transfer: offer conflicts with an active transfer")
	// ErrResources: an offer larger than allowed, or too many transfers at once.
	ErrResources = errors.New("transfer: offer exceeds receiver limits")
	// ErrUnexpected: a message type this side does not take.
	ErrUnexpected = errors.New("transfer: unexpected message")
	// ErrRefused: the receiver refused or cancelled the transfer.
	ErrRefused = errors.New("transfer: refused by receiver")
	// ErrCancelled: the transfer was cancelled by the ground.
	ErrCancelled = errors.New("transfer: cancelled")
	// ErrContradictions: the vehicle's authenticated reports contradicted
	// each other more often than SenderConfig.MaxContradictions allows.
	// It wraps protocol.ErrContradiction.
	ErrContradictions = fmt.Errorf("transfer: too many contradictory reports: %w", protocol.ErrContradiction)
)

// EventKind says what an Event reports.
type EventKind uint8

const (
	// EventContradiction: an authenticated message from the vehicle
	// contradicted what the sender knows (a report claiming chunks never
	// sent, a report listing missing chunks an earlier report claimed, a
	// completion while chunks were never sent). The sender fell back to
	// the conservative view: what is not proven received is sent again.
	EventContradiction EventKind = iota + 1
)

func (k EventKind) String() string {
	switch k {
	case EventContradiction:
		return "contradiction"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event is something the engine noticed that operators should hear of: an
// output of the state machine, like its frames, for the caller to log and
// put in telemetry.
type Event struct {
	Transfer uint64
	Kind     EventKind
	// Chunks is how many chunks the event concerns (for a contradiction:
	// the chunks whose claimed state was refused or taken back).
	Chunks int
	// Detail says what happened, for logs.
	Detail string
}

// LinkState is what the caller knows of the link: whether this side's
// transmissions can get through (Forward for the sender, Return for the
// receiver, as named from the ground) and whether the other side's can.
// Timers waiting for an answer run only while both are up.
type LinkState struct {
	Forward, Return bool
}

func (l LinkState) up() bool { return l.Forward && l.Return }

// Outgoing is a frame to send, with the message it encodes (for logs and
// accounting; the frame is what goes on the link).
type Outgoing struct {
	Frame []byte
	Msg   protocol.Message
}

// Write asks the caller to store transfer data: Data at Offset of transfer
// ID's data. Writes of one Ready must be durable (synced) before its
// Records are committed.
type Write struct {
	ID     uint64
	Offset int64
	Data   []byte
}

// RecordOp is what a Record does.
type RecordOp uint8

const (
	// OpPut sets Key to Value.
	OpPut RecordOp = iota + 1
	// OpDeletePrefix removes every key starting with Key.
	OpDeletePrefix
)

// Record is one change to the receiver's journal, a key-value store. The
// Records of one Ready form one atomic, durable commit.
type Record struct {
	Op    RecordOp
	Key   []byte
	Value []byte
}

// Completion reports a transfer whose data is complete, verified and
// durable once the Ready's Records are committed.
type Completion struct {
	ID     uint64
	Size   uint64
	Target []byte
}

// Ready is the work the caller must do, in this order: store Writes and
// sync them; commit Records atomically and durably; send Messages. Then act
// on Completed, log and report Events, call Advance, and call Tick again at
// Deadline (zero: no timer is pending; something else - a frame, a link
// change - must happen).
type Ready struct {
	Writes    []Write
	Records   []Record
	Messages  []Outgoing
	Completed []Completion
	Events    []Event
	Deadline  time.Time
}

// Empty says there is nothing to do but wait for Deadline.
func (r *Ready) Empty() bool {
	return len(r.Writes) == 0 && len(r.Records) == 0 && len(r.Messages) == 0 && len(r.Completed) == 0 && len(r.Events) == 0
}

// clock is a timer base that runs only while the link is up both ways:
// timers waiting for an answer freeze while the link is known to be down.
type clock struct {
	link    LinkState
	last    time.Time
	elapsed time.Duration // active time
	started bool
	// returnOnly: the clock runs whenever the return link is up (the
	// receiver's timers only need its own transmissions to get through).
	returnOnly bool
}

func (c *clock) running() bool {
	if c.returnOnly {
		return c.link.Return
	}
	return c.link.up()
}

func (c *clock) advance(now time.Time) {
	if !c.started {
		c.started, c.last = true, now
		return
	}
	if now.After(c.last) {
		if c.running() {
			c.elapsed += now.Sub(c.last)
		}
		c.last = now
	}
}

// wall converts an active-time deadline to a wall-clock one; zero if the
// clock is frozen.
func (c *clock) wall(at time.Duration) time.Time {
	if !c.running() {
		return time.Time{}
	}
	if at < c.elapsed {
		at = c.elapsed
	}
	return c.last.Add(at - c.elapsed)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
