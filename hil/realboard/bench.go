package realboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/hil/board"
	"github.com/bootorbit/bootorbit/hil/scenario"
)

// CheckRun reports what is missing from a configuration for scenario
// runs (hil run --board), besides Check's.
func (c Config) CheckRun() error {
	c.defaults()
	errs := []error{c.Check()}
	var tmpl map[string]any
	if len(c.Flightd) == 0 {
		errs = append(errs, errors.New("flightd (the board's flightd configuration) is empty"))
	} else if err := json.Unmarshal(c.Flightd, &tmpl); err != nil {
		errs = append(errs, fmt.Errorf("flightd: %w", err))
	}
	if _, _, err := net.SplitHostPort(c.LinkAddr); err != nil {
		errs = append(errs, fmt.Errorf("link_addr %q: want host:port", c.LinkAddr))
	}
	if c.BenchAddr != "" {
		if _, _, err := net.SplitHostPort(c.BenchAddr); err != nil {
			errs = append(errs, fmt.Errorf("bench_addr %q: want host:port", c.BenchAddr))
		}
	}
	if len(c.Factory) == 0 {
		errs = append(errs, errors.New("factory (the command that brings the board back to its factory state) is empty"))
	}
	if !strings.HasPrefix(c.KeyDir, "/") {
		errs = append(errs, fmt.Errorf("key_dir %q is not absolute", c.KeyDir))
	}
	for kind, re := range c.ConsoleEvents {
		if _, err := regexp.Compile(re); err != nil {
			errs = append(errs, fmt.Errorf("console_events %s: %w", kind, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: config: %w", ErrBoard, err)
	}
	return nil
}

// Limits is what a real board cannot do in a scenario, with the reasons
// the report gives, and where the link emulator listens for it.
func (c Config) Limits() scenario.Limits {
	l := scenario.Limits{
		SlotWrite:  "the board's slot states are read over SSH every poll_ms, too slowly to catch a slot write of a few MB (tens of milliseconds) and cut the power during it",
		LinkListen: cmpOr(c.BenchAddr, "127.0.0.1:0"),
	}
	if !c.ImageBehaviour {
		l.ImageBehaviour = "the synthetic image's behaviour file (hang at boot, fail the health check) acts on the virtual board and on a bench set up for it (image_behaviour); this board boots and checks its own images"
	}
	return l
}

func cmpOr(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// GOARCH is the Go architecture of a `uname -m` ("aarch64": arm64), or
// "" when unknown.
func GOARCH(machine string) string {
	return map[string]string{"aarch64": "arm64", "arm64": "arm64", "x86_64": "amd64", "armv7l": "arm", "armv6l": "arm",
		"riscv64": "riscv64", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x"}[strings.TrimSpace(machine)]
}

// NewBoards returns the scenario runner's board factory for the real
// board cfg describes: each scenario gets a ScenarioBoard. log receives
// the board's events (nil: discarded).
func NewBoards(cfg Config, log *slog.Logger) scenario.NewBoardFunc {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var mu sync.Mutex
	deployed := map[string]bool{} // flightd binaries installed in this run
	return func(ctx context.Context, bc board.Config) (scenario.Board, error) {
		b := &ScenarioBoard{cfg: cfg, bc: bc, log: log}
		mu.Lock()
		defer mu.Unlock()
		if err := b.prepare(ctx, !deployed[bc.Flightd]); err != nil {
			b.Close()
			return nil, err
		}
		deployed[bc.Flightd] = true
		return b, nil
	}
}

// ScenarioBoard is a real board as the scenario runner sees it
// (scenario.Board): flightd and the scenario's keys deployed over SSH,
// the configuration generated from the board's template and the
// scenario, power through the configured commands, the booted slot and
// slot states from flightd status --json, the environment from
// fw_printenv, boots from the board's boot id, reset causes from the
// console and flightd's reset cause.
type ScenarioBoard struct {
	cfg Config
	bc  board.Config
	log *slog.Logger

	sshMu sync.Mutex
	ssh   *SSHBoard

	obsMu sync.Mutex // one observation at a time

	mu        sync.Mutex
	fresh     bool // on since prepare, the scenario's configuration not yet written
	on        bool
	peer      string
	events    []board.Event
	bootID    string
	boots     int
	powered   bool   // a power on since the last boot seen
	cause     string // a reset cause the console showed since the last boot
	causeLine string
	pending   string // a new boot id seen once, waiting for the console
	ran       bool   // flightd was seen running in this boot
	status    boardStatus
	env       map[string]string
	running   bool
}

var _ scenario.Board = (*ScenarioBoard)(nil)

// boardStatus is what the runner reads of flightd status --json.
type boardStatus struct {
	Booted     string `json:"booted"`
	ResetCause string `json:"reset_cause"`
	Slots      []struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Image string `json:"image"`
	} `json:"slots"`
	Uplink struct {
		BytesStaged uint64 `json:"bytes_staged"`
		StagingUsed uint64 `json:"staging_used"`
	} `json:"uplink"`
}

// client returns the SSH connection, dialing it if needed.
func (b *ScenarioBoard) client(ctx context.Context) (*SSHBoard, error) {
	b.sshMu.Lock()
	defer b.sshMu.Unlock()
	if b.ssh != nil {
		return b.ssh, nil
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := Dial(dctx, b.cfg)
	if err != nil {
		return nil, err
	}
	b.ssh = c
	return c, nil
}

// drop closes the SSH connection (a power cut ends it without a word on
// a real board): the next command dials again.
func (b *ScenarioBoard) drop() {
	b.sshMu.Lock()
	defer b.sshMu.Unlock()
	if b.ssh != nil {
		b.ssh.Close()
		b.ssh = nil
	}
}

// run runs argv on the board; a failure to reach it drops the connection.
func (b *ScenarioBoard) run(ctx context.Context, argv ...string) ([]byte, error) {
	c, err := b.client(ctx)
	if err != nil {
		return nil, err
	}
	out, err := c.Run(ctx, argv...)
	var ee interface{ ExitStatus() int }
	if err != nil && !errors.As(err, &ee) {
		b.drop()
	}
	return out, err
}

// install writes data to path on the board atomically.
func (b *ScenarioBoard) install(ctx context.Context, path string, data []byte, mode uint32) error {
	c, err := b.client(ctx)
	if err != nil {
		return err
	}
	_, err = c.exec(ctx, installCommand(path, mode), data)
	return err
}

func (b *ScenarioBoard) event(kind, slot, text string) {
	b.events = append(b.events, board.Event{At: time.Now(), Kind: kind, Slot: slot, Text: text})
	b.log.Info("realboard: "+kind, "slot", slot, "text", text)
}

// prepare powers the board on, waits for SSH, runs the factory command,
// installs the scenario's keys (and flightd, with binary), and leaves the
// board on: the first PowerOn writes the configuration (the link
// emulator's address is known then) and power-cycles it.
func (b *ScenarioBoard) prepare(ctx context.Context, binary bool) error {
	if err := powerCmd(ctx, b.cfg.PowerOn, nil); err != nil {
		return err
	}
	b.mu.Lock()
	b.on, b.fresh = true, true
	b.mu.Unlock()
	if err := b.await(ctx, "SSH", func() (bool, error) {
		_, err := b.run(ctx, "true")
		return err == nil, nil
	}); err != nil {
		return err
	}
	if _, err := b.run(ctx, b.cfg.Factory...); err != nil {
		return fmt.Errorf("%w: factory: %w", ErrBoard, err)
	}
	for _, k := range []struct {
		local, name string
		mode        uint32
	}{{b.bc.GroundPub, "ground.pub", 0o644}, {b.bc.ReleasePub, "release.pub", 0o644}, {b.bc.VehicleKey, "vehicle.key", 0o600}} {
		data, err := os.ReadFile(k.local)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBoard, err)
		}
		if err := b.install(ctx, b.keyPath(k.name), data, k.mode); err != nil {
			return err
		}
	}
	if id, err := b.run(ctx, b.cfg.BootID...); err == nil {
		b.bootID = strings.TrimSpace(string(id))
	}
	if !binary {
		return nil
	}
	bin, err := os.ReadFile(b.bc.Flightd)
	if err != nil {
		return fmt.Errorf("%w: flightd: %w", ErrBoard, err)
	}
	return b.install(ctx, b.cfg.FlightdPath, bin, 0o755)
}

func (b *ScenarioBoard) keyPath(name string) string {
	return strings.TrimRight(b.cfg.KeyDir, "/") + "/" + name
}

// await polls cond every poll_ms until it holds, bounded by timeout_s.
func (b *ScenarioBoard) await(ctx context.Context, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout())
	defer cancel()
	t := time.NewTicker(time.Duration(b.cfg.PollMS) * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for %s: %w", ErrBoard, what, ctx.Err())
		case <-t.C:
		}
	}
}

// Config is the flightd configuration for this scenario: the board's
// template with the scenario's vehicle, keys, radio peer and frame size,
// and boot attempts.
func (b *ScenarioBoard) Config() ([]byte, error) {
	var c map[string]any
	if err := json.Unmarshal(b.cfg.Flightd, &c); err != nil {
		return nil, fmt.Errorf("%w: flightd template: %w", ErrBoard, err)
	}
	c["vehicle"] = map[string]any{"id": b.bc.Vehicle, "hardware_id": b.bc.Hardware}
	c["keys"] = map[string]any{
		"release": []any{map[string]any{"id": b.bc.ReleaseKeyID, "file": b.keyPath("release.pub")}},
		"ground":  []any{map[string]any{"id": b.bc.GroundKeyID, "file": b.keyPath("ground.pub")}},
		"vehicle": map[string]any{"id": 1, "file": b.keyPath("vehicle.key")},
	}
	links, _ := c["links"].([]any)
	var radio map[string]any
	for _, l := range links {
		if m, ok := l.(map[string]any); ok && (radio == nil || m["name"] == "radio") {
			radio = m
		}
	}
	if radio == nil {
		return nil, fmt.Errorf("%w: flightd template: no link (the radio, with its listen address)", ErrBoard)
	}
	b.mu.Lock()
	if b.peer != "" {
		radio["peer"] = b.peer
	}
	b.mu.Unlock()
	if b.bc.MaxFrame > 0 {
		radio["max_frame"] = b.bc.MaxFrame
	}
	boot, _ := c["boot"].(map[string]any)
	if boot == nil {
		return nil, fmt.Errorf("%w: flightd template: no boot section", ErrBoard)
	}
	if b.bc.Attempts > 0 {
		boot["attempts"] = b.bc.Attempts
	}
	return json.MarshalIndent(c, "", "  ")
}

// Addr implements scenario.Board: the configured link_addr.
func (b *ScenarioBoard) Addr() string { return b.cfg.LinkAddr }

// SetPeer implements scenario.Board: the radio's peer in the
// configuration written at the next PowerOn.
func (b *ScenarioBoard) SetPeer(addr string) {
	b.mu.Lock()
	b.peer = addr
	b.mu.Unlock()
}

// PowerOn implements scenario.Board: at the first call, it writes the
// scenario's configuration and switches the board off; then it switches
// it on and waits until it booted and flightd runs. A board whose slot A
// does not hold the run's base image after the factory command is an
// error (the bench cannot run the scenario).
func (b *ScenarioBoard) PowerOn() error {
	ctx := context.Background()
	b.mu.Lock()
	fresh, on := b.fresh, b.on
	b.mu.Unlock()
	if fresh {
		cfg, err := b.Config()
		if err != nil {
			return err
		}
		if err := b.install(ctx, b.cfg.ConfigPath, cfg, 0o644); err != nil {
			return err
		}
		b.drop()
		if err := powerCmd(ctx, b.cfg.PowerOff, nil); err != nil {
			return err
		}
		b.mu.Lock()
		b.fresh, b.on = false, false
		b.mu.Unlock()
	} else if on {
		return nil
	}
	if err := powerCmd(ctx, b.cfg.PowerOn, nil); err != nil {
		return err
	}
	b.mu.Lock()
	b.on, b.powered = true, true
	boots := b.boots
	b.event("power_on", "", "")
	b.mu.Unlock()
	err := b.await(ctx, "the board to boot and flightd to run", func() (bool, error) {
		b.observe(ctx)
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.boots > boots && b.running, nil
	})
	if err != nil || !fresh {
		return err
	}
	b.mu.Lock()
	st := b.status
	b.mu.Unlock()
	for _, s := range st.Slots {
		if s.ID == "A" && s.Image != b.bc.Factory.Manifest.String() {
			return fmt.Errorf("%w: slot A holds %q after the factory command, the run's base image is %s: the factory state must hold the run's base image", ErrBoard, s.Image, b.bc.Factory.Manifest)
		}
	}
	if st.Booted != "A" {
		return fmt.Errorf("%w: the board booted slot %q after the factory command, want A", ErrBoard, st.Booted)
	}
	return nil
}

// PowerCut implements scenario.Board: the power_off command, at once.
func (b *ScenarioBoard) PowerCut() {
	b.mu.Lock()
	if !b.on {
		b.mu.Unlock()
		return
	}
	b.on, b.running = false, false
	b.event("power_cut", b.status.Booted, "")
	b.mu.Unlock()
	if err := powerCmd(context.Background(), b.cfg.PowerOff, nil); err != nil {
		b.mu.Lock()
		b.event("exit", "", err.Error())
		b.mu.Unlock()
	}
	b.drop()
}

// observe reads the board's boot id, flightd's status, whether flightd
// runs, and the environment, and records a new boot (with the reason of
// the reset before it: a power on, the watchdog as the console or flightd
// says, else a reboot).
func (b *ScenarioBoard) observe(ctx context.Context) {
	b.obsMu.Lock()
	defer b.obsMu.Unlock()
	b.mu.Lock()
	on := b.on
	b.mu.Unlock()
	if !on {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	idb, err := b.run(ctx, b.cfg.BootID...)
	if err != nil {
		b.mu.Lock()
		b.running = false
		b.mu.Unlock()
		return
	}
	id := strings.TrimSpace(string(idb))
	var st boardStatus
	out, err := b.run(ctx, b.cfg.FlightdPath, "status", "--config", b.cfg.ConfigPath, "--json")
	statusOK := err == nil && json.Unmarshal(out, &st) == nil
	_, rerr := b.run(ctx, b.cfg.Running...)
	var env map[string]string
	if len(b.cfg.Printenv) > 0 {
		if out, err := b.run(ctx, b.cfg.Printenv...); err == nil {
			env = parseEnv(out)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.on {
		return // cut meanwhile
	}
	b.running = statusOK && rerr == nil
	b.ran = b.ran || b.running && id == b.bootID
	prev := b.status.Booted
	if statusOK {
		b.status = st
	}
	if env != nil {
		b.env = env
	}
	if id == "" || id == b.bootID || !statusOK {
		return
	}
	if !b.powered && b.cause == "" && b.cfg.Console != "" && id != b.pending {
		// A reset the board did by itself: its cause may still be on its
		// way through the console; the boot is recorded at the next
		// reading.
		b.pending = id
		return
	}
	if !b.powered && !b.ran && b.bootID != "" {
		// The boot that ended never ran flightd: the image hung before
		// it started (the watchdog or the console says how it ended).
		b.event("hang", prev, "flightd never ran in that boot")
	}
	switch {
	case b.powered:
	case b.cause != "":
		b.event(b.cause, prev, "the console: "+b.causeLine)
	case strings.Contains(strings.ToLower(st.ResetCause), "watchdog"):
		b.event("watchdog_reset", prev, "flightd's reset cause: "+st.ResetCause)
	default:
		b.event("reboot", prev, "")
	}
	b.bootID, b.powered, b.cause, b.causeLine = id, false, "", ""
	b.ran = b.running
	b.boots++
	b.event("boot", st.Booted, "boot id "+id)
}

// parseEnv reads fw_printenv's name=value lines.
func parseEnv(out []byte) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && k != "" {
			m[k] = v
		}
	}
	return m
}

// Run implements scenario.Board: it reads the board every poll_ms and
// the console (when one is configured) until ctx ends, then switches the
// board off.
func (b *ScenarioBoard) Run(ctx context.Context) error {
	if b.cfg.Console != "" {
		if lines, err := b.Console(ctx); err == nil {
			go b.watchConsole(lines)
		} else {
			b.log.Warn("realboard: console", "err", err)
		}
	}
	t := time.NewTicker(time.Duration(b.cfg.PollMS) * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			b.PowerCut()
			return nil
		case <-t.C:
		}
		b.observe(ctx)
	}
}

// Console reads the board's serial console on the bench host.
func (b *ScenarioBoard) Console(ctx context.Context) (<-chan string, error) {
	return ReadConsole(ctx, b.cfg.Console, b.cfg.ConsoleBaud)
}

// watchConsole notes the reset causes the console shows (the next boot
// is recorded with it).
func (b *ScenarioBoard) watchConsole(lines <-chan string) {
	kinds := make([]string, 0, len(b.cfg.ConsoleEvents))
	res := map[string]*regexp.Regexp{}
	for k, re := range b.cfg.ConsoleEvents {
		if r, err := regexp.Compile(re); err == nil {
			kinds = append(kinds, k)
			res[k] = r
		}
	}
	sort.Strings(kinds)
	for l := range lines {
		b.log.Debug("realboard: console", "line", l)
		for _, k := range kinds {
			if res[k].MatchString(l) {
				b.mu.Lock()
				b.cause, b.causeLine = k, l
				b.mu.Unlock()
			}
		}
	}
}

// Close implements scenario.Board: the board is switched off and the
// SSH connection closed.
func (b *ScenarioBoard) Close() error {
	b.PowerCut()
	b.drop()
	return nil
}

// State implements scenario.Board from the last reading.
func (b *ScenarioBoard) State() (board.State, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := board.State{On: b.on, Booted: b.status.Booted, Boots: b.boots, Running: b.running,
		Env: b.env, Slots: map[string]string{}, Images: map[string]string{}}
	if b.status.Booted == "" {
		return st, fmt.Errorf("%w: no status read yet", ErrBoard)
	}
	for _, s := range b.status.Slots {
		st.Slots[s.ID], st.Images[s.ID] = s.State, s.Image
	}
	return st, nil
}

// Events implements scenario.Board.
func (b *ScenarioBoard) Events() []board.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]board.Event(nil), b.events...)
}

// Count implements scenario.Board.
func (b *ScenarioBoard) Count(kind string) int { return board.CountEvents(b.Events(), kind) }

// Petted implements scenario.Board: the board is on and flightd runs
// (its status answered and the running command says so).
func (b *ScenarioBoard) Petted() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.on && b.running
}

// StagedBytes implements scenario.Board: what flightd's status says it
// staged.
func (b *ScenarioBoard) StagedBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(max(b.status.Uplink.BytesStaged, b.status.Uplink.StagingUsed))
}
