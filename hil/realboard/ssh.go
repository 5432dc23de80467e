package realboard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHBoard is a real board reached over SSH.
type SSHBoard struct {
	cfg    Config
	client *ssh.Client
}

var _ Board = (*SSHBoard)(nil)

// Dial connects to the board, checking its host key against KnownHosts.
func Dial(ctx context.Context, cfg Config) (*SSHBoard, error) {
	cfg.defaults()
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	key, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: key: %w", ErrBoard, err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrBoard, cfg.KeyFile, err)
	}
	hostKeys, err := knownhosts.New(cfg.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("%w: known_hosts: %w", ErrBoard, err)
	}
	host := cfg.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "22")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoard, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, host, &ssh.ClientConfig{
		User:            cfg.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hostKeys,
		Timeout:         cfg.timeout(),
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: ssh %s: %w", ErrBoard, host, err)
	}
	conn.SetDeadline(time.Time{})
	return &SSHBoard{cfg: cfg, client: ssh.NewClient(c, chans, reqs)}, nil
}

// DialWait dials the board until it answers (a board just switched on
// boots first), for at most timeout_s; a refused host key or login ends
// it at once.
func DialWait(ctx context.Context, cfg Config) (*SSHBoard, error) {
	cfg.defaults()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout())
	defer cancel()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		b, err := Dial(dctx, cfg)
		dcancel()
		var netErr net.Error
		if err == nil || !(errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
			errors.Is(err, io.EOF) || errors.Is(err, context.DeadlineExceeded)) {
			return b, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: the board did not answer within %v: %w", ErrBoard, cfg.timeout(), err)
		case <-t.C:
		}
	}
}

// Close ends the SSH connection.
func (b *SSHBoard) Close() error {
	if b.client == nil {
		return nil
	}
	return b.client.Close()
}

// exec runs one shell command line on the board with stdin, bounded by
// the configured timeout and ctx; a command still running then is left
// to the board (the session closes).
func (b *SSHBoard) exec(ctx context.Context, cmd string, stdin []byte) ([]byte, error) {
	if b.client == nil {
		return nil, fmt.Errorf("%w: not connected", ErrBoard)
	}
	s, err := b.client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("%w: session: %w", ErrBoard, err)
	}
	defer s.Close()
	var out, errOut bytes.Buffer
	s.Stdout, s.Stderr = &out, &errOut
	if stdin != nil {
		s.Stdin = bytes.NewReader(stdin)
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		s.Close()
		return out.Bytes(), fmt.Errorf("%w: %s: %w", ErrBoard, cmd, ctx.Err())
	}
	if err != nil {
		return out.Bytes(), fmt.Errorf("%w: %s: %w: %s", ErrBoard, cmd, err, strings.TrimSpace(errOut.String()))
	}
	return out.Bytes(), nil
}

// Run runs argv on the board (quoted for its shell).
func (b *SSHBoard) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: run: no command", ErrBoard)
	}
	return b.exec(ctx, Command(argv...), nil)
}

// Describe names the board: the SSH target and uname -m.
func (b *SSHBoard) Describe(ctx context.Context) (string, error) {
	arch, err := b.Run(ctx, "uname", "-m")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("ssh %s@%s (%s)", b.cfg.User, b.cfg.Host, strings.TrimSpace(string(arch))), nil
}

// Deploy installs flightd and its configuration atomically and restarts
// flightd.
func (b *SSHBoard) Deploy(ctx context.Context, flightd, config []byte) error {
	if _, err := b.exec(ctx, installCommand(b.cfg.FlightdPath, 0o755), flightd); err != nil {
		return err
	}
	if _, err := b.exec(ctx, installCommand(b.cfg.ConfigPath, 0o644), config); err != nil {
		return err
	}
	if len(b.cfg.Restart) > 0 {
		if _, err := b.Run(ctx, b.cfg.Restart...); err != nil {
			return err
		}
	}
	return nil
}

// Status runs flightd status --json on the board.
func (b *SSHBoard) Status(ctx context.Context) ([]byte, error) {
	return b.Run(ctx, b.cfg.FlightdPath, "status", "--config", b.cfg.ConfigPath, "--json")
}

// Power runs the configured power command on the bench host.
func (b *SSHBoard) Power(ctx context.Context, on bool) error {
	if on {
		return powerCmd(ctx, b.cfg.PowerOn, nil)
	}
	return powerCmd(ctx, b.cfg.PowerOff, nil)
}

// Console reads the board's serial console on the bench host.
func (b *SSHBoard) Console(ctx context.Context) (<-chan string, error) {
	return ReadConsole(ctx, b.cfg.Console, b.cfg.ConsoleBaud)
}

// Offline returns a board for the operations that need no SSH
// connection (Power, Console); the others fail.
func Offline(cfg Config) *SSHBoard {
	cfg.defaults()
	return &SSHBoard{cfg: cfg}
}
