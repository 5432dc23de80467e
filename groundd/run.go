package groundd

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Run opens the daemon of cfg and runs it until ctx ends.
func Run(ctx context.Context, cfg Config, o Options) error {
	d, err := Open(cfg, o)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Run(ctx, nil)
}

// maxIdle bounds the wait between two Polls of a vehicle: the queue's and
// the commands' clocks are looked at this often even when nothing happens.
const maxIdle = time.Second

// Run serves every configured vehicle on its link until ctx ends: frames
// received go to Poll, the frames Poll returns go out. links, if not nil,
// gives the link of each vehicle (tests, hil); otherwise Run opens the
// configured ones.
func (d *Daemon) Run(ctx context.Context, links map[uint32]Link) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(d.cfg.Vehicles))
	for _, vc := range d.cfg.Vehicles {
		if vc.Follow != nil {
			s, _ := d.sessionOf(vc.ID)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := d.follow(ctx, s); err != nil {
					errs <- err
					cancel()
				}
			}()
		}
		l := links[vc.ID]
		if l == nil {
			if vc.Link.Kind == "" {
				continue // no link: queue and knowledge only
			}
			var err error
			if l, err = openLink(vc, d.codec.MaxFrame()); err != nil {
				cancel()
				wg.Wait()
				return err
			}
			defer l.Close()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.serve(ctx, vc.ID, l); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// wakeOf returns the channel that wakes vehicle's loop when the API changed
// something it must act on (a queued uplink, a command, a link signal).
func (d *Daemon) wakeOf(vehicle uint32) chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.wake == nil {
		d.wake = map[uint32]chan struct{}{}
	}
	ch, ok := d.wake[vehicle]
	if !ok {
		ch = make(chan struct{}, 1)
		d.wake[vehicle] = ch
	}
	return ch
}

func (d *Daemon) poke(vehicle uint32) {
	select {
	case d.wakeOf(vehicle) <- struct{}{}:
	default:
	}
}

// serve is one vehicle's loop.
func (d *Daemon) serve(ctx context.Context, vehicle uint32, l Link) error {
	frames := make(chan []byte, 256)
	go func() {
		for {
			f, err := l.Recv(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				d.log.Warn("groundd: link receive", "vehicle", vehicle, "link", l.Name(), "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second): // a broken socket is not a busy loop
				}
				continue
			}
			select {
			case frames <- f:
			case <-ctx.Done():
				return
			}
		}
	}()
	wake := d.wakeOf(vehicle)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var in [][]byte
		select {
		case <-ctx.Done():
			return nil
		case f := <-frames:
			in = append(in, f)
		drain:
			for len(in) < 64 {
				select {
				case f := <-frames:
					in = append(in, f)
				default:
					break drain
				}
			}
		case <-timer.C:
		case <-wake:
		}
		out, next, err := d.Poll(ctx, vehicle, d.now(), in)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// A store error: logged, and tried again; what was not
			// persisted was not sent.
			d.log.Error("groundd: poll", "vehicle", vehicle, "err", err)
		}
		for _, f := range out {
			if err := l.Send(ctx, f); err != nil {
				d.log.Debug("groundd: link send", "vehicle", vehicle, "link", l.Name(), "err", err)
			}
		}
		wait := maxIdle
		if !next.IsZero() {
			wait = min(wait, max(0, next.Sub(d.now())))
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}
