// Package board is the virtual board: flightd as a real process (the
// binary built for the host, or for arm64 and run under qemu-user), with
// directory slots, a file-backed U-Boot environment, the bootloader model
// of the shipped boot script (watchdog.BootloaderModel) choosing the slot
// at every boot and writing the kernel command line (rauc.slot=X), a fake
// watchdog that resets the board when it is not petted in time, and a
// power switch.
//
// What the board models, and how:
//
//   - The watchdog is a FIFO named as flightd's boot.watchdog. flightd
//     opens it as it opens /dev/watchdog; the ioctls fail on a FIFO, so
//     it pets by writing a byte (the Linux watchdog API's fallback), which
//     the board reads. The watchdog is armed from power-on, as the kernel
//     keeps it with watchdog.open_timeout: a boot whose flightd never pets
//     within OpenTimeout, or a flightd that stops petting for
//     WatchdogTimeout, resets the board.
//   - A reset, a reboot (flightd's reboot action is /bin/true, after which
//     `flightd run` exits) and a power-on all go through the bootloader
//     model: it decrements the chosen slot's counter in the environment
//     and picks the slot, as U-Boot would.
//   - The booted image says how it behaves (hil/images.BehaviourFile): an
//     image that "hangs" never starts flightd, so only the watchdog gets
//     the board out; an "unhealthy" image fails flightd's health check.
//   - Every boot writes a fresh boot id to a file flightd reads
//     (boot.boot_id_file), as the kernel draws one per boot: flightd
//     tells a boot from a restart of itself by it.
//   - The power switch SIGKILLs flightd at once. Unsynced data survives in
//     the host's page cache (no root, no block device here): flightd's own
//     power-cut tests drop it; the board proves the restart paths.
package board

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
)

// Config configures a board.
type Config struct {
	// Dir is the board's directory (slots, state, environment, logs).
	Dir string
	// Flightd is the flightd binary; Emulator, if set, runs it
	// (["qemu-aarch64-static"] for an arm64 binary).
	Flightd  string
	Emulator []string
	// Vehicle and Hardware are the vehicle's id and hardware id.
	Vehicle  uint32
	Hardware string
	// Listen is flightd's UDP address ("127.0.0.1:0": a free port is
	// chosen once and kept across boots).
	Listen string
	// MaxFrame is the link's frame size.
	MaxFrame int
	// GroundPub, ReleasePub and VehicleKey are key files for flightd
	// (ground public key, release public key, the MAC key in hex), with
	// the ids the ground uses.
	GroundPub, ReleasePub, VehicleKey string
	GroundKeyID, ReleaseKeyID         uint32
	// Factory is installed in slot A, good and booted, at New.
	Factory images.Image
	// Attempts is boot.attempts (default 3).
	Attempts int
	// WatchdogTimeout is the watchdog's timeout once flightd opened it
	// (whole seconds, at least and by default 3 s); OpenTimeout the time from power-on to
	// the first pet (default 2*WatchdogTimeout: a start under qemu-user on a loaded machine must not reset).
	WatchdogTimeout, OpenTimeout time.Duration
	// Telemetry is flightd's housekeeping period (default 2 s).
	Telemetry time.Duration
	// Log receives the board's events; Output flightd's stderr.
	Log    *slog.Logger
	Output io.Writer
}

// Event is something that happened to the board.
type Event struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"` // power_on, boot, reboot, watchdog_reset, power_cut, hang, no_bootable_slot, exit
	Slot string    `json:"slot,omitempty"`
	Text string    `json:"text,omitempty"`
}

// Board is a running virtual board.
type Board struct {
	cfg    Config
	env    *watchdog.UBootEnv
	paths  paths
	listen string
	peer   string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd's process ended
	killing bool          // the board itself killed it (reset, power cut)
	on      bool
	booted  string
	bootAt  time.Time
	lastPet time.Time
	petted  bool // flightd pet since this boot
	events  []Event
	boots   int
	fifo    *os.File
}

