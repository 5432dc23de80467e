//go:build linux

package link

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair (posix_openpt through /dev/ptmx):
// the master, and the path of the slave, which the serial link opens as its
// device.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil { // unlockpt
		unix.Close(fd)
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN) // ptsname
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), "ptmx"), fmt.Sprintf("/dev/pts/%d", n)
}

// TestSerial runs a serial link on a pty: frames both ways in raw mode
// (bytes a cooked tty would translate or eat: CR, LF, ^C, ^D, XON/XOFF),
// the device going away (the master closes: the slave reads EIO), Send
// refused while it is away, and the link reopening the device when it is
// back (a new pty behind the same path, as udev would do).
func TestSerial(t *testing.T) {
	m1, pts := openPTY(t)
	dev := filepath.Join(t.TempDir(), "ttyRADIO")
	if err := os.Symlink(pts, dev); err != nil {
		t.Fatal(err)
	}
	h := newHarness()
	l := mustOpen(t, h.config(Config{Name: "uhf", Kind: KindSerial, Device: dev, Baud: 115200, MaxFrame: 256}))
	h.await(t, true, false)

	nasty := []byte{'\r', '\n', 0x03, 0x04, 0x11, 0x13, 0x7f, 0x1c, 0xff, '\r'}
	want := append(bytes.Repeat(nasty, 20), 1, 2, 3)
	serialExchange(t, l, m1, want)

	m1.Close()
	h.await(t, false, false)
	if err := l.Send(ctx(t), want); !errors.Is(err, ErrDown) {
		t.Fatalf("Send while the device is away = %v, want ErrDown", err)
	}
	w := h.nextWait()

	m2, pts2 := openPTY(t)
	defer m2.Close()
	os.Remove(dev)
	if err := os.Symlink(pts2, dev); err != nil {
		t.Fatal(err)
	}
	w <- time.Time{}
	h.await(t, true, true)
	serialExchange(t, l, m2, want[:100])
	st := l.(Monitor).Stats()
	if st.Ups != 2 || st.Downs != 1 || st.FramesIn != 2 || st.FramesOut != 2 || st.SendDown != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func serialExchange(t *testing.T, l Link, master *os.File, want []byte) {
	t.Helper()
	if err := l.Send(ctx(t), want); err != nil {
		t.Fatal(err)
	}
	master.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := protocol.NewReader(master, 256).ReadFrame()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("master read %x, %v; want %x", got, err, want)
	}
	// Garbage first: the link counts it and resynchronises.
	before := l.(Monitor).Stats().DeframeErrors
	master.Write([]byte{0x55, 0x55, 0})
	if err := protocol.NewWriter(master, 256).WriteFrame(want); err != nil {
		t.Fatal(err)
	}
	recvEq(t, l, want)
	if n := l.(Monitor).Stats().DeframeErrors - before; n != 1 {
		t.Fatalf("%d deframe errors, want 1", n)
	}
}
