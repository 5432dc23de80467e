//go:build linux

package watchdog

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// LinuxDevice is a hardware watchdog driven through the Linux watchdog API
// (/dev/watchdog, /dev/watchdogN). Opening it arms it. It never writes the
// magic 'V': closing it, or flightd exiting, leaves it armed, so the board
// resets unless the next flightd opens and pets it in time.
type LinuxDevice struct {
	path string
	fd   int
	info Info
}

// OpenDevice opens and thereby arms the watchdog at path, and asks it what
// it supports (WDIOC_GETSUPPORT).
func OpenDevice(path string) (*LinuxDevice, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrWatchdog, path, err)
	}
	d := &LinuxDevice{path: path, fd: fd}
	if wi, err := unix.IoctlGetWatchdogInfo(fd); err == nil {
		d.info = Info{
			Identity: string(bytes.TrimRight(wi.Identity[:], "\x00")),
			Options:  wi.Options,
			Firmware: wi.Version,
		}
	}
	return d, nil
}

// Info is what WDIOC_GETSUPPORT said (zero if the driver did not answer).
func (d *LinuxDevice) Info() Info { return d.info }

// Keepalive pets with WDIOC_KEEPALIVE, or by writing a byte other than 'V'
// when the driver does not support the ioctl.
func (d *LinuxDevice) Keepalive() error {
	if d.info.Options&WDIOFKeepalive != 0 {
		err := unix.IoctlWatchdogKeepalive(d.fd)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("%w: %s: WDIOC_KEEPALIVE: %w", ErrWatchdog, d.path, err)
		}
	}
	if _, err := unix.Write(d.fd, []byte{0}); err != nil {
		return fmt.Errorf("%w: %s: keepalive write: %w", ErrWatchdog, d.path, err)
	}
	return nil
}

// SetTimeout sets the timeout (rounded up to whole seconds) with
// WDIOC_SETTIMEOUT and reads back what the driver applied with
// WDIOC_GETTIMEOUT.
func (d *LinuxDevice) SetTimeout(t time.Duration) (time.Duration, error) {
	secs := int((t + time.Second - 1) / time.Second)
	if secs < 1 {
		return 0, fmt.Errorf("%w: timeout %v", ErrWatchdog, t)
	}
	if err := unix.IoctlSetPointerInt(d.fd, unix.WDIOC_SETTIMEOUT, secs); err != nil {
		return 0, fmt.Errorf("%w: %s: WDIOC_SETTIMEOUT %d s: %w", ErrWatchdog, d.path, secs, err)
	}
	got, err := unix.IoctlGetInt(d.fd, unix.WDIOC_GETTIMEOUT)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: WDIOC_GETTIMEOUT: %w", ErrWatchdog, d.path, err)
	}
	return time.Duration(got) * time.Second, nil
}

// BootStatus returns WDIOC_GETBOOTSTATUS.
func (d *LinuxDevice) BootStatus() (BootStatus, error) {
	v, err := unix.IoctlGetInt(d.fd, unix.WDIOC_GETBOOTSTATUS)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: WDIOC_GETBOOTSTATUS: %w", ErrWatchdog, d.path, err)
	}
	return BootStatus(v), nil
}

// Close closes the device without the magic 'V': the watchdog stays armed.
func (d *LinuxDevice) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

var _ Device = (*LinuxDevice)(nil)