type paths struct {
	state, slotA, slotB, cmdline, bootID, env, watchdog, config, uplink string
}

// envSize is the U-Boot environment's size.
const envSize = 0x4000

// New prepares a board in cfg.Dir: slot A holds the factory image (good),
// B is empty, the environment boots A, the watchdog FIFO exists. The
// board is off: PowerOn starts it.
func New(cfg Config) (*Board, error) {
	if cfg.Attempts == 0 {
		cfg.Attempts = 3
	}
	if cfg.WatchdogTimeout == 0 {
		cfg.WatchdogTimeout = 3 * time.Second
	}
	// flightd pets every third of the timeout, at least every second: 3 s
	// is the shortest timeout it pets in time.
	cfg.WatchdogTimeout = max(3*time.Second, (cfg.WatchdogTimeout + time.Second - 1).Truncate(time.Second))
	if cfg.OpenTimeout == 0 {
		cfg.OpenTimeout = 2 * cfg.WatchdogTimeout
	}
	if cfg.Telemetry == 0 {
		cfg.Telemetry = 2 * time.Second
	}
	if cfg.MaxFrame == 0 {
		cfg.MaxFrame = 1024
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Output == nil {
		cfg.Output = io.Discard
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("board: %w", err)
	}
	p := paths{state: filepath.Join(dir, "state"), slotA: filepath.Join(dir, "slot-a"), slotB: filepath.Join(dir, "slot-b"),
		cmdline: filepath.Join(dir, "cmdline"), bootID: filepath.Join(dir, "boot_id"), env: filepath.Join(dir, "uboot.env"), watchdog: filepath.Join(dir, "watchdog"),
		config: filepath.Join(dir, "flightd.json"), uplink: filepath.Join(dir, "state", "uplink")}
	for _, d := range []string{p.state, p.slotA, p.slotB} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("board: %w", err)
		}
	}
	b := &Board{cfg: cfg, paths: p}
	if b.listen, err = fixPort(cfg.Listen); err != nil {
		return nil, err
	}
	if err := b.factory(); err != nil {
		return nil, err
	}
	if b.env, err = watchdog.NewUBootEnv(watchdog.UBootLocation{Path: p.env, Size: envSize}); err != nil {
		return nil, fmt.Errorf("board: %w", err)
	}
	if err := syscall.Mkfifo(p.watchdog, 0o600); err != nil {
		return nil, fmt.Errorf("board: watchdog fifo: %w", err)
	}
	// Read and write: the board never sees EOF when flightd closes it,
	// and flightd's open for writing never waits for a reader.
	if b.fifo, err = os.OpenFile(p.watchdog, os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("board: watchdog fifo: %w", err)
	}
	go b.readPets()
	return b, nil
}

