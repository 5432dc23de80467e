//go:build linux

package compare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/bootorbit/bootorbit/hil/link"
)

// HTTPPort is the port the baseline's server listens on in the ground
// namespace.
const HTTPPort = 8080

// HTTPConfig is the baseline client's retry policy.
type HTTPConfig struct {
	// Stall ends a request that received nothing for this long; the
	// client then resumes with a Range request on a new connection (as
	// RAUC's and Mender's HTTP clients do after a failure). Default 10 s.
	Stall time.Duration
	// Retry is the wait after a failed attempt (no connection, an error)
	// before the next one. Default 1 s.
	Retry time.Duration
	// NSA and NSB are the namespaces the emulator makes (default
	// bo-cmp-ground, bo-cmp-vehicle).
	NSA, NSB string
}

func (c *HTTPConfig) defaults() {
	if c.Stall <= 0 {
		c.Stall = 10 * time.Second
	}
	if c.Retry <= 0 {
		c.Retry = time.Second
	}
	if c.NSA == "" {
		c.NSA = "bo-cmp-ground"
	}
	if c.NSB == "" {
		c.NSB = "bo-cmp-vehicle"
	}
}

// HTTP downloads data over TCP across the link emulator in IP mode: a Go
// net/http server (http.ServeContent: Range requests answered with 206)
// in the ground's namespace, a client in the vehicle's that resumes with
// Range: bytes=N- after every failure or stall until it holds every
// byte. It needs root, /dev/net/tun and ip(8) (link.ErrNoTUN otherwise).
// The time runs from the first request to the last byte.
func HTTP(ctx context.Context, spec link.Spec, seed uint64, data []byte, cfg HTTPConfig) (Method, error) {
	cfg.defaults()
	m := Method{Name: "http-range", Transport: "TCP, net/http, Range resume"}
	em, err := link.NewIP(ctx, link.IPConfig{Spec: spec, Seed: seed, NSA: cfg.NSA, NSB: cfg.NSB})
	if err != nil {
		return m, fmt.Errorf("compare: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	emErr := make(chan error, 1)
	go func() { emErr <- em.Run(ctx) }()
	defer func() {
		cancel()
		<-emErr // Run closes the devices and deletes the namespaces
	}()

	addr := net.JoinHostPort(link.DefaultAddrA.Addr().String(), strconv.Itoa(HTTPPort))
	var ln net.Listener
	if err := link.InNamespace(cfg.NSA, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return m, fmt.Errorf("compare: server: %w", err)
	}
	modTime := time.Unix(0, 0)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "update.bin", modTime, bytes.NewReader(data))
	})}
	go srv.Serve(ln)
	defer srv.Close()

	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			var c net.Conn
			err := link.InNamespace(cfg.NSB, func() (err error) {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, address)
				return err
			})
			return c, err
		},
		DisableKeepAlives: true, // every attempt on a new connection
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	got := make([]byte, 0, len(data))
	start := time.Now()
	for attempt := 0; len(got) < len(data); attempt++ {
		if err := ctx.Err(); err != nil {
			return m, fmt.Errorf("compare: http: %w after %v with %d of %d bytes", err, time.Since(start).Round(time.Millisecond), len(got), len(data))
		}
		if attempt > 0 {
			m.Resumes++
		}
		n, err := fetch(ctx, client, "http://"+addr+"/update.bin", &got, cfg.Stall)
		m.WireBytes += n
		if err != nil && len(got) < len(data) {
			select {
			case <-time.After(cfg.Retry):
			case <-ctx.Done():
			}
		}
	}
	m.Time = time.Since(start)
	if !bytes.Equal(got, data) {
		return m, errors.New("compare: http: the downloaded bytes differ from the served ones")
	}
	m.Bytes = int64(len(data))
	m.Link = em.Stats()
	return m, nil
}

// errStalled ends a request that received nothing for the stall time.
var errStalled = errors.New("compare: http: stalled")

// fetch makes one request for the bytes after *got and appends what
// arrives; it returns the bytes of body received.
func fetch(ctx context.Context, client *http.Client, url string, got *[]byte, stall time.Duration) (int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The stall timer runs from the request: connecting counts.
	timer := time.AfterFunc(stall, func() { cancel(errStalled) })
	defer timer.Stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if len(*got) > 0 {
		req.Header.Set("Range", "bytes="+strconv.Itoa(len(*got))+"-")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch {
	case len(*got) > 0 && resp.StatusCode == http.StatusPartialContent:
	case len(*got) == 0 && resp.StatusCode == http.StatusOK:
	default:
		return 0, fmt.Errorf("compare: http: status %s for %d bytes held", resp.Status, len(*got))
	}
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		if len(*got)+k > cap(*got) {
			return n, fmt.Errorf("compare: http: the server sent more than %d bytes", cap(*got))
		}
		if k > 0 {
			*got = append(*got, buf[:k]...)
			n += int64(k)
			timer.Reset(stall)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
