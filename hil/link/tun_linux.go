package link

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// IPConfig configures an IP-level emulator (NewIP): two network
// namespaces, each with a TUN device, joined through the channel model,
// so that anything speaking IP (TCP downloads, ping) between them crosses
// the emulated link.
type IPConfig struct {
	Spec Spec
	Seed uint64
	// NSA and NSB are the namespaces of the ground side and the vehicle
	// side (default bo-ground and bo-vehicle). NewIP creates them and
	// refuses to run if either exists: it never touches a namespace it
	// did not make.
	NSA, NSB string
	// AddrA and AddrB are the sides' addresses, in one prefix (default
	// 10.201.0.1/24 and 10.201.0.2/24); they exist only inside the
	// namespaces.
	AddrA, AddrB netip.Prefix
	// Dev is the TUN device's name in each namespace (default bo0).
	Dev string
	// MTU of the devices; 0: the spec's smallest MaxFrame (a radio frame
	// carries one IP packet), else 1500, and at least 576 (IPv4's minimum
	// reassembly size: uhf's 256-byte frames would starve TCP). A
	// channel's MaxFrame below the MTU is raised to it.
	MTU int
	Log *slog.Logger
}

// Defaults of IPConfig.
const (
	DefaultNSA = "bo-ground"
	DefaultNSB = "bo-vehicle"
	DefaultDev = "bo0"
)

// Default addresses of IPConfig.
var (
	DefaultAddrA = netip.MustParsePrefix("10.201.0.1/24")
	DefaultAddrB = netip.MustParsePrefix("10.201.0.2/24")
)

// ErrNoTUN is returned by NewIP where TUN devices or namespaces cannot be
// made: not root, no /dev/net/tun, no ip(8).
var ErrNoTUN = errors.New("link: IP mode needs root, /dev/net/tun and ip(8) from iproute2")

func (c *IPConfig) defaults() {
	if c.NSA == "" {
		c.NSA = DefaultNSA
	}
	if c.NSB == "" {
		c.NSB = DefaultNSB
	}
	if !c.AddrA.IsValid() {
		c.AddrA = DefaultAddrA
	}
	if !c.AddrB.IsValid() {
		c.AddrB = DefaultAddrB
	}
	if c.Dev == "" {
		c.Dev = DefaultDev
	}
	if c.MTU == 0 {
		c.MTU = 1500
		for _, f := range []int{c.Spec.Forward.MaxFrame, c.Spec.Return.MaxFrame} {
			if f > 0 && f < c.MTU {
				c.MTU = f
			}
		}
		c.MTU = max(c.MTU, 576)
	}
	// One packet per radio frame: a profile's smaller frames grow to the
	// MTU rather than drop every full-size packet as oversize.
	for _, ch := range []*Channel{&c.Spec.Forward, &c.Spec.Return} {
		if ch.MaxFrame > 0 && ch.MaxFrame < c.MTU {
			ch.MaxFrame = c.MTU
		}
	}
}

// tunSeq numbers the temporary device names of one process.
var tunSeq atomic.Int64

// CheckIP returns nil when IP mode can run here, or an error wrapping
// ErrNoTUN that says what is missing.
func CheckIP() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root", ErrNoTUN)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("%w: %v", ErrNoTUN, err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: %v", ErrNoTUN, err)
	}
	return nil
}

