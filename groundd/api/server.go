package api

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/groundd/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures a Server.
type Config struct {
	// Addr is the listen address, host:port (default DefaultAddr). A host
	// that is not loopback needs a Token or a ClientCAFile.
	Addr string
	// Token, if set, is the bearer token every request but /healthz must
	// carry (Authorization: Bearer TOKEN). See CheckToken.
	Token string
	// CertFile and KeyFile, if set, make the server speak TLS (1.2 or
	// later) with this PEM certificate (chain) and key. Serve reads them
	// again when either changes (modification time or size) and on
	// ReloadCertificate, so that a certificate rotates without a restart.
	CertFile, KeyFile string
	// ClientCAFile, if set (with CertFile), makes the server require a
	// client certificate that the PEM CA certificates of this file sign
	// (mutual TLS). The Token, if any, is needed on top. A non-loopback
	// Addr needs no Token with it.
	ClientCAFile string
	// MaxBody bounds a request body in bytes (default 64 KiB).
	MaxBody int64
	// Heartbeat is how often a telemetry stream writes an empty line when
	// nothing arrives, so that a dead client is noticed (default 15s).
	Heartbeat time.Duration
	// MaxFollowers bounds the telemetry streams open at once (default
	// 64): each holds a subscription in the daemon.
	MaxFollowers int
	// Log receives the server's log (nil: discard).
	Log *slog.Logger
	// Now is the clock of the metrics' ages (nil: time.Now).
	Now func() time.Time
}

// DefaultMaxBody bounds request bodies: the largest legitimate one, a
// command with its arguments, is well under 4 KiB.
const DefaultMaxBody = 64 << 10

// Limits of queries.
const (
	DefaultMaxFollowers   = 64
	DefaultTelemetryLimit = 1000
	MaxTelemetryLimit     = 10000
	maxQuery              = 4096 // bytes of a URL's query
)

// Server serves the API of one Daemon. It is an http.Handler.
type Server struct {
	d       Daemon
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	handler http.Handler
	tokenH  [sha256.Size]byte
	tls     *tls.Config   // nil: plain HTTP
	certs   *certReloader // with tls
	reg     *prometheus.Registry
	// followers holds a token per open telemetry stream.
	followers chan struct{}
}

// Check refuses a configuration that would expose the API
// unauthenticated beyond this machine (ErrNoToken), a bad token
// (ErrBadToken) and TLS files that are incomplete or do not load (ErrTLS,
// naming the file). New checks too; a daemon's main checks first, so that
// a refused configuration stops it before it opens anything.
func (c Config) Check() error {
	if err := c.checkTLS(); err != nil {
		return err
	}
	if c.Token != "" {
		return CheckToken(c.Token)
	}
	if c.ClientCAFile != "" {
		// Mutual TLS: only holders of a certificate the CA signed get
		// past the handshake.
		return nil
	}
	if addr := cmp.Or(c.Addr, DefaultAddr); !IsLoopback(addr) {
		return fmt.Errorf("%w: %s (set a token or a client CA)", ErrNoToken, addr)
	}
	return nil
}

// New returns the server of d. It refuses a configuration that would
// expose the API unauthenticated beyond this machine (ErrNoToken) and a
// bad token (ErrBadToken).
func New(d Daemon, cfg Config) (*Server, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	cfg.Addr = cmp.Or(cfg.Addr, DefaultAddr)
	cfg.MaxBody = cmp.Or(cfg.MaxBody, DefaultMaxBody)
	cfg.Heartbeat = cmp.Or(cfg.Heartbeat, 15*time.Second)
	cfg.MaxFollowers = cmp.Or(cfg.MaxFollowers, DefaultMaxFollowers)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{d: d, cfg: cfg, log: cfg.Log, mux: http.NewServeMux(), followers: make(chan struct{}, cfg.MaxFollowers)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.tokenH = sha256.Sum256([]byte(cfg.Token))
	if cfg.CertFile != "" {
		certs, err := newCertReloader(cfg.CertFile, cfg.KeyFile, s.log)
		if err != nil {
			return nil, err
		}
		if s.tls, err = serverTLS(cfg, certs); err != nil {
			return nil, err
		}
		s.certs = certs
	}
	s.reg = metrics.NewRegistry(daemonSource{d}, cfg.Now)
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "groundd_api_requests_total",
		Help: "API requests answered, by method and status code.",
	}, []string{"method", "code"})
	s.reg.MustRegister(requests)

	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, map[string]bool{"ok": true}) })
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	s.mux.HandleFunc("GET /v1/queue", s.queueList)
	s.mux.HandleFunc("POST /v1/queue", s.queueAdd)
	s.mux.HandleFunc("GET /v1/queue/{id}", s.queueShow)
	s.mux.HandleFunc("POST /v1/queue/{id}/cancel", s.queueCancel)
	s.mux.HandleFunc("POST /v1/queue/{id}/reorder", s.queueReorder)
	s.mux.HandleFunc("POST /v1/queue/{id}/approve", s.queueApprove)
	s.mux.HandleFunc("GET /v1/vehicles", s.vehicles)
	s.mux.HandleFunc("GET /v1/vehicles/{id}", s.vehicleShow)
	s.mux.HandleFunc("GET /v1/transfers", s.transfers)
	s.mux.HandleFunc("POST /v1/vehicles/{id}/commands", s.commandSend)
	s.mux.HandleFunc("GET /v1/vehicles/{id}/commands", s.commandList)
	s.mux.HandleFunc("GET /v1/commands/{id}", s.commandShow)
	s.mux.HandleFunc("POST /v1/vehicles/{vid}/commands/{id}/cancel", s.commandCancel)
	s.mux.HandleFunc("GET /v1/vehicles/{id}/telemetry", s.telemetry)
	s.mux.HandleFunc("GET /v1/stations", s.stations)

	var h http.Handler = http.HandlerFunc(s.route)
	// A web page the operator has open can make the browser send a form
	// POST (no preflight) to a loopback address: without a token nothing
	// else stops it approving or cancelling an uplink. Browsers say where
	// a request comes from (Sec-Fetch-Site, Origin); a cross-origin one
	// that changes state is refused. Clients that are not browsers send
	// neither header and pass.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, CodeForbidden, "a cross-origin browser request may not %s %s", r.Method, r.URL.Path)
	}))
	h = cop.Handler(h)
	h = promhttp.InstrumentHandlerCounter(requests, h)
	s.handler = h
	return s, nil
}

