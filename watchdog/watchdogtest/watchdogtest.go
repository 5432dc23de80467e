// Package watchdogtest provides test doubles for package watchdog, in the
// manner of net/http/httptest: Clock, a clock that moves only when told to,
// and Device, a hardware watchdog that expires on such a clock when nobody
// pets it. Tests and the bench's virtual board use them; the product never
// imports this package, so that no double ships in flightd.
//
// Device keeps the real device's promises that the boot-counting logic
// relies on: closing it does not disarm it (no magic close), a keepalive
// after expiry fails (a board that has reset does not come back because
// someone pets it late), and SetTimeout rounds up as hardware does.
package watchdogtest

import (
	"fmt"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/watchdog"
)

// TimeSource tells a Device the time; *Clock is one, and a bench may pass
// its own.
type TimeSource interface {
	Now() time.Time
}

// Clock is a clock that moves only when told to. It is safe for concurrent
// use (a bench advances it while a daemon goroutine reads it).
type Clock struct {
	mu sync.Mutex
	T  time.Time
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.T
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.T = c.T.Add(d)
	c.mu.Unlock()
}

// Device is a fake hardware watchdog: it "expires" when not petted within
// its timeout, measured on its TimeSource. A board model checks Expired
// and resets, with watchdog.WDIOFCardReset as the next boot's BootStatus.
// It is safe for concurrent use.
type Device struct {
	mu sync.Mutex

	Clock   TimeSource
	Timeout time.Duration
	// Granularity rounds SetTimeout up, like hardware that counts in whole
	// seconds; 0 means one second.
	Granularity time.Duration
	// Status is what BootStatus returns.
	Status watchdog.BootStatus

	lastPet time.Time
	closed  bool
	pets    int
}

var _ watchdog.Device = (*Device)(nil)

// NewDevice returns an armed fake with the given timeout, petted now.
func NewDevice(c TimeSource, timeout time.Duration, status watchdog.BootStatus) *Device {
	return &Device{Clock: c, Timeout: timeout, Status: status, lastPet: c.Now()}
}

// Keepalive pets the fake, unless it has already expired: a board that
// has reset does not come back because someone pets it late.
func (f *Device) Keepalive() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.expired() {
		return fmt.Errorf("%w: fake watchdog expired at %v", watchdog.ErrWatchdog, f.lastPet.Add(f.Timeout))
	}
	f.lastPet = f.Clock.Now()
	f.pets++
	return nil
}

// SetTimeout sets the timeout, rounded up to the granularity, and pets.
func (f *Device) SetTimeout(d time.Duration) (time.Duration, error) {
	if d <= 0 {
		return 0, fmt.Errorf("%w: timeout %v", watchdog.ErrWatchdog, d)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.Granularity
	if g == 0 {
		g = time.Second
	}
	d = (d + g - 1) / g * g
	f.Timeout = d
	f.lastPet = f.Clock.Now()
	return d, nil
}

// BootStatus returns Status.
func (f *Device) BootStatus() (watchdog.BootStatus, error) { return f.Status, nil }

// Close leaves the fake armed, as the real device is left.
func (f *Device) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return nil
}

// Closed reports whether Close was called; the fake stays armed anyway.
func (f *Device) Closed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Expired reports whether the timeout has passed since the last pet.
// Closing does not stop it.
func (f *Device) Expired() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.expired()
}

func (f *Device) expired() bool { return f.Clock.Now().Sub(f.lastPet) >= f.Timeout }

// Pets is how many keepalives succeeded.
func (f *Device) Pets() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pets
}
