package flightd

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/flightd/flightdtest"
	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/bootorbit/bootorbit/watchdog/watchdogtest"
)

const testVehicle = 42

// daemonRig runs Run in-process on a MemFS slot pair and an in-memory
// environment, with a fake clock, an in-memory link and a ground stand-in
// that signs commands and verifies every frame's return-link MAC.
type daemonRig struct {
	t      *testing.T
	dir    string
	cfg    *Config
	clock  *flightdtest.Clock
	fs     *vfs.MemFS
	env    *watchdog.MemEnv
	ground ed25519.PrivateKey
	ver    *protocol.ReturnVerifier
	codec  *protocol.Codec
	seq    uint64

	mu       sync.Mutex
	checkErr error
	// checkHang, if set, is a channel every health check blocks on,
	// deaf to its context: a check whose child holds its output open.
	checkHang chan struct{}
	reboots   int
	wd        watchdog.Device // the next start's watchdog (nil: none)
	opts      func(*Options)  // if set, edits the next start's options
}

func newDaemonRig(t *testing.T, booted slots.SlotID, a, b slots.State, env watchdog.Vars) *daemonRig {
	t.Helper()
	tr := newTableRig(t, booted, a, b, env)
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(nil)
	mustT(t, err)
	mac := make([]byte, 32)
	for i := range mac {
		mac[i] = byte(i * 7)
	}
	mustT(t, os.WriteFile(filepath.Join(dir, "ground.pub"), []byte(hex.EncodeToString(pub)+"\n"), 0o644))
	mustT(t, os.WriteFile(filepath.Join(dir, "release.pub"), []byte(hex.EncodeToString(pub)+"\n"), 0o644))
	mustT(t, os.WriteFile(filepath.Join(dir, "vehicle.key"), []byte(hex.EncodeToString(mac)+"\n"), 0o600))
	state := filepath.Join(dir, "state")
	cfg := &Config{
		Vehicle: VehicleConfig{ID: testVehicle, HardwareID: "obc-rev-c"},
		Links:   []LinkConfig{{Name: "uhf", Kind: "udp", Listen: "127.0.0.1:0", MaxFrame: 256}},
		Keys: KeysConfig{Release: []KeyFile{{ID: 1, File: filepath.Join(dir, "release.pub")}},
			Ground:  []KeyFile{{ID: 1, File: filepath.Join(dir, "ground.pub")}},
			Vehicle: &KeyFile{ID: 1, File: filepath.Join(dir, "vehicle.key")}},
		Slots:  SlotsConfig{StateDir: state, A: SlotConfig{Backend: "raw", Path: "/dev/a"}, B: SlotConfig{Backend: "raw", Path: "/dev/b"}},
		Boot:   BootConfig{GRUBEnv: filepath.Join(dir, "grubenv")},
		Health: HealthConfig{Checks: []HealthCheck{{Name: "ok", Command: []string{"/bin/true"}}}},
	}
	mustT(t, cfg.ValidateRun())
	ver, err := protocol.NewReturnVerifier(testVehicle, protocol.MACKey{ID: 1, Key: mac})
	mustT(t, err)
	codec, err := protocol.NewCodec(1024)
	mustT(t, err)
	return &daemonRig{t: t, dir: dir, cfg: cfg, clock: flightdtest.NewClock(fixedNow()), fs: tr.fs, env: tr.env,
		ground: priv, ver: ver, codec: codec}
}

func (r *daemonRig) updater(booted slots.SlotID) *Updater {
	sm, err := slots.Open(slots.Options{FS: r.fs, StateDir: "state", Booted: booted, Now: fixedNow, Log: discard,
		A: slots.Slot{Backend: slots.BackendRaw, Path: "dev/a", Size: tableSlot},
		B: slots.Slot{Backend: slots.BackendRaw, Path: "dev/b", Size: tableSlot}})
	mustT(r.t, err)
	return &Updater{Slots: sm, Boot: &watchdog.BootControl{Env: r.env, Attempts: attempts}, Booted: booted, Log: discard}
}

// running is one Run of the daemon.
type running struct {
	ground *flightdtest.Link
	extra  []*flightdtest.Link // the ground's ends of links 1..
	done   chan error
	cancel context.CancelFunc
	up     *Updater
	status func() Status
}

