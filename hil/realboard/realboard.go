// Package realboard drives a real ARM64 flight computer on the bench: it
// reaches the board over SSH (deploys flightd and its configuration,
// reads flightd's status, runs commands), switches the board's power
// through a configured local command (a USB relay, a PDU's CLI, a lab
// power supply) and reads its serial console from a device.
//
// Board is the driver's interface (SSHBoard implements it).
// ScenarioBoard puts it behind the scenario runner's board interface
// (hil/scenario.Board, which the virtual board hil/board implements too),
// so that `hil run --board` runs the shipped scenarios on a real board
// and writes the same report; NewBoards is the runner's factory for it.
// realboardtest is a bench double for the tests.
package realboard

import (
	"context"
	"encoding/json"
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
	// (default 120), and a boot (power on to flightd running).
	TimeoutS int `json:"timeout_s"`

	// What hil run --board needs besides (docs/hil.md, "Real boards"):

	// Flightd is the board's flightd configuration without what each
	// scenario sets: slots, boot (environment, watchdog, reboot),
	// health, storage, telemetry, control, and the radio link (named
	// "radio", else the first) with its listen address. The scenario
	// adds the vehicle, the keys, the radio's peer and frame size, and
	// boot.attempts.
	Flightd json.RawMessage `json:"flightd,omitempty"`
	// LinkAddr is flightd's radio address as the bench host reaches it
	// (host:port): the link emulator's vehicle endpoint.
	LinkAddr string `json:"link_addr,omitempty"`
	// BenchAddr is where the link emulator's vehicle side listens, an
	// address of the bench host the board reaches (default 127.0.0.1:0,
	// a board on this host only).
	BenchAddr string `json:"bench_addr,omitempty"`
	// KeyDir is where the scenario's keys go on the board (default
	// /etc/bootorbit/hil).
	KeyDir string `json:"key_dir,omitempty"`
	// Factory runs on the board before each scenario: it stops flightd
	// and brings the board back to its factory state (slot A holds the
	// run's base image, good and booted; slot B empty; the environment
	// boots A; flightd's state and uplink storage cleared).
	Factory []string `json:"factory,omitempty"`
	// BootID prints an id that changes at every boot (default cat
	// /proc/sys/kernel/random/boot_id); Running exits 0 while flightd
	// runs (default systemctl is-active --quiet flightd); Printenv
	// prints the boot environment as name=value lines (default
	// fw_printenv). All run on the board.
	BootID   []string `json:"boot_id,omitempty"`
	Running  []string `json:"running,omitempty"`
	Printenv []string `json:"printenv,omitempty"`
	// ConsoleEvents maps a board event kind to a regular expression of
	// console lines: a line that matches between two boots says why the
	// board reset (default: watchdog_reset for the usual watchdog reset
	// messages of U-Boot and the kernel).
	ConsoleEvents map[string]string `json:"console_events,omitempty"`
	// PollMS is how often the board's state is read over SSH during a
	// scenario (default 250).
	PollMS int `json:"poll_ms,omitempty"`
	// ImageBehaviour says the board acts on the synthetic images'
	// behaviour file (hil/images.BehaviourFile), as a rehearsal bench
	// with directory slots can: its flightd does not start when the
	// booted slot's image says "hang" (the hardware watchdog resets the
	// board), and its health check fails when it says "unhealthy". The
	// scenarios of those images then run instead of being skipped.
	ImageBehaviour bool `json:"image_behaviour,omitempty"`
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
	if c.KeyDir == "" {
		c.KeyDir = "/etc/bootorbit/hil"
	}
	if c.BootID == nil {
		c.BootID = []string{"cat", "/proc/sys/kernel/random/boot_id"}
	}
	if c.Running == nil {
		c.Running = []string{"systemctl", "is-active", "--quiet", "flightd"}
	}
	if c.Printenv == nil {
		c.Printenv = []string{"fw_printenv"}
	}
	if c.ConsoleEvents == nil {
		c.ConsoleEvents = map[string]string{"watchdog_reset": `(?i)(watchdog.*(reset|expired|timeout)|reset cause:.*(wdog|watchdog))`}
	}
	if c.PollMS <= 0 {
		c.PollMS = 250
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
