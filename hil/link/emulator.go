package link

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a UDP emulator (New).
type Config struct {
	// Spec is the link: Profile(name) with overrides.
	Spec Spec
	// Seed seeds every random decision of the model; log it to replay a
	// run's faults (the frames' arrival times are the wall clock's).
	Seed uint64
	// ListenA and ListenB are the emulator's own addresses: the ground
	// side sends to ListenA, the vehicle side to ListenB. Empty:
	// 127.0.0.1 with a port of the system's choice (AddrA, AddrB).
	ListenA, ListenB string
	// A and B are the endpoints: the ground's and the vehicle's UDP
	// addresses, where frames leaving the link are sent. Empty: the
	// source of the first datagram on that side (as a NAT learns it).
	// Datagrams on a side from any other address are counted as
	// strangers and dropped: the link has two ends.
	A, B string
	// Log receives link up/down and endpoint events; nil: discarded.
	Log *slog.Logger
}

// Side names the two ends of the relay.
const (
	SideA = 0 // the ground: its frames go Forward
	SideB = 1 // the vehicle: its frames go Return
)

// port is one side of the relay: where that side's frames come in and
// where the other side's frames go out.
type port interface {
	// read blocks for the next frame from this side.
	read(buf []byte) (int, error)
	// write sends a frame leaving the link to this side's endpoint.
	write(p []byte) error
	close() error
}

// Emulator relays frames between two sides through the channel model, in
// real time. It is made by New (UDP) or NewIP (TUN devices in network
// namespaces) and runs once.
type Emulator struct {
	log     *slog.Logger
	seed    uint64
	ports   [2]port
	cleanup func() error // after the ports are closed (NewIP's namespaces)
	udp     [2]*udpPort  // nil for NewIP

	mu    sync.Mutex
	model *Model
	extra [2]struct{ strangers, undeliverable int64 } // by direction

	subMu sync.Mutex
	state LinkState
	subs  map[*chan LinkState]struct{}
	ended bool

	ran       atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

func newEmulator(spec Spec, seed uint64, log *slog.Logger) (*Emulator, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := NewModel(spec, rand.New(rand.NewPCG(seed, seed^0x6c696e6b)), time.Now())
	if err != nil {
		return nil, err
	}
	e := &Emulator{log: log, seed: seed, model: m, subs: map[*chan LinkState]struct{}{}}
	e.state = m.State(m.start)
	return e, nil
}

// New binds the two UDP sockets of a relay between the ground side and
// the vehicle side. Call Run to relay, or Close to give up.
func New(cfg Config) (*Emulator, error) {
	e, err := newEmulator(cfg.Spec, cfg.Seed, cfg.Log)
	if err != nil {
		return nil, err
	}
	for side, addrs := range [2][2]string{{cfg.ListenA, cfg.A}, {cfg.ListenB, cfg.B}} {
		p, err := newUDPPort(addrs[0], addrs[1])
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("link: side %c: %w", 'A'+side, err)
		}
		e.udp[side], e.ports[side] = p, p
	}
	return e, nil
}

// AddrA is the address the ground side sends to (the zero AddrPort for
// an IP emulator).
func (e *Emulator) AddrA() netip.AddrPort { return e.udp[SideA].local() }

// AddrB is the address the vehicle side sends to (the zero AddrPort for
// an IP emulator).
func (e *Emulator) AddrB() netip.AddrPort { return e.udp[SideB].local() }

// Seed is the model's seed.
func (e *Emulator) Seed() uint64 { return e.seed }

// Spec is the emulated link.
func (e *Emulator) Spec() Spec { return e.model.Spec() }

// Stats returns the counters so far: the model's, and per direction the
// datagrams refused because they came from a stranger and the frames the
// model delivered that could not be written (no endpoint known yet, or
// the write failed).
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.model.Stats()
	s.Forward.Strangers, s.Forward.Undeliverable = e.extra[Forward].strangers, e.extra[Forward].undeliverable
	s.Return.Strangers, s.Return.Undeliverable = e.extra[Return].strangers, e.extra[Return].undeliverable
	return s
}

// Up returns the announced link state (AOS/LOS): what a ground station
// would know from its pass predictions.
func (e *Emulator) Up() LinkState {
	e.subMu.Lock()
	defer e.subMu.Unlock()
	return e.state
}

// Subscribe returns a channel that receives the link state now and every
// time it changes, and a function that ends the subscription. A slow
// reader misses intermediate states, never the latest. The channel is
// closed when Run returns or the subscription ends.
func (e *Emulator) Subscribe() (<-chan LinkState, func()) {
	ch := make(chan LinkState, 1)
	e.subMu.Lock()
	defer e.subMu.Unlock()
	if e.ended {
		close(ch)
		return ch, func() {}
	}
	ch <- e.state
	e.subs[&ch] = struct{}{}
	return ch, func() {
		e.subMu.Lock()
		defer e.subMu.Unlock()
		if _, ok := e.subs[&ch]; ok {
			delete(e.subs, &ch)
			close(ch)
		}
	}
}

func (e *Emulator) publish(st LinkState) {
	e.subMu.Lock()
	defer e.subMu.Unlock()
	if st == e.state {
		return
	}
	e.state = st
	e.log.Info("link state", "forward", st.Forward, "return", st.Return)
	for ch := range e.subs {
		select {
		case <-*ch:
		default:
		}
		*ch <- st
	}
}

func (e *Emulator) endSubscriptions() {
	e.subMu.Lock()
	defer e.subMu.Unlock()
	e.ended = true
	for ch := range e.subs {
		delete(e.subs, ch)
		close(*ch)
	}
}

