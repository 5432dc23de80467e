// Package etcdtest starts real etcd clusters for tests: Debian's etcd
// (etcd-server) on loopback ports, with its data in the test's temporary
// directory, killed when the test ends. A test without etcd is skipped,
// unless BOOTORBIT_REQUIRE_TOOLS=1, when it fails. A Proxy stands between a
// client and the cluster so that a test can cut one station off.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/bootorbit/bootorbit/internal/testtool"
)

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	dir       string
	cmd       *exec.Cmd
	done      chan struct{}
}

// Cluster is a running etcd cluster.
type Cluster struct {
	t       testing.TB
	bin     string
	Members []*Member
	initial string
}

// freePort returns a loopback address nobody listens on now.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start starts a cluster of n members and waits until it answers. The
// cluster is killed when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := testtool.Need(t, "etcd")
	c := &Cluster{t: t, bin: bin}
	dir := t.TempDir()
	var initial []string
	for i := range n {
		m := &Member{Name: fmt.Sprintf("m%d", i), ClientURL: "http://" + freePort(t), PeerURL: "http://" + freePort(t),
			dir: filepath.Join(dir, fmt.Sprintf("m%d", i))}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	c.initial = strings.Join(initial, ",")
	for i := range c.Members {
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range c.Members {
			c.Kill(i)
		}
	})
	c.WaitReady(60 * time.Second)
	return c
}

func (c *Cluster) start(i int) {
	m := c.Members[i]
	cmd := exec.Command(c.bin,
		"--name", m.Name, "--data-dir", m.dir,
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", c.initial, "--initial-cluster-state", "new",
		"--initial-cluster-token", "bootorbit-test",
		// A busy two-core machine: heartbeats loose enough that a slow
		// scheduler does not make the members elect again and again.
		"--heartbeat-interval", "100", "--election-timeout", "1000",
		"--log-level", "error", "--logger", "zap")
	out, err := os.Create(m.dir + ".log")
	if err != nil {
		c.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("etcdtest: start %s: %v", m.Name, err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		out.Close()
		close(m.done)
	}()
}

// Endpoints are the client URLs of every member.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Kill stops member i at once (SIGKILL) and waits for it to exit.
func (c *Cluster) Kill(i int) {
	m := c.Members[i]
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

// Restart starts member i again on its data directory.
func (c *Cluster) Restart(i int) { c.start(i) }

// Client returns a client of the cluster's (or of endpoints, if given),
// closed when the test ends.
func (c *Cluster) Client(endpoints ...string) *clientv3.Client {
	c.t.Helper()
	if len(endpoints) == 0 {
		endpoints = c.Endpoints()
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second, PermitWithoutStream: true})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// WaitReady waits until a linearizable read succeeds (a leader is elected
// and a majority answers), failing the test after d.
func (c *Cluster) WaitReady(d time.Duration) {
	c.t.Helper()
	// Its own client, closed on return: an idle client left open pings
	// more often than etcd allows (--grpc-keepalive-min-time, 5 s) and is
	// sent away (too_many_pings) all along the test.
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Get(rctx, "etcdtest/ready")
		rcancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			logs := ""
			for _, m := range c.Members {
				b, _ := os.ReadFile(m.dir + ".log")
				logs += fmt.Sprintf("\n--- %s:\n%s", m.Name, lastLines(string(b), 20))
			}
			c.t.Fatalf("etcdtest: cluster not ready after %v: %v%s", d, err, logs)
		}
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// Proxy forwards TCP connections from a loopback address to a member, until
// Cut: then it closes every connection and refuses new ones, as a network
// cut between one client and the cluster would when the client learns of
// it at once; or until Blackhole: then connections stay open and new ones
// are accepted, but no byte gets through either way, as in a partition
// that drops packets (the client learns of it only from its timeouts).
type Proxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	hole  bool
	conns map[net.Conn]bool
}

// NewProxy forwards to target (HOST:PORT, or a URL http://HOST:PORT). It
// is closed when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{l: l, target: strings.TrimPrefix(target, "http://"), conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() { p.Cut(); l.Close() })
	return p
}

// URL is the proxy's client URL.
func (p *Proxy) URL() string { return "http://" + p.l.Addr().String() }

func (p *Proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			continue
		}
		go func() {
			u, err := net.Dial("tcp", p.target)
			if err != nil || !p.track(u) {
				c.Close()
				if u != nil {
					u.Close()
				}
				return
			}
			go p.pipe(u, c)
			p.pipe(c, u)
		}()
	}
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c] = true
	return true
}

// Cut closes every connection through the proxy and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// Blackhole drops every byte through the proxy from now on, both ways,
// on the connections open and on new ones.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hole = true
}

// Heal lets connections through again. The connections that lost bytes
// in a blackhole are closed: their streams are broken.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hole {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
	p.cut, p.hole = false, false
}

// pipe copies from src to dst, dropping what arrives in a blackhole,
// until either fails; then it closes both.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		hole := p.hole
		p.mu.Unlock()
		if n > 0 && !hole {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
