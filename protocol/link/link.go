// Package link carries protocol frames between the daemons over real
// transports: UDP (one frame per datagram), TCP and serial devices (COBS
// stream framing, protocol.Writer and protocol.Reader), and a Mux over
// several links.
//
// Every link has the same small contract (Link): Send never blocks for long
// and fails at once with ErrDown while the link is down (the frame is lost,
// as on a radio link: the transfer engine resends what matters); Recv
// returns whole frames and counts, never returns, the records that fail
// deframing. Links that connect (TCP, serial) reconnect on their own with
// exponential backoff, so a daemon opens its links once and uses them for
// its lifetime. Frames are not decoded here: a frame that deframes but does
// not decode is the codec's business.
package link

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
)

// Link carries whole frames.
type Link interface {
	// Send transmits one frame (a whole protocol frame). It does not block
	// for long: a link that is down returns ErrDown (wrapped) at once; the
	// frame is lost, as on radio.
	Send(ctx context.Context, frame []byte) error
	// Recv returns the next frame received; it blocks until one arrives,
	// ctx ends or the link is closed (ErrClosed). Frames that fail stream
	// deframing are counted, not returned. The frame belongs to the caller.
	Recv(ctx context.Context) ([]byte, error)
	MaxFrame() int // the largest frame this link carries
	Name() string  // for logs, counters and telemetry ("uhf", "sband")
	Close() error
}

// Peer names where a frame came from: the source address of a datagram or
// the accepted connection of a stream listener. The zero Peer is "the only
// peer there is" (a dialer, a device). It is opaque and comparable: the
// daemon hands it back to Answer once the frame authenticated.
type Peer struct {
	addr netip.AddrPort // a UDP listener: the datagram's source
	conn uint64         // a TCP listener: the accepted connection's number
}

// IsZero reports whether p is the zero Peer.
func (p Peer) IsZero() bool { return p == Peer{} }

// String is for logs.
func (p Peer) String() string {
	switch {
	case p.conn != 0:
		return fmt.Sprintf("conn#%d", p.conn)
	case p.addr.IsValid():
		return p.addr.String()
	}
	return "peer"
}

// PeerLink is a Link that can hear more than one peer: every link of this
// package (a listener hears anyone who can reach it; a dialer or device
// only ever reports the zero Peer). A listener never lets an unauthenticated
// frame choose whom it answers: the caller authenticates what RecvFrom
// returns and calls Answer with the frame's Peer; until the first Answer a
// listener answers the last peer heard (UDP) or the newest connection
// (TCP), and from then on only Answer moves it.
type PeerLink interface {
	Link
	// RecvFrom is Recv that also says where the frame came from.
	RecvFrom(ctx context.Context) ([]byte, Peer, error)
	// Answer makes p the peer this link sends to: a frame from p
	// authenticated. A TCP listener keeps its current connection until
	// then. A Peer the link no longer knows (its connection closed) is
	// ignored.
	Answer(p Peer)
}

// Monitor is implemented by every link of this package (and the Mux): its
// state and counters.
type Monitor interface {
	Up() bool
	Stats() Stats
}

// Errors.
var (
	// ErrDown: the link is down (not connected, device absent, no peer heard
	// yet); the frame was not sent.
	ErrDown = errors.New("link: down")
	// ErrClosed: the link was closed.
	ErrClosed = errors.New("link: closed")
	// ErrConfig: the configuration is invalid.
	ErrConfig = errors.New("link: bad config")
)

// Stats are a link's counters since it was opened.
type Stats struct {
	Name          string
	Up            bool
	FramesIn      uint64
	BytesIn       uint64
	FramesOut     uint64
	BytesOut      uint64
	DeframeErrors uint64 // records skipped: too large, truncated, garbage
	SendDown      uint64 // frames Send refused with ErrDown
	Ups, Downs    uint64 // transitions
}

// Link kinds (Config.Kind).
const (
	KindUDP    = "udp"
	KindTCP    = "tcp"
	KindSerial = "serial"
)