type inbound struct {
	dir  Dir
	data []byte
}

// ErrRan is returned by a second Run.
var ErrRan = errors.New("link: emulator already ran")

// Run relays until ctx is done, then closes the sockets (and for NewIP
// removes the namespaces) and returns nil; or returns the error that
// stopped it. The schedule starts when Run does.
func (e *Emulator) Run(ctx context.Context) (err error) {
	if !e.ran.CompareAndSwap(false, true) {
		return ErrRan
	}
	defer func() {
		if cerr := e.Close(); err == nil {
			err = cerr
		}
	}()
	defer e.endSubscriptions()
	ctx, cancel := context.WithCancel(ctx)
	in := make(chan inbound, 1024)
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	defer func() {
		// Unblock the readers (a read on a closed socket fails, a
		// cancelled context stops a hand-off) before waiting for them.
		cancel()
		e.closePorts()
		wg.Wait()
	}()
	for side := range e.ports {
		wg.Go(func() { e.readLoop(ctx, side, in, errc) })
	}
	e.mu.Lock()
	e.model.start = time.Now()
	e.mu.Unlock()
	e.log.Info("link emulator running", "profile", e.model.spec.Name, "seed", e.seed)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var out []Delivery
	for {
		now := time.Now()
		e.mu.Lock()
		out = out[:0]
		for {
			d, ok := e.model.Deliver(now)
			if !ok {
				break
			}
			out = append(out, d)
		}
		st := e.model.State(now)
		wake := now.Add(time.Hour)
		if t, ok := e.model.Next(); ok && t.Before(wake) {
			wake = t
		}
		if t, ok := e.model.NextChange(now); ok && t.Before(wake) {
			wake = t
		}
		e.mu.Unlock()
		for _, d := range out {
			to := SideB
			if d.Dir == Return {
				to = SideA
			}
			if err := e.ports[to].write(d.Data); err != nil {
				e.mu.Lock()
				e.extra[d.Dir].undeliverable++
				e.mu.Unlock()
				e.log.Debug("link: frame not written", "dir", d.Dir, "err", err)
			}
		}
		e.publish(st)
		timer.Reset(max(time.Until(wake), 0))
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case f := <-in:
			e.mu.Lock()
			e.model.Send(f.dir, time.Now(), f.data)
			e.mu.Unlock()
		case <-timer.C:
		}
	}
}

// errStranger is returned by a port's read for a datagram from neither
// endpoint; the read loop counts it and goes on.
var errStranger = errors.New("link: datagram from a stranger")

func (e *Emulator) readLoop(ctx context.Context, side int, in chan<- inbound, errc chan<- error) {
	dir := Forward
	if side == SideB {
		dir = Return
	}
	buf := make([]byte, 1<<16)
	for {
		n, err := e.ports[side].read(buf)
		if errors.Is(err, errStranger) {
			e.mu.Lock()
			e.extra[dir].strangers++
			e.mu.Unlock()
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				errc <- fmt.Errorf("link: side %c: %w", 'A'+side, err)
			}
			return
		}
		select {
		case in <- inbound{dir: dir, data: append([]byte(nil), buf[:n]...)}:
		case <-ctx.Done():
			return
		}
	}
}

func (e *Emulator) closePorts() error {
	var errs []error
	for _, p := range e.ports {
		if p != nil {
			errs = append(errs, p.close())
		}
	}
	return errors.Join(errs...)
}

// Close releases the sockets (and NewIP's devices and namespaces) of an
// emulator that did not run or stop Run's relaying. Run calls it on its
// way out; it is safe to call more than once.
func (e *Emulator) Close() error {
	e.closeOnce.Do(func() {
		err := e.closePorts()
		if e.cleanup != nil {
			err = errors.Join(err, e.cleanup())
		}
		e.closeErr = err
	})
	return e.closeErr
}

// udpPort is a side of a UDP relay.
type udpPort struct {
	conn   *net.UDPConn
	mu     sync.Mutex
	peer   netip.AddrPort // the endpoint; invalid until learned
	closed atomic.Bool
}

func newUDPPort(listen, peer string) (*udpPort, error) {
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	la, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, err
	}
	p := &udpPort{}
	if peer != "" {
		pa, err := net.ResolveUDPAddr("udp", peer)
		if err != nil {
			return nil, err
		}
		p.peer = unmap(pa.AddrPort())
	}
	if p.conn, err = net.ListenUDP("udp", la); err != nil {
		return nil, err
	}
	return p, nil
}

// unmap turns IPv4-mapped IPv6 addresses into IPv4 ones, so that the
// endpoint given and the source seen compare equal.
func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func (p *udpPort) local() netip.AddrPort {
	if p == nil {
		return netip.AddrPort{}
	}
	return unmap(p.conn.LocalAddr().(*net.UDPAddr).AddrPort())
}

func (p *udpPort) read(buf []byte) (int, error) {
	n, from, err := p.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return 0, err
	}
	from = unmap(from)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.peer.IsValid() {
		p.peer = from
	} else if p.peer != from {
		return 0, errStranger
	}
	return n, nil
}

var errNoPeer = errors.New("link: endpoint not known yet")

func (p *udpPort) write(b []byte) error {
	p.mu.Lock()
	peer := p.peer
	p.mu.Unlock()
	if !peer.IsValid() {
		return errNoPeer
	}
	_, err := p.conn.WriteToUDPAddrPort(b, peer)
	return err
}

func (p *udpPort) close() error {
	if p.closed.Swap(true) {
		return nil
	}
	return p.conn.Close()
}
