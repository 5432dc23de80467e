// Package realboardtest is a bench double for hil/realboard's tests and
// for `hil run --board`'s: as real a board as a machine without one
// allows. An SSH server (x/crypto/ssh's server side, public-key login,
// a known host key) runs each command with /bin/sh -c on this machine;
// the "board" is a directory with directory slots, a U-Boot environment
// file and a kernel command line, where flightd, as deployed over SSH,
// runs as a real local process with the configuration deployed beside
// it; every boot (power on, flightd's reboot) goes through
// watchdog.BootloaderModel, the boot script's logic, and gets a new boot
// id. Power on and off are local commands (a shell one-liner talking to
// the double over two FIFOs), as a relay tool would be; so is the
// factory reset, run on the "board" through SSH.
//
// The console is a pseudo-terminal (its slave is Config's "console")
// where each boot prints the bootloader's lines; Reset prints a reset
// cause there and resets the board, as a hardware watchdog would.
//
// It acts on the synthetic images' behaviour file (image_behaviour), as
// a rehearsal bench with directory slots would: a slot whose image says
// "hang" boots without starting flightd, and the watchdog's open timeout
// (OpenTimeout) resets the board; the health check of the deployed
// configuration fails an "unhealthy" image.
//
// What it does not model: the board's SSH survives its power cuts (a
// real board's does not; the driver redials either way), and the
// watchdog does not watch a running flightd's pets.
package realboardtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
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
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sys/unix"
)

// envSize is the double's U-Boot environment size.
const envSize = 0x4000

// StartSSH starts an SSH server on loopback that takes the client key
// and runs each exec request with /bin/sh -c here, returning its exit
// status. It returns its address and host key; it stops with the test.
func StartSSH(t testing.TB, client ssh.PublicKey) (addr string, hostKey ssh.PublicKey) {
	t.Helper()
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if bytes.Equal(k.Marshal(), client.Marshal()) {
			return nil, nil
		}
		return nil, errors.New("unknown key")
	}}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveSSH(c, cfg)
		}
	}()
	return ln.Addr().String(), hostSigner.PublicKey()
}

func serveSSH(c net.Conn, cfg *ssh.ServerConfig) {
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		c.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, in, err := nc.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer ch.Close()
			for r := range in {
				if r.Type != "exec" || len(r.Payload) < 4 {
					r.Reply(false, nil)
					continue
				}
				n := binary.BigEndian.Uint32(r.Payload)
				if int(n) > len(r.Payload)-4 {
					r.Reply(false, nil)
					continue
				}
				command := string(r.Payload[4 : 4+n])
				r.Reply(true, nil)
				cmd := exec.Command("/bin/sh", "-c", command)
				cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
				code := 0
				if err := cmd.Run(); err != nil {
					code = 255
					var ee *exec.ExitError
					if errors.As(err, &ee) {
						code = ee.ExitCode()
					}
				}
				ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, uint32(code)))
				return
			}
		}()
	}
}

// Board is the double: a board directory, its SSH server and power.
type Board struct {
	// Root is the board's file system; Config its bench configuration
	// (hil/realboard.Config as JSON, with its keys and known_hosts).
	Root   string
	Config map[string]any
	// Factory is the image the factory reset puts into slot A.
	Factory images.Image
	// OpenTimeout is the watchdog's time from boot to flightd's start
	// (default 2 s): a hanging image resets the board after it.
	OpenTimeout time.Duration

	t      testing.TB
	ctl    *os.File
	ack    *os.File
	tty    *os.File
	lines  chan string
	paths  map[string]string
	env    *watchdog.UBootEnv
	output io.Writer

	mu      sync.Mutex
	on      bool
	halted  bool
	cmd     *exec.Cmd
	exited  chan struct{}
	killing bool
	boots   int
	log     []string
}