// fixPort resolves addr's port 0 to a free port, so that flightd listens
// on the same address at every boot.
func fixPort(addr string) (string, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		return "", fmt.Errorf("board: listen address: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().String(), nil
}

// Addr is flightd's UDP address: the link emulator's vehicle endpoint.
func (b *Board) Addr() string { return b.listen }

// SetPeer names the address flightd sends to (the link emulator's
// vehicle side) from the next boot: a radio transmits its telemetry
// whether or not it heard the ground, so the ground learns of a reboot
// without asking. Without it, flightd answers the last peer it heard.
func (b *Board) SetPeer(addr string) {
	b.mu.Lock()
	b.peer = addr
	b.mu.Unlock()
}

// Dir is the board's directory.
func (b *Board) Dir() string { return b.cfg.Dir }

// factory installs the factory image into slot A as the factory would
// (through the slots package, which records the layer index flightd's
// delta base reads), marks it good, and writes the environment.
func (b *Board) factory() error {
	m, err := slots.Open(slots.Options{StateDir: b.paths.state, Log: slog.New(slog.DiscardHandler),
		A: slots.Slot{Backend: slots.BackendDir, Path: b.paths.slotA}, B: slots.Slot{Backend: slots.BackendDir, Path: b.paths.slotB}})
	if err != nil {
		return fmt.Errorf("board: %w", err)
	}
	rcs, err := b.cfg.Factory.OpenLayers()
	if err != nil {
		return fmt.Errorf("board: factory image: %w", err)
	}
	layers := make([]io.Reader, len(rcs))
	for i, r := range rcs {
		defer r.Close()
		layers[i] = r
	}
	if _, err := m.Install(context.Background(), slots.A, slots.Image{Label: b.cfg.Factory.Manifest.String(), Layers: layers}); err != nil {
		return fmt.Errorf("board: factory install: %w", err)
	}
	if err := m.MarkPending(slots.A); err != nil {
		return fmt.Errorf("board: %w", err)
	}
	if err := m.MarkGood(slots.A); err != nil {
		return fmt.Errorf("board: %w", err)
	}
	env, err := watchdog.EncodeUBootEnv(watchdog.Vars{watchdog.VarBootOrder: "A", watchdog.LeftVar("A"): fmt.Sprint(b.cfg.Attempts), watchdog.LeftVar("B"): "0"}, envSize, false, 0, 0)
	if err != nil {
		return fmt.Errorf("board: %w", err)
	}
	if err := os.WriteFile(b.paths.env, env, 0o644); err != nil {
		return fmt.Errorf("board: %w", err)
	}
	return nil
}

func (b *Board) readPets() {
	buf := make([]byte, 64)
	for {
		n, err := b.fifo.Read(buf)
		if err != nil {
			return
		}
		if n > 0 {
			b.mu.Lock()
			b.lastPet, b.petted = time.Now(), true
			b.mu.Unlock()
		}
	}
}

func (b *Board) event(kind, slot, text string) {
	e := Event{At: time.Now(), Kind: kind, Slot: slot, Text: text}
	b.events = append(b.events, e)
	b.cfg.Log.Info("board: "+kind, "slot", slot, "text", text)
}

// Events returns what happened so far.
func (b *Board) Events() []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Event(nil), b.events...)
}

// Count returns the number of events of kind.
func (b *Board) Count(kind string) int { return CountEvents(b.Events(), kind) }

// CountEvents returns the number of events of kind: a board's Count, for
// this board and the others a scenario drives (hil/realboard).
func CountEvents(events []Event, kind string) int {
	n := 0
	for _, e := range events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// PowerOn boots the board (a no-op when it is on).
func (b *Board) PowerOn() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.on {
		return nil
	}
	b.on = true
	b.event("power_on", "", "")
	return b.bootLocked()
}

// PowerCut kills flightd with SIGKILL and leaves the board off.
func (b *Board) PowerCut() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.on {
		return
	}
	b.event("power_cut", b.booted, "")
	b.killLocked()
	b.on = false
}

// killLocked SIGKILLs flightd and waits for it.
func (b *Board) killLocked() {
	if b.cmd == nil {
		return
	}
	b.killing = true
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	ex := b.exited
	b.mu.Unlock()
	<-ex
	b.mu.Lock()
	b.killing = false
	b.cmd = nil
}