// start runs the daemon booted in slot booted (a new boot: a new boot id).
func (r *daemonRig) start(booted slots.SlotID) *running {
	r.t.Helper()
	veh, gnd := flightdtest.Pipe("uhf", 256)
	links := []Link{veh}
	var extra []*flightdtest.Link
	for _, l := range r.cfg.Links[1:] {
		v, g := flightdtest.Pipe(l.Name, l.MaxFrameOrDefault())
		links = append(links, v)
		extra = append(extra, g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan func() Status, 1)
	run := &running{ground: gnd, extra: extra, done: make(chan error, 1), cancel: cancel, up: r.updater(booted)}
	r.mu.Lock()
	r.reboots++
	bootID := fmt.Sprintf("boot-%d", r.reboots)
	r.mu.Unlock()
	opt := Options{Log: discard, Clock: r.clock, Links: links, Updater: run.up, BootID: bootID, Watchdog: r.wd,
		Reboot: func(context.Context) error { return nil },
		RunCheck: func(context.Context, HealthCheck) error {
			r.mu.Lock()
			hang := r.checkHang
			r.mu.Unlock()
			if hang != nil {
				<-hang
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.checkErr
		},
		Ready: func(s func() Status) { ready <- s },
	}
	if r.opts != nil {
		r.opts(&opt)
	}
	go func() { run.done <- Run(ctx, r.cfg, opt) }()
	select {
	case run.status = <-ready:
	case err := <-run.done:
		r.t.Fatalf("Run: %v", err)
	}
	r.t.Cleanup(func() { cancel(); <-run.done })
	return run
}

// stop ends a run and returns Run's error.
func (run *running) stop() error {
	run.cancel()
	err := <-run.done
	run.done <- err // for the cleanup
	return err
}

// recv returns the next frame from the vehicle, decoded and MAC-verified.
func (r *daemonRig) recv(run *running) protocol.Message {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := run.ground.Recv(ctx)
	if err != nil {
		r.t.Fatalf("no frame from the vehicle: %v", err)
	}
	if len(b) > 256 {
		r.t.Fatalf("frame of %d bytes on a 256-byte link", len(b))
	}
	m, err := r.codec.Decode(b)
	if err != nil {
		r.t.Fatalf("decode: %v", err)
	}
	if err := r.ver.Verify(m); err != nil {
		r.t.Fatalf("return-link MAC of %v: %v", m.Type(), err)
	}
	return m
}

// until reads frames until ok returns true for one.
func (r *daemonRig) until(run *running, what string, ok func(protocol.Message) bool) protocol.Message {
	r.t.Helper()
	for range 500 {
		if m := r.recv(run); ok(m) {
			return m
		}
	}
	r.t.Fatalf("no %s in 500 frames", what)
	return nil
}

func (r *daemonRig) event(run *running, e *dict.Event) dict.Values {
	r.t.Helper()
	m := r.until(run, "event "+e.Name, func(m protocol.Message) bool {
		ev, ok := m.(*protocol.Event)
		return ok && ev.ID == e.ID
	})
	v, err := e.Decode(m.(*protocol.Event).Args)
	mustT(r.t, err)
	return v
}

func (r *daemonRig) packet(run *running, p *dict.Packet) dict.Values {
	r.t.Helper()
	m := r.until(run, "packet "+p.Name, func(m protocol.Message) bool {
		t, ok := m.(*protocol.Telemetry)
		return ok && t.Packet == p.ID
	})
	v, err := p.Decode(m.(*protocol.Telemetry).Params)
	mustT(r.t, err)
	return v
}

// command signs and sends a command; seq 0 takes the next one.
func (r *daemonRig) command(run *running, name string, args dict.Values, edit func(*protocol.Command)) *protocol.Command {
	r.t.Helper()
	def, ok := dict.CommandByName(name)
	if !ok {
		r.t.Fatalf("no command %s", name)
	}
	r.seq++
	c, err := def.NewCommand(testVehicle, r.seq, args)
	mustT(r.t, err)
	mustT(r.t, protocol.SignCommand(c, 1, r.ground))
	if edit != nil {
		edit(c)
	}
	r.sendCmd(run, c)
	return c
}

func (r *daemonRig) sendCmd(run *running, c *protocol.Command) {
	b, err := r.codec.Encode(c)
	mustT(r.t, err)
	mustT(r.t, run.ground.Send(context.Background(), b))
}

// verification waits for the report of stage on command seq.
func (r *daemonRig) verification(run *running, seq uint64, stages ...protocol.Stage) *protocol.Verification {
	r.t.Helper()
	var last *protocol.Verification
	for _, st := range stages {
		m := r.until(run, fmt.Sprintf("verification %v of seq %d", st, seq), func(m protocol.Message) bool {
			v, ok := m.(*protocol.Verification)
			return ok && v.Seq == seq && (v.Stage == st || v.Stage == protocol.StageRejected || v.Stage == protocol.StageFailed)
		})
		last = m.(*protocol.Verification)
		if last.Stage != st {
			r.t.Fatalf("seq %d: %v (code %s), want %v", seq, last.Stage, dict.EnumReason.NameOf(uint64(last.Code)), st)
		}
	}
	return last
}

func TestDaemonCommandRefusals(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
	run := r.start(slots.A)
	c := r.command(run, "noop", nil, nil)
	r.verification(run, c.Seq, protocol.StageAccepted, protocol.StageStarted, protocol.StageCompleted)

	// The same command again (the ground resends what it saw no report
	// of): not run again (cmds_accepted below), counted as replayed, and
	// answered with its final report once more.
	r.sendCmd(run, c)
	if m := r.until(run, "the answer to the copy", func(m protocol.Message) bool {
		v, ok := m.(*protocol.Verification)
		return ok && v.Seq == c.Seq
	}); m.(*protocol.Verification).Stage != protocol.StageCompleted {
		t.Errorf("a copy of a completed command answered with %+v", m)
	}
	// A copy with a forged signature is only rejected as replayed.
	dup := *c
	a := *c.Auth
	a.Sig = append([]byte(nil), c.Auth.Sig...)
	dup.Auth = &a
	dup.Auth.Sig[0] ^= 1
	r.sendCmd(run, &dup)
	v := r.verification(run, c.Seq, protocol.StageRejected)
	if v.Code != protocol.CodeOf(protocol.ReasonReplayed) {
		t.Errorf("replay rejected with %s", dict.EnumReason.NameOf(uint64(v.Code)))
	}
	// A forged signature.
	bad := r.command(run, "noop", nil, func(c *protocol.Command) { c.Auth.Sig[3] ^= 1 })
	v = r.verification(run, bad.Seq, protocol.StageRejected)
	if v.Code != protocol.CodeOf(protocol.ReasonBadSignature) {
		t.Errorf("forgery rejected with %s", dict.EnumReason.NameOf(uint64(v.Code)))
	}
	// The forged seq was not consumed: the genuine command with it runs.
	r.seq--
	c = r.command(run, "status", nil, nil)
	if c.Seq != bad.Seq {
		t.Fatalf("seq %d, want %d", c.Seq, bad.Seq)
	}
	r.verification(run, c.Seq, protocol.StageStarted)
	hc := r.packet(run, dict.HKCounters)
	if hc["cmds_rejected"] != uint64(3) || hc["cmds_accepted"] != uint64(2) {
		t.Errorf("hk.counters %v: want 2 accepted, 3 rejected", hc)
	}
	got := map[uint64]uint64{}
	for i := 1; i <= dict.TopDrops; i++ {
		got[hc[fmt.Sprintf("drop%d_reason", i)].(uint64)] = hc[fmt.Sprintf("drop%d_count", i)].(uint64)
	}
	for reason, n := range map[protocol.Reason]uint64{protocol.ReasonReplayed: 2, protocol.ReasonBadSignature: 1} {
		if got[uint64(protocol.CodeOf(reason))] != n {
			t.Errorf("hk.counters drops %v: want 1 %v", got, reason)
		}
	}
	if err := run.stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
}

func TestDaemonEpochBumpedEveryStart(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
	for want := uint32(1); want <= 3; want++ {
		run := r.start(slots.A)
		m := r.recv(run) // verified by the ground's window: never a repeat
		if tag := protocol.TagOf(m); tag.Epoch != want {
			t.Fatalf("start %d: epoch %d", want, tag.Epoch)
		}
		c := r.command(run, "noop", nil, nil)
		r.verification(run, c.Seq, protocol.StageCompleted)
		if err := run.stop(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	}
	// A replayed command after a restart is still refused (not run: no
	// acceptance), answered with its final report, kept across the restart.
	run := r.start(slots.A)
	c := r.command(run, "noop", nil, nil)
	r.verification(run, c.Seq, protocol.StageCompleted)
	run.stop()
	run = r.start(slots.A)
	r.sendCmd(run, c)
	if m := r.until(run, "the answer to the copy", func(m protocol.Message) bool {
		v, ok := m.(*protocol.Verification)
		return ok && v.Seq == c.Seq
	}); m.(*protocol.Verification).Stage != protocol.StageCompleted {
		t.Fatalf("a copy after a restart answered with %+v", m)
	}
}

func TestDaemonTrialBootGood(t *testing.T) {
	r := newDaemonRig(t, slots.B, slots.Good, slots.Pending, vars("B A", "3", "2", "B"))
	run := r.start(slots.B)
	r.event(run, dict.EvTrialBoot)
	ev := r.event(run, dict.EvMarkedGood)
	if ev["slot"] != uint64(2) {
		t.Errorf("marked_good %v", ev)
	}
	if st := run.up.Slots.Status().Slots[1].State; st != slots.Good {
		t.Errorf("slot B %s", st)
	}
	c := r.command(run, "status", nil, nil)
	r.verification(run, c.Seq, protocol.StageStarted)
	hb := r.packet(run, dict.HKBoot)
	if hb["last_outcome"] != uint64(2) || hb["trial"] != false {
		t.Errorf("hk.boot %v: want outcome good, no trial", hb)
	}
}

// TestDaemonTrialBootFailsAndRollsBack: the health check fails on a trial
// boot: slot B is recorded bad, dropped from the boot order, the daemon
// reboots; the bootloader model boots A, and telemetry says rolled back.
func TestDaemonTrialBootFailsAndRollsBack(t *testing.T) {
	r := newDaemonRig(t, slots.B, slots.Good, slots.Pending, vars("B A", "3", "2", "B"))
	r.checkErr = errors.New("service down")
	run := r.start(slots.B)
	ev := r.event(run, dict.EvRolledBack)
	if ev["from"] != uint64(2) || ev["to"] != uint64(1) || ev["code"] != uint64(dict.CodeHealthCheckFailed) {
		t.Errorf("rolled_back %v", ev)
	}
	r.event(run, dict.EvRebooting)
	if err := <-run.done; !errors.Is(err, ErrRebooted) {
		t.Fatalf("Run: %v, want ErrRebooted", err)
	}
	run.done <- nil
	if st := run.up.Slots.Status().Slots[1].State; st != slots.Bad {
		t.Errorf("slot B %s, want bad", st)
	}
	dec, err := watchdog.BootloaderModel{Attempts: attempts}.Boot(r.env)
	mustT(t, err)
	if dec.Slot != "A" {
		t.Fatalf("bootloader boots %q, want A", dec.Slot)
	}
	r.checkErr = nil
	run = r.start(slots.A)
	hb := r.packet(run, dict.HKBoot)
	if hb["last_outcome"] != uint64(3) || hb["booted_slot"] != uint64(1) || hb["reset_cause"] != uint64(5) {
		t.Errorf("hk.boot %v: want booted A, outcome rolled_back, reset cause reboot", hb)
	}
}

// TestDaemonActivateAndReboot: activate arms the written slot; reboot
// reboots into it; the trial boot there is committed.
func TestDaemonActivateAndReboot(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Written, vars("A", "3", "0", "-"))
	run := r.start(slots.A)
	c := r.command(run, "activate", dict.Values{"slot": "b", "attempts": uint64(2)}, nil)
	if ev := r.event(run, dict.EvArmed); ev["attempts"] != uint64(2) {
		t.Errorf("armed %v", ev)
	}
	r.verification(run, c.Seq, protocol.StageCompleted)
	c = r.command(run, "reboot", nil, nil)
	r.verification(run, c.Seq, protocol.StageCompleted)
	if err := <-run.done; !errors.Is(err, ErrRebooted) {
		t.Fatalf("Run: %v", err)
	}
	run.done <- nil
	dec, err := watchdog.BootloaderModel{Attempts: attempts}.Boot(r.env)
	mustT(t, err)
	if dec.Slot != "B" {
		t.Fatalf("bootloader boots %q, want B", dec.Slot)
	}
	run = r.start(slots.B)
	r.event(run, dict.EvMarkedGood)
	if st := run.up.Slots.Status().Slots[1].State; st != slots.Good {
		t.Errorf("slot B %s", st)
	}
}

// TestDaemonGroundNotHeard: a trial boot that must hear the ground within
// T and does not is rolled back when T passes on the clock.
func TestDaemonGroundNotHeard(t *testing.T) {
	r := newDaemonRig(t, slots.B, slots.Good, slots.Pending, vars("B A", "3", "2", "B"))
	r.cfg.Health.GroundWithin = Duration(10 * time.Minute)
	run := r.start(slots.B)
	r.event(run, dict.EvTrialBoot)
	r.clock.Advance(11 * time.Minute)
	r.event(run, dict.EvRolledBack)
	if err := <-run.done; !errors.Is(err, ErrRebooted) {
		t.Fatalf("Run: %v", err)
	}
	run.done <- nil
}

// TestDaemonVerifySlot: verify_slot reads the idle slot off the main loop
// and reports the result; the booted slot is refused.
func TestDaemonVerifySlot(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Written, vars("A", "3", "0", "-"))
	run := r.start(slots.A)
	c := r.command(run, "verify_slot", dict.Values{"slot": "a"}, nil)
	if v := r.verification(run, c.Seq, protocol.StageFailed); v.Code != dict.CodeBadState {
		t.Errorf("verify of the booted slot: %s", dict.EnumReason.NameOf(uint64(v.Code)))
	}
	// Slot B's recorded digest is made up (the table rig's): a mismatch.
	c = r.command(run, "verify_slot", dict.Values{"slot": "b"}, nil)
	r.verification(run, c.Seq, protocol.StageStarted)
	ev := r.event(run, dict.EvSlotVerified)
	if ev["slot"] != uint64(2) || ev["code"] == uint64(0) {
		t.Errorf("slot_verified %v: want slot b, a failure code", ev)
	}
	r.verification(run, c.Seq, protocol.StageFailed)
}

// TestDaemonScheduledActivation: activate with not_before reboots at that
// time on the daemon's clock, not before.
func TestDaemonScheduledActivation(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Written, vars("A", "3", "0", "-"))
	run := r.start(slots.A)
	at := r.clock.Now().Add(time.Hour).UnixMilli()
	c := r.command(run, "activate", dict.Values{"slot": "b", "attempts": uint64(2), "not_before": at}, nil)
	r.event(run, dict.EvArmed)
	r.verification(run, c.Seq, protocol.StageCompleted)
	r.clock.Advance(59 * time.Minute)
	c = r.command(run, "noop", nil, nil)
	r.verification(run, c.Seq, protocol.StageCompleted) // still running
	r.clock.Advance(time.Minute)
	if ev := r.event(run, dict.EvRebooting); ev["cause"] != uint64(1) || ev["slot"] != uint64(2) {
		t.Errorf("rebooting %v: want cause activate, slot b", ev)
	}
	if err := <-run.done; !errors.Is(err, ErrRebooted) {
		t.Fatalf("Run: %v", err)
	}
	run.done <- nil
}

