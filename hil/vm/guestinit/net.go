//go:build linux

package main

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/bootorbit/bootorbit/hil/vm"
	"golang.org/x/sys/unix"
)

// netUp configures the guest's network without any tool in the
// initramfs: lo up, and iface up with the address prefix (bootorbit.ip=
// 10.0.2.15/24 on QEMU's user network). The host is on-link, so no route
// is needed.
func netUp(iface, prefix string) error {
	p, err := netip.ParsePrefix(prefix)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("bootorbit.ip=%q: want an IPv4 address/prefix", prefix)
	}
	if err := waitFor("/sys/class/net/"+iface, 20*time.Second); err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("net: socket: %w", err)
	}
	defer unix.Close(fd)
	up := func(name string) error {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return fmt.Errorf("net: %s: SIOCGIFFLAGS: %w", name, err)
		}
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			return fmt.Errorf("net: %s: SIOCSIFFLAGS: %w", name, err)
		}
		return nil
	}
	if err := up("lo"); err != nil {
		return err
	}
	set := func(req uint, a netip.Addr, what string) error {
		ifr, err := unix.NewIfreq(iface)
		if err != nil {
			return err
		}
		if err := ifr.SetInet4Addr(a.AsSlice()); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, req, ifr); err != nil {
			return fmt.Errorf("net: %s: %s %v: %w", iface, what, a, err)
		}
		return nil
	}
	if err := set(unix.SIOCSIFADDR, p.Addr(), "SIOCSIFADDR"); err != nil {
		return err
	}
	mask := net.CIDRMask(p.Bits(), 32)
	if err := set(unix.SIOCSIFNETMASK, netip.AddrFrom4([4]byte(mask)), "SIOCSIFNETMASK"); err != nil {
		return err
	}
	if err := up(iface); err != nil {
		return err
	}
	emit(vm.Event{Ev: "net-up", Msg: iface + " " + p.String()})
	return nil
}

// udpEcho answers every datagram on port with the same bytes, prefixed
// "echo ", until one says "bye" (answered, then the board powers off) or
// nothing arrives for limit.
func udpEcho(port string, limit time.Duration) error {
	c, err := net.ListenPacket("udp4", ":"+port)
	if err != nil {
		return err
	}
	defer c.Close()
	emit(vm.Event{Ev: "udp-listen", Msg: c.LocalAddr().String()})
	buf := make([]byte, 65536)
	n := 0
	for {
		c.SetReadDeadline(time.Now().Add(limit))
		k, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("udp echo after %d datagrams: %w", n, err)
		}
		n++
		if _, err := c.WriteTo(append([]byte("echo "), buf[:k]...), from); err != nil {
			return err
		}
		if bytes.Equal(buf[:k], []byte("bye")) {
			emit(vm.Event{Ev: "done", N: n, Msg: from.String()})
			return nil
		}
	}
}
