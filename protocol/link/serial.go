package link

import "fmt"

// serialLink is a serial device: opened in raw mode at the configured
// speed, COBS framing, reopened with backoff whenever it goes away (a USB
// adapter unplugged, a radio power-cycled) and comes back.
type serialLink struct {
	streamLink
}

func openSerial(cfg Config) (*serialLink, error) {
	if len(baudRates) == 0 {
		_, err := openDevice(cfg.Device, cfg.Baud)
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, cfg.Name, err)
	}
	if _, ok := baudRates[cfg.Baud]; !ok {
		return nil, fmt.Errorf("%w: %s: baud rate %d unsupported", ErrConfig, cfg.Name, cfg.Baud)
	}
	l := &serialLink{streamLink{base: newBase(cfg)}}
	l.wg.Add(1)
	go l.openLoop()
	return l, nil
}

// openLoop keeps the device open: after it fails, it reopens at once, then
// backs off while opening fails.
func (l *serialLink) openLoop() {
	defer l.wg.Done()
	wait := l.cfg.MinBackoff
	for !l.closed() {
		f, err := openDevice(l.cfg.Device, l.cfg.Baud)
		if err != nil {
			if !l.wait(wait) {
				return
			}
			wait = l.backoff(wait)
			continue
		}
		wait = l.cfg.MinBackoff
		if !l.serve(f) {
			return
		}
		// A device that fails at once (EIO on a hung-up tty) must not make
		// this loop spin: wait the minimum before reopening.
		if !l.wait(wait) {
			return
		}
	}
}

// Close implements Link.
func (l *serialLink) Close() error {
	return l.shut(func() error {
		l.closeConns()
		return nil
	})
}
