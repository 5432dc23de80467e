package flightd

import (
	"context"
	"time"
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

// UplinkStatus is the uplink engine's part of Status.
type UplinkStatus struct {
	Plan         uint64 `json:"plan,omitempty"`
	State        string `json:"state"` // dict EnumTransferState label
	Transfer     uint64 `json:"transfer,omitempty"`
	ChunksHeld   uint32 `json:"chunks_held,omitempty"`
	ChunksTotal  uint32 `json:"chunks_total,omitempty"`
	BytesStaged  uint64 `json:"bytes_staged,omitempty"`
	StagingUsed  uint64 `json:"staging_used"`
	StagingQuota uint64 `json:"staging_quota"`
	// Versions are the release versions installed per slot ("A", "B").
	Versions map[string]uint64 `json:"versions,omitempty"`
}
