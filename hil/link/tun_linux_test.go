package link

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/internal/testtool"
	"github.com/bootorbit/bootorbit/protocol/linksim"
)

// startIP runs an IP emulator of spec between two namespaces of the
// test's own (named after the process, so that parallel test binaries do
// not collide), checks when the test ends that Run removed them, and
// returns the namespaces' names.
func startIP(t *testing.T, spec Spec) (e *Emulator, nsA, nsB string) {
	t.Helper()
	if err := CheckIP(); err != nil {
		testtool.Missing(t, testtool.RequireTools, "%v", err)
	}
	nsA, nsB = fmt.Sprintf("bo-t%d-a", os.Getpid()), fmt.Sprintf("bo-t%d-b", os.Getpid())
	e, err := NewIP(context.Background(), IPConfig{Spec: spec, Seed: testrand.Seed(t), NSA: nsA, NSB: nsB})
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so run after Run has returned.
	t.Cleanup(func() {
		for _, ns := range []string{nsA, nsB} {
			if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
				t.Errorf("namespace %s left behind", ns)
			}
		}
	})
	runUntilCleanup(t, e)
	return e, nsA, nsB
}

// leoFast is the leo-fast profile without its pass schedule (a test
// must not end up between passes).
func leoFast(t *testing.T) Spec {
	s, err := Profile("leo-fast")
	if err != nil {
		t.Fatal(err)
	}
	s.Schedule = linksim.Schedule{}
	return s
}

// icmpEcho is an ICMP echo request (type 8) with its checksum.
func icmpEcho(id, seq uint16, payload []byte) []byte {
	b := append([]byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}, payload...)
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	cs := ^uint16(sum)
	b[2], b[3] = byte(cs>>8), byte(cs)
	return b
}

// TestIPPing: a ping (ICMP echo, answered by the ground namespace's
// kernel) from the vehicle's namespace takes about twice the one-way
// delay. There is no ping(8) here: the test sends the echo requests on
// a raw socket itself.
func TestIPPing(t *testing.T) {
	spec := leoFast(t)
	e, _, nsB := startIP(t, spec)
	var c net.PacketConn
	if err := InNamespace(nsB, func() (err error) {
		c, err = net.ListenPacket("ip4:icmp", DefaultAddrB.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := &net.IPAddr{IP: DefaultAddrA.Addr().AsSlice()}
	id := uint16(os.Getpid())
	var rtts []time.Duration
	buf := make([]byte, 1500)
	for seq := range uint16(30) {
		start := time.Now()
		if _, err := c.WriteTo(icmpEcho(id, seq, []byte("bootorbit")), to); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(start.Add(time.Second))
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				break // lost (leo-fast loses 0.8% each way)
			}
			// An echo reply (type 0) to this request.
			if n >= 8 && buf[0] == 0 && uint16(buf[4])<<8|uint16(buf[5]) == id && uint16(buf[6])<<8|uint16(buf[7]) == seq {
				rtts = append(rtts, time.Since(start))
				break
			}
		}
	}
	if len(rtts) < 20 {
		t.Fatalf("only %d of 30 echoes came back", len(rtts))
	}
	rtt, want := median(rtts), spec.Forward.Delay+spec.Return.Delay
	t.Logf("ping across leo-fast: median RTT %v over %d replies, twice the delay is %v; forward %d packets, %d lost",
		rtt.Round(10*time.Microsecond), len(rtts), want, e.Stats().Forward.Frames, e.Stats().Forward.Dropped.Loss)
	if rtt < want || rtt > want+want/10+2*time.Millisecond {
		t.Errorf("median RTT %v, want about %v", rtt, want)
	}
}

// TestIPTCPDownload: 1 MB over TCP from the ground's namespace to the
// vehicle's across leo-fast (2 Mbit/s forward, 0.8% loss each way) takes
// about what the rate says: the bytes with their TCP/IP headers at 2
// Mbit/s.
func TestIPTCPDownload(t *testing.T) {
	spec := leoFast(t)
	e, nsA, nsB := startIP(t, spec)
	srvAddr := netip.AddrPortFrom(DefaultAddrA.Addr(), 8080)
	var ln net.Listener
	if err := InNamespace(nsA, func() (err error) {
		ln, err = net.Listen("tcp", srvAddr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 1_000_000
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(make([]byte, size))
	}()
	start := time.Now()
	var c net.Conn
	if err := InNamespace(nsB, func() (err error) {
		c, err = net.DialTimeout("tcp", srvAddr.String(), 10*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	n, err := io.Copy(io.Discard, c)
	el := time.Since(start)
	if err != nil || n != size {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	// 1024-byte packets (the MTU is leo-fast's frame) carry 1024-52 bytes
	// of payload (IP, TCP and its timestamp option).
	ideal := time.Duration(float64(size) * 1024 / 972 * 8 / spec.Forward.Rate * float64(time.Second))
	st := e.Stats().Forward
	t.Logf("1 MB over TCP across leo-fast: %v, the rate says %v (%.2fx); forward: %d packets, %d lost, %d dropped by the queue",
		el.Round(time.Millisecond), ideal.Round(time.Millisecond), el.Seconds()/ideal.Seconds(), st.Frames, st.Dropped.Loss, st.Dropped.Queue)
	if el < ideal || el > ideal*3/2 {
		t.Errorf("took %v, the rate says %v", el, ideal)
	}
}

func TestIPConfigRefused(t *testing.T) {
	if err := CheckIP(); err != nil {
		testtool.Missing(t, testtool.RequireTools, "%v", err)
	}
	for i, c := range []IPConfig{
		{NSA: "x", NSB: "x"},
		{NSA: "../etc", NSB: "b"},
		{NSA: "a-very-long-namespace-name", NSB: "b"},
		{NSA: "a", NSB: "b", AddrA: netip.MustParsePrefix("10.0.0.1/24"), AddrB: netip.MustParsePrefix("10.0.1.1/24")},
		{NSA: "a", NSB: "b", Dev: "bad dev"},
	} {
		if e, err := NewIP(context.Background(), c); err == nil {
			e.Close()
			t.Errorf("config %d accepted", i)
		}
	}
}
