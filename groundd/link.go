package groundd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// Link is the contract's link to a vehicle (protocol/link's interface):
// Send does not block for long and loses the frame when the link is down,
// Recv blocks for the next frame.
type Link interface {
	Send(ctx context.Context, frame []byte) error
	Recv(ctx context.Context) ([]byte, error)
	MaxFrame() int
	Name() string
	Close() error
}

// udpLink is a UDP link with a fixed peer: one frame per datagram. It
// stands in for protocol/link's UDP dialer until that package is on main,
// and takes the same configuration.
type udpLink struct {
	name     string
	conn     *net.UDPConn
	peer     *net.UDPAddr
	maxFrame int
	// Dropped counts datagrams refused: oversize, or not from the peer.
	Dropped atomic.Int64
}

// DialUDP opens a UDP link from listen ("" or "host:0": any port) to peer.
func DialUDP(name, listen, peer string, maxFrame int) (Link, error) {
	pa, err := net.ResolveUDPAddr("udp", peer)
	if err != nil {
		return nil, fmt.Errorf("groundd: link %s: peer: %w", name, err)
	}
	var la *net.UDPAddr
	if listen != "" {
		if la, err = net.ResolveUDPAddr("udp", listen); err != nil {
			return nil, fmt.Errorf("groundd: link %s: listen: %w", name, err)
		}
	}
	c, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, fmt.Errorf("groundd: link %s: %w", name, err)
	}
	return &udpLink{name: name, conn: c, peer: pa, maxFrame: maxFrame}, nil
}

func (l *udpLink) Send(ctx context.Context, frame []byte) error {
	if len(frame) > l.maxFrame {
		return fmt.Errorf("groundd: link %s: frame of %d bytes over %d", l.name, len(frame), l.maxFrame)
	}
	_, err := l.conn.WriteToUDP(frame, l.peer)
	return err
}

// recvPoll is how often a blocked Recv looks at its context.
const recvPoll = 200 * time.Millisecond

func (l *udpLink) Recv(ctx context.Context) ([]byte, error) {
	buf := make([]byte, l.maxFrame+1)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := l.conn.SetReadDeadline(time.Now().Add(recvPoll)); err != nil {
			return nil, err
		}
		n, from, err := l.conn.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return nil, err
		}
		// Frames from anyone but the peer, or too long, are not the
		// vehicle's: dropped before decoding.
		if n > l.maxFrame || !from.IP.Equal(l.peer.IP) || from.Port != l.peer.Port {
			l.Dropped.Add(1)
			continue
		}
		return append([]byte(nil), buf[:n]...), nil
	}
}

func (l *udpLink) MaxFrame() int { return l.maxFrame }
func (l *udpLink) Name() string  { return l.name }
func (l *udpLink) Close() error  { return l.conn.Close() }
