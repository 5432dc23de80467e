// Package flightdtest provides test doubles for package flightd, in the
// manner of net/http/httptest: Clock, a clock that moves only when told to
// and wakes the daemon's timers when it does, and Pipe, a pair of
// in-memory links (the vehicle's end and the ground's). The product never
// imports this package.
package flightdtest

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Clock is a fake flightd.Clock: Now moves only with Advance, and After's
// channels fire when Advance passes their time. Safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	t       time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	c  chan time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// After returns a channel that receives once the clock reaches now+d.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	at := c.t.Add(d)
	if d <= 0 {
		ch <- c.t
		return ch
	}
	// Drop waiters nobody can be waiting on any more (the daemon asks for
	// a new timer on every loop turn): keep the list short.
	if len(c.waiters) > 256 {
		c.waiters = c.waiters[len(c.waiters)-64:]
	}
	c.waiters = append(c.waiters, waiter{at, ch})
	return ch
}

// Advance moves the clock forward by d and fires the timers due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	now := c.t
	keep := c.waiters[:0]
	var fire []chan time.Time
	for _, w := range c.waiters {
		if !w.at.After(now) {
			fire = append(fire, w.c)
		} else {
			keep = append(keep, w)
		}
	}
	c.waiters = keep
	c.mu.Unlock()
	for _, ch := range fire {
		ch <- now
	}
}

// ErrDown is returned by a Link's Send while it is down.
var ErrDown = errors.New("flightdtest: link down")

// ErrClosed is returned by a closed Link.
var ErrClosed = errors.New("flightdtest: link closed")

// Link is one end of a Pipe.
type Link struct {
	name     string
	maxFrame int
	in, out  chan []byte
	mu       *sync.Mutex
	down     *bool
	done     chan struct{}
	once     *sync.Once
}

// Pipe returns the two ends of an in-memory link: frames sent on one are
// received on the other, in order, up to 1024 queued.
func Pipe(name string, maxFrame int) (vehicle, ground *Link) {
	a, b := make(chan []byte, 1024), make(chan []byte, 1024)
	mu, down := new(sync.Mutex), new(bool)
	return &Link{name, maxFrame, a, b, mu, down, make(chan struct{}), new(sync.Once)},
		&Link{name, maxFrame, b, a, mu, down, make(chan struct{}), new(sync.Once)}
}

// SetDown takes the link down (frames sent are lost, Send says so) or up.
func (l *Link) SetDown(down bool) {
	l.mu.Lock()
	*l.down = down
	l.mu.Unlock()
}

// Send implements flightd.Link.
func (l *Link) Send(ctx context.Context, frame []byte) error {
	l.mu.Lock()
	down := *l.down
	l.mu.Unlock()
	select {
	case <-l.done:
		return ErrClosed
	default:
	}
	if down {
		return ErrDown
	}
	select {
	case l.out <- append([]byte(nil), frame...):
		return nil
	default:
		return nil // a full queue loses the frame, as a radio would
	}
}

// Recv implements flightd.Link.
func (l *Link) Recv(ctx context.Context) ([]byte, error) {
	select {
	case b := <-l.in:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.done:
		return nil, ErrClosed
	}
}

// MaxFrame implements flightd.Link.
func (l *Link) MaxFrame() int { return l.maxFrame }

// Name implements flightd.Link.
func (l *Link) Name() string { return l.name }

// Close implements flightd.Link; it closes this end (the other end's
// frames are then lost).
func (l *Link) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}
