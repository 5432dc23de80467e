package flightd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/flightd/uplink"
	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/link"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
)

// ErrRebooted is returned by Run after it asked the reboot action to
// reboot the board (Options.Reboot): in flight, the board goes down and
// Run's return is never seen; in tests it is the moment to play the
// bootloader and start Run again.
var ErrRebooted = errors.New("flightd: rebooted")

// Options are what Run takes besides the configuration: everything a test
// or the bench replaces. The zero value runs on the real board.
type Options struct {
	Log   *slog.Logger
	Clock Clock
	// Links are the links to the ground; nil opens the configured ones
	// with OpenLink.
	Links    []Link
	OpenLink func(LinkConfig) (Link, error)
	// Updater drives slots and the bootloader environment; nil opens
	// them from the configuration.
	Updater *Updater
	// Watchdog is the hardware watchdog; nil opens boot.watchdog (none
	// configured: no watchdog, bench use only).
	Watchdog watchdog.Device
	// Base, if set, returns what a delta is applied against instead of
	// the booted slot itself (slots.Manager.Base); tests give the booted
	// image's layers from memory.
	Base func() delta.Base
	// UplinkFS is the filesystem of the staging directory (nil: the
	// OS's); a crash test passes one that drops unsynced data.
	UplinkFS vfs.FS
	// Reboot reboots the board; nil runs boot.reboot.
	Reboot func(ctx context.Context) error
	// RunCheck runs one health check; nil runs its command.
	RunCheck func(ctx context.Context, h HealthCheck) error
	// BootID is this boot's kernel boot id ("" reads it from
	// boot.boot_id_file, default /proc, and records every start as a
	// boot if that fails).
	BootID string
	// Ready, if set, is called once the daemon is up (epoch bumped,
	// reconciled, links open) with its status function.
	Ready func(status func() Status)

	// verifySlot, if set, replaces the slot read-back of verify_slot
	// (tests hold it to run an uplink meanwhile).
	verifySlot func(ctx context.Context, id slots.SlotID) (*slots.VerifyResult, error)
	// factoryReset, if set, replaces slots.Manager.FactoryReset (tests
	// hold it to check the main loop goes on meanwhile).
	factoryReset func(ctx context.Context, id slots.SlotID, wipeVar bool) error
	// installLayers, if set, wraps the layer streams the uplink installer
	// gives the slot writer (tests hold a write in its middle).
	installLayers func([]io.Reader) []io.Reader
}

// daemon is Run's state; everything but the link readers runs on the main
// loop, so nothing here needs a lock except what Status reads.
type daemon struct {
	cfg   *Config
	opt   Options
	log   *slog.Logger
	clock Clock
	keys  *Keys
	up    *Updater
	wd    watchdog.Device

	auth   *protocol.ReturnAuth
	codec  *protocol.Codec // inbound, largest frame
	ret    *protocol.Codec // outbound, smallest frame
	opener *protocol.Opener
	links  []Link
	eng    *uplink.Engine

	mu    sync.Mutex // guards st and the fields Status reads
	st    DaemonState
	reset watchdog.ResetRecord
	cause string // dict EnumResetCause label
	trial bool

	windows   map[uint32]*protocol.ReplayWindow
	lastLink  int      // index of the link the ground was last heard on
	replyLink int      // index of the link of the frame being handled (-1: none)
	cur       *inFrame // the frame being handled (nil: none)
	heard     time.Time
	started   time.Time

	healthErr  error // the last health run's result
	healthDone bool  // a health run finished since start
	trialOpen  bool  // the trial still has to be decided
	committed  bool  // this boot was committed
	// commitAfterInstall: a healthy boot's commit waits for the install
	// running off the loop.
	commitAfterInstall bool
	rebootAt           time.Time
	rebootCause        string
	rebootNow          bool
	tlmSeq             map[uint16]uint32
	evSeq              uint32
	bucket             tokenBucket
	installBusy        bool
	installRes         chan installResult
	verifyBusy         bool
	verifyRes          chan verifyResult
	resetBusy          bool // a factory reset runs off the loop
	resetRes           chan resetResult
	linkState          chan linkChange
	linksUp            map[string]bool
	nextHK             time.Time
	nextHealth         time.Time
	nextPet            time.Time
	petEvery           time.Duration
	healthRes          chan error
	healthBusy         bool
	healthStarted      time.Time // when the running health run started
	dirtyCounts        bool
	pending            []*protocol.Event // events raised before the links opened
	unsent             [][]byte          // event frames no link could take
}

