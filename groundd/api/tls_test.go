package api_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/groundd/api/apitest"
)

// serveTLS serves the API of a fake daemon with cfg on a real loopback
// listener, as groundd run does, and returns the fake, the server and its
// URL.
func serveTLS(t *testing.T, cfg api.Config) (*apitest.Fake, *api.Server, string) {
	t.Helper()
	f := apitest.New(func() time.Time { return t0 }, vehicles()...)
	cfg.Now = func() time.Time { return t0 }
	s, err := api.New(f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	scheme := "http://"
	if s.TLS() {
		scheme = "https://"
	}
	return f, s, scheme + ln.Addr().String()
}

// tlsClient returns an API client of url with the given TLS files.
func tlsClient(t *testing.T, url, tok, caFile, certFile, keyFile string) *api.Client {
	t.Helper()
	c, err := api.NewClient(url, tok)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := api.ClientTLS(caFile, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UseTLS(tc); err != nil {
		t.Fatal(err)
	}
	// Before the server's shutdown (cleanups run last first), which
	// would wait for an open HTTP/2 connection to go.
	t.Cleanup(c.HTTP.CloseIdleConnections)
	return c
}

func TestTLS(t *testing.T) {
	ca := apitest.NewCA(t, "ground")
	cert, key := ca.Server(t, "groundd")
	_, _, url := serveTLS(t, api.Config{CertFile: cert, KeyFile: key})
	ctx := context.Background()

	if _, err := tlsClient(t, url, "", "", "", "").Vehicles(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client without the CA: %v, want a certificate error", err)
	}
	other := apitest.NewCA(t, "other")
	if _, err := tlsClient(t, url, "", other.CertFile, "", "").Vehicles(ctx); err == nil {
		t.Error("a client trusting another CA got an answer")
	}
	vs, err := tlsClient(t, url, "", ca.CertFile, "", "").Vehicles(ctx)
	if err != nil || len(vs) != 2 {
		t.Fatalf("a client with the CA: %v, %v", vs, err)
	}

	// TLS 1.3 when the client has it, 1.2 still, nothing older.
	addr := strings.TrimPrefix(url, "https://")
	roots, err := api.LoadCAPool(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		max, want uint16
	}{{0, tls.VersionTLS13}, {tls.VersionTLS12, tls.VersionTLS12}, {tls.VersionTLS11, 0}} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS10, MaxVersion: tc.max})
		if tc.want == 0 {
			if err == nil {
				conn.Close()
				t.Errorf("a client of at most %x got through", tc.max)
			}
			continue
		}
		if err != nil {
			t.Errorf("a client of at most %x: %v", tc.max, err)
			continue
		}
		if v := conn.ConnectionState().Version; v != tc.want {
			t.Errorf("a client of at most %x: version %x, want %x", tc.max, v, tc.want)
		}
		conn.Close()
	}

	// HTTP/2 is negotiated (ALPN) by a client that has it, as the CLI's.
	tc, err := api.ClientTLS(ca.CertFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
	}

	// Plain HTTP on the TLS port: a clean 400, not a hang or garbage.
	resp, err = http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("plain HTTP: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS") {
		t.Errorf("plain HTTP: %d %q, want 400 saying HTTPS", resp.StatusCode, body)
	}
	// And an http:// client configured for TLS is told so.
	c, _ := api.NewClient("http://"+addr, "")
	if err := c.UseTLS(&tls.Config{}); !errors.Is(err, api.ErrTLS) {
		t.Errorf("UseTLS on http://: %v", err)
	}
}

