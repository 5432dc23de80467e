//go:build unix

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/groundd/api/apitest"
	"github.com/bootorbit/bootorbit/internal/cli/clitest"
)

// tlsEnv is a fake daemon's API served over TLS on a real loopback
// listener, with the files of its certificates.
type tlsEnv struct {
	srv                 *api.Server
	url                 string
	ca                  *apitest.CA // signs the server's certificate
	cert, key           string      // the server's
	ops                 *apitest.CA // signs the operators' certificates
	opCert, opKey       string
	rogueCert, rogueKey string // an operator certificate of another CA
}

func newTLSEnv(t *testing.T, flags apiFlags) *tlsEnv {
	t.Helper()
	e := &tlsEnv{ca: apitest.NewCA(t, "ground"), ops: apitest.NewCA(t, "operators")}
	e.cert, e.key = e.ca.Server(t, "gs-north")
	e.opCert, e.opKey = e.ops.Client(t, "operator")
	e.rogueCert, e.rogueKey = apitest.NewCA(t, "rogue").Client(t, "operator")
	flags.tlsCert, flags.tlsKey, flags.clientCA = e.cert, e.key, e.ops.CertFile
	acfg, err := flags.config(groundOptions())
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = api.New(apitest.New(func() time.Time { return t0 }, vehiclesForTLS()...), *acfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	e.url = "https://" + ln.Addr().String()
	return e
}

func runCLI(args ...string) (int, string, string) {
	return clitest.Run(commands, args...)
}

func groundOptions() groundd.Options { return groundd.Options{} }
func groundConfig() groundd.Config   { return groundd.Config{} }

func vehiclesForTLS() []groundd.Vehicle {
	return []groundd.Vehicle{{ID: 7, Name: "sat-7"}, {ID: 9, Name: "sat-9"}}
}

func (e *tlsEnv) run(args ...string) (int, string, string) {
	return runCLI(append(args, "--server", e.url)...)
}

// TestClientTLSFlags: the client commands reach a TLS, mutual-TLS API with
// --api-ca, --api-cert and --api-key, and say which file is at fault.
func TestClientTLSFlags(t *testing.T) {
	e := newTLSEnv(t, apiFlags{addr: "127.0.0.1:0"})
	if code, out, errOut := e.run("vehicles", "--api-ca", e.ca.CertFile, "--api-cert", e.opCert, "--api-key", e.opKey); code != 0 || !strings.Contains(out, "sat-7") {
		t.Errorf("vehicles over mTLS: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := e.run("vehicles", "-v", "--api-ca", e.ca.CertFile, "--api-cert", e.opCert, "--api-key", e.opKey); code != 0 || !strings.Contains(errOut, "status=200") {
		t.Errorf("vehicles -v over mTLS: exit %d\n%s", code, errOut)
	}
	for _, tc := range []struct {
		what string
		args []string
		code int
		want string
	}{
		{"no CA", []string{"--api-cert", e.opCert, "--api-key", e.opKey}, 1, "certificate"},
		// (TLS 1.3: the server refuses after the client's side of the
		// handshake, which sees "certificate required" or a reset.)
		{"no client certificate", []string{"--api-ca", e.ca.CertFile}, 1, "client certificate?"},
		{"another CA's client certificate", []string{"--api-ca", e.ca.CertFile, "--api-cert", e.rogueCert, "--api-key", e.rogueKey}, 1, "accept this client certificate?"},
		{"unreadable certificate", []string{"--api-ca", e.ca.CertFile, "--api-cert", e.opCert + ".missing", "--api-key", e.opKey}, 1, e.opCert + ".missing"},
		{"mismatched key", []string{"--api-ca", e.ca.CertFile, "--api-cert", e.opCert, "--api-key", e.rogueKey}, 1, e.rogueKey},
		{"unreadable CA", []string{"--api-ca", e.ca.CertFile + ".missing"}, 1, e.ca.CertFile + ".missing"},
		{"cert without key", []string{"--api-ca", e.ca.CertFile, "--api-cert", e.opCert}, 2, "--api-key"},
	} {
		code, _, errOut := e.run(append([]string{"vehicles"}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d (want %d), stderr %q lacks %q", tc.what, code, tc.code, errOut, tc.want)
		}
	}
	// TLS files for a plain-HTTP server are a usage error.
	if code, _, errOut := runCLI("vehicles", "--server", "http://127.0.0.1:1", "--api-ca", e.ca.CertFile); code != 2 || !strings.Contains(errOut, "https://") {
		t.Errorf("--api-ca with http://: exit %d, %q", code, errOut)
	}
}

// TestRunAPIFlags: groundd run's API flags are checked before the daemon
// opens: files named, mTLS allows a non-loopback address without a token.
func TestRunAPIFlags(t *testing.T) {
	ca := apitest.NewCA(t, "ground")
	cert, key := ca.Server(t, "gs-north")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		f    apiFlags
		want error
		name string // in the error
	}{
		{apiFlags{addr: "0.0.0.0:7468", tlsCert: cert, tlsKey: key, clientCA: ca.CertFile}, nil, ""},
		{apiFlags{addr: "0.0.0.0:7468", tlsCert: cert, tlsKey: key}, api.ErrNoToken, ""},
		{apiFlags{addr: "127.0.0.1:7468", tlsCert: cert}, api.ErrTLS, ""},
		{apiFlags{addr: "127.0.0.1:7468", clientCA: ca.CertFile}, api.ErrTLS, ""},
		{apiFlags{addr: "127.0.0.1:7468", tlsCert: missing, tlsKey: key}, api.ErrTLS, missing},
		{apiFlags{addr: "127.0.0.1:7468", tlsCert: cert, tlsKey: ca.CertFile}, api.ErrTLS, ca.CertFile},
		{apiFlags{addr: "0.0.0.0:7468", tlsCert: cert, tlsKey: key, clientCA: missing}, api.ErrTLS, missing},
	} {
		_, err := tc.f.config(groundOptions())
		if !errors.Is(err, tc.want) || (tc.name != "" && !strings.Contains(err.Error(), tc.name)) {
			t.Errorf("%+v: %v, want %v naming %q", tc.f, err, tc.want, tc.name)
		}
	}
	// runWithAPI stops on them before it opens the daemon.
	if err := runWithAPI(context.Background(), groundConfig(), groundOptions(), &apiFlags{addr: "127.0.0.1:7468", tlsCert: missing, tlsKey: key}); !errors.Is(err, api.ErrTLS) {
		t.Errorf("runWithAPI with a missing certificate: %v", err)
	}
}

// TestHangupReloads: SIGHUP makes groundd read its API certificate again,
// even one whose files' time stamps and sizes did not change.
func TestHangupReloads(t *testing.T) {
	ca := apitest.NewCA(t, "ground")
	cert1, key1 := ca.Server(t, "one") // serial 2
	cert3, key3 := ca.Server(t, "two") // serial 3
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "gs.pem"), filepath.Join(dir, "gs-key.pem")
	mod := time.Now().Add(-time.Hour).Truncate(time.Second)
	copyFile(t, cert, cert1, mod)
	copyFile(t, key, key1, mod)
	acfg, err := (&apiFlags{addr: "127.0.0.1:0", tlsCert: cert, tlsKey: key}).config(groundOptions())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(apitest.New(nil), *acfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()
	reloaded := make(chan error)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go reloadOnHangup(ctx, srv, hup, reloaded)

	// A certificate and key of the same sizes and time stamps as the
	// ones served: only a reload sees them.
	copyFile(t, cert, cert3, mod)
	copyFile(t, key, key3, mod)
	if n := serialOf(t, ln.Addr().String(), ca.CertFile); n != 2 {
		t.Fatalf("before SIGHUP: serial %d, want 2", n)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := <-reloaded; err != nil {
		t.Fatalf("reload: %v", err)
	}
	if n := serialOf(t, ln.Addr().String(), ca.CertFile); n != 3 {
		t.Errorf("after SIGHUP: serial %d, want 3", n)
	}
}

func readOrFail(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// copyFile copies src to dst, padded with newlines (outside the PEM
// blocks, ignored) to 2 KiB so that every copy has the same size, and
// sets its time stamps to mod.
func copyFile(t *testing.T, dst, src string, mod time.Time) {
	t.Helper()
	b := readOrFail(t, src)
	if len(b) > 2048 {
		t.Fatalf("%s: %d bytes", src, len(b))
	}
	b = append(b, bytes.Repeat([]byte("\n"), 2048-len(b))...)
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dst, mod, mod); err != nil {
		t.Fatal(err)
	}
}

func serialOf(t *testing.T, addr, caFile string) int64 {
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
