//go:build !linux

package watchdog

import "fmt"

// LinuxDevice is only available on Linux.
type LinuxDevice struct{ Device }

// OpenDevice fails: the hardware watchdog API is Linux's.
func OpenDevice(path string) (*LinuxDevice, error) {
	return nil, fmt.Errorf("%w: %s: the watchdog API needs Linux", ErrWatchdog, path)
}

// Info is empty off Linux.
func (d *LinuxDevice) Info() Info { return Info{} }
