package watchdog

import (
	"context"
	"fmt"
	"time"
)

// Pet keeps the watchdog alive: on every tick it asks healthy (nil means
// always healthy) and pets d only if that returns nil. When a health check
// fails, or a keepalive fails, Pet stops and returns the error without
// closing d: the watchdog then resets the board after its timeout, which
// is the point. It also returns, with ctx's error, when ctx is done; the
// device stays armed either way.
//
// The caller owns the ticker (time.NewTicker(timeout/3).C in flightd, a
// channel it feeds in tests), so Pet has no clock of its own.
func Pet(ctx context.Context, d Device, ticks <-chan time.Time, healthy func() error) error {
	if err := d.Keepalive(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-ticks:
			if !ok {
				return nil
			}
			if healthy != nil {
				if err := healthy(); err != nil {
					return fmt.Errorf("watchdog: not petting, unhealthy: %w", err)
				}
			}
			if err := d.Keepalive(); err != nil {
				return err
			}
		}
	}
}
