//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bootorbit/bootorbit/flightd"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", func() *cobra.Command {
		var config string
		var verbose bool
		c := &cobra.Command{
			Use:   "run",
			Short: "run the onboard daemon: links, commands, telemetry, uplink, boot and watchdog",
			Long: `Run is flightd on the flight computer. At start it bumps the return-link
epoch, records the reset cause, reconciles the slot states with the
bootloader environment and, on a trial boot, runs the health checks and
marks the slot good or rolls back. Then it serves the links: commands with
their verification reports, plan and bundle transfers into the inactive
slot, housekeeping telemetry and events; and it pets the hardware watchdog
while healthy. SIGINT and SIGTERM stop it (the watchdog stays armed).

The configuration is described key by key in docs/flightd.md; a bad one is
refused with every problem listed.`,
			Example: `  flightd run --config /etc/bootorbit/flightd.json
  flightd run --config flightd.json -v`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runDaemon(c, config, verbose) },
		}
		c.Flags().StringVar(&config, "config", "", "flightd configuration `FILE` (JSON)")
		c.MarkFlagRequired("config")
		cli.VerboseFlag(c, &verbose)
		return c
	})
	commands.Add("", func() *cobra.Command {
		var config string
		var jsonOut, offline, verbose bool
		c := &cobra.Command{
			Use:   "status",
			Short: "show the vehicle's state: slots, boot, uplink, counters, last error",
			Long: `Status prints what housekeeping telemetry carries: each slot's state, image
and version, the booted and next slot, whether this is a trial boot, the
reset cause and boot count, the uplink's plan and staging, the counters and
the last error. It asks the running daemon over its control socket
(control.socket) when there is one, else reads the state from disk.`,
			Example: `  flightd status --config /etc/bootorbit/flightd.json
  flightd status --config /etc/bootorbit/flightd.json --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runStatus(c, config, jsonOut, offline, verbose) },
		}
		c.Flags().StringVar(&config, "config", "", "flightd configuration `FILE` (JSON)")
		c.MarkFlagRequired("config")
		c.Flags().BoolVar(&offline, "offline", false, "read the state from disk even if the daemon runs")
		cli.JSONFlag(c, &jsonOut)
		cli.VerboseFlag(c, &verbose)
		return c
	})
	commands.Add("", func() *cobra.Command {
		var config string
		var jsonOut, verbose bool
		c := &cobra.Command{
			Use:   "check",
			Short: "check the slot records, the bootloader environment and the uplink journal agree",
			Long: `Check compares the slot states, the bootloader environment and the uplink
journal and staging, and lists every disagreement: a slot the environment
can boot that holds no verified image, a next boot into an incomplete slot,
journal records without their staged data, a slot record that is not the
installed release. It writes nothing. Exit 0: consistent; 1: problems
found (each printed). Stop the daemon first: it holds the journal.`,
			Example: `  flightd check --config /etc/bootorbit/flightd.json
  flightd check --config /etc/bootorbit/flightd.json --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runCheck(c, config, jsonOut, verbose) },
		}
		c.Flags().StringVar(&config, "config", "", "flightd configuration `FILE` (JSON)")
		c.MarkFlagRequired("config")
		cli.JSONFlag(c, &jsonOut)
		cli.VerboseFlag(c, &verbose)
		return c
	})
	commands.Add("", func() *cobra.Command {
		c := &cobra.Command{
			Use:   "keygen FILE",
			Short: "create the vehicle's return-link MAC key in FILE (mode 0600, never printed)",
			Long: `Keygen writes a new random 32-byte return-link MAC key, as 64 hex digits,
to FILE with mode 0600, synced, and refuses to overwrite an existing file.
The key is not printed: give the ground its copy through your key-handling
procedure, and name FILE in keys.vehicle of the configuration.`,
			Example: `  flightd keygen /etc/bootorbit/vehicle.key`,
			Args: func(_ *cobra.Command, args []string) error {
				if len(args) != 1 {
					return cli.Usagef("want exactly one FILE, got %d arguments", len(args))
				}
				return nil
			},
			RunE: func(c *cobra.Command, args []string) error {
				if err := flightd.WriteVehicleKey(args[0]); err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "vehicle key written to %s (mode 0600)\n", args[0])
				return nil
			},
		}
		return c
	})
}

func runDaemon(c *cobra.Command, config string, verbose bool) error {
	cfg, err := flightd.LoadRunConfig(config)
	if err != nil {
		return err
	}
	// A daemon logs from info up (its events); -v adds debug (every
	// dropped frame).
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(c.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
	log.Info("memory limit", "bytes", cfg.ApplyMemoryLimit())
	ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opt := flightd.Options{Log: log}
	if cfg.Control.Socket != "" {
		opt.Ready = func(status func() flightd.Status) {
			if err := serveControl(ctx, cfg.Control.Socket, status); err != nil {
				log.Error("control socket", "err", err)
			}
		}
	}
	err = flightd.Run(ctx, cfg, opt)
	switch {
	case errors.Is(err, flightd.ErrRebooted):
		return nil
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		log.Info("stopped")
		return nil
	}
	return err
}

// serveControl answers every connection on the unix socket path with the
// daemon's status as JSON, until ctx ends. The socket is 0600: only root
// asks. A stale socket at path is replaced; anything else there is left
// alone (an error): the config must not make the daemon delete a file.
//
// The socket is never reachable by another user, whatever the umask: it
// is bound in a fresh directory of mode 0700 beside path, made 0600
// there, and only then linked to path (a link, not a rename, so that
// nothing that appeared at path meanwhile is replaced). Bound at path and
// chmod'ed after, it would be open to all for that moment under a lax
// umask; and the umask cannot be narrowed around the bind, since it is
// the process's and the daemon's other goroutines are creating files.
func serveControl(ctx context.Context, path string, status func() flightd.Status) error {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("flightd: control socket %s: a file that is not a socket is there (mode %v)", path, fi.Mode())
		}
		os.Remove(path)
	}
	priv, err := os.MkdirTemp(filepath.Dir(path), ".fd-")
	if err != nil {
		return fmt.Errorf("flightd: control socket %s: %w", path, err)
	}
	defer os.RemoveAll(priv)
	bound := filepath.Join(priv, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return fmt.Errorf("flightd: control socket %s: %w", path, err)
	}
	// Its name is path from here on, which the cleanup below removes.
	l.SetUnlinkOnClose(false)
	if listenHook != nil {
		listenHook(bound)
	}
	if err := os.Chmod(bound, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("flightd: control socket %s: %w", path, err)
	}
	if err := os.Link(bound, path); err != nil {
		l.Close()
		return fmt.Errorf("flightd: control socket %s: %w", path, err)
	}
	go func() { <-ctx.Done(); l.Close(); os.Remove(path) }()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			json.NewEncoder(conn).Encode(status())
			conn.Close()
		}
	}()
	return nil
}