// nameOK accepts a namespace or device name that ip(8) and the kernel
// take as it is: at most 15 bytes (IFNAMSIZ-1), no path elements, no
// spaces or shell-special characters.
func nameOK(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// NewIP creates the two namespaces, a TUN device in each with its
// address, and returns the emulator that joins them; Run relays and, on
// its way out, deletes the devices and the namespaces (so does Close).
// Inside the namespaces, AddrA reaches AddrB across the link: run
// programs there with `ip netns exec NS ...` or InNamespace.
func NewIP(ctx context.Context, cfg IPConfig) (_ *Emulator, err error) {
	cfg.defaults()
	if err := CheckIP(); err != nil {
		return nil, err
	}
	for _, n := range []string{cfg.NSA, cfg.NSB, cfg.Dev} {
		if !nameOK(n) {
			return nil, fmt.Errorf("link: bad namespace or device name %q", n)
		}
	}
	if cfg.NSA == cfg.NSB {
		return nil, fmt.Errorf("link: both sides in namespace %q", cfg.NSA)
	}
	if !cfg.AddrA.Addr().Is4() || !cfg.AddrB.Addr().Is4() || cfg.AddrA.Masked() != cfg.AddrB.Masked() || cfg.AddrA.Addr() == cfg.AddrB.Addr() {
		return nil, fmt.Errorf("link: want two IPv4 addresses of one prefix, have %v and %v", cfg.AddrA, cfg.AddrB)
	}
	if cfg.MTU < 68 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("link: MTU %d", cfg.MTU)
	}
	e, err := newEmulator(cfg.Spec, cfg.Seed, cfg.Log)
	if err != nil {
		return nil, err
	}
	var made []string // namespaces to delete
	e.cleanup = func() error {
		var errs []error
		for _, ns := range made {
			if err := ipCmd(context.Background(), "netns", "del", ns); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	for side, s := range []struct {
		ns   string
		addr netip.Prefix
	}{{cfg.NSA, cfg.AddrA}, {cfg.NSB, cfg.AddrB}} {
		if _, err := os.Stat(filepath.Join("/run/netns", s.ns)); err == nil {
			return nil, fmt.Errorf("link: namespace %s exists: not ours, left alone (ip netns del %s, if it is a leftover)", s.ns, s.ns)
		}
		if err := ipCmd(ctx, "netns", "add", s.ns); err != nil {
			return nil, err
		}
		made = append(made, s.ns)
		// The device is made in our namespace under a temporary name,
		// then moved: the open descriptor stays attached to it. Without
		// IFF_PERSIST it disappears when the descriptor is closed.
		tmp := fmt.Sprintf("bo%d-%d%c", os.Getpid()%10000000, tunSeq.Add(1)%10000, 'a'+side)
		p, err := openTUN(tmp)
		if err != nil {
			return nil, err
		}
		e.ports[side] = p
		steps := [][]string{
			{"link", "set", tmp, "netns", s.ns},
			{"-n", s.ns, "link", "set", tmp, "name", cfg.Dev},
			{"-n", s.ns, "link", "set", cfg.Dev, "mtu", strconv.Itoa(cfg.MTU)},
			{"-n", s.ns, "addr", "add", s.addr.String(), "dev", cfg.Dev},
			{"-n", s.ns, "link", "set", cfg.Dev, "up"},
			{"-n", s.ns, "link", "set", "lo", "up"},
		}
		for _, a := range steps {
			if err := ipCmd(ctx, a...); err != nil {
				return nil, err
			}
		}
	}
	e.log.Info("link: namespaces ready", "ground", cfg.NSA, "ground_addr", cfg.AddrA, "vehicle", cfg.NSB, "vehicle_addr", cfg.AddrB, "dev", cfg.Dev, "mtu", cfg.MTU)
	return e, nil
}

// ipCmd runs ip(8) with a timeout, returning its stderr in the error.
func ipCmd(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("link: ip %v: %v: %s", args, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// tunPort is a side of an IP relay: packets the namespace's kernel routes
// to the device are read here; packets written here arrive in it.
type tunPort struct {
	f      *os.File
	closed atomic.Bool
}

func openTUN(name string) (*tunPort, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("link: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("link: tun %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("link: TUNSETIFF %s: %w", name, err)
	}
	// Non-blocking, so that the runtime's poller serves reads and Close
	// interrupts a pending one.
	return &tunPort{f: os.NewFile(uintptr(fd), "tun:"+name)}, nil
}

func (p *tunPort) read(buf []byte) (int, error) { return p.f.Read(buf) }

func (p *tunPort) write(b []byte) error {
	_, err := p.f.Write(b)
	return err
}

func (p *tunPort) close() error {
	if p.closed.Swap(true) {
		return nil
	}
	return p.f.Close()
}

// InNamespace runs f on a thread that has entered the network namespace
// ns (made by ip netns add, as NewIP does), and returns f's error. Sockets
// f creates (net.Listen, net.Dial) belong to ns for their whole life, and
// may be used anywhere afterwards; goroutines f starts do not run in ns.
func InNamespace(ns string, f func() error) error {
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		return fmt.Errorf("link: namespace %s: %w", ns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("link: own namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("link: enter namespace %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and dies with this goroutine
			// rather than serve others in the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("link: leave namespace %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
