package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrBoard prefixes errors of a virtual board run.
var ErrBoard = errors.New("vm: board")

// Machine is one qemu-system-aarch64 invocation: the virt machine under
// TCG (no KVM: CI may be any x86 machine), an i6300esb watchdog on its PCI
// bus, the kernel with our initramfs, and optionally a raw disk on
// virtio-mmio that keeps state across resets.
type Machine struct {
	QEMU   string // qemu-system-aarch64
	Kernel string
	Initrd string
	Disk   string // raw image; "" for none
	// Append is added to the kernel command line after the console
	// settings.
	Append string
	// WatchdogAction is qemu's action when the i6300esb fires: reset
	// (default), poweroff, pause, none, ...
	WatchdogAction string
	Memory         string // default 512M
	CPU            string // default cortex-a57 (cheaper to emulate than max)
	// Console, if set, gets a copy of everything the serial console prints.
	Console io.Writer
	// BIOS, when set, is the firmware (U-Boot) that boots the machine from
	// its disk: Kernel, Initrd and Append are then not used.
	BIOS string
	// CutOnStop kills qemu as soon as Run's stop returns true, without
	// the grace period: a power cut at that line.
	CutOnStop bool
	// UDPForwards, when set, give the guest a virtio-net interface on
	// QEMU's user-mode network and forward each host UDP port on
	// 127.0.0.1 to the guest's GuestIP. Not restrict=on: QEMU 7.2's slirp
	// then drops the guest's UDP answers to a forwarded port (measured:
	// datagrams reach the guest, none come back); the guest runs only
	// the bench's own code.
	UDPForwards []UDPForward
}

// UDPForward forwards UDP datagrams sent to 127.0.0.1:Host on the host
// to the guest's port Guest; the guest's answers go back to the sender.
type UDPForward struct {
	Host, Guest int
}

// GuestIP is the guest's address on QEMU's user-mode network (its
// default DHCP address, set statically by the guest init) and GuestNet
// its prefix; the host is 10.0.2.2 seen from the guest.
const (
	GuestIP     = "10.0.2.15"
	GuestPrefix = 24
)

// Line is one line of the serial console, with the host time since qemu
// started at which it arrived.
type Line struct {
	T     time.Duration
	Text  string
	Event *Event // set when the line is a guest event
}

// BootBanner is the first line the kernel prints (early console on) at
// each boot; a second one in a run means the board reset.
const BootBanner = "Booting Linux on physical CPU"

// Args returns qemu's command line.
func (m Machine) Args() []string {
	mem, cpu, action := m.Memory, m.CPU, m.WatchdogAction
	if mem == "" {
		mem = "512M"
	}
	if cpu == "" {
		cpu = "cortex-a57"
	}
	if action == "" {
		action = "reset"
	}
	// earlycon prints from the first instant of each boot, so the host can
	// timestamp a reset; panic stays 0 (hang) so that a broken init does
	// not loop through reboots: the host sees the panic line and stops.
	cmdline := "console=ttyAMA0 earlycon=pl011,0x9000000 " + m.Append
	a := []string{
		"-M", "virt", "-accel", "tcg", "-cpu", cpu, "-smp", "1", "-m", mem,
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
	}
	if m.BIOS != "" {
		a = append(a, "-bios", m.BIOS)
	} else {
		a = append(a, "-kernel", m.Kernel, "-initrd", m.Initrd, "-append", strings.TrimSpace(cmdline))
	}
	a = append(a, "-device", "i6300esb", "-action", "watchdog="+action)
	if len(m.UDPForwards) > 0 {
		nd := "user,id=net0"
		for _, f := range m.UDPForwards {
			nd += fmt.Sprintf(",hostfwd=udp:127.0.0.1:%d-%s:%d", f.Host, GuestIP, f.Guest)
		}
		a = append(a, "-netdev", nd, "-device", "virtio-net-device,netdev=net0")
	}
	if m.Disk != "" {
		a = append(a, "-drive", "file="+strings.ReplaceAll(m.Disk, ",", ",,")+",format=raw,if=none,id=state,cache=writeback",
			"-device", "virtio-blk-device,drive=state")
	}
	return a
}

// Run boots the machine and feeds every console line to stop, in order;
// when stop returns true the run ends: qemu gets a grace period to exit on
// its own (the guest powers off) and is then killed. Run also ends when
// qemu exits, or when ctx is done (an error). It returns all lines.
func (m Machine) Run(ctx context.Context, stop func(Line) bool) ([]Line, error) {
	cmd := exec.Command(m.QEMU, m.Args()...)
	// qemu dies with this process: a test binary that panics or hits go
	// test's -timeout runs no cleanup, and a guest left running (a hung
	// one never exits) would outlive it on the machine. The signal comes
	// when the OS thread that started qemu exits; Go ends a thread only
	// when a goroutine locked to it returns, which Run's callers do not do.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoard, err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: start %s: %w", ErrBoard, m.QEMU, err)
	}
	var (
		mu      sync.Mutex
		lines   []Line
		stopped = make(chan struct{})
		readEnd = make(chan error, 1)
	)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			l := Line{T: time.Since(start), Text: strings.TrimRight(sc.Text(), "\r")}
			if m.Console != nil {
				fmt.Fprintln(m.Console, l.Text)
			}
			if e, ok, err := ParseEvent(l.Text); ok && err == nil {
				l.Event = &e
			}
			mu.Lock()
			lines = append(lines, l)
			mu.Unlock()
			if stop(l) {
				once.Do(func() { close(stopped) })
			}
		}
		readEnd <- sc.Err()
	}()
	var runErr error
	readDone := false
	select {
	case <-readEnd: // console closed: qemu is exiting
		readDone = true
	case <-stopped:
		if m.CutOnStop {
			cmd.Process.Kill()
			break
		}
		select {
		case <-readEnd:
			readDone = true
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		case <-ctx.Done():
			cmd.Process.Kill()
		}
	case <-ctx.Done():
		cmd.Process.Kill()
		runErr = fmt.Errorf("%w: %w after %v", ErrBoard, ctx.Err(), time.Since(start).Round(time.Millisecond))
	}
	if !readDone {
		<-readEnd // the pipe closes once qemu is gone
	}
	werr := cmd.Wait()
	mu.Lock()
	defer mu.Unlock()
	if runErr != nil {
		return lines, runErr
	}
	if werr != nil && cmd.ProcessState != nil && cmd.ProcessState.Exited() {
		return lines, fmt.Errorf("%w: qemu: %w: %s", ErrBoard, werr, strings.TrimSpace(stderr.String()))
	}
	return lines, nil
}