func TestMutualTLS(t *testing.T) {
	ca := apitest.NewCA(t, "ground")
	cert, key := ca.Server(t, "groundd")
	ops := apitest.NewCA(t, "operators")
	opCert, opKey := ops.Client(t, "operator")
	rogue := apitest.NewCA(t, "rogue")
	rogueCert, rogueKey := rogue.Client(t, "operator")
	_, _, url := serveTLS(t, api.Config{CertFile: cert, KeyFile: key, ClientCAFile: ops.CertFile})
	ctx := context.Background()

	if _, err := tlsClient(t, url, "", ca.CertFile, "", "").Vehicles(ctx); err == nil {
		t.Error("a client without a certificate got an answer")
	}
	if _, err := tlsClient(t, url, "", ca.CertFile, rogueCert, rogueKey).Vehicles(ctx); err == nil {
		t.Error("a client whose certificate another CA signed got an answer")
	}
	// A certificate the server's own CA signed is no operator's either.
	srvAsClient, srvAsClientKey := ca.Client(t, "not-an-operator")
	if _, err := tlsClient(t, url, "", ca.CertFile, srvAsClient, srvAsClientKey).Vehicles(ctx); err == nil {
		t.Error("a client certificate of the server's CA got an answer")
	}
	if vs, err := tlsClient(t, url, "", ca.CertFile, opCert, opKey).Vehicles(ctx); err != nil || len(vs) != 2 {
		t.Errorf("an operator's certificate: %v, %v", vs, err)
	}

	// A client that sends another CA's certificate anyway (Go's client
	// sends none that the server's list of CAs does not name) is refused
	// by the server's verification, in TLS 1.2 and 1.3.
	rogueKP, err := api.LoadKeyPair(rogueCert, rogueKey)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := api.LoadCAPool(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(url, "https://"), &tls.Config{
			RootCAs: roots, MaxVersion: v,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return rogueKP, nil },
		})
		if err == nil {
			// TLS 1.3: the server's verdict arrives with the first read.
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
			t.Errorf("TLS %x, another CA's certificate: %v, want unknown certificate authority", v, err)
		}
	}

	// The token still works on top.
	_, _, url = serveTLS(t, api.Config{CertFile: cert, KeyFile: key, ClientCAFile: ops.CertFile, Token: token})
	_, err = tlsClient(t, url, "", ca.CertFile, opCert, opKey).Vehicles(ctx)
	apiErr(t, err, http.StatusUnauthorized, api.CodeUnauthorized)
	if _, err := tlsClient(t, url, token, ca.CertFile, opCert, opKey).Vehicles(ctx); err != nil {
		t.Errorf("certificate and token: %v", err)
	}
	if _, err := tlsClient(t, url, token, ca.CertFile, "", "").Vehicles(ctx); err == nil {
		t.Error("a token without a certificate got an answer")
	}
}

// TestMutualTLSAnyHost: with client certificates and no token, a request
// naming a host that is not loopback is served (the certificate, not the
// Host, is the protection), and a non-loopback address is allowed.
func TestMutualTLSAnyHost(t *testing.T) {
	ca := apitest.NewCA(t, "ground")
	cert, key := ca.Server(t, "groundd")
	opCert, opKey := ca.Client(t, "operator")
	_, _, url := serveTLS(t, api.Config{CertFile: cert, KeyFile: key, ClientCAFile: ca.CertFile})
	tc, err := api.ClientTLS(ca.CertFile, opCert, opKey)
	if err != nil {
		t.Fatal(err)
	}
	tc.ServerName = "localhost"
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest("GET", url+"/v1/vehicles", nil)
	req.Host = "groundd.example:7468"
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("Host groundd.example over mTLS: %d", resp.StatusCode)
	}
	for _, addr := range []string{"0.0.0.0:7468", ":7468"} {
		if err := (api.Config{Addr: addr, CertFile: cert, KeyFile: key, ClientCAFile: ca.CertFile}).Check(); err != nil {
			t.Errorf("%s with mTLS and no token: %v", addr, err)
		}
		if err := (api.Config{Addr: addr, CertFile: cert, KeyFile: key}).Check(); !errors.Is(err, api.ErrNoToken) {
			t.Errorf("%s with TLS but no token nor client CA: %v, want ErrNoToken", addr, err)
		}
	}
}

// servedSerial dials addr and returns the serial of the certificate the
// server presents.
func servedSerial(t *testing.T, addr, caFile string) int64 {
	t.Helper()
	roots, err := api.LoadCAPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// replace writes src's content over dst and moves dst's modification
// time to mod, so that the change shows whatever the file system's clock
// granularity.
func replace(t *testing.T, dst, src string, mod time.Time) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dst, mod, mod); err != nil {
		t.Fatal(err)
	}
}