// New makes the double in dir: keys, SSH server, board directory, power
// FIFOs, and the bench configuration (Config, written with WriteConfig).
// factory is the image slot A holds after a factory reset; flightd's
// output goes to output (nil: discarded).
func New(t testing.TB, dir string, factory images.Image, output io.Writer) *Board {
	t.Helper()
	if output == nil {
		output = io.Discard
	}
	root := filepath.Join(dir, "board")
	p := map[string]string{
		"flightd": filepath.Join(root, "usr", "bin", "flightd"), "config": filepath.Join(root, "etc", "bootorbit", "flightd.json"),
		"keys": filepath.Join(root, "etc", "bootorbit", "hil"), "state": filepath.Join(root, "var", "lib", "flightd"),
		"slot-a": filepath.Join(root, "slot-a"), "slot-b": filepath.Join(root, "slot-b"), "env": filepath.Join(root, "uboot.env"),
		"cmdline": filepath.Join(root, "proc-cmdline"), "bootid": filepath.Join(root, "boot_id"), "pid": filepath.Join(root, "run", "flightd.pid"),
		"socket": filepath.Join(root, "run", "flightd.sock"), "fwenv": filepath.Join(root, "etc", "fw_env.config"),
		"ctl": filepath.Join(dir, "power.ctl"), "ack": filepath.Join(dir, "power.ack"),
	}
	for _, d := range []string{filepath.Dir(p["config"]), filepath.Dir(p["pid"]), p["state"]} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b := &Board{Root: root, Factory: factory, OpenTimeout: 2 * time.Second, t: t, paths: p, output: output}
	var err error
	if b.env, err = watchdog.NewUBootEnv(watchdog.UBootLocation{Path: p["env"], Size: envSize}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p["fwenv"], []byte(fmt.Sprintf("%s 0x0 0x%x\n", p["env"], envSize)), 0o644)
	if err := b.reset(); err != nil {
		t.Fatal(err)
	}

	// Keys and the SSH server.
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	os.WriteFile(keyFile, pem.EncodeToMemory(blk), 0o600)
	clientPub, _ := ssh.NewPublicKey(pub)
	addr, hostKey := StartSSH(t, clientPub)
	kh := filepath.Join(dir, "known_hosts")
	os.WriteFile(kh, []byte(knownhosts.Line([]string{knownhosts.Normalize(addr)}, hostKey)+"\n"), 0o644)

	// Power: a FIFO of requests and one of answers.
	for _, f := range []string{p["ctl"], p["ack"]} {
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if b.ctl, err = os.OpenFile(p["ctl"], os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	if b.ack, err = os.OpenFile(p["ack"], os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	go b.serve()
	console := b.openConsole()
	t.Cleanup(b.close)
	ask := func(what string) []string {
		return []string{"/bin/sh", "-c", fmt.Sprintf(`echo %s > %s && read r < %s && [ "$r" = ok ]`, what, quote(p["ctl"]), quote(p["ack"]))}
	}

	link, err := freeUDP()
	if err != nil {
		t.Fatal(err)
	}
	printenv := []string{}
	if _, err := exec.LookPath("fw_printenv"); err == nil {
		printenv = []string{"fw_printenv", "-c", p["fwenv"]}
	}
	b.Config = map[string]any{
		"host": addr, "user": "root", "key_file": keyFile, "known_hosts": kh,
		"power_on": ask("on"), "power_off": ask("off"),
		"flightd_path": p["flightd"], "config_path": p["config"], "restart": []string{},
		"timeout_s": 60, "poll_ms": 100, "console": console,
		"link_addr": link, "bench_addr": "127.0.0.1:0", "key_dir": p["keys"],
		"factory":  ask("factory"),
		"boot_id":  []string{"cat", p["bootid"]},
		"running":  []string{"/bin/sh", "-c", fmt.Sprintf(`kill -0 "$(cat %s 2>/dev/null)" 2>/dev/null`, quote(p["pid"]))},
		"printenv": printenv, "image_behaviour": true,
		"flightd": map[string]any{
			"links": []any{map[string]any{"name": "radio", "kind": "udp", "listen": link}},
			"slots": map[string]any{"state_dir": p["state"], "cmdline": p["cmdline"],
				"a": map[string]any{"backend": "dir", "path": p["slot-a"]}, "b": map[string]any{"backend": "dir", "path": p["slot-b"]}},
			"boot": map[string]any{"uboot_env": []any{map[string]any{"path": p["env"], "offset": 0, "size": envSize}},
				"attempts": 3, "reboot": []string{"/bin/true"}, "boot_id_file": p["bootid"]},
			"health": map[string]any{"checks": []any{map[string]any{"name": "payload", "command": []string{"/bin/sh", "-c", healthCheck(p)}, "timeout": "10s"}},
				"interval": "30s"},
			"storage":   map[string]any{"dir": filepath.Join(p["state"], "uplink"), "quota": "256MiB"},
			"telemetry": map[string]any{"period": "2s"},
			"control":   map[string]any{"socket": p["socket"]},
		},
	}
	return b
}

// WriteConfig writes the bench configuration to path.
func (b *Board) WriteConfig(path string) error {
	data, err := json.MarshalIndent(b.Config, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func freeUDP() (string, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().String(), nil
}

// Log is what the double did (power, boots, flightd's exits).
func (b *Board) Log() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.log...)
}

func (b *Board) logf(format string, args ...any) {
	b.log = append(b.log, fmt.Sprintf(format, args...))
}

// serve answers the power and factory requests.
func (b *Board) serve() {
	sc := bufio.NewScanner(b.ctl)
	for sc.Scan() {
		var err error
		switch sc.Text() {
		case "on":
			err = b.powerOn()
		case "off":
			b.powerOff()
		case "factory":
			err = b.factoryReset()
		case "quit":
			return
		default:
			err = fmt.Errorf("unknown request %q", sc.Text())
		}
		answer := "ok\n"
		if err != nil {
			b.mu.Lock()
			b.logf("error: %v", err)
			b.mu.Unlock()
			answer = "error\n"
		}
		b.ack.WriteString(answer)
	}
}

func (b *Board) close() {
	b.powerOff()
	if b.tty != nil {
		b.tty.Close()
	}
	b.ctl.WriteString("quit\n")
	b.ctl.Close()
	b.ack.Close()
}

// reset writes the factory state: slot A holds Factory (good), B is
// empty, the environment boots A, flightd's state and storage are gone.
func (b *Board) reset() error {
	for _, k := range []string{"state", "slot-a", "slot-b"} {
		if err := os.RemoveAll(b.paths[k]); err != nil {
			return err
		}
		if err := os.MkdirAll(b.paths[k], 0o755); err != nil {
			return err
		}
	}
	m, err := slots.Open(slots.Options{StateDir: b.paths["state"], Log: slog.New(slog.DiscardHandler),
		A: slots.Slot{Backend: slots.BackendDir, Path: b.paths["slot-a"]}, B: slots.Slot{Backend: slots.BackendDir, Path: b.paths["slot-b"]}})
	if err != nil {
		return err
	}
	layers := make([]io.Reader, len(b.Factory.Tars))
	for i, t := range b.Factory.Tars {
		layers[i] = bytes.NewReader(t)
	}
	if _, err := m.Install(context.Background(), slots.A, slots.Image{Label: b.Factory.Manifest.String(), Layers: layers}); err != nil {
		return err
	}
	if err := m.MarkPending(slots.A); err != nil {
		return err
	}
	if err := m.MarkGood(slots.A); err != nil {
		return err
	}
	env, err := watchdog.EncodeUBootEnv(watchdog.Vars{watchdog.VarBootOrder: "A", watchdog.LeftVar("A"): "3", watchdog.LeftVar("B"): "0"}, envSize, false, 0, 0)
	if err != nil {
		return err
	}
	return os.WriteFile(b.paths["env"], env, 0o644)
}

// factoryReset stops flightd (it is not restarted until the next power
// on) and writes the factory state.
func (b *Board) factoryReset() error {
	b.mu.Lock()
	b.halted = true
	b.killLocked()
	b.logf("factory reset")
	b.mu.Unlock()
	return b.reset()
}

func (b *Board) powerOn() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.on {
		return nil
	}
	b.on, b.halted = true, false
	b.logf("power on")
	return b.bootLocked()
}

func (b *Board) powerOff() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.on {
		return
	}
	b.on = false
	b.logf("power off")
	b.killLocked()
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

// bootLocked runs the bootloader model, gives the boot a new id and the
// kernel command line, and starts the deployed flightd if there is one.
func (b *Board) bootLocked() error {
	dec, err := watchdog.BootloaderModel{Attempts: 3}.Boot(b.env)
	if err != nil {
		return err
	}
	if dec.Reset {
		b.on = false
		return errors.New("no bootable slot")
	}
	b.boots++
	b.console("U-Boot 2023.01 (bench double)")
	b.console("bootorbit: booting slot " + dec.Slot)
	os.WriteFile(b.paths["cmdline"], []byte("console=ttyS0 "+dec.Cmdline()+"\n"), 0o644)
	os.WriteFile(b.paths["bootid"], []byte(fmt.Sprintf("double-boot-%d\n", b.boots)), 0o644)
	b.logf("boot %d: slot %s", b.boots, dec.Slot)
	if b.behaviour(dec.Slot) == images.BehaviourHang {
		b.console("bootorbit-hil: the image of slot " + dec.Slot + " hangs at boot")
		b.logf("slot %s hangs", dec.Slot)
		boot := b.boots
		time.AfterFunc(b.OpenTimeout, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.on && !b.halted && b.boots == boot && b.cmd == nil {
				b.console("watchdog: watchdog0: timeout, resetting the board")
				b.logf("watchdog reset")
				if err := b.bootLocked(); err != nil {
					b.logf("boot: %v", err)
				}
			}
		})
		return nil
	}
	if _, err := os.Stat(b.paths["flightd"]); err != nil {
		return nil // nothing deployed yet: the board runs without flightd
	}
	if _, err := os.Stat(b.paths["config"]); err != nil {
		return nil
	}
	cmd := exec.Command(b.paths["flightd"], "run", "--config", b.paths["config"])
	cmd.Stdout, cmd.Stderr = b.output, b.output
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	os.WriteFile(b.paths["pid"], []byte(fmt.Sprint(cmd.Process.Pid)), 0o644)
	ex := make(chan struct{})
	b.cmd, b.exited = cmd, ex
	go func() {
		err := cmd.Wait()
		b.mu.Lock()
		defer b.mu.Unlock()
		os.Remove(b.paths["pid"])
		close(ex)
		if b.cmd != cmd || b.killing {
			return
		}
		// flightd ended by itself: its reboot action ran (or it
		// crashed, and the board reboots as systemd's
		// FailureAction=reboot would).
		b.cmd = nil
		b.logf("flightd exited (%v): reboot", err)
		if b.on && !b.halted {
			if err := b.bootLocked(); err != nil {
				b.logf("boot: %v", err)
			}
		}
	}()
	return nil
}

// openConsole opens a pseudo-terminal and returns its slave's path ("":
// none here); lines written with console go to its master.
func (b *Board) openConsole() string {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return ""
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return ""
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return ""
	}
	b.tty, b.lines = m, make(chan string, 256)
	go func() {
		for l := range b.lines {
			if _, err := io.WriteString(m, l+"\r\n"); err != nil {
				return
			}
		}
	}()
	return fmt.Sprintf("/dev/pts/%d", n)
}

