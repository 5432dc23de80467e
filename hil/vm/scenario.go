package vm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/watchdog"
)

// Boot is what one boot of the board reported.
type Boot struct {
	N int // boot number from the persistent disk
	// Banner is the host time (since qemu started) of the kernel's first
	// line of this boot; InitHost that of the init's first line.
	Banner, InitHost time.Duration
	// InitUp is the guest's uptime when /init started: the kernel's boot
	// time to init, on the guest clock.
	InitUp     time.Duration
	Info       watchdog.Info
	BootStatus watchdog.BootStatus
	// Record is what watchdog.RecordBootReset wrote on the disk.
	Record watchdog.ResetRecord
	// Asked and Applied are the timeout set and read back.
	Asked, Applied time.Duration
	Keepalives     int
	// FirstPet and LastPet are guest uptimes of the first and last
	// keepalive; MaxGap the longest guest time between two keepalives (or
	// between SETTIMEOUT and the first).
	FirstPet, LastPet, MaxGap time.Duration
	// LastPetHost is the host time the last keepalive line arrived.
	LastPetHost time.Duration
	// LastAlive is the guest uptime of the last heartbeat the guest
	// printed while waiting (for the reset, or for nothing to happen).
	LastAlive time.Duration
	// Stopped is set when the guest stopped petting (expire) or stopped
	// the watchdog with the magic close (the control scenario).
	Stopped bool
	Done    bool
	// DidNotStop is set when the kernel's watchdog core said "watchdog did
	// not stop!" in this boot: its words for a close without the magic 'V'
	// that leaves the watchdog armed.
	DidNotStop bool
	// FSRecovered is set when the kernel replayed the state disk's ext4
	// journal at mount: the previous boot ended without unmounting it.
	FSRecovered bool

	// BootID is the kernel's boot id of this boot.
	BootID string
	// Rerecord is what a second RecordBootReset in the same boot returned
	// (a flightd restarted within the boot): the same record.
	Rerecord watchdog.ResetRecord
	// Busy is the error a second OpenDevice got while the device was open
	// ("" if it was let in).
	Busy string
	// Reopened is set when the guest closed the device (no magic 'V') and
	// opened it again while petting, as a restarted flightd does.
	Reopened bool
	// Refused is the error SetTimeout returned for a timeout the driver
	// cannot do (2047 s); "" if it was accepted.
	Refused string
	// Sysfs holds the watchdog core's view in
	// /sys/class/watchdog/watchdog0 (identity, state, timeout, bootstatus,
	// nowayout), each time the guest read it, in order.
	Sysfs []map[string]string
}

// Run is the outcome of one scenario: the boots in order and the console.
type Run struct {
	Boots []*Boot
	Lines []Line
	Total time.Duration // host time, qemu start to exit
}

// Console returns the whole console as text.
func (r *Run) Console() string {
	var sb strings.Builder
	for _, l := range r.Lines {
		fmt.Fprintf(&sb, "[%8.3f] %s\n", l.T.Seconds(), l.Text)
	}
	return sb.String()
}

