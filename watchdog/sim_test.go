package watchdog_test

import (
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/bootorbit/bootorbit/watchdog/watchdogtest"
)

// The simulation: a virtual board whose bootloader is BootloaderModel, whose
// hardware watchdog is a watchdogtest.Device on a watchdogtest.Clock, and
// whose flightd is modelled by what it does with BootControl. It is an
// external test (package watchdog_test) because watchdogtest imports
// watchdog. A slot either comes up healthy
// (flightd starts, pets the watchdog, marks good) or hangs (nobody pets the
// watchdog, which expires and resets the board).

const (
	simAttempts    = 3
	simOpenTimeout = 120 * time.Second // watchdog.open_timeout on the kernel command line
	simWDTimeout   = 30 * time.Second  // what flightd sets once it runs
)

type simBoard struct {
	t        *testing.T
	clock    *watchdogtest.Clock
	env      watchdog.Env
	model    watchdog.BootloaderModel
	bc       *watchdog.BootControl
	healthy  map[string]bool
	stateDir string

	nextStatus watchdog.BootStatus // boot status the next boot sees
	boots      map[string]int      // boots per slot
	resets     int                 // counter resets by the bootloader
	wdResets   int
	log        []string
}

func newSimBoard(t *testing.T, env watchdog.Env) *simBoard {
	return &simBoard{
		t:        t,
		clock:    &watchdogtest.Clock{T: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)},
		env:      env,
		model:    watchdog.BootloaderModel{Attempts: simAttempts},
		bc:       &watchdog.BootControl{Env: env, Attempts: simAttempts},
		healthy:  map[string]bool{"A": true, "B": true},
		stateDir: t.TempDir(),
		boots:    map[string]int{},
	}
}

// powerCycle runs the board from reset until a slot is up (healthy) or the
// watchdog has reset it (hung), and returns the slot that ran.
func (b *simBoard) powerCycle() string {
	b.t.Helper()
	for guard := 0; ; guard++ {
		if guard > 10 {
			b.t.Fatal("bootloader resets in a loop")
		}
		d, err := b.model.Boot(b.env)
		if err != nil {
			b.t.Fatal(err)
		}
		if d.Reset {
			b.resets++
			b.nextStatus = 0 // a software reset by the bootloader
			continue
		}
		slot, err := watchdog.ParseCmdline("console=ttyS0 " + d.Cmdline())
		if err != nil {
			b.t.Fatal(err)
		}
		b.boots[slot]++
		status := b.nextStatus
		// The kernel arms the watchdog with open_timeout at boot.
		dev := watchdogtest.NewDevice(b.clock, simOpenTimeout, status)
		if !b.healthy[slot] {
			b.log = append(b.log, slot+":hang")
			for !dev.Expired() {
				b.clock.Advance(time.Second)
			}
			b.wdResets++
			b.nextStatus = watchdog.WDIOFCardReset
			return slot
		}
		b.flightd(slot, dev)
		b.log = append(b.log, slot+":up")
		b.nextStatus = 0 // the next reset is a commanded reboot
		return slot
	}
}

// flightd is what the daemon does on a healthy boot.
func (b *simBoard) flightd(slot string, dev *watchdogtest.Device) {
	b.t.Helper()
	b.clock.Advance(20 * time.Second) // kernel and init
	got, err := dev.SetTimeout(simWDTimeout)
	if err != nil || got != simWDTimeout {
		b.t.Fatalf("SetTimeout: %v %v", got, err)
	}
	bs, _ := dev.BootStatus()
	if _, err := watchdog.RecordReset(b.stateDir, bs, slot, b.clock.Now()); err != nil {
		b.t.Fatal(err)
	}
	st, err := b.bc.Status(slot)
	if err != nil {
		b.t.Fatal(err)
	}
	if st.FailedTrial != "" {
		if err := b.bc.MarkBad(st.FailedTrial); err != nil {
			b.t.Fatal(err)
		}
	}
	// Health checks take a minute; flightd pets every 10 s meanwhile.
	for i := 0; i < 6; i++ {
		b.clock.Advance(10 * time.Second)
		if err := dev.Keepalive(); err != nil {
			b.t.Fatalf("healthy flightd could not pet: %v", err)
		}
	}
	if err := b.bc.MarkGood(slot); err != nil {
		b.t.Fatal(err)
	}
	dev.Close() // reboot: no magic close, the watchdog stays armed
}

func (b *simBoard) status(booted string) watchdog.Status {
	b.t.Helper()
	st, err := b.bc.Status(booted)
	if err != nil {
		b.t.Fatal(err)
	}
	return st
}