// Registry is the server's metrics registry, for an embedder to add its
// own collectors.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// TLS reports whether the server speaks TLS (and so its URL is https://).
func (s *Server) TLS() bool { return s.tls != nil }

// ReloadCertificate reads the certificate and key files again (a daemon
// calls it on SIGHUP). If they do not load, the previous certificate
// stays in service and the error says why. Without TLS it does nothing.
func (s *Server) ReloadCertificate() error {
	if s.certs == nil {
		return nil
	}
	return s.certs.Reload()
}

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// ListenAndServe listens on the configured address and serves until ctx
// ends, then shuts down, giving open requests a few seconds.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends. ln must be on the address the server
// was configured with (its loopback check was on that address).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("api: serving", "addr", ln.Addr().String(), "token", s.cfg.Token != "", "tls", s.tls != nil, "client_certs", s.cfg.ClientCAFile != "")
	done := make(chan error, 1)
	if s.tls != nil {
		// A plain HTTP request on this port gets a 400 "Client sent an
		// HTTP request to an HTTPS server" from net/http.
		hs.TLSConfig = s.tls
		go func() { done <- hs.ServeTLS(ln, "", "") }()
	} else {
		go func() { done <- hs.Serve(ln) }()
	}
	select {
	case err := <-done:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-done
	if err != nil {
		hs.Close()
	}
	return nil
}

// route checks the request (host, token, query size) and dispatches it,
// answering unknown paths and methods with JSON errors, not the mux's
// text.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if s.cfg.Token == "" && s.cfg.ClientCAFile == "" {
		// Without a token, the loopback address is the only protection:
		// a browser reaching 127.0.0.1 through a rebinding DNS name sends
		// that name as Host. (With client certificates, the handshake has
		// already proved who the client is.)
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !loopbackHost(host) {
			writeError(w, http.StatusForbidden, CodeForbidden, "host %q is not a loopback name; this server has no token", r.Host)
			return
		}
	}
	h, pattern := s.mux.Handler(r)
	if pattern != "GET /healthz" && s.cfg.Token != "" && !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="groundd"`)
		writeError(w, http.StatusUnauthorized, CodeUnauthorized, "a valid bearer token is required")
		return
	}
	if len(r.URL.RawQuery) > maxQuery {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "query longer than %d bytes", maxQuery)
		return
	}
	if pattern == "" {
		// The mux's own 404 or 405: keep its status and Allow header, say
		// it in JSON.
		rec := &statusOnly{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.code == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.header.Get("Allow"))
			writeError(w, rec.code, CodeMethod, "%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, rec.header.Get("Allow"))
			return
		}
		writeError(w, http.StatusNotFound, CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path)
		return
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	}
	s.mux.ServeHTTP(w, r) // again, to set the path's values

}

// authorized compares the bearer token in constant time: both sides are
// hashed first so that neither the content nor the length of the token
// shows in the time taken.
func (s *Server) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	h := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(h[:], s.tokenH[:]) == 1
}

// statusOnly records the status and headers the mux's fallback handlers
// write, dropping their text body.
type statusOnly struct {
	header http.Header
	code   int
}

func (s *statusOnly) Header() http.Header         { return s.header }
func (s *statusOnly) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusOnly) WriteHeader(code int)        { s.code = code }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// fail answers with the status the daemon's error calls for.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, code := daemonError(err)
	if status >= 500 {
		s.log.Error("api: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, status, code, "%v", err)
}

// decode reads a JSON request body into v: application/json only, within
// MaxBody, one document, no unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, CodeMediaType, "the body must be application/json")
		return false
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "the body exceeds %d bytes", mbe.Limit)
			return false
		}
		writeError(w, http.StatusBadRequest, CodeBadRequest, "reading the body: %v", err)
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "bad JSON body: %v", err)
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "bad JSON body: data after the document")
		return false
	}
	return true
}

func pathUint(w http.ResponseWriter, r *http.Request, name string, bits int) (uint64, bool) {
	v, err := strconv.ParseUint(r.PathValue(name), 10, bits)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "bad %s %q: want a decimal number", name, r.PathValue(name))
		return 0, false
	}
	return v, true
}