// listenHook, set by tests, is called with the socket's path the moment
// it is bound.
var listenHook func(bound string)

func askDaemon(path string) (*flightd.Status, error) {
	conn, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	var s flightd.Status
	if err := json.NewDecoder(io.LimitReader(conn, 1<<20)).Decode(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

func runStatus(c *cobra.Command, config string, jsonOut, offline, verbose bool) error {
	cfg, err := flightd.LoadConfig(config)
	if err != nil {
		return err
	}
	var s *flightd.Status
	source := "daemon"
	if cfg.Control.Socket != "" && !offline {
		s, _ = askDaemon(cfg.Control.Socket)
	}
	if s == nil {
		source = "disk"
		off, err := flightd.OpenOffline(cfg, cli.Logger(c.ErrOrStderr(), verbose))
		if err != nil {
			return err
		}
		defer off.Close()
		st := off.Status(cfg)
		s = &st
	}
	out := c.OutOrStdout()
	if jsonOut {
		return cli.WriteJSON(out, s)
	}
	printStatus(out, s, source)
	return nil
}

func printStatus(w io.Writer, s *flightd.Status, source string) {
	fmt.Fprintf(w, "vehicle %d (read from the %s)\n", s.Vehicle, source)
	trial := ""
	if s.Trial {
		trial = ", on trial"
	}
	fmt.Fprintf(w, "booted slot %s%s, next boot %s\n", orDash(s.Booted), trial, orDash(s.Next))
	for _, sl := range s.Slots {
		fmt.Fprintf(w, "slot %s: %-7s version %d, %d attempts left", sl.ID, sl.State, sl.Version, sl.Attempts)
		if sl.Image != "" {
			fmt.Fprintf(w, ", image %s", sl.Image)
		}
		if sl.Reason != "" {
			fmt.Fprintf(w, " (%s)", sl.Reason)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "last reset: %s; boots %d, of which %d watchdog resets; last trial: %s\n", s.ResetCause, s.BootCount, s.WatchdogResets, s.LastOutcome)
	u := s.Uplink
	fmt.Fprintf(w, "uplink: plan %d %s", u.Plan, orDash(u.State))
	if u.Transfer != 0 {
		fmt.Fprintf(w, ", transfer %d: %d/%d chunks", u.Transfer, u.ChunksHeld, u.ChunksTotal)
	}
	fmt.Fprintf(w, "; staging %s of %s, %s free\n", cli.FormatSize(int64(u.StagingUsed)), cli.FormatSize(int64(u.StagingQuota)), cli.FormatSize(int64(s.FreeBytes)))
	cn := s.Counters
	fmt.Fprintf(w, "frames in %d, out %d, dropped %d; commands accepted %d, rejected %d\n", cn.FramesIn, cn.FramesOut, cn.FramesDropped, cn.CmdsAccepted, cn.CmdsRejected)
	if len(cn.Drops) > 0 {
		var parts []string
		for code, n := range cn.Drops {
			parts = append(parts, fmt.Sprintf("%s %d", dict.EnumReason.NameOf(uint64(code)), n))
		}
		fmt.Fprintf(w, "drops by reason: %s\n", strings.Join(parts, ", "))
	}
	if s.LastError.Code != 0 {
		fmt.Fprintf(w, "last error: %s at %s: %s\n", dict.EnumReason.NameOf(uint64(s.LastError.Code)),
			time.UnixMilli(s.LastError.AtMs).UTC().Format(time.RFC3339), s.LastError.Text)
	}
	for _, x := range s.Warnings {
		fmt.Fprintf(w, "warning: %s\n", x)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// errInconsistent is check's failure: the problems are printed.
var errInconsistent = errors.New("flightd check: inconsistent state")

func runCheck(c *cobra.Command, config string, jsonOut, verbose bool) error {
	cfg, err := flightd.LoadConfig(config)
	if err != nil {
		return err
	}
	off, err := flightd.OpenOffline(cfg, cli.Logger(c.ErrOrStderr(), verbose))
	if err != nil {
		return err
	}
	defer off.Close()
	ps := off.Check()
	out := c.OutOrStdout()
	if jsonOut {
		if err := cli.WriteJSON(out, map[string]any{"ok": len(ps) == 0, "problems": ps}); err != nil {
			return err
		}
	} else if len(ps) == 0 {
		fmt.Fprintln(out, "consistent: slot records, boot environment and uplink journal agree")
	} else {
		for _, p := range ps {
			fmt.Fprintln(out, p)
		}
	}
	if len(ps) > 0 {
		return fmt.Errorf("%w: %d problems", errInconsistent, len(ps))
	}
	return nil
}
