package link

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
)

// The tests run on loopback and never sleep: they wait on the links' state
// callbacks and fire backoff timers themselves through Config.After.

// harness collects a link's transitions and backoff waits.
type harness struct {
	states chan bool
	waits  chan chan time.Time // each backoff wait, for the test to fire
	held   []chan time.Time    // waits seen while the test was not firing them
}

// nextWait returns the link's next backoff wait.
func (h *harness) nextWait() chan time.Time {
	if len(h.held) > 0 {
		w := h.held[0]
		h.held = h.held[1:]
		return w
	}
	return <-h.waits
}

func newHarness() *harness {
	return &harness{states: make(chan bool, 64), waits: make(chan chan time.Time, 64)}
}

func (h *harness) config(cfg Config) Config {
	cfg.OnState = func(_ string, up bool) { h.states <- up }
	cfg.After = func(time.Duration) <-chan time.Time {
		c := make(chan time.Time, 1)
		h.waits <- c
		return c
	}
	return cfg
}

// await waits for the transition to up, firing every backoff wait on the
// way when fire is set.
func (h *harness) await(t *testing.T, up, fire bool) {
	t.Helper()
	for {
		select {
		case s := <-h.states:
			if s == up {
				return
			}
			t.Fatalf("link went up=%v, waiting for up=%v", s, up)
		case w := <-h.waits:
			if !fire {
				// Not yet: hold it until the test lets the link retry.
				h.held = append(h.held, w)
				continue
			}
			w <- time.Time{}
		}
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func frame(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func mustOpen(t *testing.T, cfg Config) Link {
	t.Helper()
	l, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func recvEq(t *testing.T, l Link, want []byte) {
	t.Helper()
	got, err := l.Recv(ctx(t))
	if err != nil {
		t.Fatalf("%s: Recv: %v", l.Name(), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: received %d bytes %x..., want %d bytes %x...", l.Name(), len(got), got[:min(8, len(got))], len(want), want[:min(8, len(want))])
	}
}

func TestConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Kind: KindUDP, Listen: "127.0.0.1:0"},
		{Name: "this-name-is-too-long", Kind: KindUDP, Listen: "127.0.0.1:0"},
		{Name: "x", Kind: "radio"},
		{Name: "x", Kind: KindUDP},
		{Name: "x", Kind: KindTCP, Listen: "127.0.0.1:0", Peer: "127.0.0.1:1"},
		{Name: "x", Kind: KindTCP},
		{Name: "x", Kind: KindSerial},
		{Name: "x", Kind: KindSerial, Device: "/dev/null", Baud: 12345},
		{Name: "x", Kind: KindUDP, Listen: "127.0.0.1:0", MaxFrame: 100},
	} {
		if l, err := Open(cfg); !errors.Is(err, ErrConfig) {
			if l != nil {
				l.Close()
			}
			t.Errorf("Open(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
}

func TestUDP(t *testing.T) {
	h := newHarness()
	srv := mustOpen(t, h.config(Config{Name: "srv", Kind: KindUDP, Listen: "127.0.0.1:0", MaxFrame: 256}))
	if err := srv.Send(ctx(t), frame(10, 1)); !errors.Is(err, ErrDown) {
		t.Fatalf("listener Send before hearing a peer = %v, want ErrDown", err)
	}
	addr := srv.(*udpLink).Addr().String()
	cli := mustOpen(t, Config{Name: "cli", Kind: KindUDP, Peer: addr, MaxFrame: 256})
	if !cli.(Monitor).Up() {
		t.Fatal("udp dialer not up")
	}
	if err := cli.Send(ctx(t), frame(256, 2)); err != nil {
		t.Fatal(err)
	}
	recvEq(t, srv, frame(256, 2))
	h.await(t, true, false)
	if err := srv.Send(ctx(t), frame(100, 3)); err != nil {
		t.Fatal(err)
	}
	recvEq(t, cli, frame(100, 3))

	// A datagram over the frame size is counted and dropped; the next
	// frame still arrives.
	raw, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write(frame(257, 4))
	raw.Write(frame(20, 5))
	recvEq(t, srv, frame(20, 5))
	st := srv.(Monitor).Stats()
	if st.DeframeErrors != 1 || st.FramesIn != 2 || st.FramesOut != 1 || st.SendDown != 1 || st.Ups != 1 || st.BytesIn != 276 {
		t.Fatalf("stats %+v", st)
	}
	if err := cli.Send(ctx(t), frame(257, 6)); !errors.Is(err, protocol.ErrFrameTooLarge) {
		t.Fatalf("Send of an oversize frame = %v", err)
	}

	// The listener answers the last peer heard.
	if _, err := raw.Write(frame(30, 7)); err != nil {
		t.Fatal(err)
	}
	recvEq(t, srv, frame(30, 7))
	if err := srv.Send(ctx(t), frame(31, 8)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 300)
	n, err := raw.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], frame(31, 8)) {
		t.Fatalf("answer to the last peer: %d bytes, %v", n, err)
	}
}

func TestRecvEndsWithCtxAndClose(t *testing.T) {
	l := mustOpen(t, Config{Name: "x", Kind: KindUDP, Listen: "127.0.0.1:0"})
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Recv(c); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv with a cancelled ctx = %v", err)
	}
	done := make(chan error)
	go func() { _, err := l.Recv(context.Background()); done <- err }()
	l.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv across Close = %v", err)
	}
	if err := l.Send(context.Background(), frame(10, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close = %v", err)
	}
}

// TestTCPDialerReconnects: the peer goes away; Send is ErrDown while it is
// away; the dialer backs off, redials when the peer is back, and frames
// flow again both ways.
func TestTCPDialerReconnects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	h := newHarness()
	l := mustOpen(t, h.config(Config{Name: "sband", Kind: KindTCP, Peer: addr, MaxFrame: 1024}))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	h.await(t, true, false)
	exchange(t, l, c, 1)

	// The peer goes away entirely.
	ln.Close() // first, so that no redial can reach it
	c.Close()
	h.await(t, false, false)
	if err := l.Send(ctx(t), frame(10, 9)); !errors.Is(err, ErrDown) {
		t.Fatalf("Send while down = %v, want ErrDown", err)
	}
	// The dialer retries at once, fails (nothing listens), and waits: the
	// test holds that wait until the peer is back.
	w := h.nextWait()
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w <- time.Time{}
	c, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h.await(t, true, true)
	exchange(t, l, c, 2)
	st := l.(Monitor).Stats()
	if st.Ups != 2 || st.Downs != 1 || st.SendDown != 1 || st.FramesOut != 2 || st.FramesIn != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// exchange sends a frame each way between link l and the raw peer c.
func exchange(t *testing.T, l Link, c net.Conn, round byte) {
	t.Helper()
	want := frame(1024, round)
	if err := l.Send(ctx(t), want); err != nil {
		t.Fatal(err)
	}
	got, err := protocol.NewReader(c, 1024).ReadFrame()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("peer read %d bytes, %v", len(got), err)
	}
	if err := protocol.NewWriter(c, 1024).WriteFrame(frame(77, round)); err != nil {
		t.Fatal(err)
	}
	recvEq(t, l, frame(77, round))
}

// TestTCPListener: the listener serves a connection, notices it go, and
// serves the next; a new connection replaces a live one; stream garbage is
// counted and skipped.
func TestTCPListener(t *testing.T) {
	h := newHarness()
	l := mustOpen(t, h.config(Config{Name: "gs", Kind: KindTCP, Listen: "127.0.0.1:0", MaxFrame: 1024}))
	addr := l.(*tcpLink).Addr().String()
	if err := l.Send(ctx(t), frame(10, 1)); !errors.Is(err, ErrDown) {
		t.Fatalf("Send before any connection = %v", err)
	}
	c1, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h.await(t, true, false)
	exchange(t, l, c1, 1)
	c1.Close()
	h.await(t, false, false)
	if err := l.Send(ctx(t), frame(10, 1)); !errors.Is(err, ErrDown) {
		t.Fatalf("Send while down = %v", err)
	}

	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h.await(t, true, false)
	// Garbage, an oversize record, then a good frame.
	c2.Write([]byte{1, 2, 3, 0})
	c2.Write(append(protocol.AppendStreamFrame(nil, frame(1025, 3)), protocol.AppendStreamFrame(nil, frame(50, 4))...))
	recvEq(t, l, frame(50, 4))
	if st := l.(Monitor).Stats(); st.DeframeErrors != 2 {
		t.Fatalf("deframe errors %d, want 2 (%+v)", st.DeframeErrors, st)
	}

	// A third connection replaces the second.
	c3, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("replaced connection still open")
	}
	// The link went down and up again, or straight over: either way c3 is
	// served.
	for {
		err := l.Send(ctx(t), frame(60, 5))
		if err == nil {
			break
		}
		if !errors.Is(err, ErrDown) {
			t.Fatal(err)
		}
		<-h.states // between c2 and c3: wait for the next transition
	}
	got, err := protocol.NewReader(c3, 1024).ReadFrame()
	if err != nil || !bytes.Equal(got, frame(60, 5)) {
		t.Fatalf("third connection read %d bytes, %v", len(got), err)
	}
	c2.Close()
}

