//go:build linux

package realboard

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

var baudRates = map[int]uint32{
	9600: unix.B9600, 19200: unix.B19200, 38400: unix.B38400, 57600: unix.B57600,
	115200: unix.B115200, 230400: unix.B230400, 460800: unix.B460800, 921600: unix.B921600,
	1500000: unix.B1500000, 3000000: unix.B3000000,
}

// OpenConsole opens a serial device read-only in raw mode at baud (8N1,
// no flow control, no echo, no line editing): a board's console as a
// USB-serial adapter presents it. It is non-blocking underneath, so
// closing the file ends a read.
func OpenConsole(path string, baud int) (*os.File, error) {
	speed, ok := baudRates[baud]
	if !ok {
		return nil, fmt.Errorf("%w: console baud %d not supported", ErrBoard, baud)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: console %s: %w", ErrBoard, path, err)
	}
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: console %s is not a tty: %w", ErrBoard, path, err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF | unix.IXANY
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CSTOPB | unix.CRTSCTS | unix.CBAUD
	t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL | speed
	t.Ispeed, t.Ospeed = speed, speed
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: console %s raw mode: %w", ErrBoard, path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// ReadConsole returns the console's lines (carriage returns trimmed)
// until ctx ends or the device fails; the channel is then closed.
func ReadConsole(ctx context.Context, path string, baud int) (<-chan string, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: no console device configured", ErrBoard)
	}
	f, err := OpenConsole(path, baud)
	if err != nil {
		return nil, err
	}
	out := make(chan string, 256)
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	go func() {
		defer close(out)
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 4096), 64<<10)
		for sc.Scan() {
			select {
			case out <- strings.TrimRight(sc.Text(), "\r"):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
