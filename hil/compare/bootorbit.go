package compare

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"time"

	"github.com/bootorbit/bootorbit/hil/link"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/transfer/transfertest"
)

// The uplink's fixed identities: one vehicle, one ground key, one MAC key.
const (
	vehicleID = 42
	keyID     = 1
	xferID    = 1
)

// Bootorbit sends data with bootorbit's uplink (protocol/transfer: a
// signed offer, a hash tree, chunks paced at the forward rate, selective
// reports on the return link) between two UDP sockets on loopback through
// the link emulator in UDP mode. The ground's sender and the vehicle's
// receiver run in one loop, each with its own socket; the link state the
// emulator announces (passes, outages) is given to both, as groundd's
// pass handling and flightd would. The time runs from the first frame
// to the receiver's completion: every byte received, verified against
// the signed hash tree and stored (in memory here: the disk is not what
// is compared).
func Bootorbit(ctx context.Context, spec link.Spec, seed uint64, data []byte) (Method, error) {
	m := Method{Name: "bootorbit", Transport: "UDP, protocol/transfer"}
	ground, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return m, fmt.Errorf("compare: %w", err)
	}
	defer ground.Close()
	vehicle, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return m, fmt.Errorf("compare: %w", err)
	}
	defer vehicle.Close()
	em, err := link.New(link.Config{Spec: spec, Seed: seed, A: ground.LocalAddr().String(), B: vehicle.LocalAddr().String()})
	if err != nil {
		return m, fmt.Errorf("compare: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	emErr := make(chan error, 1)
	go func() { emErr <- em.Run(ctx) }()
	defer func() {
		cancel()
		<-emErr
	}()
	toA, toB := net.UDPAddrFromAddrPort(em.AddrA()), net.UDPAddrFromAddrPort(em.AddrB())

	codec, err := protocol.NewCodec(spec.Forward.MaxFrame)
	if err != nil {
		return m, fmt.Errorf("compare: %w", err)
	}
	retCodec, err := protocol.NewCodec(spec.Return.MaxFrame)
	if err != nil {
		return m, fmt.Errorf("compare: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	mac := protocol.MACKey{ID: 1, Key: bytes.Repeat([]byte{9}, protocol.MACKeyLen)}
	verifier, err := protocol.NewReturnVerifier(vehicleID, mac)
	if err != nil {
		return m, fmt.Errorf("compare: %w", err)
	}
	auth, err := protocol.NewReturnAuth(vehicleID, mac, 1)
	if err != nil {
		return m, fmt.Errorf("compare: %w", err)
	}
	plan, err := transfer.NewPlan(codec, vehicleID, xferID, []byte("compare"), bytes.NewReader(data), uint64(len(data)), 0, keyID, priv)
	if err != nil {
		return m, fmt.Errorf("compare: %w", err)
	}
	rtt := spec.Forward.Delay + spec.Return.Delay + 2*max(spec.Forward.Jitter, spec.Return.Jitter)
	sender, err := transfer.NewSender(transfer.SenderConfig{
		Codec: codec, ReturnCodec: retCodec, Verifier: verifier,
		Rate: spec.Forward.Rate, RTT: max(rtt, 10*time.Millisecond),
		ReorderTime: reorderTime(spec),
	}, plan)
	if err != nil {
		return m, fmt.Errorf("compare: %w", err)
	}
	receiver, err := transfer.NewReceiver(transfer.ReceiverConfig{
		Codec: codec, ReturnCodec: retCodec, Vehicle: vehicleID,
		Keys: map[uint32]ed25519.PublicKey{keyID: priv.Public().(ed25519.PublicKey)},
		Auth: auth,
	}, nil)
	if err != nil {
		return m, fmt.Errorf("compare: %w", err)
	}
	journal, store := transfertest.NewMemJournal(), transfertest.NewMemStore()

	gIn, vIn := make(chan []byte, 4096), make(chan []byte, 4096)
	go readLoop(ctx, ground, gIn)
	go readLoop(ctx, vehicle, vIn)
	states, unsub := em.Subscribe()
	defer unsub()

	start := time.Now()
	var done time.Time
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for !sender.Done() {
		now := time.Now()
		sender.Tick(now)
		sr := sender.Ready()
		for _, o := range sr.Messages {
			ground.WriteToUDP(o.Frame, toA) // a refused frame is the link's loss
			m.WireBytes += int64(len(o.Frame))
		}
		sender.Advance()
		receiver.Tick(now)
		rr := receiver.Ready()
		if err := transfer.Persist(&rr, store, journal); err != nil {
			return m, fmt.Errorf("compare: %w", err)
		}
		for _, o := range rr.Messages {
			vehicle.WriteToUDP(o.Frame, toB)
		}
		for _, c := range rr.Completed {
			if c.ID == xferID && done.IsZero() {
				done = time.Now()
			}
		}
		receiver.Advance()
		if !done.IsZero() {
			break // the data is on board: what the HTTP client's end is
		}
		next := now.Add(time.Second)
		for _, d := range []time.Time{sr.Deadline, rr.Deadline} {
			if !d.IsZero() && d.Before(next) {
				next = d
			}
		}
		timer.Reset(max(time.Until(next), 0))
		select {
		case f := <-gIn:
			sender.Step(time.Now(), f) // errors are counted by the engine
		case f := <-vIn:
			receiver.Step(time.Now(), f)
		case st, ok := <-states:
			if ok {
				ls := transfer.LinkState{Forward: st.Forward, Return: st.Return}
				sender.SetLink(time.Now(), ls)
				receiver.SetLink(time.Now(), ls)
			}
		case <-timer.C:
		case err := <-emErr:
			emErr <- err
			return m, fmt.Errorf("compare: link emulator stopped: %v", err)
		case <-ctx.Done():
			return m, fmt.Errorf("compare: bootorbit: %w after %v", ctx.Err(), time.Since(start).Round(time.Millisecond))
		}
	}
	if err := sender.Err(); err != nil && done.IsZero() {
		return m, fmt.Errorf("compare: bootorbit: %w", err)
	}
	m.Time = done.Sub(start)
	if !bytes.Equal(store.Bytes(xferID), data) {
		return m, fmt.Errorf("compare: bootorbit: the received bytes differ from the sent ones")
	}
	m.Retransmits = sender.Stats.ChunksResent
	m.Bytes = int64(len(data))
	m.Link = em.Stats()
	return m, nil
}

// reorderTime is how long the link may hold a frame back.
func reorderTime(s link.Spec) time.Duration {
	var d time.Duration
	for _, c := range []link.Channel{s.Forward, s.Return} {
		if c.Reorder > 0 {
			d = max(d, c.ReorderDelay, 20*time.Millisecond)
		}
		d = max(d, 2*c.Jitter)
	}
	return d
}

func readLoop(ctx context.Context, c *net.UDPConn, out chan<- []byte) {
	buf := make([]byte, 65536)
	for {
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return // closed
		}
		select {
		case out <- bytes.Clone(buf[:n]):
		case <-ctx.Done():
			return
		}
	}
}