type inFrame struct {
	link  int
	frame []byte
	peer  link.Peer // where on the link it came from (PeerLink)
}

// Run is flightd: it bumps the return-link epoch, records the reset cause,
// reconciles slots and the bootloader environment, opens the links, and
// then, until ctx ends or it reboots the board, takes frames (commands,
// transfers), sends verification reports, telemetry and events, runs the
// health checks, decides a trial boot, and pets the watchdog while healthy.
// See docs/flightd.md.
func Run(ctx context.Context, cfg *Config, opt Options) error {
	d, err := start(ctx, cfg, opt)
	if err != nil {
		return err
	}
	defer d.close()
	return d.loop(ctx)
}

func start(ctx context.Context, cfg *Config, opt Options) (*daemon, error) {
	verr := cfg.ValidateRun()
	keys, kerr := cfg.LoadKeys()
	if err := errors.Join(verr, kerr); err != nil {
		return nil, err
	}
	d := &daemon{cfg: cfg, opt: opt, keys: keys, log: opt.Log, clock: opt.Clock,
		windows: map[uint32]*protocol.ReplayWindow{}, tlmSeq: map[uint16]uint32{},
		healthRes: make(chan error, 1), installRes: make(chan installResult, 1), verifyRes: make(chan verifyResult, 1), resetRes: make(chan resetResult, 1), linkState: make(chan linkChange, 16), lastLink: -1, replyLink: -1}
	if d.log == nil {
		d.log = slog.Default()
	}
	if d.clock == nil {
		d.clock = realClock{}
	}
	d.bucket = tokenBucket{burst: 4, rate: 0.5}
	d.started = d.clock.Now()

	// The epoch first: nothing may be sent under an epoch not durably
	// recorded as used.
	if err := mkdirSynced(cfg.Slots.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("flightd: state dir: %w", err)
	}
	st, err := BumpEpoch(cfg.Slots.StateDir)
	if err != nil {
		return nil, err
	}
	d.st = st
	for id, b := range st.Windows {
		w := new(protocol.ReplayWindow)
		if err := w.UnmarshalBinary(b); err != nil {
			return nil, fmt.Errorf("flightd: state: command window of key %d: %w", id, err)
		}
		d.windows[id] = w
	}
	if d.auth, err = protocol.NewReturnAuth(cfg.Vehicle.ID, keys.Vehicle, st.Epoch); err != nil {
		return nil, fmt.Errorf("flightd: %w", err)
	}
	if err := d.openCodecs(); err != nil {
		return nil, err
	}

	d.up = opt.Updater
	if d.up == nil {
		if d.up, err = cfg.OpenUpdater(d.log); err != nil {
			return nil, err
		}
	}
	if err := d.openWatchdog(); err != nil {
		return nil, err
	}
	if err := d.boot(ctx); err != nil {
		d.close()
		return nil, err
	}
	if err := d.openUplink(); err != nil {
		d.close()
		return nil, err
	}
	if err := d.openLinks(); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func (d *daemon) openCodecs() error {
	largest := 0
	for _, l := range d.cfg.Links {
		largest = max(largest, l.MaxFrameOrDefault())
	}
	var err error
	if len(d.keys.Seal) > 0 {
		if d.opener, err = protocol.NewOpener(protocol.OpenerConfig{Vehicle: d.cfg.Vehicle.ID, MaxFrame: largest, Keys: d.keys.Seal}); err != nil {
			return fmt.Errorf("flightd: %w", err)
		}
		if d.codec, err = protocol.NewInnerCodec(largest); err != nil {
			return fmt.Errorf("flightd: %w", err)
		}
	} else if d.codec, err = protocol.NewCodec(largest); err != nil {
		return fmt.Errorf("flightd: %w", err)
	}
	if d.ret, err = protocol.NewCodec(d.cfg.SmallestFrame()); err != nil {
		return fmt.Errorf("flightd: %w", err)
	}
	return nil
}

func (d *daemon) openWatchdog() error {
	d.wd = d.opt.Watchdog
	if d.wd == nil && d.cfg.Boot.Watchdog != "" {
		dev, err := watchdog.OpenDevice(d.cfg.Boot.Watchdog)
		if err != nil {
			return fmt.Errorf("flightd: %w", err)
		}
		d.wd = dev
	}
	if d.wd == nil {
		d.log.Warn("no hardware watchdog configured (bench use only)")
		return nil
	}
	want := time.Duration(d.cfg.Boot.WatchdogTimeoutS) * time.Second
	if want == 0 {
		want = DefaultWatchdogTimeoutS * time.Second
	}
	got, err := d.wd.SetTimeout(want)
	if err != nil {
		d.log.Warn("watchdog: set timeout failed; keeping the driver's", "err", err)
		got = want
	}
	d.petEvery = max(got/3, time.Second)
	return nil
}

func (d *daemon) openLinks() error {
	if d.opt.Links != nil {
		d.links = d.opt.Links
		return nil
	}
	open := d.opt.OpenLink
	if open == nil {
		open = d.openLink
	}
	for _, lc := range d.cfg.Links {
		l, err := open(lc)
		if err != nil {
			for _, o := range d.links {
				o.Close()
			}
			d.links = nil
			return fmt.Errorf("flightd: link %s: %w", lc.Name, err)
		}
		d.links = append(d.links, l)
	}
	return nil
}

// close releases the links, the journal and the watchdog; it may be
// called more than once.
func (d *daemon) close() {
	for _, l := range d.links {
		l.Close()
	}
	if d.eng != nil {
		d.eng.Close()
		d.eng = nil
	}
	if d.wd != nil {
		// Close leaves the watchdog armed (no magic close): a daemon that
		// stops must be restarted before the timeout, or the board resets.
		d.wd.Close()
		d.wd = nil
	}
}

// saveState writes the daemon state with the current windows.
func (d *daemon) saveState() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st.Windows = map[uint32][]byte{}
	for id, w := range d.windows {
		b, _ := w.MarshalBinary()
		d.st.Windows[id] = b
	}
	d.dirtyCounts = false
	return WriteState(d.cfg.Slots.StateDir, d.st)
}