// Defaults of Config.
const (
	DefaultMaxFrame       = 1024
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	DefaultWriteTimeout   = 2 * time.Second
	DefaultPendingTimeout = 30 * time.Second
	DefaultBaud           = 115200
)

// Config configures one link.
type Config struct {
	Name string // for logs and telemetry, 1..16 bytes
	Kind string // KindUDP, KindTCP or KindSerial
	// Listen is the local address (host:port) of a UDP or TCP listener.
	// For UDP with Peer set too, it is the local address to send from.
	Listen string
	// Peer is the address (host:port) of the UDP or TCP peer to dial.
	// Exactly one of Listen and Peer for TCP; at least one for UDP.
	Peer string
	// Device is the serial device's path; Baud its speed (default 115200).
	Device string
	Baud   int
	// MaxFrame is the largest frame, within [protocol.MinMaxFrame,
	// protocol.MaxMaxFrame] (default 1024). Both ends must agree.
	MaxFrame int

	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts of TCP dialers and serial devices (doubling from Min to Max).
	MinBackoff, MaxBackoff time.Duration
	// WriteTimeout bounds a Send on a stream link (default 2 s); a write
	// that times out drops the connection.
	WriteTimeout time.Duration
	// PendingTimeout bounds how long a TCP listener keeps a connection
	// that has not authenticated (see PeerLink; default 30 s).
	PendingTimeout time.Duration
	// OnState, if set, is called on every transition, up or down, from the
	// link's own goroutine (it must not block: e.g. queue an event).
	OnState func(name string, up bool)
	// After, if set, replaces time.After for backoff waits: tests fire the
	// waits themselves.
	After func(time.Duration) <-chan time.Time
}

// MaxNameLen bounds Config.Name (it travels in link_up/link_down events).
const MaxNameLen = 16

