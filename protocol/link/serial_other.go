//go:build !linux

package link

import (
	"errors"
	"os"
)

// Serial links need Linux termios; elsewhere (groundd on darwin or windows)
// use UDP or TCP, e.g. through a serial-to-network bridge.
var baudRates = map[int]uint32{}

func openDevice(path string, baud int) (*os.File, error) {
	return nil, errors.New("link: serial devices are supported on Linux only")
}
