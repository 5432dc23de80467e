// Package api is groundd's operator interface: an HTTP JSON API over the
// uplink queue, the vehicles, the transfers, the commands and the telemetry
// of a Daemon, a Prometheus /metrics endpoint, and the Go client the
// groundd CLI uses. docs/groundd-api.md describes every endpoint.
//
// The server is safe by default: it listens on the loopback interface, and
// it refuses to start on any other address without a bearer token. Without
// a token it answers only requests whose Host is a loopback name, so that a
// web page cannot reach it through DNS rebinding; writes take only
// application/json bodies, so that a page cannot post a form to it. Tokens
// are compared in constant time, request bodies and query sizes are
// bounded, and every error is a JSON document with a code and a message.
//
// With a certificate and key the server speaks TLS itself (1.2 or later),
// reading them again when they change; with a client CA it requires client
// certificates (mutual TLS), which stand in for the token on a
// non-loopback address.
package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
)

// Daemon is what the API serves: the methods of groundd's Daemon it calls.
// It is an interface so that tests serve a fake.
type Daemon interface {
	QueueAdd(ctx context.Context, r groundd.UplinkRequest) (groundd.Uplink, error)
	QueueList(ctx context.Context) ([]groundd.Uplink, error)
	QueueShow(ctx context.Context, id uint64) (groundd.Uplink, error)
	QueueCancel(ctx context.Context, id uint64) (groundd.Uplink, error)
	QueueReorder(ctx context.Context, id uint64, pos int) (groundd.Uplink, error)
	// QueueApprove queues an uplink pending an operator's approval (one a
	// followed tag queued under the "approve" policy).
	QueueApprove(ctx context.Context, id uint64) (groundd.Uplink, error)

	Vehicles(ctx context.Context) ([]groundd.Vehicle, error)
	VehicleShow(ctx context.Context, id uint32) (groundd.Vehicle, error)

	Transfers(ctx context.Context) ([]groundd.Transfer, error)
	UplinkTransfers(ctx context.Context, uplink uint64) ([]groundd.Transfer, error)

	SendCommand(ctx context.Context, vehicle uint32, opcode string, args map[string]any) (groundd.Command, error)
	CommandShow(ctx context.Context, id uint64) (groundd.Command, error)
	// CommandCancel cancels a command of vehicle not sent yet.
	CommandCancel(ctx context.Context, vehicle uint32, id uint64) (groundd.Command, error)
	// Commands lists the commands sent to vehicle (0: to every vehicle).
	Commands(ctx context.Context, vehicle uint32) ([]groundd.Command, error)

	// TelemetryRange returns the records of vehicle received in [from,
	// to) (zero to: no end), oldest first, at most limit.
	TelemetryRange(ctx context.Context, vehicle uint32, from, to time.Time, limit int) ([]groundd.TelemetryRecord, error)
	// TelemetryFollow returns the records of vehicle that arrive from now
	// on; the channel closes when ctx ends.
	TelemetryFollow(ctx context.Context, vehicle uint32) (<-chan groundd.TelemetryRecord, error)
}

// Errors of the server's configuration.
var (
	// ErrNoToken: the address is not a loopback one and no token is set.
	ErrNoToken = errors.New("api: refusing to listen on a non-loopback address without a token")
	// ErrBadToken: the token is empty, too long or not printable.
	ErrBadToken = errors.New("api: bad token")
)

// DefaultAddr is where the API listens unless told otherwise.
const DefaultAddr = "127.0.0.1:7468"

// MaxToken bounds a token (bytes).
const MaxToken = 4096

// CheckToken checks that a token is usable in an Authorization header:
// 16..MaxToken printable ASCII bytes without spaces.
func CheckToken(tok string) error {
	if len(tok) < 16 || len(tok) > MaxToken {
		return fmt.Errorf("%w: %d bytes, want 16 to %d", ErrBadToken, len(tok), MaxToken)
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] <= ' ' || tok[i] > '~' {
			return fmt.Errorf("%w: byte %d is not printable ASCII", ErrBadToken, i)
		}
	}
	return nil
}

// IsLoopback reports whether the listen address addr (host:port) binds
// only loopback interfaces: localhost, 127.0.0.0/8 or ::1. An empty host
// (":7468") binds every interface and is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return loopbackHost(host)
}

func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return ip != nil && ip.IsLoopback()
}
