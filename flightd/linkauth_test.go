package flightd

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/link"
	"github.com/bootorbit/bootorbit/slots"
)

// TestDaemonListenerNotDiverted: flightd on a real UDP or TCP listener on
// loopback. Once the ground was heard (a signed command), an attacker on
// loopback sending junk, an unsigned command, or opening its own
// connection does not divert what the vehicle sends: the rejection of the
// attacker's command and the next housekeeping go to the ground.
func TestDaemonListenerNotDiverted(t *testing.T) {
	for _, kind := range []string{link.KindUDP, link.KindTCP} {
		t.Run(kind, func(t *testing.T) {
			r := newDaemonRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
			veh, err := link.Open(link.Config{Name: "uhf", Kind: kind, Listen: "127.0.0.1:0", MaxFrame: 256})
			mustT(t, err)
			addr := veh.(interface{ Addr() net.Addr }).Addr().String()
			ups := make(chan bool, 16)
			ground, err := link.Open(link.Config{Name: "ground", Kind: kind, Peer: addr, MaxFrame: 256,
				OnState: func(_ string, up bool) { ups <- up }})
			mustT(t, err)
			defer ground.Close()
			// A TCP dialer connects in the background: wait until it is up.
			select {
			case <-ups:
			case <-time.After(20 * time.Second):
				t.Fatal("the ground's link did not come up")
			}

			ctx, cancel := context.WithCancel(context.Background())
			ready := make(chan func() Status, 1)
			done := make(chan error, 1)
			opt := Options{Log: discard, Clock: r.clock, Links: []Link{veh}, Updater: r.updater(slots.A), BootID: "boot-1",
				Reboot:   func(context.Context) error { return nil },
				RunCheck: func(context.Context, HealthCheck) error { return nil },
				Ready:    func(s func() Status) { ready <- s }}
			go func() { done <- Run(ctx, r.cfg, opt) }()
			select {
			case <-ready:
			case err := <-done:
				t.Fatalf("Run: %v", err)
			}
			defer func() { cancel(); <-done }()

			// recv returns the next message the ground hears, MAC-verified.
			recv := func(what string, ok func(protocol.Message) bool) protocol.Message {
				t.Helper()
				rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer rcancel()
				for {
					b, err := ground.Recv(rctx)
					if err != nil {
						t.Fatalf("ground: no %s: %v", what, err)
					}
					m, err := r.codec.Decode(b)
					mustT(t, err)
					mustT(t, r.ver.Verify(m))
					if ok(m) {
						return m
					}
				}
			}
			verification := func(seq uint64, stage protocol.Stage) {
				t.Helper()
				recv("verification", func(m protocol.Message) bool {
					v, ok := m.(*protocol.Verification)
					return ok && v.Seq == seq && v.Stage == stage
				})
			}
			send := func(l link.Link, c *protocol.Command) {
				t.Helper()
				b, err := r.codec.Encode(c)
				mustT(t, err)
				mustT(t, l.Send(context.Background(), b))
			}
			command := func(l link.Link, signed bool) *protocol.Command {
				t.Helper()
				def, _ := dict.CommandByName("noop")
				r.seq++
				c, err := def.NewCommand(testVehicle, r.seq, nil)
				mustT(t, err)
				if signed {
					mustT(t, protocol.SignCommand(c, 1, r.ground))
				}
				send(l, c)
				return c
			}

			c := command(ground, true)
			verification(c.Seq, protocol.StageCompleted)

			// The attacker: junk, then an unsigned command, on its own
			// socket or connection.
			var attacker net.Conn
			if kind == link.KindUDP {
				attacker, err = net.Dial("udp", addr)
			} else {
				attacker, err = net.Dial("tcp", addr)
			}
			mustT(t, err)
			defer attacker.Close()
			def, _ := dict.CommandByName("noop")
			r.seq++
			forged, err := def.NewCommand(testVehicle, r.seq, nil)
			mustT(t, err)
			fb, err := r.codec.Encode(forged)
			mustT(t, err)
			for _, f := range [][]byte{bytes.Repeat([]byte{0xee}, 40), fb} {
				if kind == link.KindUDP {
					_, err = attacker.Write(f)
				} else {
					_, err = attacker.Write(protocol.AppendStreamFrame(nil, f))
				}
				mustT(t, err)
			}
			// The rejection of the attacker's command is answered to the
			// ground (from the answer budget), not to the attacker.
			verification(forged.Seq, protocol.StageRejected)
			r.clock.Advance(DefaultTelemetryPeriod)
			recv("housekeeping", func(m protocol.Message) bool {
				tm, ok := m.(*protocol.Telemetry)
				return ok && tm.Packet == dict.HKCounters.ID
			})
			// The ground's connection is still the one answered.
			c = command(ground, true)
			verification(c.Seq, protocol.StageCompleted)
			attacker.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, err := attacker.Read(make([]byte, 512)); n > 0 {
				t.Fatalf("the attacker heard %d bytes", n)
			} else if ne, ok := err.(net.Error); kind == link.KindUDP && (!ok || !ne.Timeout()) {
				t.Fatalf("attacker read: %v", err)
			}
		})
	}
}