// loop is the main loop: frames from the link readers, timers, the health
// runs, until ctx ends or the daemon reboots the board.
func (d *daemon) loop(ctx context.Context) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := make(chan inFrame, 64)
	var wg sync.WaitGroup
	for i, l := range d.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.read(rctx, i, l, in)
		}()
	}
	defer func() { cancel(); d.close(); wg.Wait() }()

	now := d.clock.Now()
	d.nextHK = now
	d.nextHealth = now
	if d.wd != nil {
		d.nextPet = now
	}
	if d.eng != nil {
		d.eng.SetLink(now, true)
		d.drainUplink(ctx, now)
	}
	d.flushPending()
	if d.opt.Ready != nil {
		d.opt.Ready(d.status)
	}
	for {
		now := d.clock.Now()
		if err := d.due(ctx, now); err != nil {
			return err
		}
		wait := d.nextDeadline(now)
		var timer <-chan time.Time
		if wait >= 0 {
			timer = d.clock.After(wait)
		}
		select {
		case <-ctx.Done():
			d.saveState()
			return ctx.Err()
		case f := <-in:
			d.onFrame(ctx, d.clock.Now(), f)
		case err := <-d.healthRes:
			d.onHealth(ctx, d.clock.Now(), err)
		case r := <-d.installRes:
			d.onInstall(ctx, d.clock.Now(), r)
		case r := <-d.verifyRes:
			d.onVerify(d.clock.Now(), r)
			d.drainUplink(ctx, d.clock.Now()) // an install held by the verification
		case r := <-d.resetRes:
			d.onFactoryReset(ctx, d.clock.Now(), r)
		case lc := <-d.linkState:
			ev := dict.EvLinkDown
			if lc.up {
				ev = dict.EvLinkUp
			}
			d.log.Info("link", "link", lc.name, "up", lc.up)
			d.setLinkUp(lc.name, lc.up)
			d.event(d.clock.Now(), ev.Name, "", map[string]any{"link": truncate(lc.name, dict.MaxLinkName)})
		case <-timer:
		}
		if d.rebootNow {
			return d.doReboot(ctx)
		}
	}
}

