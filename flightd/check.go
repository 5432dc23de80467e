package flightd

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/bootorbit/bootorbit/flightd/uplink"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
)

// Offline is the vehicle's durable state opened without the daemon: the
// slots, the bootloader environment, the daemon state, and the uplink
// engine's journal (nil when it cannot be opened, e.g. a running daemon
// holds it). Close it when done.
type Offline struct {
	Updater *Updater
	State   DaemonState
	Reset   watchdog.ResetRecord
	Engine  *uplink.Engine
	// EngineErr says why Engine is nil.
	EngineErr error
}

// OpenOffline opens the configuration's state to read it: the slots,
// the environment, the daemon state and the uplink journal (read only). The booted slot comes from the kernel
// command line; a bench host without rauc.slot= has none.
func OpenOffline(cfg *Config, log *slog.Logger) (*Offline, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o, err := cfg.Slots.SlotOptions(true)
	if err != nil {
		return nil, err
	}
	o.Log = log
	m, err := slots.Open(o)
	if err != nil {
		return nil, err
	}
	env, _, err := cfg.Boot.OpenEnv()
	if err != nil {
		return nil, err
	}
	off := &Offline{Updater: &Updater{Slots: m, Boot: &watchdog.BootControl{Env: env, Attempts: cfg.Boot.AttemptsOrDefault()}, Booted: o.Booted, Log: log}}
	if off.State, err = ReadState(cfg.Slots.StateDir); err != nil {
		return nil, err
	}
	off.Reset, _ = watchdog.ReadResetRecord(cfg.RecordDir())
	// The journal is inspected, read only: nothing is repaired under a
	// running daemon (which holds it: Inspect then fails at once).
	if _, err := os.Stat(filepath.Join(cfg.StorageDir(), "journal.db")); errors.Is(err, fs.ErrNotExist) {
		return off, nil // nothing received yet
	}
	keys, err := cfg.LoadKeys()
	if err != nil {
		keys = &Keys{}
	}
	off.Engine, off.EngineErr = uplink.Inspect(cfg.UplinkConfig(keys), &installer{u: off.Updater, log: log}, log)
	return off, nil
}

// Close closes the journal.
func (o *Offline) Close() error {
	if o.Engine != nil {
		return o.Engine.Close()
	}
	return nil
}

// Status is the vehicle's status from its durable state.
func (o *Offline) Status(cfg *Config) Status {
	var us UplinkStatus
	var release releaseFunc
	if o.Engine != nil {
		d := &daemon{eng: o.Engine}
		us, _ = d.uplinkStatus()
		release = d.release()
	}
	trial := false
	if ws, err := o.Updater.Boot.Status(string(o.Updater.Booted)); err == nil {
		trial = ws.TrialSlot != "" && ws.TrialSlot == string(o.Updater.Booted)
	}
	for _, s := range o.Updater.Slots.Status().Slots {
		if s.ID == o.Updater.Booted && s.State == slots.Pending {
			trial = true
		}
	}
	s := buildStatus(cfg.Vehicle.ID, o.Updater, o.State, o.Reset, causeLabel(o.Reset.Cause, false), us, release, trial)
	s.FreeBytes = freeBytes(cfg.StorageDir(), cfg.Slots.StateDir)
	if o.EngineErr != nil {
		s.Warnings = append(s.Warnings, "uplink journal not read: "+o.EngineErr.Error())
	}
	return s
}

// Check compares the slot records, the bootloader environment and the
// uplink journal, and returns every disagreement (none: consistent). It
// writes nothing: Reconcile, at the next start, resolves what a power cut
// leaves; Check says whether anything is left that Reconcile would not
// expect, or that would boot an incomplete slot.
//
//   - every slot the environment can boot holds a verified image (state
//     pending or good), the booted slot aside during a failed trial;
//   - the slot the bootloader boots next (the model of the boot script
//     run on a copy of the environment) holds a verified image;
//   - the trial slot of the environment is pending or good;
//   - the uplink journal and staging agree with each other and with the
//     slot records (uplink.Engine.Check).
func (o *Offline) Check() []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }
	u := o.Updater
	st := map[slots.SlotID]slots.SlotInfo{}
	for _, s := range u.Slots.Status().Slots {
		st[s.ID] = s.SlotInfo
	}
	ws, err := u.Boot.Status(string(u.Booted))
	if err != nil {
		add("boot environment: %v", err)
	} else {
		verified := func(x slots.SlotID) bool {
			s := st[x].State
			return s == slots.Pending || s == slots.Good
		}
		for _, x := range []slots.SlotID{slots.A, slots.B} {
			if slices.Contains(ws.Order, string(x)) && !verified(x) && !(x == u.Booted && st[x].State == slots.Bad) {
				add("slot %s is %s, but the boot environment can boot it (BOOT_ORDER %q)", x, st[x].State, ws.Order)
			}
		}
		if ws.TrialSlot != "" && !verified(slots.SlotID(ws.TrialSlot)) && ws.FailedTrial != ws.TrialSlot {
			add("slot %s is on trial in the boot environment but is %s", ws.TrialSlot, st[slots.SlotID(ws.TrialSlot)].State)
		}
		v, err := u.Boot.Env.Load()
		if err == nil {
			dec, err := watchdog.BootloaderModel{Attempts: u.Boot.Attempts}.Boot(&watchdog.MemEnv{Vars: v})
			switch {
			case err != nil:
				add("boot environment: the boot script model: %v", err)
			case dec.Reset:
				add("the boot script finds no slot with attempts left (it resets the counters and the board)")
			case !verified(slots.SlotID(dec.Slot)):
				add("the next boot boots slot %s, which is %s", dec.Slot, st[slots.SlotID(dec.Slot)].State)
			}
		}
	}
	if o.Engine != nil {
		for _, p := range o.Engine.Check() {
			add("uplink %s", p)
		}
	} else if o.EngineErr != nil {
		add("uplink journal not checked: %v", o.EngineErr)
	}
	return ps
}
