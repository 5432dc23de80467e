package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
)

// streamLink carries COBS-framed frames over a byte stream that comes and
// goes: a TCP connection (dialed or accepted) or a serial device. It is up
// while it holds a current connection. A TCP listener also holds pending
// connections: accepted after the first Answer, read (their frames carry
// their Peer), but not answered until a frame from one authenticates and
// Answer makes it current.
type streamLink struct {
	*base
	mu      sync.Mutex
	conn    stream // the current connection; nil while down
	connID  uint64 // its number (0: a dialed connection or a device)
	w       *protocol.Writer
	trusted bool              // Answer was called: new connections wait in pending
	pending map[uint64]stream // accepted, not yet answered
	nextID  uint64            // the last connection number given
}

// stream is a connection: net.Conn or the *os.File of a device.
type stream interface {
	io.ReadWriteCloser
	SetWriteDeadline(time.Time) error
}

// serve runs one connection as the current one until it fails. It returns
// false if the link was closed.
func (l *streamLink) serve(c stream) bool {
	if !l.install(c, 0) {
		return false
	}
	l.read(c, 0)
	return !l.closed()
}

// install makes c the current connection, closing the one it replaces.
// It returns false (and closes c) if the link was closed.
func (l *streamLink) install(c stream, id uint64) bool {
	l.mu.Lock()
	if l.closed() {
		l.mu.Unlock()
		c.Close()
		return false
	}
	old := l.conn
	l.conn, l.connID, l.w = c, id, protocol.NewWriter(c, l.cfg.MaxFrame)
	l.mu.Unlock()
	if old != nil {
		old.Close() // its reader drops it; not current, no transition
	}
	l.setUp(true)
	return true
}

// read delivers c's frames, each from Peer{conn: id}, until c fails, then
// drops it.
func (l *streamLink) read(c stream, id uint64) {
	r := protocol.NewReader(c, l.cfg.MaxFrame)
	from := Peer{conn: id}
	open := true
	for open {
		frame, err := r.ReadFrame()
		switch {
		case err == nil:
			open = l.deliver(frame, from)
		case errors.Is(err, protocol.ErrFrameTooLarge), errors.Is(err, protocol.ErrTruncated), errors.Is(err, protocol.ErrStreamGarbage):
			l.deframeErrs.Add(1)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				open = false // the stream ended inside a record
			}
		default:
			open = false // EOF, reset, device gone, closed, pending timeout
		}
	}
	l.drop(c, id)
}

// drop takes connection c down if it is still the current one, and
// forgets it if it is pending.
func (l *streamLink) drop(c stream, id uint64) {
	l.mu.Lock()
	cur := l.conn == c
	if cur {
		l.conn, l.connID, l.w = nil, 0, nil
	}
	if id != 0 && l.pending[id] == c {
		delete(l.pending, id)
	}
	l.mu.Unlock()
	c.Close()
	if cur {
		l.setUp(false)
	}
}

// Answer implements PeerLink: the connection p becomes the current one
// (the one it replaces is closed); from the first Answer on, accepted
// connections wait until Answer names them.
func (l *streamLink) Answer(p Peer) {
	if p.conn == 0 {
		return
	}
	l.mu.Lock()
	l.trusted = true
	c, ok := l.pending[p.conn]
	if !ok {
		l.mu.Unlock()
		return // already current, or gone
	}
	delete(l.pending, p.conn)
	l.mu.Unlock()
	if nc, ok := c.(net.Conn); ok {
		nc.SetReadDeadline(time.Time{}) // current: no pending timeout
	}
	l.install(c, p.conn)
}