// bootLocked runs the bootloader model and starts flightd on the slot it
// chose, unless the slot's image hangs.
func (b *Board) bootLocked() error {
	for tries := 0; ; tries++ {
		dec, err := watchdog.BootloaderModel{Attempts: b.cfg.Attempts}.Boot(b.env)
		if err != nil {
			return fmt.Errorf("board: bootloader: %w", err)
		}
		if !dec.Reset {
			b.booted, b.bootAt, b.petted, b.lastPet = dec.Slot, time.Now(), false, time.Time{}
			b.boots++
			if err := os.WriteFile(b.paths.cmdline, []byte("console=ttyS0 watchdog.open_timeout=120 "+dec.Cmdline()+"\n"), 0o644); err != nil {
				return fmt.Errorf("board: %w", err)
			}
			// Each boot its own id, as the kernel draws one: flightd
			// tells a boot from a restart of itself by it.
			if err := os.WriteFile(b.paths.bootID, []byte(newBootID()+"\n"), 0o644); err != nil {
				return fmt.Errorf("board: %w", err)
			}
			b.event("boot", dec.Slot, "")
			break
		}
		b.event("no_bootable_slot", "", "the boot script resets the board")
		if tries >= 2 {
			b.on = false
			return errors.New("board: no bootable slot")
		}
	}
	beh := b.behaviour(b.booted)
	if beh == images.BehaviourHang {
		b.event("hang", b.booted, "the image hangs before flightd starts")
		return nil
	}
	return b.startLocked()
}

func (b *Board) slotDir(s string) string {
	if s == "B" {
		return b.paths.slotB
	}
	return b.paths.slotA
}

// behaviour reads the booted image's behaviour file.
func (b *Board) behaviour(slot string) string {
	data, err := os.ReadFile(filepath.Join(b.slotDir(slot), images.BehaviourFile))
	if err != nil {
		return images.BehaviourOK
	}
	return strings.TrimSpace(string(data))
}

// startLocked writes flightd's configuration for this boot (the health
// check reads the booted slot's behaviour) and starts it.
func (b *Board) startLocked() error {
	cfg, err := b.config()
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.paths.config, cfg, 0o600); err != nil {
		return fmt.Errorf("board: %w", err)
	}
	argv := append(append([]string(nil), b.cfg.Emulator...), b.cfg.Flightd, "run", "--config", b.paths.config)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = b.cfg.Output, b.cfg.Output
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("board: start flightd: %w", err)
	}
	ex := make(chan struct{})
	b.cmd, b.exited = cmd, ex
	go func() {
		err := cmd.Wait()
		b.mu.Lock()
		close(ex)
		if b.cmd == cmd && !b.killing {
			// flightd ended by itself: its reboot action ran (or it
			// crashed, and the board reboots as a systemd
			// FailureAction=reboot would).
			b.cmd = nil
			text := "flightd exited"
			if err != nil {
				text = err.Error()
			}
			b.event("reboot", b.booted, text)
			if b.on {
				if err := b.bootLocked(); err != nil {
					b.event("exit", "", err.Error())
				}
			}
		}
		b.mu.Unlock()
	}()
	return nil
}

// config is flightd's configuration on this board.
func (b *Board) config() ([]byte, error) {
	slotDir := b.slotDir(b.booted)
	check := fmt.Sprintf(`test "$(cat %s 2>/dev/null)" != %s`, filepath.Join(slotDir, images.BehaviourFile), images.BehaviourUnhealthy)
	radio := map[string]any{"name": "radio", "kind": "udp", "listen": b.listen, "max_frame": b.cfg.MaxFrame}
	if b.peer != "" {
		radio["peer"] = b.peer
	}
	c := map[string]any{
		"vehicle": map[string]any{"id": b.cfg.Vehicle, "hardware_id": b.cfg.Hardware},
		"links":   []any{radio},
		"keys": map[string]any{
			"release": []any{map[string]any{"id": b.cfg.ReleaseKeyID, "file": b.cfg.ReleasePub}},
			"ground":  []any{map[string]any{"id": b.cfg.GroundKeyID, "file": b.cfg.GroundPub}},
			"vehicle": map[string]any{"id": 1, "file": b.cfg.VehicleKey},
		},
		"slots": map[string]any{
			"state_dir": b.paths.state, "cmdline": b.paths.cmdline,
			"a": map[string]any{"backend": "dir", "path": b.paths.slotA},
			"b": map[string]any{"backend": "dir", "path": b.paths.slotB},
		},
		"boot": map[string]any{
			"uboot_env":          []any{map[string]any{"path": b.paths.env, "offset": 0, "size": envSize}},
			"attempts":           b.cfg.Attempts,
			"watchdog":           b.paths.watchdog,
			"boot_id_file":       b.paths.bootID,
			"watchdog_timeout_s": int(b.cfg.WatchdogTimeout / time.Second),
			"reboot":             []string{"/bin/true"},
		},
		"health": map[string]any{
			"checks":   []any{map[string]any{"name": "payload", "command": []string{"/bin/sh", "-c", check}, "timeout": "10s"}},
			"interval": "30s",
		},
		"storage":   map[string]any{"dir": b.paths.uplink, "quota": "256MiB"},
		"telemetry": map[string]any{"period": b.cfg.Telemetry.String()},
	}
	return json.MarshalIndent(c, "", "  ")
}

