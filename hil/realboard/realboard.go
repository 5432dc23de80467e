// Package realboard drives a real ARM64 flight computer on the bench: it
// reaches the board over SSH (deploys flightd and its configuration,
// reads flightd's status, runs commands), switches the board's power
// through a configured local command (a USB relay, a PDU's CLI, a lab
// power supply) and reads its serial console from a device.
//
// hil/board (the process-level virtual board) had no Board interface
// when this package was written, so this package defines the small one
// the scenarios need (Board); a scenario runner written against it runs
// on a real board as on a virtual one.
package realboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

func (c Config) timeout() time.Duration { return time.Duration(c.TimeoutS) * time.Second }

// ErrBoard prefixes every error of this package.
var ErrBoard = errors.New("realboard")

// Board is what a scenario needs of a board: deploy flightd, read its
// status, run a command, switch power, read the console.
type Board interface {
	// Describe names the board and its architecture for the report
	// ("ssh root@obc1:22 (aarch64)").
	Describe(ctx context.Context) (string, error)
	// Deploy installs the flightd binary and its configuration and
	// restarts flightd.
	Deploy(ctx context.Context, flightd, config []byte) error
	// Status returns flightd status --json, as flightd prints it.
	Status(ctx context.Context) ([]byte, error)
	// Run runs a command on the board (argv, no shell) and returns its
	// standard output.
	Run(ctx context.Context, argv ...string) ([]byte, error)
	// Power switches the board's power.
	Power(ctx context.Context, on bool) error
	// Console returns the serial console's lines until ctx ends.
	Console(ctx context.Context) (<-chan string, error)
}

// Config is one bench board.
type Config struct {
	// Host is the board's SSH address, host:port (port default 22).
	Host string `json:"host"`
	User string `json:"user"`
	// KeyFile is the private key the bench logs in with.
	KeyFile string `json:"key_file"`
	// KnownHosts is a known_hosts file that must hold the board's host
	// key: the bench never accepts an unknown key.
	KnownHosts string `json:"known_hosts"`
	// PowerOn and PowerOff are local commands (argv, no shell) that
	// switch the board's supply: a relay tool, a PDU client.
	PowerOn  []string `json:"power_on"`
	PowerOff []string `json:"power_off"`
	// Console is the serial console's device on the bench host
	// (/dev/ttyUSB0) and its baud rate (default 115200).
	Console     string `json:"console"`
	ConsoleBaud int    `json:"console_baud"`
	// Paths on the board.
	FlightdPath string `json:"flightd_path"` // default /usr/bin/flightd
	ConfigPath  string `json:"config_path"`  // default /etc/bootorbit/flightd.json
	// Restart restarts flightd after a deploy (argv, run on the board);
	// default systemctl restart flightd.
	Restart []string `json:"restart"`
	// TimeoutS bounds every SSH command and the login, in seconds
	// (default 120).
	TimeoutS int `json:"timeout_s"`
}

func (c *Config) defaults() {
	if c.FlightdPath == "" {
		c.FlightdPath = "/usr/bin/flightd"
	}
	if c.ConfigPath == "" {
		c.ConfigPath = "/etc/bootorbit/flightd.json"
	}
	if c.Restart == nil {
		c.Restart = []string{"systemctl", "restart", "flightd"}
	}
	if c.ConsoleBaud == 0 {
		c.ConsoleBaud = 115200
	}
	if c.TimeoutS <= 0 {
		c.TimeoutS = 120
	}
	if c.User == "" {
		c.User = "root"
	}
}

// Check reports what is missing from a configuration.
func (c Config) Check() error {
	var errs []error
	if c.Host == "" {
		errs = append(errs, errors.New("host is empty"))
	}
	if c.KeyFile == "" {
		errs = append(errs, errors.New("key_file is empty"))
	}
	if c.KnownHosts == "" {
		errs = append(errs, errors.New("known_hosts is empty (the board's host key must be known)"))
	}
	if len(c.PowerOn) == 0 || len(c.PowerOff) == 0 {
		errs = append(errs, errors.New("power_on and power_off must both be commands"))
	}
	for _, p := range []string{c.FlightdPath, c.ConfigPath} {
		if p != "" && !strings.HasPrefix(p, "/") {
			errs = append(errs, fmt.Errorf("path %q is not absolute", p))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: config: %w", ErrBoard, err)
	}
	return nil
}

// ShellQuote quotes s for a POSIX shell: the remote side of SSH runs
// every command through the user's shell, so each argument goes in single
// quotes, a single quote in it as '\”.
func ShellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Command joins argv into one shell command line, every argument quoted.
func Command(argv ...string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = ShellQuote(a)
	}
	return strings.Join(q, " ")
}

// installCommand writes standard input to path atomically: a temporary
// file beside it, synced, given its mode, renamed over path, and the
// directory synced (a power cut leaves the old file or the new one).
func installCommand(path string, mode uint32) string {
	dir := path[:strings.LastIndex(path, "/")+1]
	if dir == "" {
		dir = "."
	}
	tmp := path + ".bootorbit-new"
	return fmt.Sprintf("set -e; mkdir -p %s; cat > %s; sync %s 2>/dev/null || sync; chmod %o %s; mv -f %s %s; sync %s 2>/dev/null || sync",
		ShellQuote(dir), ShellQuote(tmp), ShellQuote(tmp), mode, ShellQuote(tmp), ShellQuote(tmp), ShellQuote(path), ShellQuote(dir))
}

// powerCmd runs a local power command.
func powerCmd(ctx context.Context, argv []string, stderr io.Writer) error {
	if len(argv) == 0 {
		return fmt.Errorf("%w: no power command", ErrBoard)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: power command %s: %w: %s", ErrBoard, Command(argv...), err, strings.TrimSpace(out.String()))
	}
	if stderr != nil {
		io.WriteString(stderr, out.String())
	}
	return nil
}
