package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/bootorbit/bootorbit/protocol"
)

// udpLink carries one frame per datagram. A dialer (Peer set) sends to and
// hears only its peer (a connected socket). A listener answers the last
// address it heard a datagram from until the first Answer; from then on it
// answers only the address last named by Answer (a frame from it
// authenticated), so a datagram from anyone else cannot divert the answers.
// Until it has a peer, Send is ErrDown.
type udpLink struct {
	*base
	conn    *net.UDPConn
	mu      sync.Mutex
	peer    *net.UDPAddr // listener: whom Send answers; dialer: nil (connected)
	trusted bool         // listener: Answer was called; only Answer moves peer
}

func openUDP(cfg Config) (*udpLink, error) {
	l := &udpLink{base: newBase(cfg)}
	var laddr *net.UDPAddr
	var err error
	if cfg.Listen != "" {
		if laddr, err = net.ResolveUDPAddr("udp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("%w: %s: listen %q: %v", ErrConfig, cfg.Name, cfg.Listen, err)
		}
	}
	if cfg.Peer != "" {
		raddr, err := net.ResolveUDPAddr("udp", cfg.Peer)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: peer %q: %v", ErrConfig, cfg.Name, cfg.Peer, err)
		}
		if l.conn, err = net.DialUDP("udp", laddr, raddr); err != nil {
			return nil, fmt.Errorf("link: %s: %w", cfg.Name, err)
		}
	} else if l.conn, err = net.ListenUDP("udp", laddr); err != nil {
		return nil, fmt.Errorf("link: %s: %w", cfg.Name, err)
	}
	if cfg.Peer != "" {
		// A datagram link has no connection to lose: a dialer is up from
		// the start, and stays up.
		l.setUp(true)
	}
	l.wg.Add(1)
	go l.readLoop()
	return l, nil
}

// Addr returns the local address (the bound port of a ":0" listener).
func (l *udpLink) Addr() net.Addr { return l.conn.LocalAddr() }

func (l *udpLink) readLoop() {
	defer l.wg.Done()
	pl := protocol.NewPacketLink(l.conn, l.cfg.MaxFrame)
	for {
		frame, addr, err := pl.ReadFrame()
		if err != nil {
			if l.closed() {
				return
			}
			if errors.Is(err, protocol.ErrFrameTooLarge) {
				l.deframeErrs.Add(1)
				continue
			}
			// ICMP errors (port unreachable) surface here on a connected
			// socket; the link stays usable.
			continue
		}
		var from Peer
		if l.cfg.Peer == "" {
			if ua, ok := addr.(*net.UDPAddr); ok {
				from.addr = ua.AddrPort()
				l.mu.Lock()
				first := !l.trusted
				if first {
					l.peer = ua
				}
				l.mu.Unlock()
				if first {
					l.setUp(true)
				}
			}
		}
		if !l.deliver(frame, from) {
			return
		}
	}
}

// Answer implements PeerLink: a listener answers p from now on.
func (l *udpLink) Answer(p Peer) {
	if l.cfg.Peer != "" || !p.addr.IsValid() {
		return
	}
	l.mu.Lock()
	l.peer, l.trusted = net.UDPAddrFromAddrPort(p.addr), true
	l.mu.Unlock()
	l.setUp(true)
}

// Send implements Link.
func (l *udpLink) Send(ctx context.Context, frame []byte) error {
	if err := l.checkSend(ctx, frame); err != nil {
		return err
	}
	var err error
	if l.cfg.Peer != "" {
		_, err = l.conn.Write(frame)
	} else {
		l.mu.Lock()
		peer := l.peer
		l.mu.Unlock()
		if peer == nil {
			return l.errDown("no peer heard yet")
		}
		_, err = l.conn.WriteToUDP(frame, peer)
	}
	if err != nil {
		if l.closed() {
			return fmt.Errorf("%w: %s", ErrClosed, l.cfg.Name)
		}
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
			return l.errDown(err.Error())
		}
		return fmt.Errorf("link: %s: %w", l.cfg.Name, err)
	}
	l.sent(len(frame))
	return nil
}

// Close implements Link.
func (l *udpLink) Close() error {
	return l.shut(func() error {
		l.setUp(false)
		return l.conn.Close()
	})
}