// Run watches the watchdog until ctx ends, then powers the board off.
func (b *Board) Run(ctx context.Context) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			b.PowerCut()
			return nil
		case <-t.C:
		}
		b.mu.Lock()
		if b.on && b.booted != "" {
			now := time.Now()
			expired := false
			switch {
			case b.petted:
				expired = now.Sub(b.lastPet) > b.cfg.WatchdogTimeout
			default:
				expired = now.Sub(b.bootAt) > b.cfg.OpenTimeout
			}
			if expired {
				b.event("watchdog_reset", b.booted, "not petted in time")
				b.killLocked()
				if err := b.bootLocked(); err != nil {
					b.event("exit", "", err.Error())
				}
			}
		}
		b.mu.Unlock()
	}
}

// Close releases the board (Run must have ended).
func (b *Board) Close() error {
	b.mu.Lock()
	b.on = false // first: a flightd that exits now is not rebooted
	b.killLocked()
	b.mu.Unlock()
	return b.fifo.Close()
}

// State is the board's view of itself, read offline.
type State struct {
	On      bool              `json:"on"`
	Booted  string            `json:"booted"`
	Boots   int               `json:"boots"`
	Env     map[string]string `json:"env"`
	Slots   map[string]string `json:"slots"`   // slot -> state (slots.json)
	Images  map[string]string `json:"images"`  // slot -> image label
	Running bool              `json:"running"` // flightd is running
}

// State reads the board's state: the environment, slots.json, the booted
// slot.
func (b *Board) State() (State, error) {
	b.mu.Lock()
	st := State{On: b.on, Booted: b.booted, Boots: b.boots, Running: b.cmd != nil}
	b.mu.Unlock()
	v, err := b.env.Load()
	if err != nil {
		return st, fmt.Errorf("board: %w", err)
	}
	st.Env = v
	data, err := os.ReadFile(filepath.Join(b.paths.state, "slots.json"))
	if err != nil {
		return st, fmt.Errorf("board: %w", err)
	}
	var sf struct {
		Slots map[string]struct {
			State string `json:"state"`
			Image string `json:"image"`
		} `json:"slots"`
	}
	if err := json.Unmarshal(data, &sf); err != nil {
		return st, fmt.Errorf("board: slots.json: %w", err)
	}
	st.Slots, st.Images = map[string]string{}, map[string]string{}
	for k, s := range sf.Slots {
		st.Slots[k], st.Images[k] = s.State, s.Image
	}
	return st, nil
}

// Petted reports whether the board is on and flightd pets the watchdog
// in this boot.
func (b *Board) Petted() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.on && b.cmd != nil && b.petted
}

// Pid is flightd's process id (0 when it does not run).
func (b *Board) Pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// StagedBytes is the size of what flightd staged of the uplink (plans and
// bundles being received), the journal aside.
func (b *Board) StagedBytes() int64 {
	var n int64
	filepath.Walk(b.paths.uplink, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Name() != "journal.db" {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// newBootID draws a boot id shaped as the kernel's (a random UUID).
func newBootID() string {
	var u [16]byte
	rand.Read(u[:])
	u[6], u[8] = u[6]&0x0f|0x40, u[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}