// TestDaemonWatchdog: the watchdog is petted while the health checks pass
// and not once they fail, so it expires; the reset cause it reports at the
// next start is in hk.boot and an event.
func TestDaemonWatchdog(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
	dev := watchdogtest.NewDevice(r.clock, time.Minute, 0)
	r.wd = dev
	run := r.start(slots.A)
	step := func(n int) {
		for range n {
			r.clock.Advance(10 * time.Second)
			c := r.command(run, "noop", nil, nil)
			r.verification(run, c.Seq, protocol.StageCompleted)
		}
	}
	step(18) // 3 minutes, health checks rerun every minute
	if dev.Expired() || dev.Pets() < 5 {
		t.Fatalf("healthy: expired %v after %d pets", dev.Expired(), dev.Pets())
	}
	r.mu.Lock()
	r.checkErr = errors.New("payload down")
	r.mu.Unlock()
	step(18)
	if !dev.Expired() {
		t.Fatalf("unhealthy for 2 minutes, the watchdog was petted (%d pets)", dev.Pets())
	}
	run.stop()

	// The board reset: the next start reads CARDRESET.
	r.wd = watchdogtest.NewDevice(r.clock, time.Minute, watchdog.WDIOFCardReset)
	r.mu.Lock()
	r.checkErr = nil
	r.mu.Unlock()
	run = r.start(slots.A)
	c := r.command(run, "status", nil, nil)
	r.verification(run, c.Seq, protocol.StageStarted)
	hb := r.packet(run, dict.HKBoot)
	if hb["reset_cause"] != uint64(2) {
		t.Errorf("hk.boot %v: want reset cause watchdog", hb)
	}
}

