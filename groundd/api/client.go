package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
)

// MaxResponse bounds a response body the Client reads (a long telemetry
// range is the largest).
const MaxResponse = 64 << 20

// Client talks to a groundd API server. Its methods are safe for
// concurrent use.
type Client struct {
	base  *url.URL
	token string
	// clientCert: UseTLS gave a client certificate.
	clientCert bool
	// HTTP is the client requests go through (default: one without a
	// timeout of its own; every call takes a context).
	HTTP *http.Client
	// Timeout bounds each request but a telemetry stream (default
	// DefaultTimeout; 0: none), so that a stuck server fails a command
	// rather than hanging it.
	Timeout time.Duration
}

// DefaultTimeout is a Client's Timeout unless set.
const DefaultTimeout = 30 * time.Second

// NewClient returns a client of the server at base (http://HOST:PORT or
// https://...), sending token, if not empty, as a bearer token.
func NewClient(base, token string) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("api: server %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("api: server %q: want http://HOST:PORT or https://HOST:PORT", base)
	}
	if token != "" {
		if err := CheckToken(token); err != nil {
			return nil, err
		}
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &Client{base: u, token: token, HTTP: &http.Client{}, Timeout: DefaultTimeout}, nil
}

// UseTLS makes the client's connections use tc (the CA that signs the
// server's certificate, a client certificate: see ClientTLS). The server
// must be an https:// URL: a CA or a certificate given for a plain HTTP
// server is a mistake worth saying.
func (c *Client) UseTLS(tc *tls.Config) error {
	if c.base.Scheme != "https" {
		return fmt.Errorf("%w: server %s is not https://", ErrTLS, c.base.Redacted())
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	c.HTTP.Transport = tr
	c.clientCert = len(tc.Certificates) > 0 || tc.GetClientCertificate != nil
	return nil
}

// certRefused tells whether err may be a server refusing the client's
// certificate, or its lack of one. In TLS 1.3 the client's handshake ends
// before the server's verdict, which arrives as an alert, or as a reset,
// a broken pipe or an end of stream if the client was still writing its
// request or setting up HTTP/2: the message alone seldom says it. (A
// server going away mid-request looks the same: hence a question.)
func (c *Client) certRefused(err error) bool {
	if c.base.Scheme != "https" {
		return false
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"certificate required", "unknown certificate authority", "bad certificate", "client conn could not be established"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// do sends a request and decodes a JSON answer into out (nil: discard).
// An error document becomes an *Error.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	resp, err := c.send(ctx, method, path, q, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	if len(body) > MaxResponse {
		return fmt.Errorf("api: %s %s: answer longer than %d bytes", method, path, MaxResponse)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("api: %s %s: bad answer: %w", method, path, err)
	}
	return nil
}

// send sends a request and returns a 2xx response; any other becomes an
// error.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, in any) (*http.Response, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if c.certRefused(err) {
			if c.clientCert {
				return nil, fmt.Errorf("api: %w (does the server accept this client certificate?)", err)
			}
			return nil, fmt.Errorf("api: %w (does the server require a client certificate?)", err)
		}
		return nil, fmt.Errorf("api: %w", err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var doc errorDoc
	if json.Unmarshal(b, &doc) != nil || doc.Error == nil {
		return nil, &Error{Status: resp.StatusCode, Code: codeOf(resp.StatusCode), Message: strings.TrimSpace(string(b))}
	}
	doc.Error.Status = resp.StatusCode
	return nil, doc.Error
}

// codeOf names a status without an error document (a proxy's answer).
func codeOf(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeBadRequest
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusConflict:
		return CodeConflict
	}
	return CodeInternal
}

// IsNotFound reports whether err is the server's 404.
func IsNotFound(err error) bool {
	e, ok := errors.AsType[*Error](err)
	return ok && e.Status == http.StatusNotFound
}

// QueueAdd queues an uplink.
func (c *Client) QueueAdd(ctx context.Context, r groundd.UplinkRequest) (groundd.Uplink, error) {
	var u groundd.Uplink
	return u, c.do(ctx, http.MethodPost, "/v1/queue", nil, r, &u)
}

// QueueList lists the uplinks in queue order.
func (c *Client) QueueList(ctx context.Context) ([]groundd.Uplink, error) {
	var us []groundd.Uplink
	return us, c.do(ctx, http.MethodGet, "/v1/queue", nil, nil, &us)
}

// QueueShow returns one uplink.
func (c *Client) QueueShow(ctx context.Context, id uint64) (groundd.Uplink, error) {
	var u groundd.Uplink
	return u, c.do(ctx, http.MethodGet, "/v1/queue/"+strconv.FormatUint(id, 10), nil, nil, &u)
}

// QueueCancel cancels an uplink.
func (c *Client) QueueCancel(ctx context.Context, id uint64) (groundd.Uplink, error) {
	var u groundd.Uplink
	return u, c.do(ctx, http.MethodPost, "/v1/queue/"+strconv.FormatUint(id, 10)+"/cancel", nil, struct{}{}, &u)
}

// QueueReorder moves a waiting uplink to position pos (0: first).
func (c *Client) QueueReorder(ctx context.Context, id uint64, pos int) (groundd.Uplink, error) {
	var u groundd.Uplink
	return u, c.do(ctx, http.MethodPost, "/v1/queue/"+strconv.FormatUint(id, 10)+"/reorder", nil, ReorderRequest{pos}, &u)
}