// simEnvs are the environments the simulation runs on: the in-memory one,
// and the real formats on files.
func simEnvs(t *testing.T) map[string]func() watchdog.Env {
	return map[string]func() watchdog.Env{
		"mem": func() watchdog.Env { return &watchdog.MemEnv{} },
		// The real formats, on a memory disk: the simulation reboots a
		// hundred times, and the file path is covered by the cross-checks.
		"uboot-redundant": func() watchdog.Env {
			d := watchdog.NewMemDisk(map[string][]byte{"mmc": make([]byte, 0x4000)})
			e := &watchdog.UBootEnv{Copies: []watchdog.UBootLocation{{Path: "mmc", Offset: 0, Size: 0x2000}, {Path: "mmc", Offset: 0x2000, Size: 0x2000}}, FS: d}
			if err := e.Save(watchdog.Vars{"bootcmd": "run bootorbit"}); err != nil {
				t.Fatal(err)
			}
			return e
		},
		"grub": func() watchdog.Env {
			blk, _ := watchdog.NewGRUBBlock(watchdog.GRUBEnvSize)
			raw, _ := blk.Bytes()
			return &watchdog.GRUBEnv{Path: "grubenv", FS: watchdog.NewMemDisk(map[string][]byte{"grubenv": raw})}
		},
	}
}

func TestSimulationHangingSlotFallsBack(t *testing.T) {
	for name, mk := range simEnvs(t) {
		t.Run(name, func(t *testing.T) {
			b := newSimBoard(t, mk())
			// First boot: A, healthy, marked good.
			if s := b.powerCycle(); s != "A" {
				t.Fatalf("first boot %s", s)
			}
			// flightd on A installs into B and arms it; B hangs.
			b.healthy["B"] = false
			if err := b.bc.Arm("B"); err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= simAttempts; i++ {
				if s := b.powerCycle(); s != "B" {
					t.Fatalf("trial boot %d ran %s; log %v", i, s, b.log)
				}
			}
			if s := b.powerCycle(); s != "A" {
				t.Fatalf("after %d hangs the board ran %s, want fallback to A; log %v", simAttempts, s, b.log)
			}
			if b.boots["B"] != simAttempts || b.wdResets != simAttempts || b.resets != 0 {
				t.Fatalf("B booted %d times (want exactly %d), %d watchdog resets, %d counter resets", b.boots["B"], simAttempts, b.wdResets, b.resets)
			}
			rec, err := watchdog.ReadResetRecord(b.stateDir)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Cause != watchdog.CauseWatchdog || rec.Slot != "A" {
				t.Fatalf("reset record after fallback: %+v", rec)
			}
			// flightd on A saw the failed trial and marked B bad.
			st := b.status("A")
			if st.FailedTrial != "" || st.TrialSlot != "" || len(st.Order) != 1 || st.Order[0] != "A" || st.Left["B"] != 0 {
				t.Fatalf("status after fallback: %+v", st)
			}
			// And A stays, over many reboots, without B ever being tried.
			for i := 0; i < 50; i++ {
				if s := b.powerCycle(); s != "A" {
					t.Fatalf("reboot %d ran %s", i, s)
				}
			}
			if b.boots["B"] != simAttempts {
				t.Fatalf("B booted again: %d", b.boots["B"])
			}
			// Only boots that reach flightd record their cause: the hung
			// boots never did, so the fallback boot recorded the one
			// watchdog reset it saw, and the later reboots were clean.
			rec, _ = watchdog.ReadResetRecord(b.stateDir)
			if rec.Cause != watchdog.CausePowerOn || rec.WatchdogResets != 1 || rec.Count != 52 {
				t.Fatalf("reset record after 50 clean reboots: %+v", rec)
			}
		})
	}
}

func TestSimulationHealthySlotStays(t *testing.T) {
	for name, mk := range simEnvs(t) {
		t.Run(name, func(t *testing.T) {
			b := newSimBoard(t, mk())
			if s := b.powerCycle(); s != "A" {
				t.Fatalf("first boot %s", s)
			}
			if err := b.bc.Arm("B"); err != nil {
				t.Fatal(err)
			}
			if s := b.powerCycle(); s != "B" {
				t.Fatalf("trial boot ran %s", s)
			}
			st := b.status("B")
			if st.Trial || st.TrialSlot != "" || st.Left["B"] != simAttempts || st.Primary != "B" {
				t.Fatalf("after the healthy trial: %+v", st)
			}
			for i := 0; i < 100; i++ {
				if s := b.powerCycle(); s != "B" {
					t.Fatalf("reboot %d ran %s; log %v", i, s, b.log[max(0, len(b.log)-5):])
				}
			}
			if b.boots["A"] != 1 || b.wdResets != 0 || b.resets != 0 {
				t.Fatalf("boots %v, watchdog resets %d, counter resets %d", b.boots, b.wdResets, b.resets)
			}
			// The old slot is still the fallback with full attempts.
			if st := b.status("B"); st.Left["A"] != simAttempts || len(st.Order) != 2 {
				t.Fatalf("fallback lost: %+v", st)
			}
		})
	}
}

func TestSimulationBothHangResetLoop(t *testing.T) {
	// Both slots hang: the bootloader alternates N tries of each and resets
	// the counters, never stopping; every boot is a watchdog reset.
	b := newSimBoard(t, &watchdog.MemEnv{})
	b.healthy["A"], b.healthy["B"] = false, false
	for i := 0; i < 4*simAttempts; i++ {
		b.powerCycle()
	}
	if b.boots["A"] != 2*simAttempts || b.boots["B"] != 2*simAttempts || b.resets != 1 {
		t.Fatalf("boots %v, counter resets %d", b.boots, b.resets)
	}
}