// TestDaemonWatchdogHungHealthCheck: a health run that never returns (a
// check deaf to its timeout, or whose child keeps its output open) must
// not keep the watchdog petted: no result is not a pass.
func TestDaemonWatchdogHungHealthCheck(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
	dev := watchdogtest.NewDevice(r.clock, time.Minute, 0)
	r.wd = dev
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	r.checkHang = hang
	run := r.start(slots.A)
	for range 36 { // 6 minutes; the check's timeout is 30s
		r.clock.Advance(10 * time.Second)
		c := r.command(run, "noop", nil, nil)
		r.verification(run, c.Seq, protocol.StageCompleted)
	}
	if !dev.Expired() {
		t.Fatalf("the health run hung for 6 minutes, the watchdog was petted (%d pets)", dev.Pets())
	}
}

// TestDaemonSeveralLinks: two links at once; answers go on the link the
// ground was last heard on; when it goes down the daemon goes on over the
// other, and uses it again when it comes back.
func TestDaemonSeveralLinks(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
	r.cfg.Links = append(r.cfg.Links, LinkConfig{Name: "sband", Kind: "udp", Listen: "127.0.0.1:0", MaxFrame: 1024})
	run := r.start(slots.A)
	uhf, sband := run.ground, run.extra[0]
	// Heard on sband: answered on sband.
	run.ground = sband
	c := r.command(run, "noop", nil, nil)
	r.verification(run, c.Seq, protocol.StageCompleted)
	// sband goes away: the ground uses uhf, and hears the answer there.
	sband.SetDown(true)
	run.ground = uhf
	c = r.command(run, "noop", nil, nil)
	r.verification(run, c.Seq, protocol.StageCompleted)
	// sband comes back.
	sband.SetDown(false)
	run.ground = sband
	c = r.command(run, "noop", nil, nil)
	r.verification(run, c.Seq, protocol.StageCompleted)
}