func recvFrom(t *testing.T, l Link, want []byte) Peer {
	t.Helper()
	got, p, err := l.(PeerLink).RecvFrom(ctx(t))
	if err != nil {
		t.Fatalf("%s: RecvFrom: %v", l.Name(), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: received %x..., want %x...", l.Name(), got[:min(8, len(got))], want[:min(8, len(want))])
	}
	return p
}

// TestUDPListenerAnswersAuthenticated: once a frame from the ground was
// answered (Answer), a datagram from anyone else no longer diverts what
// the listener sends.
func TestUDPListenerAnswersAuthenticated(t *testing.T) {
	srv := mustOpen(t, Config{Name: "srv", Kind: KindUDP, Listen: "127.0.0.1:0", MaxFrame: 256})
	addr := srv.(*udpLink).Addr().String()
	ground := mustOpen(t, Config{Name: "ground", Kind: KindUDP, Peer: addr, MaxFrame: 256})
	attacker, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()

	if err := ground.Send(ctx(t), frame(40, 1)); err != nil {
		t.Fatal(err)
	}
	p := recvFrom(t, srv, frame(40, 1))
	if p.IsZero() {
		t.Fatal("a listener's frame came without its peer")
	}
	srv.(PeerLink).Answer(p)
	for round := byte(2); round < 5; round++ {
		attacker.Write(frame(30, round))
		if q := recvFrom(t, srv, frame(30, round)); q == p {
			t.Fatalf("attacker's datagram reported as from the ground's %v", p)
		}
		if err := srv.Send(ctx(t), frame(50, round)); err != nil {
			t.Fatal(err)
		}
		recvEq(t, ground, frame(50, round))
	}
	// Answer moves the peer: now the other address is answered.
	attacker.Write(frame(30, 9))
	srv.(PeerLink).Answer(recvFrom(t, srv, frame(30, 9)))
	if err := srv.Send(ctx(t), frame(60, 9)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 300)
	if n, err := attacker.Read(buf); err != nil || !bytes.Equal(buf[:n], frame(60, 9)) {
		t.Fatalf("answer after Answer: %d bytes, %v", n, err)
	}
}

// TestTCPListenerKeepsAuthenticated: once a connection was answered, a new
// connection does not replace it until a frame from the new one is
// answered; pending connections are bounded.
func TestTCPListenerKeepsAuthenticated(t *testing.T) {
	l := mustOpen(t, Config{Name: "gs", Kind: KindTCP, Listen: "127.0.0.1:0", MaxFrame: 1024})
	addr := l.(*tcpLink).Addr().String()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	say := func(c net.Conn, f []byte) Peer {
		t.Helper()
		if err := protocol.NewWriter(c, 1024).WriteFrame(f); err != nil {
			t.Fatal(err)
		}
		return recvFrom(t, l, f)
	}
	hear := func(c net.Conn, want []byte) {
		t.Helper()
		if err := l.Send(ctx(t), want); err != nil {
			t.Fatal(err)
		}
		got, err := protocol.NewReader(c, 1024).ReadFrame()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes, %v", len(got), err)
		}
	}
	ground := dial()
	pg := say(ground, frame(20, 1))
	l.(PeerLink).Answer(pg)
	hear(ground, frame(21, 1))

	// Attackers connect and talk: the ground keeps being answered.
	var attackers []net.Conn
	for i := range MaxPending + 1 {
		a := dial()
		attackers = append(attackers, a)
		if p := say(a, frame(30, byte(10+i))); p == pg {
			t.Fatal("attacker's frame reported as the ground's")
		}
		hear(ground, frame(31, byte(10+i)))
	}
	// MaxPending+1 pending connections: the oldest was closed.
	if _, err := attackers[0].Read(make([]byte, 1)); err == nil {
		t.Fatal("the oldest pending connection is still open past MaxPending")
	}

	// The ground reconnects: its new connection becomes current when a
	// frame from it is answered; the old one is closed.
	ground2 := dial()
	p2 := say(ground2, frame(40, 2))
	hear(ground, frame(41, 2))
	l.(PeerLink).Answer(p2)
	hear(ground2, frame(42, 2))
	if _, err := ground.Read(make([]byte, 1)); err == nil {
		t.Fatal("the replaced connection is still open")
	}
}
