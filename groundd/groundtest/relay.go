package groundtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"
)

// Relay carries frames between two loopback UDP sockets, the ground's and
// the vehicle's, through a third, losing each frame with probability Loss
// from its own seeded generator. It works in lockstep: Up and Down send a
// batch and return what arrived at the other end, so that a test over real
// sockets is as deterministic as one over a simulated link (loopback UDP
// neither drops nor reorders a batch that fits the socket buffers).
type Relay struct {
	Ground, Vehicle, relay *net.UDPConn
	rng                    *rand.Rand
	// Loss is the probability that a frame is lost, each way.
	Loss float64
	// Up reports whether the link is up: frames sent while it is down are
	// all lost.
	Link bool
	// Counters.
	UpSent, UpLost, DownSent, DownLost int
	// Timeout bounds a read of a frame known to be on its way (a safety
	// net: on loopback frames arrive in microseconds).
	Timeout time.Duration
	buf     []byte
}

// NewRelay opens three loopback sockets.
func NewRelay(seed uint64, loss float64, maxFrame int) (*Relay, error) {
	r := &Relay{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), Loss: loss, Timeout: 10 * time.Second, buf: make([]byte, maxFrame+1)}
	for _, c := range []**net.UDPConn{&r.Ground, &r.Vehicle, &r.relay} {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			r.Close()
			return nil, err
		}
		_ = conn.SetReadBuffer(4 << 20)
		*c = conn
	}
	return r, nil
}

// Close closes the sockets.
func (r *Relay) Close() error {
	var errs []error
	for _, c := range []*net.UDPConn{r.Ground, r.Vehicle, r.relay} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Up sends frames from the ground's socket and returns those the vehicle's
// socket received.
func (r *Relay) Up(frames [][]byte) ([][]byte, error) {
	out, lost, err := r.carry(r.Ground, r.Vehicle, frames)
	r.UpSent += len(frames)
	r.UpLost += lost
	return out, err
}

// Down sends frames from the vehicle's socket and returns those the
// ground's socket received.
func (r *Relay) Down(frames [][]byte) ([][]byte, error) {
	out, lost, err := r.carry(r.Vehicle, r.Ground, frames)
	r.DownSent += len(frames)
	r.DownLost += lost
	return out, err
}

func (r *Relay) carry(from, to *net.UDPConn, frames [][]byte) ([][]byte, int, error) {
	raddr := r.relay.LocalAddr().(*net.UDPAddr)
	for _, f := range frames {
		if _, err := from.WriteToUDP(f, raddr); err != nil {
			return nil, 0, fmt.Errorf("groundtest: relay: %w", err)
		}
	}
	var kept int
	for range frames {
		n, err := r.read(r.relay)
		if err != nil {
			return nil, 0, err
		}
		if !r.Link || r.rng.Float64() < r.Loss {
			continue
		}
		if _, err := r.relay.WriteToUDP(r.buf[:n], to.LocalAddr().(*net.UDPAddr)); err != nil {
			return nil, 0, fmt.Errorf("groundtest: relay: %w", err)
		}
		kept++
	}
	out := make([][]byte, 0, kept)
	for range kept {
		n, err := r.read(to)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, append([]byte(nil), r.buf[:n]...))
	}
	return out, len(frames) - kept, nil
}

func (r *Relay) read(c *net.UDPConn) (int, error) {
	if err := c.SetReadDeadline(time.Now().Add(r.Timeout)); err != nil {
		return 0, err
	}
	n, _, err := c.ReadFromUDP(r.buf)
	if err != nil {
		return 0, fmt.Errorf("groundtest: relay: a frame on its way did not arrive: %w", err)
	}
	return n, nil
}