// Send implements Link.
func (l *streamLink) Send(ctx context.Context, frame []byte) error {
	if err := l.checkSend(ctx, frame); err != nil {
		return err
	}
	l.mu.Lock()
	c, w := l.conn, l.w
	if c == nil {
		l.mu.Unlock()
		return l.errDown("not connected")
	}
	deadline := time.Now().Add(l.cfg.WriteTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetWriteDeadline(deadline)
	err := w.WriteFrame(frame)
	l.mu.Unlock()
	if err != nil {
		// A failed or partial write leaves the peer mid-record: drop the
		// connection (its reader resynchronises on the next one).
		l.drop(c, 0)
		return l.errDown(err.Error())
	}
	l.sent(len(frame))
	return nil
}

// closeConns closes the current and the pending connections (on Close).
func (l *streamLink) closeConns() {
	l.mu.Lock()
	cs := []stream{l.conn}
	for _, c := range l.pending {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}

// tcpLink is a TCP dialer or listener.
type tcpLink struct {
	streamLink
	ln     net.Listener       // listener side
	cancel context.CancelFunc // dialer side: stops a dial in progress
}

func openTCP(cfg Config) (*tcpLink, error) {
	l := &tcpLink{streamLink: streamLink{base: newBase(cfg)}}
	if cfg.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("link: %s: %w", cfg.Name, err)
		}
		l.ln = ln
		l.wg.Add(1)
		go l.acceptLoop()
		return l, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.wg.Add(1)
	go l.dialLoop(ctx)
	return l, nil
}

// Addr returns the listener's address (nil for a dialer).
func (l *tcpLink) Addr() net.Addr {
	if l.ln == nil {
		return nil
	}
	return l.ln.Addr()
}

// dialLoop keeps a connection to the peer: after a drop it redials at once,
// then backs off while dials fail.
func (l *tcpLink) dialLoop(ctx context.Context) {
	defer l.wg.Done()
	var d net.Dialer
	wait := l.cfg.MinBackoff
	for !l.closed() {
		c, err := d.DialContext(ctx, "tcp", l.cfg.Peer)
		if err != nil {
			if !l.wait(wait) {
				return
			}
			wait = l.backoff(wait)
			continue
		}
		wait = l.cfg.MinBackoff
		if !l.serve(c) {
			return
		}
	}
}

// MaxPending bounds the connections a TCP listener holds pending; a new
// one beyond it closes the oldest pending one.
const MaxPending = 4

// acceptLoop serves accepted connections. Until the first Answer a new one
// replaces the current one (a peer that reconnects after losing its side
// of the connection must not wait for our side to time out). From then on
// a new connection is pending: read, not answered, closed if it has not
// authenticated within PendingTimeout, and it replaces the current one
// only when Answer names it, so that whoever can connect cannot knock the
// authenticated peer off.
func (l *tcpLink) acceptLoop() {
	defer l.wg.Done()
	var serving sync.WaitGroup
	defer serving.Wait()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.closed() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if !l.wait(l.cfg.MinBackoff) { // e.g. out of file descriptors
				return
			}
			continue
		}
		id, ok := l.admit(c)
		if !ok {
			return
		}
		serving.Add(1)
		go func() {
			defer serving.Done()
			l.read(c, id)
		}()
	}
}

// admit numbers an accepted connection and makes it current (before the
// first Answer) or pending. It returns false if the link was closed.
func (l *tcpLink) admit(c net.Conn) (uint64, bool) {
	l.mu.Lock()
	l.nextID++
	id := l.nextID
	if !l.trusted {
		l.mu.Unlock()
		return id, l.install(c, id)
	}
	if l.closed() {
		l.mu.Unlock()
		c.Close()
		return 0, false
	}
	if l.pending == nil {
		l.pending = map[uint64]stream{}
	}
	var evict stream
	if len(l.pending) >= MaxPending {
		oldest := uint64(0)
		for pid := range l.pending {
			if oldest == 0 || pid < oldest {
				oldest = pid
			}
		}
		evict = l.pending[oldest]
		delete(l.pending, oldest)
	}
	l.pending[id] = c
	l.mu.Unlock()
	if evict != nil {
		evict.Close()
	}
	c.SetReadDeadline(time.Now().Add(l.cfg.PendingTimeout))
	return id, true
}

// Close implements Link.
func (l *tcpLink) Close() error {
	return l.shut(func() error {
		var err error
		if l.ln != nil {
			err = l.ln.Close()
		}
		if l.cancel != nil {
			l.cancel()
		}
		l.closeConns()
		return err
	})
}
