package flightd

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/flightd/uplink"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/slots"
)

// installer is the uplink engine's view of the Updater: it writes the
// inactive slot (without arming it: activation is a command) and says
// what the slots hold. Its delta base is the booted slot itself, read
// through the layer index slots kept when it was installed
// (slots.Manager.Base): the vehicle keeps no second copy of its image.
type installer struct {
	u *Updater
	// base, if set, replaces the booted slot as the delta base (tests).
	base func() delta.Base
	log  *slog.Logger

	// layers, if set, wraps the layer streams given to the slot writer
	// (tests).
	layers func([]io.Reader) []io.Reader

	mu   sync.Mutex
	open *slots.LayerBase // the base of the install in progress
}

// NewInstaller is the uplink engine's installer over u, as Run uses it:
// the delta base is u's booted slot (slots.Manager.Base), the slot is
// written through u.Write (taken out of the boot environment first, left
// written, not armed). `flightd install` uses it for offline installs.
func NewInstaller(u *Updater, log *slog.Logger) uplink.Installer {
	if log == nil {
		log = slog.Default()
	}
	return &installer{u: u, log: log}
}

func (i *installer) Status() slots.Status { return i.u.Slots.Status() }

// Base opens the booted slot as the delta base; it stays open until the
// install that follows returns. A slot without a layer index (a factory
// image written by other means) gives no base: every delta part is then a
// base mismatch, which the ground resends as full data.
func (i *installer) Base() delta.Base {
	if i.base != nil {
		return i.base()
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.open != nil {
		i.open.Close()
		i.open = nil
	}
	b, err := i.u.Slots.Base(i.u.Booted)
	if err != nil {
		i.log.Warn("no delta base: deltas against the booted slot will be base mismatches", "slot", string(i.u.Booted), "err", err)
		return nil
	}
	i.open = b
	return b
}

func (i *installer) Install(ctx context.Context, img slots.Image) (*slots.InstallResult, error) {
	defer i.closeBase()
	if i.layers != nil {
		img.Layers = i.layers(img.Layers)
	}
	return i.u.Write(ctx, i.u.Booted.Other(), img)
}

func (i *installer) closeBase() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.open != nil {
		i.open.Close()
		i.open = nil
	}
}

// UplinkConfig is the uplink engine's configuration from the daemon's.
func (c *Config) UplinkConfig(keys *Keys) uplink.Config {
	largest := 0
	for _, l := range c.Links {
		largest = max(largest, l.MaxFrameOrDefault())
	}
	return uplink.Config{
		Vehicle:      c.Vehicle.ID,
		HardwareID:   c.Vehicle.HardwareID,
		Dir:          c.StorageDir(),
		StagingQuota: c.QuotaOrDefault(),
		GroundKeys:   keys.GroundPub,
		ReleaseKeys:  keys.ReleasePub,
		MaxFrame:     max(largest, DefaultMaxFrame),
		RawImage:     c.Slots.A.Backend == "raw" && c.Slots.B.Backend == "raw",
	}
}

// openUplink opens the uplink engine with the daemon's return-link
// authenticator and codecs. Sealed frames are opened by the daemon, which
// hands the engine the inner frames.
func (d *daemon) openUplink() error {
	uc := d.cfg.UplinkConfig(d.keys)
	uc.ReturnAuth = d.auth
	uc.Codec, uc.ReturnCodec = d.codec, d.ret
	if d.opt.UplinkFS != nil {
		uc.FS = d.opt.UplinkFS
	}
	e, err := uplink.Open(uc, &installer{u: d.up, base: d.opt.Base, layers: d.opt.installLayers, log: d.log}, d.log)
	if err != nil {
		return err
	}
	d.eng = e
	return nil
}

// drainUplink sends what the engine produced and starts an install that
// is due: not while one runs, a trial boot is open, verify_slot reads
// the inactive slot back (the install would write the slot under the
// verification; the end of the verification calls drainUplink again), or
// a factory reset runs (likewise).
func (d *daemon) drainUplink(ctx context.Context, now time.Time) {
	if d.eng == nil {
		return
	}
	for _, f := range d.eng.Outbox() {
		d.sendFrame(f, false)
	}
	for _, ev := range d.eng.Events() {
		d.eventDef(now, ev.Def, ev.Text, ev.Args)
	}
	if st := d.eng.Status(); st.StateName == "installing" && !d.installBusy && !d.trialOpen && !d.verifyBusy && !d.resetBusy {
		d.installBusy = true
		go func() {
			plan, err := d.eng.RunInstall(ctx)
			d.installRes <- installResult{plan, err}
		}()
	}
}

type installResult struct {
	plan uint64
	err  error
}

// onInstall takes the result of an install run.
func (d *daemon) onInstall(ctx context.Context, now time.Time, r installResult) {
	d.installBusy = false
	if r.err != nil {
		d.log.Error("install failed", "plan", r.plan, "err", r.err)
	} else if r.plan != 0 {
		d.log.Info("install done", "plan", r.plan)
	}
	if d.commitAfterInstall {
		d.commitAfterInstall = false
		d.commitHealthy()
	}
	d.drainUplink(ctx, now)
}

// uplinkStatus is the engine's part of Status.
func (d *daemon) uplinkStatus() (UplinkStatus, uplink.Status) {
	if d.eng == nil {
		return UplinkStatus{State: "idle"}, uplink.Status{}
	}
	es := d.eng.Status()
	us := UplinkStatus{Plan: es.Plan, State: es.StateName, Transfer: es.Transfer,
		ChunksHeld: uint32(max(es.ChunksHeld, 0)), ChunksTotal: uint32(max(es.Total, 0)),
		BytesStaged: uint64(max(es.BytesStaged, 0)), StagingUsed: uint64(max(es.StagingUsed, 0)),
		StagingQuota: uint64(max(es.StagingQuota, 0))}
	return us, es // Versions: buildStatus, with the slots it reads
}

// release is the engine's Release, nil without an engine.
func (d *daemon) release() releaseFunc {
	if d.eng == nil {
		return nil
	}
	return d.eng.Release
}

// eventDef reports an event of the dictionary given by definition.
func (d *daemon) eventDef(now time.Time, def *dict.Event, text string, args dict.Values) {
	d.event(now, def.Name, text, args)
}
