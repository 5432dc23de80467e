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
// while it holds a connection.
type streamLink struct {
	*base
	mu   sync.Mutex
	conn stream // nil while down
	w    *protocol.Writer
}

// stream is a connection: net.Conn or the *os.File of a device.
type stream interface {
	io.ReadWriteCloser
	SetWriteDeadline(time.Time) error
}

// serve runs one connection until it fails: installs it, reads frames from
// it, and takes it down. It returns false if the link was closed.
func (l *streamLink) serve(c stream) bool {
	l.mu.Lock()
	if l.closed() {
		l.mu.Unlock()
		c.Close()
		return false
	}
	l.conn, l.w = c, protocol.NewWriter(c, l.cfg.MaxFrame)
	l.mu.Unlock()
	l.setUp(true)
	r := protocol.NewReader(c, l.cfg.MaxFrame)
	open := true
	for open {
		frame, err := r.ReadFrame()
		switch {
		case err == nil:
			open = l.deliver(frame)
		case errors.Is(err, protocol.ErrFrameTooLarge), errors.Is(err, protocol.ErrTruncated), errors.Is(err, protocol.ErrStreamGarbage):
			l.deframeErrs.Add(1)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				open = false // the stream ended inside a record
			}
		default:
			open = false // EOF, reset, device gone, closed
		}
	}
	l.drop(c)
	return !l.closed()
}

// drop takes connection c down if it is still the current one.
func (l *streamLink) drop(c stream) {
	l.mu.Lock()
	cur := l.conn == c
	if cur {
		l.conn, l.w = nil, nil
	}
	l.mu.Unlock()
	c.Close()
	if cur {
		l.setUp(false)
	}
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
		l.drop(c)
		return l.errDown(err.Error())
	}
	l.sent(len(frame))
	return nil
}

// closeConn closes the current connection, if any (on Close).
func (l *streamLink) closeConn() {
	l.mu.Lock()
	c := l.conn
	l.mu.Unlock()
	if c != nil {
		c.Close()
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

// acceptLoop serves accepted connections; a new one replaces the current
// one (a peer that reconnects after losing its side of the connection must
// not wait for our side to time out).
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
		l.closeConn()
		serving.Add(1)
		go func() {
			defer serving.Done()
			l.serve(c)
		}()
	}
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
		l.closeConn()
		return err
	})
}