func TestCertificateRotation(t *testing.T) {
	ca := apitest.NewCA(t, "ground")
	cert1, key1 := ca.Server(t, "one")   // serial 2
	cert2, key2 := ca.Server(t, "two")   // serial 3
	cert3, key3 := ca.Server(t, "three") // serial 4
	dir := t.TempDir()
	cert, key := dir+"/groundd.pem", dir+"/groundd-key.pem"
	mod := time.Now().Add(-time.Hour).Truncate(time.Second)
	replace(t, cert, cert1, mod)
	replace(t, key, key1, mod)
	_, s, url := serveTLS(t, api.Config{CertFile: cert, KeyFile: key})
	addr := strings.TrimPrefix(url, "https://")
	if n := servedSerial(t, addr, ca.CertFile); n != 2 {
		t.Fatalf("served serial %d, want 2", n)
	}

	// Rotated in place: the next handshake serves the new pair.
	mod = mod.Add(time.Minute)
	replace(t, cert, cert2, mod)
	replace(t, key, key2, mod)
	if n := servedSerial(t, addr, ca.CertFile); n != 3 {
		t.Errorf("after rotation: serial %d, want 3", n)
	}

	// Half a rotation (a certificate without its key): the previous pair
	// stays in service, and a reload says which files do not match.
	mod = mod.Add(time.Minute)
	replace(t, cert, cert3, mod)
	if n := servedSerial(t, addr, ca.CertFile); n != 3 {
		t.Errorf("a certificate without its key: serial %d, want the previous 3", n)
	}
	err := s.ReloadCertificate()
	if !errors.Is(err, api.ErrTLS) || !strings.Contains(err.Error(), cert) || !strings.Contains(err.Error(), key) {
		t.Errorf("ReloadCertificate of a mismatched pair: %v, want ErrTLS naming both files", err)
	}
	if n := servedSerial(t, addr, ca.CertFile); n != 3 {
		t.Errorf("after a failed reload: serial %d, want the previous 3", n)
	}

	// The pair completed by a key with the same time stamp and size as
	// the one before (a coarse clock, keys of one size): only a reload
	// (SIGHUP) notices; it does.
	replace(t, key, key3, mod.Add(-time.Minute))
	if n := servedSerial(t, addr, ca.CertFile); n != 3 {
		t.Errorf("an unnoticed key: serial %d, want the previous 3", n)
	}
	if err := s.ReloadCertificate(); err != nil {
		t.Errorf("ReloadCertificate: %v", err)
	}
	if n := servedSerial(t, addr, ca.CertFile); n != 4 {
		t.Errorf("after reload: serial %d, want 4", n)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	ca := apitest.NewCA(t, "ground")
	cert, key := ca.Server(t, "groundd")
	_, otherKey := ca.Server(t, "other")
	dir := t.TempDir()
	missing := dir + "/missing.pem"
	garbage := dir + "/garbage.pem"
	os.WriteFile(garbage, []byte("not a PEM file\n"), 0o600)
	f := apitest.New(nil)
	for _, tc := range []struct {
		name  string
		cfg   api.Config
		names []string // in the error
	}{
		{"cert without key", api.Config{CertFile: cert}, nil},
		{"key without cert", api.Config{KeyFile: key}, nil},
		{"client CA without cert", api.Config{ClientCAFile: ca.CertFile}, nil},
		{"missing cert", api.Config{CertFile: missing, KeyFile: key}, []string{missing}},
		{"missing key", api.Config{CertFile: cert, KeyFile: missing}, []string{missing}},
		{"garbage cert", api.Config{CertFile: garbage, KeyFile: key}, []string{garbage}},
		{"mismatched key", api.Config{CertFile: cert, KeyFile: otherKey}, []string{cert, otherKey}},
		{"missing CA", api.Config{CertFile: cert, KeyFile: key, ClientCAFile: missing}, []string{missing}},
		{"garbage CA", api.Config{CertFile: cert, KeyFile: key, ClientCAFile: garbage}, []string{garbage}},
	} {
		_, err := api.New(f, tc.cfg)
		if !errors.Is(err, api.ErrTLS) {
			t.Errorf("%s: %v, want ErrTLS", tc.name, err)
			continue
		}
		for _, n := range tc.names {
			if !strings.Contains(err.Error(), n) {
				t.Errorf("%s: %v does not name %s", tc.name, err, n)
			}
		}
	}
	if _, err := api.ClientTLS("", cert, ""); !errors.Is(err, api.ErrTLS) {
		t.Errorf("client cert without key: %v", err)
	}
	if _, err := api.ClientTLS(garbage, "", ""); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Errorf("client garbage CA: %v", err)
	}
}

// TestTelemetryFollowTLS: a telemetry stream over mutual TLS (HTTP/2, as
// Go's client and server negotiate it) delivers live records and ends
// when the client cancels.
func TestTelemetryFollowTLS(t *testing.T) {
	ca := apitest.NewCA(t, "ground")
	cert, key := ca.Server(t, "groundd")
	opCert, opKey := ca.Client(t, "operator")
	f, _, url := serveTLS(t, api.Config{CertFile: cert, KeyFile: key, ClientCAFile: ca.CertFile})
	c := tlsClient(t, url, "", ca.CertFile, opCert, opKey)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan groundd.TelemetryRecord, 8)
	done := make(chan error, 1)
	go func() {
		done <- c.FollowTelemetry(ctx, 7, api.TelemetryQuery{From: t0}, func(r groundd.TelemetryRecord) error {
			got <- r
			return nil
		})
	}()
	<-f.Subscribed
	f.Publish(groundd.TelemetryRecord{Vehicle: 7, Received: t0.Add(time.Second), Kind: "tm", Name: "hk.boot", Seq: 5})
	if r := <-got; r.Seq != 5 {
		t.Fatalf("live record %+v, want seq 5", r)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("follow ended with %v", err)
	}
}