// TestDaemonStatusDuringActivate: the status function (the control
// socket's, on its own goroutine) may run while a command is executed on
// the main loop: activate must not change the Updater's shared settings
// (the boot attempts) for its own arming. The race detector sees it:
// go test -race -run TestDaemonStatusDuringActivate ./flightd.
func TestDaemonStatusDuringActivate(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Written, vars("A", "3", "0", "-"))
	run := r.start(slots.A)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				run.status()
			}
		}
	}()
	c := r.command(run, "activate", dict.Values{"slot": "b", "attempts": uint64(2)}, nil)
	if ev := r.event(run, dict.EvArmed); ev["attempts"] != uint64(2) {
		t.Errorf("armed %v", ev)
	}
	r.verification(run, c.Seq, protocol.StageCompleted)
	close(stop)
	<-done
	if run.up.Boot.Attempts != attempts {
		t.Errorf("the Updater's attempts are %d after activate, want %d", run.up.Boot.Attempts, attempts)
	}
}

// TestDaemonCreatesRecordDir: boot.record_dir on a fresh partition does
// not exist yet; flightd creates it (0700) at start, so that every boot
// is recorded and hk.boot counts them (on the QEMU bench, without it, the
// count stayed 1 and no record was written).
func TestDaemonCreatesRecordDir(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
	rec := filepath.Join(r.dir, "boot", "bootorbit")
	r.cfg.Boot.RecordDir = rec
	for boot := uint64(1); boot <= 2; boot++ {
		run := r.start(slots.A)
		c := r.command(run, "status", nil, nil)
		r.verification(run, c.Seq, protocol.StageStarted)
		if hb := r.packet(run, dict.HKBoot); hb["boot_count"] != boot {
			t.Errorf("boot %d: hk.boot boot_count %v", boot, hb["boot_count"])
		}
		run.stop()
	}
	fi, err := os.Stat(rec)
	if err != nil {
		t.Fatalf("record dir: %v", err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("record dir mode %v, want 0700", fi.Mode().Perm())
	}
	if got, err := watchdog.ReadResetRecord(rec); err != nil || got.Count != 2 || got.Slot != "A" {
		t.Errorf("reset record %+v %v: want 2 boots, slot A", got, err)
	}
}

// TestDaemonRecordDirNotCreated: a record_dir that cannot be created (here
// its parent is a file) does not stop flightd; hk.error says why.
func TestDaemonRecordDirNotCreated(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
	r.cfg.Boot.RecordDir = filepath.Join(r.dir, "vehicle.key", "boot")
	run := r.start(slots.A)
	c := r.command(run, "status", nil, nil)
	r.verification(run, c.Seq, protocol.StageStarted)
	he := r.packet(run, dict.HKError)
	if he["code"] != uint64(dict.CodeStorage) || he["text"] != "boot.record_dir: not a directory" {
		t.Errorf("hk.error %v: want storage, boot.record_dir: not a directory", he)
	}
}

// TestDaemonWatchdogResetNamesSlotThatHung: the watchdog_reset event names
// the slot the reset happened in, as the dictionary says ("the slot that
// hung"), not the slot booted now, which after the bootloader's fallback
// is the other one (found on the QEMU A/B bench: B hung, the event said a).
func TestDaemonWatchdogResetNamesSlotThatHung(t *testing.T) {
	const slotA, slotB = uint64(1), uint64(2)
	wdReset := func(r *daemonRig, booted slots.SlotID) (*running, dict.Values) {
		t.Helper()
		r.wd = watchdogtest.NewDevice(r.clock, time.Minute, watchdog.WDIOFCardReset)
		run := r.start(booted)
		return run, r.event(run, dict.EvWatchdogReset)
	}
	t.Run("trial slot hung with flightd running", func(t *testing.T) {
		// B on trial: flightd starts there (and records the boot), then
		// the system freezes; B's attempts run out; the bootloader falls
		// back to A.
		r := newDaemonRig(t, slots.B, slots.Good, slots.Pending, vars("B A", "3", "2", "B"))
		r.wd = watchdogtest.NewDevice(r.clock, time.Minute, 0)
		hang := make(chan struct{})
		t.Cleanup(func() { close(hang) })
		r.checkHang = hang
		run := r.start(slots.B)
		r.event(run, dict.EvTrialBoot)
		run.stop()
		r.mu.Lock()
		r.checkHang = nil // the stopped run's check stays blocked until the cleanup
		r.mu.Unlock()
		r.env.Vars[watchdog.LeftVar("B")] = "0"
		run, ev := wdReset(r, slots.A)
		if ev["slot"] != slotB || ev["boot_count"] != uint64(2) {
			t.Errorf("watchdog_reset %v: want slot b (the slot that hung), boot count 2", ev)
		}
		if rb := r.event(run, dict.EvRolledBack); rb["from"] != slotB || rb["to"] != slotA {
			t.Errorf("rolled_back %v: want from b to a", rb)
		}
	})
	t.Run("trial slot hung before flightd", func(t *testing.T) {
		// A armed B and rebooted; B hung at every attempt before flightd
		// ran, so the last record is A's boot: the fallback still says
		// B is where the resets happened.
		r := newDaemonRig(t, slots.A, slots.Good, slots.Pending, vars("B A", "3", "3", "B"))
		run := r.start(slots.A)
		run.stop()
		r.env.Vars[watchdog.LeftVar("B")] = "0"
		_, ev := wdReset(r, slots.A)
		if ev["slot"] != slotB {
			t.Errorf("watchdog_reset %v: want slot b", ev)
		}
	})
	t.Run("same slot", func(t *testing.T) {
		r := newDaemonRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
		run := r.start(slots.A)
		run.stop()
		_, ev := wdReset(r, slots.A)
		if ev["slot"] != slotA || ev["boot_count"] != uint64(2) {
			t.Errorf("watchdog_reset %v: want slot a, boot count 2", ev)
		}
	})
	t.Run("no record of the previous boot", func(t *testing.T) {
		// The first boot flightd sees: where the reset happened is not
		// known, and the event says so rather than guess.
		r := newDaemonRig(t, slots.B, slots.Good, slots.Good, vars("B A", "3", "3", "-"))
		_, ev := wdReset(r, slots.B)
		if ev["slot"] != uint64(0) || ev["boot_count"] != uint64(1) {
			t.Errorf("watchdog_reset %v: want slot none, boot count 1", ev)
		}
	})
}