// QueueApprove queues an uplink pending an operator's approval.
func (c *Client) QueueApprove(ctx context.Context, id uint64) (groundd.Uplink, error) {
	var u groundd.Uplink
	return u, c.do(ctx, http.MethodPost, "/v1/queue/"+strconv.FormatUint(id, 10)+"/approve", nil, struct{}{}, &u)
}

// CommandCancel cancels a command not sent yet.
func (c *Client) CommandCancel(ctx context.Context, vehicle uint32, id uint64) (groundd.Command, error) {
	var cmd groundd.Command
	return cmd, c.do(ctx, http.MethodPost, "/v1/vehicles/"+strconv.FormatUint(uint64(vehicle), 10)+"/commands/"+strconv.FormatUint(id, 10)+"/cancel", nil, struct{}{}, &cmd)
}

// Vehicles lists what groundd knows of every vehicle.
func (c *Client) Vehicles(ctx context.Context) ([]groundd.Vehicle, error) {
	var vs []groundd.Vehicle
	return vs, c.do(ctx, http.MethodGet, "/v1/vehicles", nil, nil, &vs)
}

// VehicleShow returns what groundd knows of one vehicle.
func (c *Client) VehicleShow(ctx context.Context, id uint32) (groundd.Vehicle, error) {
	var v groundd.Vehicle
	return v, c.do(ctx, http.MethodGet, "/v1/vehicles/"+strconv.FormatUint(uint64(id), 10), nil, nil, &v)
}

// Transfers lists the transfers in flight (uplink 0), or every transfer of
// an uplink; vehicle, if not 0, keeps one vehicle's.
func (c *Client) Transfers(ctx context.Context, uplink uint64, vehicle uint32) ([]groundd.Transfer, error) {
	q := url.Values{}
	if uplink != 0 {
		q.Set("uplink", strconv.FormatUint(uplink, 10))
	}
	if vehicle != 0 {
		q.Set("vehicle", strconv.FormatUint(uint64(vehicle), 10))
	}
	var ts []groundd.Transfer
	return ts, c.do(ctx, http.MethodGet, "/v1/transfers", q, nil, &ts)
}

// SendCommand sends a command; args are JSON-encoded (ArgsFromStrings
// makes them from a command line).
func (c *Client) SendCommand(ctx context.Context, vehicle uint32, opcode string, args map[string]any) (groundd.Command, error) {
	req := struct {
		Opcode string         `json:"opcode"`
		Args   map[string]any `json:"args,omitempty"`
	}{opcode, args}
	var cmd groundd.Command
	return cmd, c.do(ctx, http.MethodPost, "/v1/vehicles/"+strconv.FormatUint(uint64(vehicle), 10)+"/commands", nil, req, &cmd)
}

// CommandShow returns a command and its stage.
func (c *Client) CommandShow(ctx context.Context, id uint64) (groundd.Command, error) {
	var cmd groundd.Command
	return cmd, c.do(ctx, http.MethodGet, "/v1/commands/"+strconv.FormatUint(id, 10), nil, nil, &cmd)
}

// Commands lists the commands sent to a vehicle.
func (c *Client) Commands(ctx context.Context, vehicle uint32) ([]groundd.Command, error) {
	var cs []groundd.Command
	return cs, c.do(ctx, http.MethodGet, "/v1/vehicles/"+strconv.FormatUint(uint64(vehicle), 10)+"/commands", nil, nil, &cs)
}

// TelemetryQuery selects telemetry records of a vehicle.
type TelemetryQuery struct {
	From, To time.Time // received in [From, To); zero: unbounded
	Name     string    // a packet or event name ("hk.slots"); empty: all
	Kind     string    // "tm" or "event"; empty: both
	Limit    int       // at most this many (0: the server's default)
}

func (q TelemetryQuery) values() url.Values {
	v := url.Values{}
	if !q.From.IsZero() {
		v.Set("from", q.From.UTC().Format(time.RFC3339Nano))
	}
	if !q.To.IsZero() {
		v.Set("to", q.To.UTC().Format(time.RFC3339Nano))
	}
	if q.Name != "" {
		v.Set("name", q.Name)
	}
	if q.Kind != "" {
		v.Set("kind", q.Kind)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// Telemetry returns a vehicle's archived telemetry and events.
func (c *Client) Telemetry(ctx context.Context, vehicle uint32, q TelemetryQuery) ([]groundd.TelemetryRecord, error) {
	var recs []groundd.TelemetryRecord
	return recs, c.do(ctx, http.MethodGet, "/v1/vehicles/"+strconv.FormatUint(uint64(vehicle), 10)+"/telemetry", q.values(), nil, &recs)
}

// MaxLine bounds one line of a telemetry stream.
const MaxLine = 1 << 20

// FollowTelemetry streams a vehicle's telemetry to fn as it arrives (after
// the records of q's range, if q.From is set) until ctx ends, fn returns an
// error, or the server ends the stream (io.EOF).
func (c *Client) FollowTelemetry(ctx context.Context, vehicle uint32, q TelemetryQuery, fn func(groundd.TelemetryRecord) error) error {
	v := q.values()
	v.Set("follow", "true")
	resp, err := c.send(ctx, http.MethodGet, "/v1/vehicles/"+strconv.FormatUint(uint64(vehicle), 10)+"/telemetry", v, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 { // a heartbeat
			continue
		}
		var rec groundd.TelemetryRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			return fmt.Errorf("api: telemetry stream: %w", err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("api: telemetry stream: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return io.EOF
}