func (c *Config) setDefaults() error {
	if len(c.Name) == 0 || len(c.Name) > MaxNameLen {
		return fmt.Errorf("%w: name %q, want 1..%d bytes", ErrConfig, c.Name, MaxNameLen)
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	if c.MaxFrame < protocol.MinMaxFrame || c.MaxFrame > protocol.MaxMaxFrame {
		return fmt.Errorf("%w: %s: max frame %d out of [%d, %d]", ErrConfig, c.Name, c.MaxFrame, protocol.MinMaxFrame, protocol.MaxMaxFrame)
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.PendingTimeout <= 0 {
		c.PendingTimeout = DefaultPendingTimeout
	}
	if c.Baud == 0 {
		c.Baud = DefaultBaud
	}
	if c.After == nil {
		c.After = time.After
	}
	switch c.Kind {
	case KindUDP:
		if c.Listen == "" && c.Peer == "" {
			return fmt.Errorf("%w: %s: udp needs listen or peer", ErrConfig, c.Name)
		}
	case KindTCP:
		if (c.Listen == "") == (c.Peer == "") {
			return fmt.Errorf("%w: %s: tcp needs exactly one of listen and peer", ErrConfig, c.Name)
		}
	case KindSerial:
		if c.Device == "" {
			return fmt.Errorf("%w: %s: serial needs a device", ErrConfig, c.Name)
		}
	default:
		return fmt.Errorf("%w: %s: kind %q, want udp, tcp or serial", ErrConfig, c.Name, c.Kind)
	}
	return nil
}

// Open opens the link cfg describes. A listener is bound before Open
// returns (so a bad address fails here); dialers and devices connect in the
// background, and the link is down until they do.
func Open(cfg Config) (Link, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	switch cfg.Kind {
	case KindUDP:
		return openUDP(cfg)
	case KindTCP:
		return openTCP(cfg)
	}
	return openSerial(cfg)
}

// base is what every link shares: the receive queue, state and counters.
type base struct {
	cfg     Config
	recv    chan rxFrame
	done    chan struct{}
	closeMu sync.Once
	wg      sync.WaitGroup
	up      atomic.Bool
	stateMu sync.Mutex // orders transitions and their callbacks

	framesIn, bytesIn, framesOut, bytesOut, deframeErrs, sendDown, ups, downs atomic.Uint64
}

func newBase(cfg Config) *base {
	return &base{cfg: cfg, recv: make(chan rxFrame, 16), done: make(chan struct{})}
}

type rxFrame struct {
	frame []byte
	peer  Peer
}

func (b *base) Name() string  { return b.cfg.Name }
func (b *base) MaxFrame() int { return b.cfg.MaxFrame }
func (b *base) Up() bool      { return b.up.Load() }

// Stats implements Monitor.
func (b *base) Stats() Stats {
	return Stats{
		Name: b.cfg.Name, Up: b.up.Load(),
		FramesIn: b.framesIn.Load(), BytesIn: b.bytesIn.Load(),
		FramesOut: b.framesOut.Load(), BytesOut: b.bytesOut.Load(),
		DeframeErrors: b.deframeErrs.Load(), SendDown: b.sendDown.Load(),
		Ups: b.ups.Load(), Downs: b.downs.Load(),
	}
}

// Recv implements Link.
func (b *base) Recv(ctx context.Context) ([]byte, error) {
	f, _, err := b.RecvFrom(ctx)
	return f, err
}

// RecvFrom implements PeerLink.
func (b *base) RecvFrom(ctx context.Context) ([]byte, Peer, error) {
	select {
	case f := <-b.recv:
		return f.frame, f.peer, nil
	case <-ctx.Done():
		return nil, Peer{}, ctx.Err()
	case <-b.done:
		return nil, Peer{}, fmt.Errorf("%w: %s", ErrClosed, b.cfg.Name)
	}
}

// deliver queues a copy of frame for Recv, waiting while the queue is full
// (back pressure onto the socket or device, whose own buffer then drops
// or stalls as its kind does). It returns false once the link is closed.
func (b *base) deliver(frame []byte, from Peer) bool {
	f := append([]byte(nil), frame...)
	// Counted before it is queued, so that Stats after a Recv counts it.
	b.framesIn.Add(1)
	b.bytesIn.Add(uint64(len(f)))
	select {
	case b.recv <- rxFrame{f, from}:
		return true
	case <-b.done:
		return false
	}
}

// setUp records a transition; it is a no-op if the state does not change.
func (b *base) setUp(up bool) {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	if b.up.Swap(up) == up {
		return
	}
	if up {
		b.ups.Add(1)
	} else {
		b.downs.Add(1)
	}
	if b.cfg.OnState != nil {
		b.cfg.OnState(b.cfg.Name, up)
	}
}

// checkSend is the common prologue of Send.
func (b *base) checkSend(ctx context.Context, frame []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-b.done:
		return fmt.Errorf("%w: %s", ErrClosed, b.cfg.Name)
	default:
	}
	if len(frame) > b.cfg.MaxFrame {
		return fmt.Errorf("link: %s: %w: %d bytes, max %d", b.cfg.Name, protocol.ErrFrameTooLarge, len(frame), b.cfg.MaxFrame)
	}
	return nil
}

func (b *base) errDown(why string) error {
	b.sendDown.Add(1)
	return fmt.Errorf("%w: %s: %s", ErrDown, b.cfg.Name, why)
}

func (b *base) sent(n int) {
	b.framesOut.Add(1)
	b.bytesOut.Add(uint64(n))
}

// closed reports whether Close was called.
func (b *base) closed() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// wait waits d (through cfg.After) or until Close; false if closed.
func (b *base) wait(d time.Duration) bool {
	select {
	case <-b.cfg.After(d):
		return true
	case <-b.done:
		return false
	}
}

// backoff doubles d up to the configured maximum.
func (b *base) backoff(d time.Duration) time.Duration {
	return min(2*d, b.cfg.MaxBackoff)
}

// shut closes done once and runs release, then waits for the goroutines.
func (b *base) shut(release func() error) error {
	var err error
	b.closeMu.Do(func() {
		close(b.done)
		err = release()
	})
	b.wg.Wait()
	return err
}

// Every link of this package can say where a frame came from.
var (
	_ PeerLink = (*udpLink)(nil)
	_ PeerLink = (*tcpLink)(nil)
	_ PeerLink = (*serialLink)(nil)
)
