package link

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
)

// fakeLink is an in-memory link whose state the test sets.
type fakeLink struct {
	name string
	max  int
	up   atomic.Bool
	in   chan []byte
	out  chan []byte
}

func newFake(name string, max int, up bool) *fakeLink {
	f := &fakeLink{name: name, max: max, in: make(chan []byte, 8), out: make(chan []byte, 8)}
	f.up.Store(up)
	return f
}

func (f *fakeLink) Send(ctx context.Context, frame []byte) error {
	if !f.up.Load() {
		return fmt.Errorf("%w: %s", ErrDown, f.name)
	}
	f.out <- frame
	return nil
}

func (f *fakeLink) Recv(ctx context.Context) ([]byte, error) {
	select {
	case b := <-f.in:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeLink) MaxFrame() int { return f.max }
func (f *fakeLink) Name() string  { return f.name }
func (f *fakeLink) Close() error  { return nil }
func (f *fakeLink) Up() bool      { return f.up.Load() }
func (f *fakeLink) Stats() Stats  { return Stats{Ups: 7} }

func TestMuxPreferred(t *testing.T) {
	uhf, sband := newFake("uhf", 256, true), newFake("sband", 1024, true)
	m, err := NewMux(MuxConfig{}, uhf, sband)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.MaxFrame() != 256 {
		t.Fatalf("MaxFrame %d, want the smallest", m.MaxFrame())
	}
	send := func(b byte) error { return m.Send(ctx(t), []byte{b}) }
	if err := send(1); err != nil || len(uhf.out) != 1 || len(sband.out) != 0 {
		t.Fatalf("preferred send: %v, uhf %d sband %d", err, len(uhf.out), len(sband.out))
	}
	uhf.up.Store(false)
	if err := send(2); err != nil || len(sband.out) != 1 {
		t.Fatalf("fallback send: %v", err)
	}
	sband.up.Store(false)
	if err := send(3); !errors.Is(err, ErrDown) {
		t.Fatalf("all down: %v", err)
	}
	if m.Up() {
		t.Fatal("mux up with every link down")
	}

	uhf.in <- []byte("a")
	sband.in <- []byte("bb")
	got := map[string]string{}
	for range 2 {
		f, name, err := m.RecvFrom(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		got[name] = string(f)
	}
	if got["uhf"] != "a" || got["sband"] != "bb" {
		t.Fatalf("received %v", got)
	}
	st := m.Stats()
	if st[0].Name != "uhf" || st[0].FramesOut != 1 || st[0].FramesIn != 1 || st[0].Ups != 7 ||
		st[1].FramesOut != 1 || st[1].BytesIn != 2 || st[1].Up {
		t.Fatalf("stats %+v", st)
	}
	m.Close()
	if _, err := m.Recv(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}
}

func TestMuxSendAll(t *testing.T) {
	a, b, c := newFake("a", 256, true), newFake("b", 256, false), newFake("c", 256, true)
	m, err := NewMux(MuxConfig{SendAll: true}, a, b, c)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Send(ctx(t), []byte{1}); err != nil || len(a.out) != 1 || len(b.out) != 0 || len(c.out) != 1 {
		t.Fatalf("send all: %v", err)
	}
	if _, err := NewMux(MuxConfig{}, a, newFake("a", 256, true)); !errors.Is(err, ErrConfig) {
		t.Fatalf("duplicate names: %v", err)
	}
}

// TestMuxOverUDP runs the Mux over real links: a TCP dialer that never
// connects (preferred, but down) and UDP, which carries the traffic.
func TestMuxOverUDP(t *testing.T) {
	srv := mustOpen(t, Config{Name: "srv", Kind: KindUDP, Listen: "127.0.0.1:0"})
	h := newHarness()
	// Nothing listens on the TCP peer's port: the listener below is closed
	// before the mux opens, and the dialer's retries wait on h forever.
	ln := mustOpen(t, Config{Name: "tmp", Kind: KindTCP, Listen: "127.0.0.1:0"})
	deadAddr := ln.(*tcpLink).Addr().String()
	ln.Close()
	tcp, err := Open(h.config(Config{Name: "sband", Kind: KindTCP, Peer: deadAddr}))
	if err != nil {
		t.Fatal(err)
	}
	udp, err := Open(Config{Name: "uhf", Kind: KindUDP, Peer: srv.(*udpLink).Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMux(MuxConfig{}, tcp, udp)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h.nextWait() // the dialer failed once and waits
	if err := m.Send(ctx(t), frame(100, 1)); err != nil {
		t.Fatal(err)
	}
	recvEq(t, srv, frame(100, 1))
	if err := srv.Send(ctx(t), frame(50, 2)); err != nil {
		t.Fatal(err)
	}
	f, name, err := m.RecvFrom(ctx(t))
	if err != nil || name != "uhf" || len(f) != 50 {
		t.Fatalf("RecvFrom = %d bytes from %q, %v", len(f), name, err)
	}
	st := m.Stats()
	if st[0].Up || st[0].FramesOut != 0 || !st[1].Up || st[1].FramesOut != 1 || st[1].FramesIn != 1 {
		t.Fatalf("stats %+v", st)
	}
}
