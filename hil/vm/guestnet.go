package vm

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/bootorbit/bootorbit/hil/link"
)

// FreeUDPPort returns a UDP port on 127.0.0.1 that was free a moment
// ago, for a QEMU hostfwd (QEMU binds it itself; another process could
// take it in between, which a test then reports as a failed start).
func FreeUDPPort() (int, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, fmt.Errorf("%w: free port: %w", ErrBoard, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// GuestLink is the emulated space link between a ground socket on the
// host and a UDP port in the guest: the guest's port is forwarded by
// QEMU's user network from a host port (Forward), and hil/link's
// Emulator relays between the ground (its side A) and that host port
// (side B, the vehicle).
type GuestLink struct {
	Emulator *link.Emulator
	Forward  UDPForward
}

// NewGuestLink binds the emulator for spec (seeded) in front of a fresh
// host port forwarded to guestPort. Run the emulator (Emulator.Run) for
// as long as the board runs; the ground sends to Emulator.AddrA().
func NewGuestLink(spec link.Spec, seed uint64, guestPort int) (*GuestLink, error) {
	hp, err := FreeUDPPort()
	if err != nil {
		return nil, err
	}
	e, err := link.New(link.Config{Spec: spec, Seed: seed, B: "127.0.0.1:" + strconv.Itoa(hp)})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoard, err)
	}
	return &GuestLink{Emulator: e, Forward: UDPForward{Host: hp, Guest: guestPort}}, nil
}

// EchoReport is the outcome of RunUDPEcho.
type EchoReport struct {
	Sent, Echoed int
	// FirstEcho is the host time from power-on to the first echo (the
	// guest booted and listening); RTTs are the round trips of the
	// echoes after it, across the emulated link.
	FirstEcho time.Duration
	RTTs      []time.Duration
	Stats     link.Stats
	Console   []Line
}

// guestEchoPort is the guest's UDP port in the echo scenario (flightd's
// default link port).
const guestEchoPort = 7400

// RunUDPEcho boots the board (direct kernel boot, no U-Boot) with a
// virtio-net interface, the guest's echo server on its UDP port, and the
// emulated link spec in front of it; the host sends n datagrams across
// the link one after the other (each resent every 200 ms until its echo
// comes: the first ones go out while the guest boots), then "bye", and
// the guest powers off. It shows the path flightd's uplink takes on the
// board: ground socket, link emulator, QEMU's UDP forward, virtio-net,
// a socket in the guest, and back.
func (b *Board) RunUDPEcho(ctx context.Context, spec link.Spec, seed uint64, n int) (*EchoReport, error) {
	gl, err := NewGuestLink(spec, seed, guestEchoPort)
	if err != nil {
		return nil, err
	}
	lctx, stopLink := context.WithCancel(ctx)
	linkDone := make(chan error, 1)
	go func() { linkDone <- gl.Emulator.Run(lctx) }()
	defer func() { stopLink(); <-linkDone }()
	ground, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("%w: ground socket: %w", ErrBoard, err)
	}
	defer ground.Close()
	to := net.UDPAddrFromAddrPort(gl.Emulator.AddrA())

	m := Machine{
		QEMU: b.QEMU, Kernel: b.Kernel.Image, Initrd: b.Initrd, Console: b.Console,
		Append:      fmt.Sprintf("bootorbit.scenario=udpecho bootorbit.ip=%s/%d bootorbit.port=%d", GuestIP, GuestPrefix, guestEchoPort),
		UDPForwards: []UDPForward{gl.Forward},
	}
	r := &EchoReport{}
	start := time.Now()
	hostErr := make(chan error, 1)
	go func() {
		hostErr <- func() error {
			buf := make([]byte, 65536)
			for i := 0; i <= n; i++ {
				msg := []byte(fmt.Sprintf("ping %d", i))
				if i == n {
					msg = []byte("bye")
				}
				want := append([]byte("echo "), msg...)
				for {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					sent := time.Now()
					if _, err := ground.WriteToUDP(msg, to); err != nil {
						return err
					}
					r.Sent++
					ground.SetReadDeadline(sent.Add(200 * time.Millisecond))
					got := false
					for {
						k, _, err := ground.ReadFromUDP(buf)
						if err != nil {
							break // deadline: resend
						}
						if bytes.Equal(buf[:k], want) {
							got = true
							break
						}
					}
					if got {
						r.Echoed++
						if r.FirstEcho == 0 {
							r.FirstEcho = time.Since(start)
						} else {
							r.RTTs = append(r.RTTs, time.Since(sent))
						}
						break
					}
				}
			}
			return nil
		}()
	}()
	lines, err := m.Run(ctx, func(l Line) bool {
		return l.Event != nil && (l.Event.Ev == "done" || l.Event.Ev == "error")
	})
	r.Console = lines
	r.Stats = gl.Emulator.Stats()
	if err != nil {
		return r, err
	}
	for _, l := range lines {
		if l.Event != nil && l.Event.Ev == "error" {
			return r, fmt.Errorf("%w: guest: %s", ErrBoard, l.Event.Err)
		}
	}
	select {
	case err := <-hostErr:
		if err != nil {
			return r, fmt.Errorf("%w: ground: %w", ErrBoard, err)
		}
	case <-time.After(5 * time.Second):
		return r, fmt.Errorf("%w: ground still waiting for echoes after the guest powered off", ErrBoard)
	}
	return r, nil
}
