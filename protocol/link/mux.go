package link

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// MuxConfig configures a Mux.
type MuxConfig struct {
	// Name of the mux, for logs (default "mux").
	Name string
	// SendAll sends every frame on every link that is up, instead of on the
	// first link that is up in the Mux's order of preference. (Duplicates
	// are harmless: the protocol drops them.)
	SendAll bool
}

// Mux is a Link over several links: Recv returns frames from all of them,
// Send uses the preferred link that is up (the first in order), or all of
// them. It keeps counters per link.
type Mux struct {
	cfg   MuxConfig
	links []Link
	in    []muxCount
	out   []muxCount
	recv  chan muxFrame
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	ctx   context.Context
	stop  context.CancelFunc
	max   int
}

type muxCount struct{ frames, bytes atomic.Uint64 }

type muxFrame struct {
	frame []byte
	link  int
}

// NewMux returns a Mux over links, in order of preference. It takes
// ownership of them: Close closes them.
func NewMux(cfg MuxConfig, links ...Link) (*Mux, error) {
	if len(links) == 0 {
		return nil, fmt.Errorf("%w: mux without links", ErrConfig)
	}
	if cfg.Name == "" {
		cfg.Name = "mux"
	}
	m := &Mux{cfg: cfg, links: links, in: make([]muxCount, len(links)), out: make([]muxCount, len(links)),
		recv: make(chan muxFrame), done: make(chan struct{}), max: links[0].MaxFrame()}
	m.ctx, m.stop = context.WithCancel(context.Background())
	names := map[string]bool{}
	for i, l := range links {
		if names[l.Name()] {
			return nil, fmt.Errorf("%w: mux: two links named %q", ErrConfig, l.Name())
		}
		names[l.Name()] = true
		// A frame may take any link: it must fit the smallest.
		m.max = min(m.max, l.MaxFrame())
		m.wg.Add(1)
		go m.pump(i)
	}
	return m, nil
}

func (m *Mux) pump(i int) {
	defer m.wg.Done()
	for {
		f, err := m.links[i].Recv(m.ctx)
		if err != nil {
			return // the mux or the link was closed
		}
		m.in[i].frames.Add(1)
		m.in[i].bytes.Add(uint64(len(f)))
		select {
		case m.recv <- muxFrame{f, i}:
		case <-m.done:
			return
		}
	}
}

// Recv implements Link.
func (m *Mux) Recv(ctx context.Context) ([]byte, error) {
	f, _, err := m.RecvFrom(ctx)
	return f, err
}

// RecvFrom is Recv that also says which link the frame came on.
func (m *Mux) RecvFrom(ctx context.Context) ([]byte, string, error) {
	select {
	case f := <-m.recv:
		return f.frame, m.links[f.link].Name(), nil
	case <-ctx.Done():
		return nil, "", ctx.Err()
	case <-m.done:
		return nil, "", fmt.Errorf("%w: %s", ErrClosed, m.cfg.Name)
	}
}

// up reports whether l says it is up (a link that cannot say is assumed up).
func up(l Link) bool {
	if mon, ok := l.(Monitor); ok {
		return mon.Up()
	}
	return true
}

// Send implements Link. It returns ErrDown if no link took the frame; with
// SendAll, nil if at least one did.
func (m *Mux) Send(ctx context.Context, frame []byte) error {
	select {
	case <-m.done:
		return fmt.Errorf("%w: %s", ErrClosed, m.cfg.Name)
	default:
	}
	var errs []error
	sent := false
	for i, l := range m.links {
		if !up(l) {
			continue
		}
		err := l.Send(ctx, frame)
		if err != nil {
			if !errors.Is(err, ErrDown) && !m.cfg.SendAll {
				return err
			}
			errs = append(errs, err)
			continue
		}
		m.out[i].frames.Add(1)
		m.out[i].bytes.Add(uint64(len(frame)))
		sent = true
		if !m.cfg.SendAll {
			return nil
		}
	}
	if sent {
		return nil
	}
	return fmt.Errorf("%w: %s: no link took the frame: %w", ErrDown, m.cfg.Name, errors.Join(errs...))
}

// MaxFrame implements Link: the smallest of the links' (a frame may take
// any of them).
func (m *Mux) MaxFrame() int { return m.max }

// Name implements Link.
func (m *Mux) Name() string { return m.cfg.Name }

// Up reports whether any link is up.
func (m *Mux) Up() bool {
	for _, l := range m.links {
		if up(l) {
			return true
		}
	}
	return false
}

// Stats returns each link's counters, in the Mux's order. Frames and bytes
// in and out are the Mux's own counts (what it received from and sent on
// the link); deframing errors, refused sends and transitions come from the
// link when it is a Monitor.
func (m *Mux) Stats() []Stats {
	s := make([]Stats, len(m.links))
	for i, l := range m.links {
		if mon, ok := l.(Monitor); ok {
			s[i] = mon.Stats()
		}
		s[i].Name, s[i].Up = l.Name(), up(l)
		s[i].FramesIn, s[i].BytesIn = m.in[i].frames.Load(), m.in[i].bytes.Load()
		s[i].FramesOut, s[i].BytesOut = m.out[i].frames.Load(), m.out[i].bytes.Load()
	}
	return s
}

// Close closes the Mux and every link.
func (m *Mux) Close() error {
	var errs []error
	m.once.Do(func() {
		close(m.done)
		m.stop()
		for _, l := range m.links {
			errs = append(errs, l.Close())
		}
	})
	m.wg.Wait()
	return errors.Join(errs...)
}