// parse builds the boots from the console lines. A guest error event or a
// kernel panic is an error.
func parse(lines []Line) ([]*Boot, error) {
	var boots []*Boot
	cur := func() *Boot {
		if len(boots) == 0 {
			boots = append(boots, &Boot{})
		}
		return boots[len(boots)-1]
	}
	var settimeoutUp time.Duration
	for _, l := range lines {
		if strings.Contains(l.Text, BootBanner) {
			boots = append(boots, &Boot{Banner: l.T})
			continue
		}
		if strings.Contains(l.Text, "Kernel panic") {
			return boots, fmt.Errorf("%w: guest kernel panic: %s", ErrBoard, l.Text)
		}
		if strings.Contains(l.Text, "EXT4-fs (vda): recovery complete") {
			cur().FSRecovered = true
		}
		if strings.Contains(l.Text, "watchdog did not stop!") {
			cur().DidNotStop = true
		}
		e := l.Event
		if e == nil {
			if strings.Contains(l.Text, EventPrefix) {
				_, _, err := ParseEvent(l.Text)
				return boots, err
			}
			continue
		}
		b := cur()
		if e.Boot != 0 {
			b.N = e.Boot
		}
		up := secDur(e.Up)
		switch e.Ev {
		case "init":
			b.InitUp, b.InitHost = up, l.T
		case "open":
			b.Info = watchdog.Info{Identity: e.Identity, Options: e.Options, Firmware: e.Firmware}
		case "bootstatus":
			if e.BootStatus != nil {
				b.BootStatus = watchdog.BootStatus(*e.BootStatus)
			}
		case "boot":
			b.BootID = e.BootID
		case "record", "rerecord":
			rec := watchdog.ResetRecord{Cause: watchdog.ResetCause(e.Cause), Count: e.Count, WatchdogResets: e.WatchdogResets, BootID: e.BootID}
			if e.BootStatus != nil {
				rec.BootStatus = *e.BootStatus
			}
			if e.Ev == "record" {
				b.Record = rec
			} else {
				b.Rerecord = rec
			}
		case "settimeout-refused":
			b.Refused = e.Err
		case "second-open-refused":
			b.Busy = e.Err
		case "reopened":
			b.Reopened = true
		case "sysfs":
			m := map[string]string{}
			for _, kv := range strings.Fields(e.Msg) {
				if k, v, ok := strings.Cut(kv, "="); ok {
					m[k] = v
				}
			}
			b.Sysfs = append(b.Sysfs, m)
		case "stopped":
			b.Stopped = true
		case "settimeout":
			b.Asked, b.Applied = secDur(e.Asked), secDur(e.Applied)
			settimeoutUp = up
		case "keepalive":
			prev := b.LastPet
			if b.Keepalives == 0 {
				b.FirstPet, prev = up, settimeoutUp
			}
			b.MaxGap = max(b.MaxGap, up-prev)
			b.LastPet, b.LastPetHost = up, l.T
			b.Keepalives = e.N
		case "alive":
			b.LastAlive = up
		case "done":
			b.Done = true
		case "error":
			return boots, fmt.Errorf("%w: guest (boot %d): %s", ErrBoard, b.N, e.Err)
		}
	}
	return boots, nil
}

// RunKeepalive boots once: open /dev/watchdog0, set the timeout (seconds),
// pet at a third of it for periods timeouts on the guest's clock (closing
// and reopening the device half way, as a restarted flightd would), and
// power off. A reset during it shows as a second boot.
func (b *Board) RunKeepalive(ctx context.Context, timeout, periods int) (*Run, error) {
	disk, err := b.NewDisk("keepalive.img")
	if err != nil {
		return nil, err
	}
	return b.run(ctx, b.machine(disk, "keepalive", timeout, periods, ""), 1)
}

// RunExpire boots, sets the timeout, pets for periods timeouts, closes the
// device without the magic 'V' and stops petting; qemu's i6300esb resets
// the board, and the second boot reports what it finds: GETBOOTSTATUS and
// the reset record on the persistent disk.
func (b *Board) RunExpire(ctx context.Context, timeout, periods int) (*Run, error) {
	disk, err := b.NewDisk("expire.img")
	if err != nil {
		return nil, err
	}
	return b.run(ctx, b.machine(disk, "expire", timeout, periods, ""), 2)
}

// RunMagicClose is the control for RunExpire: the guest sets the timeout,
// then writes the magic 'V' and closes the device (which the watchdog
// package never does), and must stay up past the timeout, for twice the
// timeout plus a second. It shows that the reset in RunExpire comes from
// leaving the device armed.
func (b *Board) RunMagicClose(ctx context.Context, timeout int) (*Run, error) {
	disk, err := b.NewDisk("magicclose.img")
	if err != nil {
		return nil, err
	}
	return b.run(ctx, b.machine(disk, "magicclose", timeout, 0, ""), 1)
}

