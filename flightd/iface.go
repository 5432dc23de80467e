package flightd

import (
	"context"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
)

// Clock is the daemon's time: the only place Run reads the time or waits.
// Tests pass a clock they move themselves.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed on this clock.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Link is one link to the ground: the interface of protocol/link, which
// the daemon opens from the links section (a test passes its own).
type Link interface {
	// Send transmits one frame; a link that is down returns an error at
	// once (the frame is lost, as on radio).
	Send(ctx context.Context, frame []byte) error
	// Recv blocks until a frame arrives, ctx ends or the link is closed.
	Recv(ctx context.Context) ([]byte, error)
	MaxFrame() int
	Name() string
	Close() error
}

// Uplink is the uplink engine (package flightd/uplink) as Run drives it:
// sans-IO in the manner of protocol/transfer, on the daemon's main loop.
// The engine persists before it returns frames to send; Run sends them,
// in order, as they come.
type Uplink interface {
	// Step takes one ground-to-vehicle transfer frame (offer, chunk,
	// report request, cancel), already opened if it was sealed.
	Step(ctx context.Context, now time.Time, frame []byte) (UplinkOutput, error)
	// Tick runs the engine's timers and any work due (an install once a
	// bundle is complete).
	Tick(ctx context.Context, now time.Time) (UplinkOutput, error)
	// SetLink tells the engine whether the return link is up.
	SetLink(now time.Time, up bool)
	// Status is what hk.transfer and hk.storage report.
	Status() UplinkStatus
	// Abort, Pause and Resume act on a transfer (plan false) or on both
	// transfers of a plan (plan true), for the transfer_* commands.
	Abort(ctx context.Context, now time.Time, id uint64, plan bool) (UplinkOutput, error)
	Pause(id uint64, plan bool) error
	Resume(id uint64, plan bool) error
	// DeleteStaged deletes a plan's staged data (0: every plan's) and
	// returns the bytes freed.
	DeleteStaged(plan uint64) (int64, error)
}

// UplinkOutput is what a call to the engine produced: return frames
// (encoded and tagged with the daemon's ReturnAuth), events to report, and
// the next time the engine wants Tick (zero: none).
type UplinkOutput struct {
	Frames   [][]byte
	Events   []EventOut
	Deadline time.Time
	// Code is non-zero when the call was refused or failed for a reason
	// the ground should see (a plan refusal's reason, an install failure).
	Code protocol.Code
}

// EventOut is an event of the dictionary with its argument values, for
// the daemon to number, tag and send.
type EventOut struct {
	Name string // the dictionary event name (dict.EventByName)
	Text string
	Args map[string]any
}

// UplinkStatus is the engine's part of housekeeping.
type UplinkStatus struct {
	Plan, Transfer            uint64
	ChunksHeld, ChunksTotal   uint32
	BytesStaged               uint64
	State                     string // dict EnumTransferState label
	StagingUsed, StagingQuota uint64
	// Versions are the release versions installed per slot ("A", "B").
	Versions map[string]uint64
	// Installed is the slot holding a verified install waiting for
	// activation ("" if none).
	Installed string
}
