package watchdog_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/bootorbit/bootorbit/watchdog/watchdogtest"
)

// ackDevice tells the test when a keepalive has happened, so that the test
// and the Pet goroutine take turns deterministically.
type ackDevice struct {
	*watchdogtest.Device
	ack chan struct{}
}

func (a ackDevice) Keepalive() error {
	err := a.Device.Keepalive()
	a.ack <- struct{}{}
	return err
}

func TestPetKeepsAliveWhileHealthy(t *testing.T) {
	c := &watchdogtest.Clock{T: time.Unix(0, 0)}
	fd := watchdogtest.NewDevice(c, 30*time.Second, 0)
	d := ackDevice{fd, make(chan struct{})}
	ticks := make(chan time.Time)
	sick := errors.New("health check failed")
	health := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		done <- watchdog.Pet(context.Background(), d, ticks, func() error { return <-health })
	}()
	<-d.ack // the first keepalive, on entry
	// An hour of 10 s ticks: never expires.
	for i := 0; i < 360; i++ {
		c.Advance(10 * time.Second)
		health <- nil
		ticks <- c.Now()
		<-d.ack
		if fd.Expired() {
			t.Fatalf("expired while petted, tick %d", i)
		}
	}
	c.Advance(10 * time.Second)
	health <- sick
	ticks <- c.Now()
	if err := <-done; !errors.Is(err, sick) {
		t.Fatalf("Pet returned %v, want the health error", err)
	}
	c.Advance(20 * time.Second)
	if !fd.Expired() {
		t.Fatal("an unhealthy daemon's watchdog did not expire")
	}
	if fd.Pets() != 361 {
		t.Fatalf("pets %d, want 361", fd.Pets())
	}
}

func TestPetStopsOnCancel(t *testing.T) {
	c := &watchdogtest.Clock{T: time.Unix(0, 0)}
	d := watchdogtest.NewDevice(c, 30*time.Second, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := watchdog.Pet(ctx, d, make(chan time.Time), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Pet after cancel: %v", err)
	}
	if d.Pets() != 1 {
		t.Fatalf("pets %d, want the initial one", d.Pets())
	}
	c.Advance(30 * time.Second)
	if !d.Expired() {
		t.Fatal("cancel disarmed the watchdog")
	}
}