// RunOpenTimeout boots with watchdog.open_timeout=openTimeout on the
// kernel command line and never opens the watchdog; the guest stays up for
// twice that plus two seconds and reports the watchdog core's state. The
// kernel enforces open_timeout only for a watchdog already running when
// its driver registers (WDOG_HW_RUNNING), which is up to the hardware and
// the boot loader.
func (b *Board) RunOpenTimeout(ctx context.Context, openTimeout int) (*Run, error) {
	disk, err := b.NewDisk("opentimeout.img")
	if err != nil {
		return nil, err
	}
	m := b.machine(disk, "idle", openTimeout, 0, fmt.Sprintf("watchdog.open_timeout=%d", openTimeout))
	return b.run(ctx, m, 1)
}

// run boots m until the guest reports done in boot number wantBoots (or
// an error, a panic, or one boot more than expected).
func (b *Board) run(ctx context.Context, m Machine, wantBoots int) (*Run, error) {
	banners := 0
	start := time.Now()
	lines, err := m.Run(ctx, func(l Line) bool {
		if strings.Contains(l.Text, BootBanner) {
			banners++
			return banners > wantBoots
		}
		if strings.Contains(l.Text, "Kernel panic") {
			return true
		}
		if e := l.Event; e != nil {
			return e.Ev == "error" || e.Ev == "done" && e.Boot >= wantBoots
		}
		return false
	})
	r := &Run{Lines: lines, Total: time.Since(start)}
	if err != nil {
		return r, err
	}
	r.Boots, err = parse(lines)
	return r, err
}

// GoTest is the outcome of a package's test binary run in the guest.
type GoTest struct {
	*Run
	Exit   int    // the test binary's exit status; -1 if it did not report one
	Output string // its output, as printed on the console
}

// RunGoTest builds the tests of package pkg for linux/arm64, boots a board
// whose initramfs holds the binary as /pkg.test, and runs it in the guest
// with args and env (KEY=VALUE) after the usual setup (modules, state disk
// on /state). The guest prints the output on the console, between marker
// events, and powers off.
func (b *Board) RunGoTest(ctx context.Context, pkg string, args, env []string) (*GoTest, error) {
	bin := filepath.Join(b.Dir, "pkg.test")
	if err := BuildGuestTest(ctx, pkg, bin); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	init, err := os.ReadFile(filepath.Join(b.Dir, "init"))
	if err != nil {
		return nil, err
	}
	initrd := filepath.Join(b.Dir, "initramfs-gotest.cpio")
	spec := strings.Join(args, "\n") + "\n"
	if err := BuildInitramfs(initrd, init, b.Mods,
		File{Name: "pkg.test", Perm: 0o755, Data: data},
		File{Name: "gotest.args", Perm: 0o644, Data: []byte(spec)},
		File{Name: "gotest.env", Perm: 0o644, Data: []byte(strings.Join(env, "\n") + "\n")},
	); err != nil {
		return nil, err
	}
	disk, err := b.NewDisk("gotest.img")
	if err != nil {
		return nil, err
	}
	m := b.machine(disk, "gotest", 1, 0, "") // timeout unused
	m.Initrd = initrd
	r, err := b.run(ctx, m, 1)
	g := &GoTest{Run: r, Exit: -1}
	if r == nil {
		return g, err
	}
	var out strings.Builder
	in := false
	for _, l := range r.Lines {
		switch e := l.Event; {
		case e != nil && e.Ev == "gotest-start":
			in = true
		case e != nil && e.Ev == "gotest-exit":
			in = false
			g.Exit = e.N
		case in:
			out.WriteString(l.Text + "\n")
		}
	}
	g.Output = out.String()
	return g, err
}
