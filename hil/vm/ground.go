package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/opencontainers/go-digest"
)

// benchGround is the ground on the host for the flightd board: the
// transfer Sender, plans and commands signed with the bench keys, the
// return link verified with the vehicle's MAC key (the stand-in flightd's
// own end-to-end test uses), over one UDP socket towards the link
// emulator.
type benchGround struct {
	conn  *net.UDPConn
	to    *net.UDPAddr
	codec *protocol.Codec
	ver   *protocol.ReturnVerifier
	keys  FlightdKeys
	// rate is the Sender's pacing, bits/s: the link's forward rate.
	rate  float64
	seq   uint64
	xfer  uint64
	tlm   map[uint16]*protocol.Telemetry
	verif []*protocol.Verification
	// Events are the vehicle's events, in arrival order.
	events []groundEvent
}

// groundEvent is an event from the vehicle, its arguments decoded with
// the dictionary (Def nil when the dictionary does not know it).
type groundEvent struct {
	Name string
	Def  *dict.Event
	Args dict.Values
}

// String shows the event with its arguments, enumerations by name.
func (e groundEvent) String() string {
	if e.Def == nil || len(e.Args) == 0 {
		return e.Name
	}
	var b strings.Builder
	b.WriteString(e.Name)
	for _, f := range e.Def.Args {
		v, ok := e.Args[f.Name]
		if !ok {
			continue
		}
		if u, isU := v.(uint64); isU && f.Enum != nil {
			v = f.Enum.NameOf(u)
		}
		fmt.Fprintf(&b, " %s=%v", f.Name, v)
	}
	return b.String()
}

func newBenchGround(to *net.UDPAddr, keys FlightdKeys, rate float64) (*benchGround, error) {
	if rate <= 0 {
		rate = 2e6
	}
	codec, err := protocol.NewCodec(1024)
	if err != nil {
		return nil, err
	}
	ver, err := protocol.NewReturnVerifier(FlightdVehicle, keys.MAC)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	return &benchGround{conn: c, to: to, codec: codec, ver: ver, keys: keys, rate: rate, tlm: map[uint16]*protocol.Telemetry{}}, nil
}

func (g *benchGround) close() { g.conn.Close() }