// read pumps one link into the main loop. A link error that is not the
// end of ctx is logged; the link keeps being read (protocol/link links
// reconnect by themselves).
func (d *daemon) read(ctx context.Context, i int, l Link, in chan<- inFrame) {
	pl, _ := l.(link.PeerLink)
	for {
		var b []byte
		var from link.Peer
		var err error
		if pl != nil {
			b, from, err = pl.RecvFrom(ctx)
		} else {
			b, err = l.Recv(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d.log.Warn("link receive", "link", l.Name(), "err", err)
			if errors.Is(err, os.ErrClosed) || errors.Is(err, link.ErrClosed) {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-d.clock.After(time.Second):
			}
			continue
		}
		select {
		case in <- inFrame{link: i, frame: b, peer: from}:
		case <-ctx.Done():
			return
		}
	}
}

// openLink opens a configured link with protocol/link; its up and down
// transitions become link_up and link_down events.
func (d *daemon) openLink(lc LinkConfig) (Link, error) {
	return link.Open(link.Config{Name: lc.Name, Kind: lc.Kind, Listen: lc.Listen, Peer: lc.Peer,
		Device: lc.Device, Baud: lc.Baud, MaxFrame: lc.MaxFrameOrDefault(),
		OnState: func(name string, up bool) {
			select {
			case d.linkState <- linkChange{name, up}:
			default: // the main loop is behind: the next change says it
			}
		}})
}

// setLinkUp records a link's state; the uplink engine's report timers
// run only while some link is up.
func (d *daemon) setLinkUp(name string, up bool) {
	if d.linksUp == nil {
		d.linksUp = map[string]bool{}
	}
	d.linksUp[name] = up
	any := false
	for _, u := range d.linksUp {
		any = any || u
	}
	if d.eng != nil {
		d.eng.SetLink(d.clock.Now(), any)
	}
}

type linkChange struct {
	name string
	up   bool
}

// due runs whatever timer is due at now.
func (d *daemon) due(ctx context.Context, now time.Time) error {
	if d.wd != nil && !now.Before(d.nextPet) {
		d.pet(now)
		d.nextPet = now.Add(d.petEvery)
	}
	if !now.Before(d.nextHK) {
		d.sendHousekeeping(now)
		d.nextHK = now.Add(d.cfg.Telemetry.Period.Or(DefaultTelemetryPeriod))
		if d.dirtyCounts {
			if err := d.saveState(); err != nil {
				d.log.Error("save state", "err", err)
			}
		}
	}
	if !now.Before(d.nextHealth) && !d.healthBusy {
		d.runHealth(ctx)
		d.nextHealth = now.Add(d.cfg.Health.Interval.Or(DefaultHealthInterval))
	}
	if d.trialOpen {
		d.decideTrial(ctx, now)
	}
	if !d.rebootAt.IsZero() && !now.Before(d.rebootAt) {
		d.rebootAt = time.Time{}
		d.requestReboot(d.rebootCause, d.nextSlot())
	}
	if d.eng != nil {
		if dl := d.eng.Deadline(); !dl.IsZero() && !now.Before(dl) {
			if err := d.eng.Tick(now); err != nil {
				d.log.Error("uplink tick", "err", err)
			}
			d.drainUplink(ctx, now)
		}
	}
	if d.rebootNow {
		return d.doReboot(ctx)
	}
	return nil
}

// nextDeadline is how long the loop may sleep; -1: until a frame.
func (d *daemon) nextDeadline(now time.Time) time.Duration {
	next := d.nextHK
	var engDue time.Time
	if d.eng != nil {
		engDue = d.eng.Deadline()
	}
	for _, t := range []time.Time{d.nextHealth, d.rebootAt, engDue} {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	if d.wd != nil && d.nextPet.Before(next) {
		next = d.nextPet
	}
	if d.trialOpen && d.cfg.Health.GroundWithin > 0 {
		if t := d.started.Add(time.Duration(d.cfg.Health.GroundWithin)); t.Before(next) {
			next = t
		}
	}
	return max(next.Sub(now), 0)
}

// pet keeps the watchdog alive, only while the daemon is healthy: the
// last health run passed (or none has finished yet) and no trial has
// failed. An unhealthy daemon stops petting and the board resets. A
// health run that outlives its checks' timeouts counts as failed: a
// check deaf to its context (or whose child keeps its output open) would
// otherwise hold the last pass forever.
func (d *daemon) pet(now time.Time) {
	if d.healthErr != nil {
		d.log.Warn("not petting the watchdog: unhealthy", "err", d.healthErr)
		return
	}
	if d.healthBusy && now.Sub(d.healthStarted) > d.healthBudget() {
		d.log.Warn("not petting the watchdog: the health run is overdue", "started", d.healthStarted)
		return
	}
	if err := d.wd.Keepalive(); err != nil {
		d.log.Error("watchdog keepalive", "err", err)
	}
}

// onFrame handles one frame from the ground.
func (d *daemon) onFrame(ctx context.Context, now time.Time, f inFrame) {
	d.mu.Lock()
	d.st.Counters.FramesIn++
	d.mu.Unlock()
	// The answers to this frame go back on the link it came on (and, on a
	// listener, to whom the link answers: the sender only once the frame
	// authenticated, see authenticated).
	d.replyLink = f.link
	d.cur = &f
	defer func() { d.replyLink, d.cur = -1, nil }()
	frame := f.frame
	if d.opener != nil {
		inner, err := d.opener.Open(frame)
		if err != nil {
			d.drop(protocol.CodeOf(protocol.ReasonOf(err)), "open", err)
			return
		}
		frame = inner
	}
	m, err := d.codec.Decode(frame)
	if err != nil {
		d.drop(protocol.CodeOf(protocol.ReasonOf(err)), "decode", err)
		return
	}
	switch msg := m.(type) {
	case *protocol.Command:
		if d.onCommand(ctx, now, msg) {
			d.heardOn(now, f.link)
		}
	case *protocol.Offer, *protocol.Chunk, *protocol.ReportRequest, *protocol.Cancel:
		// The engine counts what it drops, by reason (merged into
		// hk.counters). Only a frame that moved the engine as only the
		// ground can (Engine.Authenticated) is the ground heard.
		before := d.eng.Authenticated()
		if err := d.eng.Step(now, frame); err != nil {
			d.log.Debug("transfer frame dropped", "err", err)
		}
		if d.eng.Authenticated() != before {
			d.authenticated(now)
			d.heardOn(now, f.link)
		}
		d.drainUplink(ctx, now)
	default:
		d.drop(protocol.CodeOf(protocol.ReasonUnknownType), "unexpected message", fmt.Errorf("%v from the ground", m.Type()))
	}
}

// authenticated is called as soon as the frame being handled proved to be
// the ground's (a command's signature and replay window passed, the engine
// took a frame only the ground can send), before anything answers it: a
// listener link answers its sender from now on. Nothing else moves whom a
// listener answers, so a datagram or a connection from anyone else cannot
// divert the return link (protocol/link PeerLink).
// It is also when the ground, heard again after a gap, gets the kept final
// reports once more (repeatFinals).
func (d *daemon) authenticated(now time.Time) {
	if d.cur == nil {
		return
	}
	if pl, ok := d.links[d.cur.link].(link.PeerLink); ok {
		pl.Answer(d.cur.peer)
	}
	d.repeatFinals(now)
}

// heardOn records an authenticated frame from the ground on link i: the
// link to answer on, and "ground heard" for the health check.
func (d *daemon) heardOn(now time.Time, i int) {
	d.heard = now
	d.lastLink = i
	if len(d.unsent) > 0 {
		q := d.unsent
		d.unsent = nil
		for _, b := range q {
			d.sendFrame(b, false)
		}
	}
}

// maxUnsent bounds the events kept while no link can send (a datagram
// listener before the ground is first heard): well within the ground's
// replay window of protocol.ReplayWindowSize sequence numbers.
const maxUnsent = 32

func (d *daemon) drop(code protocol.Code, what string, err error) {
	d.mu.Lock()
	d.st.Counters.FramesDropped++
	d.st.Counters.drop(code)
	d.dirtyCounts = true
	d.mu.Unlock()
	d.log.Debug("frame dropped", "what", what, "code", dict.EnumReason.NameOf(uint64(code)), "err", err)
}

// send tags m with the return-link MAC, encodes it for the smallest link
// frame and sends it.
func (d *daemon) send(m protocol.ReturnMessage) {
	if err := d.auth.Sign(m); err != nil {
		d.log.Error("return auth", "err", err)
		return
	}
	b, err := d.ret.Encode(m)
	if err != nil {
		d.log.Error("encode", "type", m.Type().String(), "err", err)
		return
	}
	// Events are state changes the ground must hear of: one that no link
	// could take is kept and sent when the ground is next heard.
	_, keep := m.(*protocol.Event)
	d.sendFrame(b, keep)
}

// sendFrame sends on the link of the frame being answered, else the link
// the ground was last heard on, else the first link that takes it.
func (d *daemon) sendFrame(b []byte, keep bool) {
	first := d.lastLink
	if d.replyLink >= 0 {
		first = d.replyLink
	}
	order := make([]int, 0, len(d.links))
	if first >= 0 && first < len(d.links) {
		order = append(order, first)
	}
	for i := range d.links {
		if i != first {
			order = append(order, i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, i := range order {
		if len(b) > d.links[i].MaxFrame() {
			continue
		}
		if err := d.links[i].Send(ctx, b); err == nil {
			d.mu.Lock()
			d.st.Counters.FramesOut++
			d.mu.Unlock()
			return
		}
	}
	d.log.Debug("frame not sent: no link up")
	if keep {
		if len(d.unsent) == maxUnsent {
			d.unsent = d.unsent[1:]
		}
		d.unsent = append(d.unsent, b)
	}
}

func (d *daemon) setError(now time.Time, code protocol.Code, text string) {
	if len(text) > dict.MaxErrorText {
		text = text[:dict.MaxErrorText]
	}
	for len(text) > 0 && !validUTF8(text) {
		text = text[:len(text)-1]
	}
	d.mu.Lock()
	d.st.LastError = ErrorRecord{Code: code, AtMs: now.UnixMilli(), Text: text}
	d.dirtyCounts = true
	d.mu.Unlock()
}

// doReboot runs the reboot action once the reports are out.
func (d *daemon) doReboot(ctx context.Context) error {
	d.mu.Lock()
	d.st.Rebooting = true
	d.mu.Unlock()
	if err := d.saveState(); err != nil {
		d.log.Error("save state before reboot", "err", err)
	}
	d.log.Info("rebooting", "cause", d.rebootCause)
	reboot := d.opt.Reboot
	if reboot == nil {
		reboot = func(ctx context.Context) error {
			argv := d.cfg.Boot.RebootOrDefault()
			out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %w: %s", argv, err, out)
			}
			return nil
		}
	}
	if err := reboot(ctx); err != nil {
		// The watchdog stays armed and is no longer petted: if the reboot
		// action cannot reboot, the watchdog will.
		d.log.Error("reboot action failed; leaving it to the watchdog", "err", err)
		return fmt.Errorf("flightd: reboot: %w", err)
	}
	return ErrRebooted
}

// tokenBucket bounds the answers to what anyone can send (rejections of
// unauthenticated or replayed commands).
type tokenBucket struct {
	burst  float64
	rate   float64 // per second
	tokens float64
	last   time.Time
	init   bool
}

func (b *tokenBucket) take(now time.Time) bool {
	if !b.init {
		b.init, b.tokens, b.last = true, b.burst, now
	}
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