// console prints a line on the console (dropped when nobody reads it and
// its buffer is full).
func (b *Board) console(line string) {
	if b.lines == nil {
		return
	}
	select {
	case b.lines <- line:
	default:
	}
}

// Reset prints cause on the console and resets the board: flightd is
// killed and the board boots again through the bootloader model, as
// after a hardware watchdog's reset.
func (b *Board) Reset(cause string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.on {
		return errors.New("realboardtest: the board is off")
	}
	b.console(cause)
	b.logf("reset: %s", cause)
	b.killLocked()
	return b.bootLocked()
}

// behaviour reads the behaviour file of the image in slot.
func (b *Board) behaviour(slot string) string {
	data, err := os.ReadFile(filepath.Join(b.paths["slot-"+strings.ToLower(slot)], images.BehaviourFile))
	if err != nil {
		return images.BehaviourOK
	}
	return strings.TrimSpace(string(data))
}

// healthCheck is the double's health check: the booted slot (from the
// kernel command line) does not hold an unhealthy image.
func healthCheck(p map[string]string) string {
	return fmt.Sprintf(`case "$(cat %s)" in *rauc.slot=B*) d=%s;; *) d=%s;; esac; test "$(cat "$d"/%s 2>/dev/null)" != %s`,
		quote(p["cmdline"]), quote(p["slot-b"]), quote(p["slot-a"]), images.BehaviourFile, images.BehaviourUnhealthy)
}