func (g *benchGround) recv(deadline time.Time) []byte {
	g.conn.SetReadDeadline(deadline)
	buf := make([]byte, 65536)
	n, _, err := g.conn.ReadFromUDP(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// take handles a frame from the vehicle: transfer answers go to s (if
// any); events, verifications and telemetry are kept once their MAC
// verifies (a replay, a frame of an earlier boot still in flight, is
// dropped).
func (g *benchGround) take(now time.Time, b []byte, s *transfer.Sender) {
	m, err := g.codec.Decode(b)
	if err != nil {
		return
	}
	switch msg := m.(type) {
	case *protocol.Report, *protocol.Complete, *protocol.Cancel:
		if s != nil {
			s.Step(now, b)
		}
	case *protocol.Event:
		if g.ver.Verify(m) == nil {
			ev := groundEvent{Name: fmt.Sprint(msg.ID)}
			if e, ok := dict.EventByID(msg.ID); ok {
				ev.Name, ev.Def = e.Name, e
				ev.Args, _ = e.Decode(msg.Args)
			}
			g.events = append(g.events, ev)
		}
	case *protocol.Verification:
		if g.ver.Verify(m) == nil {
			g.verif = append(g.verif, msg)
		}
	case *protocol.Telemetry:
		if g.ver.Verify(m) == nil {
			g.tlm[msg.Packet] = msg
		}
	}
}

// transfer sends data as target until the vehicle completes it.
func (g *benchGround) transfer(ctx context.Context, target, data []byte) error {
	g.xfer++
	p, err := transfer.NewPlan(g.codec, FlightdVehicle, g.xfer, target, bytes.NewReader(data), uint64(len(data)), 0, g.keys.GroundID, g.keys.Ground)
	if err != nil {
		return err
	}
	s, err := transfer.NewSender(transfer.SenderConfig{Codec: g.codec, Rate: g.rate, RTT: 50 * time.Millisecond, Verifier: g.ver}, p)
	if err != nil {
		return err
	}
	for !s.Done() {
		if err := ctx.Err(); err != nil {
			done, total := s.Progress()
			return fmt.Errorf("transfer %q: %d/%d: %w", target, done, total, err)
		}
		now := time.Now()
		s.Tick(now)
		rd := s.Ready()
		for _, m := range rd.Messages {
			g.conn.WriteToUDP(m.Frame, g.to)
		}
		s.Advance()
		wait := now.Add(5 * time.Millisecond)
		if !rd.Deadline.IsZero() && rd.Deadline.Before(wait) {
			wait = rd.Deadline
		}
		for b := g.recv(wait); b != nil; b = g.recv(wait) {
			g.take(time.Now(), b, s)
		}
	}
	return s.Err()
}

// command signs and sends a command until its final verification report
// arrives (resending it: the vehicle answers a resent command it ran as
// a replay), and returns that report.
func (g *benchGround) command(ctx context.Context, name string, args dict.Values) (*protocol.Verification, error) {
	def, ok := dict.CommandByName(name)
	if !ok {
		return nil, fmt.Errorf("no command %q", name)
	}
	g.seq++
	c, err := def.NewCommand(FlightdVehicle, g.seq, args)
	if err != nil {
		return nil, err
	}
	if err := protocol.SignCommand(c, protocol.KeyID(g.keys.GroundID), g.keys.Ground); err != nil {
		return nil, err
	}
	b, err := g.codec.Encode(c)
	if err != nil {
		return nil, err
	}
	for ctx.Err() == nil {
		g.conn.WriteToUDP(b, g.to)
		resend := time.Now().Add(500 * time.Millisecond)
		for rb := g.recv(resend); rb != nil; rb = g.recv(resend) {
			g.take(time.Now(), rb, nil)
			for _, v := range g.verif {
				if v.Seq == c.Seq && (v.Stage == protocol.StageCompleted || v.Stage == protocol.StageFailed || v.Stage == protocol.StageRejected) {
					return v, nil
				}
			}
		}
	}
	return nil, fmt.Errorf("command %s: %w", name, ctx.Err())
}

// waitHK asks for housekeeping (the status command) until packet p
// satisfies ok, and returns it.
func (g *benchGround) waitHK(ctx context.Context, p *dict.Packet, ok func(dict.Values) bool) (dict.Values, error) {
	var last dict.Values
	for ctx.Err() == nil {
		delete(g.tlm, p.ID)
		if _, err := g.command(ctx, "status", nil); err != nil {
			break
		}
		for b := g.recv(time.Now().Add(200 * time.Millisecond)); b != nil; b = g.recv(time.Now().Add(100 * time.Millisecond)) {
			g.take(time.Now(), b, nil)
		}
		if m, have := g.tlm[p.ID]; have {
			v, err := p.Decode(m.Params)
			if err != nil {
				return nil, err
			}
			last = v
			if ok(v) {
				return v, nil
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return last, fmt.Errorf("%s: %w (last %v)", p.Name, errors.Join(ctx.Err(), errors.New("condition not met")), last)
}

// event returns the first event named name received so far.
func (g *benchGround) event(name string) (groundEvent, bool) {
	for _, e := range g.events {
		if e.Name == name {
			return e, true
		}
	}
	return groundEvent{}, false
}

// waitEvent asks for housekeeping (which also brings the events the
// vehicle could not send before it heard the ground) until an event
// named name has arrived, and returns it.
func (g *benchGround) waitEvent(ctx context.Context, name string) (groundEvent, error) {
	for ctx.Err() == nil {
		if e, ok := g.event(name); ok {
			return e, nil
		}
		if _, err := g.command(ctx, "status", nil); err != nil {
			break
		}
		for b := g.recv(time.Now().Add(200 * time.Millisecond)); b != nil; b = g.recv(time.Now().Add(100 * time.Millisecond)) {
			g.take(time.Now(), b, nil)
		}
	}
	return groundEvent{}, fmt.Errorf("event %s: %w (seen %v)", name, ctx.Err(), g.events)
}

// signedPlan signs the plan that takes the vehicle to im with bundle.
func (g *benchGround) signedPlan(id uint64, im *FlightdImage, bundle []byte) ([]byte, error) {
	rs, err := update.SignRelease(g.keys.Release, g.keys.ReleaseID, update.Release{Manifest: im.Image.ManifestDigest, Version: im.Version, HardwareID: FlightdHardware})
	if err != nil {
		return nil, err
	}
	p := &update.Plan{ID: id, Vehicle: FlightdVehicle, Release: rs, Manifest: im.Image.ManifestBytes, Config: im.Image.ConfigBytes,
		BundleSize: uint64(len(bundle)), BundleDigest: digest.FromBytes(bundle), Staging: uint64(len(bundle))}
	if err := update.SignPlan(g.keys.Ground, g.keys.GroundID, p); err != nil {
		return nil, err
	}
	return update.EncodePlan(p)
}
