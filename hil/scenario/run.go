package scenario

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/hil/board"
	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/bootorbit/bootorbit/hil/link"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	plink "github.com/bootorbit/bootorbit/protocol/link"
)

// Constants of the bench's vehicle.
const (
	vehicleID   = 42
	hardware    = "obc-hil"
	groundKeyID = 1
	macKeyID    = 1
)

// Env is what the scenarios of one run share: the flightd binary for the
// architecture, and the image sets.
type Env struct {
	Dir      string
	Arch     string
	Flightd  string
	Emulator []string
	// Images is the synthetic set; DebianLayout the OCI layout
	// hil/deltabench/mkimages.sh wrote (OUTDIR/oci), from which the
	// Debian set is made and signed the first time a scenario asks for it.
	Images       *images.Set
	DebianLayout string
	Seed         uint64
	// WatchdogTimeout, if set, replaces every scenario's board watchdog
	// timeout (Scenario.WatchdogTimeout): flightd under qemu-user writes
	// the Debian pair's slot for longer than the scenarios allow on amd64.
	WatchdogTimeout time.Duration
	// Log receives the runner's progress (nil: discarded); FlightdLog
	// flightd's own log (nil: a file per scenario).
	Log        *slog.Logger
	FlightdLog io.Writer
	// Progress, if set, gets one line per step of a run, as it happens.
	Progress func(scenario, line string)
	// NewBoard makes each run's board (nil: the virtual board,
	// board.New); Board names it in the results ("virtual" if empty) and
	// Limits says what it cannot do: a scenario that needs it is skipped,
	// with the reason in the report.
	NewBoard NewBoardFunc
	Board    string
	Limits   Limits

	debianMu   sync.Mutex
	debianDone bool // debian, debianErr hold the pair's outcome
	debian     *images.Set
	debianErr  error
	// buildDebian makes the Debian set (nil: images.Debian; tests).
	buildDebian func(context.Context, images.DebianOptions) (*images.Set, error)
}

// Pair returns the image set of the pair named (images.PairSynthetic,
// images.PairDebian). The Debian set is made the first time a scenario
// asks for it, with that scenario's ctx, and kept for the run; a build
// that ctx cut short (the scenario ran out of time, or was cancelled) is
// not kept: the next scenario builds again, and gets the set.
func (e *Env) Pair(ctx context.Context, name string) (*images.Set, error) {
	switch name {
	case "", images.PairSynthetic:
		return e.Images, nil
	case images.PairDebian:
		e.debianMu.Lock()
		defer e.debianMu.Unlock()
		if e.debianDone {
			return e.debian, e.debianErr
		}
		if e.DebianLayout == "" {
			e.debianDone, e.debianErr = true, images.ErrNoDebianPair
			return nil, e.debianErr
		}
		build := e.buildDebian
		if build == nil {
			build = images.Debian
		}
		set, err := build(ctx, images.DebianOptions{Source: e.DebianLayout, Dir: filepath.Join(e.Dir, "debian"),
			Seed: e.Seed, Hardware: hardware})
		if err != nil && ctx.Err() != nil {
			return nil, err // this scenario's time, not the pair's fault
		}
		e.debianDone, e.debian, e.debianErr = true, set, err
		return set, err
	}
	return nil, fmt.Errorf("scenario: no image pair %q", name)
}

// Prepare builds flightd for arch (host's if empty) and generates the
// image set into dir.
func Prepare(ctx context.Context, dir, arch string, seed uint64, imageSize int) (*Env, error) {
	if arch == "" {
		arch = runtime.GOARCH
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	bin, emu, err := board.Build(ctx, dir, arch)
	if err != nil {
		return nil, err
	}
	set, err := images.Generate(ctx, images.Options{Dir: filepath.Join(dir, "images"), Seed: seed, Hardware: hardware, Size: imageSize})
	if err != nil {
		return nil, err
	}
	return &Env{Dir: dir, Arch: arch, Flightd: bin, Emulator: emu, Images: set, Seed: seed}, nil
}

// Result is one scenario's run.
type Result struct {
	Name    string `json:"name"`
	Arch    string `json:"arch"`
	Board   string `json:"board"`
	Images  string `json:"images"`
	Profile string `json:"profile"`
	Seed    uint64 `json:"seed"`
	Passed  bool   `json:"passed"`
	// Skipped is why the scenario did not run on this board ("": it ran).
	Skipped  string        `json:"skipped,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	Failures []string      `json:"failures,omitempty"`
	// Timeline is what happened, step by step.
	Timeline []string `json:"timeline"`
	// Final is what the run ended with.
	Booted  string `json:"booted"`
	Outcome string `json:"outcome"`
	// ResetCause and BootCount are the vehicle's last hk.boot: why the
	// board last came up, and the boots flightd recorded (one per boot
	// id: a boot whose image hangs never runs flightd).
	ResetCause    string            `json:"reset_cause"`
	BootCount     uint64            `json:"boot_count"`
	Version       uint64            `json:"version"`
	Slots         map[string]string `json:"slots"`
	Uplinks       []string          `json:"uplinks"`
	VehicleEvents []string          `json:"vehicle_events"`
	Counters      map[string]uint64 `json:"counters"`
	BoardEvents   map[string]int    `json:"board_events"`
	Link          link.Stats        `json:"link"`
	// Tampered counts the chunk frames altered in flight.
	Tampered int `json:"tampered,omitempty"`
	// Passes counts the link's passes (forward link up) during the run.
	Passes int `json:"passes"`
	// BundleBytes are the bytes of the bundles sent (delta), Bundles
	// the size of each update's.
	BundleBytes uint64   `json:"bundle_bytes"`
	Bundles     []uint64 `json:"bundles"`
	// Updates are each uplink's figures.
	Updates []UpdateFigures `json:"updates,omitempty"`
}

// UpdateFigures are one uplink's sizes and times, as the runner saw them
// (the ground's queue and the board's slot state, polled every 100 ms).
type UpdateFigures struct {
	Image   string `json:"image"`
	Version uint64 `json:"version"`
	// ImageBytes are the image's layer blobs as stored (compressed),
	// Layers their count.
	ImageBytes int64 `json:"image_bytes"`
	Layers     int   `json:"layers"`
	// BundleBytes is the bundle sent (the delta).
	BundleBytes uint64 `json:"bundle_bytes"`
	// Uplink runs from queueing to the ground's done (the vehicle
	// installed it); Transfer from the first chunk the vehicle held to
	// the slot write's start; Install from the slot write's start to the
	// ground's done (its report's return trip included).
	Uplink   time.Duration `json:"uplink_ns"`
	Transfer time.Duration `json:"transfer_ns,omitempty"`
	Install  time.Duration `json:"install_ns,omitempty"`
	// FlightdRSS is flightd's peak resident set (VmHWM) after the
	// install, in bytes (0: not read; under qemu-user it is qemu's).
	FlightdRSS int64 `json:"flightd_rss,omitempty"`
}

// run is one scenario's state.
type run struct {
	env   *Env
	set   *images.Set // the scenario's image pair
	sc    *Scenario
	dir   string
	res   *Result
	start time.Time
	log   *slog.Logger

	brd    Board
	emu    *link.Emulator
	gl     *faultLink
	gcfg   groundd.Config
	gkey   ed25519.PrivateKey
	mu     sync.Mutex
	d      *groundd.Daemon
	dstop  context.CancelFunc
	ddone  chan error
	fired  map[int]bool
	up     bool
	faults sync.WaitGroup
}

func (r *run) step(format string, args ...any) {
	line := fmt.Sprintf("%6.1fs ", time.Since(r.start).Seconds()) + fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.res.Timeline = append(r.res.Timeline, line)
	r.mu.Unlock()
	if r.env.Progress != nil {
		r.env.Progress(r.sc.Name, line)
	}
	r.log.Info(line, "scenario", r.sc.Name)
}

func (r *run) fail(format string, args ...any) {
	r.mu.Lock()
	r.res.Failures = append(r.res.Failures, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// Run runs sc and returns its result; an error is a bench failure (the
// scenario could not run), a failed expectation is in the result.
func Run(ctx context.Context, env *Env, sc *Scenario) (*Result, error) {
	timeout := time.Duration(sc.Timeout)
	if timeout == 0 {
		timeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := &run{env: env, sc: sc, dir: filepath.Join(env.Dir, "runs", sc.Name), start: time.Now(), log: env.Log, fired: map[int]bool{},
		res: &Result{Name: sc.Name, Arch: env.Arch, Board: orDefault(env.Board, "virtual"), Images: sc.Pair(), Profile: sc.Link.Profile, Seed: env.Seed}}
	if why := sc.SkipReason(env.Limits); why != "" {
		r.res.Skipped = "skipped on a real board: " + why
		return r.res, nil
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	os.RemoveAll(r.dir)
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	set, err := env.Pair(ctx, sc.Pair())
	if err != nil {
		return nil, err
	}
	r.set = set
	err = r.setup(ctx)
	if err == nil {
		err = r.play(ctx)
	}
	r.collect()
	r.teardown()
	r.res.Duration = time.Since(r.start)
	if err != nil && !errors.Is(err, errFailed) {
		if ctx.Err() != nil {
			r.fail("timed out after %v: %v", timeout, err)
		} else {
			return r.res, err
		}
	}
	r.check(true)
	r.res.Passed = len(r.res.Failures) == 0
	return r.res, nil
}

// errFailed ends a run whose expectations failed.
var errFailed = errors.New("scenario: failed")

func (r *run) setup(ctx context.Context) error {
	rng := rand.New(rand.NewPCG(r.env.Seed, uint64(len(r.sc.Name))))
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(rng.Uint32())
	}
	r.gkey = ed25519.NewKeyFromSeed(seed)
	mac := make([]byte, protocol.MACKeyLen)
	for i := range mac {
		mac[i] = byte(rng.Uint32())
	}
	keys := filepath.Join(r.dir, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		return err
	}
	write := func(name string, b []byte) (string, error) {
		p := filepath.Join(keys, name)
		return p, os.WriteFile(p, []byte(hex.EncodeToString(b)), 0o600)
	}
	groundKey, err := write("ground.key", seed)
	if err != nil {
		return err
	}
	groundPub, err := write("ground.pub", r.gkey.Public().(ed25519.PublicKey))
	if err != nil {
		return err
	}
	macFile, err := write("vehicle.key", mac)
	if err != nil {
		return err
	}
	out := r.env.FlightdLog
	if out == nil {
		f, err := os.Create(filepath.Join(r.dir, "flightd.log"))
		if err != nil {
			return err
		}
		out = f
	}
	spec, err := r.sc.Link.Spec()
	if err != nil {
		return err
	}
	// The frame size is the radio's.
	maxFrame := spec.Forward.MaxFrame
	if maxFrame == 0 || maxFrame > 1024 {
		maxFrame = 1024
	}
	set := r.set
	newBoard := r.env.NewBoard
	if newBoard == nil {
		newBoard = func(_ context.Context, cfg board.Config) (Board, error) {
			b, err := board.New(cfg)
			if err != nil {
				return nil, err
			}
			return b, nil
		}
	}
	r.brd, err = newBoard(ctx, board.Config{Dir: filepath.Join(r.dir, "board"), Flightd: r.env.Flightd, Emulator: r.env.Emulator,
		Vehicle: vehicleID, Hardware: hardware, MaxFrame: maxFrame,
		GroundPub: groundPub, GroundKeyID: groundKeyID, ReleasePub: set.ReleasePub, ReleaseKeyID: set.KeyID, VehicleKey: macFile,
		Factory: set.Base, Attempts: 3, WatchdogTimeout: cmp.Or(r.env.WatchdogTimeout, time.Duration(r.sc.WatchdogTimeout)), Output: out, Log: r.log})
	if err != nil {
		return err
	}
	r.emu, err = link.New(link.Config{Spec: spec, Seed: r.env.Seed, B: r.brd.Addr(), ListenB: r.env.Limits.LinkListen, Log: r.log})
	if err != nil {
		return err
	}
	go r.emu.Run(ctx)
	r.brd.SetPeer(r.emu.AddrB().String())
	gl, err := plink.Open(plink.Config{Name: "radio", Kind: plink.KindUDP, Listen: "127.0.0.1:0", Peer: r.emu.AddrA().String(), MaxFrame: maxFrame})
	if err != nil {
		return err
	}
	codec, err := protocol.NewCodec(maxFrame)
	if err != nil {
		return err
	}
	r.gl = &faultLink{Link: gl, codec: codec}
	rtt := 2*spec.Forward.Delay + 200*time.Millisecond
	r.gcfg = groundd.Config{StateDir: filepath.Join(r.dir, "ground"), GroundKey: groundKey, GroundKeyID: groundKeyID, MaxFrame: maxFrame,
		ReleaseKeys: set.ReleasePub,
		Vehicles: []groundd.VehicleConfig{{ID: vehicleID, Name: "hil", HardwareID: hardware,
			Link:   groundd.LinkConfig{Kind: "udp", Peer: r.emu.AddrA().String()},
			MACKey: groundd.KeyRef{ID: macKeyID, File: macFile}, Rate: spec.Forward.Rate, RTT: groundd.Duration(rtt)}}}
	if err := r.startGround(ctx); err != nil {
		return err
	}
	// The ground station knows the passes: the link's announced state.
	states, unsub := r.emu.Subscribe()
	if r.emu.Up().Forward {
		r.up, r.res.Passes = true, 1
	}
	go func() {
		defer unsub()
		for {
			select {
			case <-ctx.Done():
				return
			case st, ok := <-states:
				if !ok {
					return
				}
				r.mu.Lock()
				if r.d != nil {
					r.d.SetLink(vehicleID, st.Forward)
				}
				if st.Forward && !r.up {
					r.res.Passes++
				}
				r.up = st.Forward
				r.mu.Unlock()
				if st.Forward {
					r.step("pass: link up (AOS)")
				} else {
					r.step("link down (LOS)")
				}
			}
		}
	}()
	go r.brd.Run(ctx)
	if err := r.brd.PowerOn(); err != nil {
		return err
	}
	r.step("board on (%s): %s flightd booted slot A (%s image %s, version %d); link %s (time x%g)", r.res.Board, r.env.Arch, r.sc.Pair(), short(set.Base.Manifest.String()), set.Base.Version, spec.Name, spec.TimeScale)
	return nil
}

func short(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[i+1 : i+13]
	}
	return d
}

// startGround opens groundd on its state directory and runs it on the
// ground's end of the link.
func (r *run) startGround(ctx context.Context) error {
	d, err := groundd.Open(r.gcfg, groundd.Options{Log: r.log})
	if err != nil {
		return err
	}
	if _, err := d.RegisterImage(ctx, r.set.Base.Ref); err != nil {
		d.Close()
		return err
	}
	dctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	d.SetLink(vehicleID, r.emu.Up().Forward)
	go func() { done <- d.Run(dctx, map[uint32]groundd.Link{vehicleID: r.gl}) }()
	r.mu.Lock()
	r.d, r.dstop, r.ddone = d, stop, done
	r.mu.Unlock()
	return nil
}

func (r *run) stopGround() {
	r.mu.Lock()
	d, stop, done := r.d, r.dstop, r.ddone
	r.d = nil
	r.mu.Unlock()
	if d == nil {
		return
	}
	stop()
	<-done
	d.Close()
}

func (r *run) ground() *groundd.Daemon {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.d
}

func (r *run) teardown() {
	r.faults.Wait()
	r.stopGround()
	if r.brd != nil {
		r.brd.Close()
	}
	if r.gl != nil {
		r.gl.mu.Lock()
		r.res.Tampered = r.gl.Tampered
		r.gl.mu.Unlock()
	}
	if r.emu != nil {
		r.res.Link = r.emu.Stats()
		r.emu.Close()
	}
	if r.gl != nil {
		r.gl.Close()
	}
}

// poll calls cond every 100 ms until it holds, ctx ends or limit passes.
func poll(ctx context.Context, limit time.Duration, cond func() (bool, error)) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	end := time.Now().Add(limit)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(end) {
			return fmt.Errorf("not within %v", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// play runs the updates with their faults, then waits for the expected
// outcome.
func (r *run) play(ctx context.Context) error {
	set := r.set
	attempts := r.sc.Attempts
	if attempts == 0 {
		attempts = 2
	}
	for i, u := range r.sc.Updates {
		im, _ := set.ByName(u.Image)
		target := "b"
		if st, err := r.brd.State(); err == nil && st.Booted == "B" {
			target = "a"
		}
		up, err := r.ground().QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: im.Ref})
		if err != nil {
			return err
		}
		fig := UpdateFigures{Image: u.Image, Version: im.Version}
		fig.ImageBytes, fig.Layers = imageBytes(im)
		queued := time.Now()
		var firstChunk, writeStart time.Time
		r.step("queued uplink %d: %s (version %d, %s, %d layer(s), %.1f MB) for slot %s", up.ID, u.Image, im.Version, short(im.Manifest.String()),
			fig.Layers, float64(fig.ImageBytes)/1e6, strings.ToUpper(target))
		stopWatch := r.watchBoard(ctx, i, target)
		receiving, installing := false, false
		lastPct := -1
		err = poll(ctx, time.Hour, func() (bool, error) {
			d := r.ground()
			if d == nil {
				return false, nil // restarting
			}
			ul, err := d.QueueShow(ctx, up.ID)
			if err != nil {
				return false, nil
			}
			ts, _ := d.UplinkTransfers(ctx, up.ID)
			for _, t := range ts {
				if t.Kind != "bundle" || t.Total == 0 {
					continue
				}
				if !receiving && t.Chunks > 0 {
					receiving, firstChunk = true, time.Now()
					r.step("bundle transfer under way: %d bytes in %d chunks", t.Size, t.Total)
					r.phase(ctx, i, PhaseReceive)
				}
				if pct := 100 * t.Chunks / t.Total; pct/25 != lastPct/25 {
					lastPct = pct
					r.step("uplink %d: %d%% of the bundle held by the vehicle (link %s)", up.ID, pct, upDown(r.emu.Up()))
				}
			}
			if !installing && r.writing(target) {
				installing, writeStart = true, time.Now()
				r.step("slot %s being written", strings.ToUpper(target))
				r.phase(ctx, i, PhaseInstall)
			}
			switch ul.State {
			case groundd.UplinkDone:
				if !installing {
					r.phase(ctx, i, PhaseInstall)
				}
				var size uint64
				for _, t := range ts {
					if t.Kind == "bundle" {
						size = max(size, t.Size)
					}
				}
				r.res.BundleBytes += size
				r.res.Bundles = append(r.res.Bundles, size)
				done := time.Now()
				fig.BundleBytes, fig.Uplink = size, done.Sub(queued)
				// The ground learns of chunks from the vehicle's reports: a
				// small bundle can be written before it hears of the first.
				if !firstChunk.IsZero() && writeStart.After(firstChunk) {
					fig.Transfer = writeStart.Sub(firstChunk)
				}
				if !writeStart.IsZero() {
					fig.Install = done.Sub(writeStart)
				}
				// A local board's flightd is a process here; a real
				// board's RSS is not read over SSH (shown as "-").
				if p, ok := r.brd.(interface{ Pid() int }); ok {
					fig.FlightdRSS = peakRSS(p.Pid())
				}
				r.mu.Lock()
				r.res.Updates = append(r.res.Updates, fig)
				r.mu.Unlock()
				r.step("uplink %d done: the vehicle installed it (%d plan(s), bundle %d bytes)", up.ID, len(ul.Plans), size)
				return true, nil
			case groundd.UplinkFailed, groundd.UplinkExpired, groundd.UplinkCancelled:
				return false, fmt.Errorf("%w: uplink %d %s: %s", errFailed, up.ID, ul.State, ul.Error)
			}
			return false, nil
		})
		stopWatch()
		if err != nil {
			r.fail("uplink %d (%s): %v", up.ID, u.Image, err)
			return err
		}
		if !u.activate() {
			continue
		}
		r.phase(ctx, i, PhaseActivate)
		if err := r.command(ctx, "activate", map[string]any{"slot": target, "attempts": attempts}); err != nil {
			// A power cut after the activation armed the slot boots the
			// board into it at power-on: an activate sent again then
			// finds the slot booted (bad_state). That is the outcome.
			if st, serr := r.brd.State(); !errors.Is(err, errFailed) || serr != nil || st.Booted != strings.ToUpper(target) {
				r.fail("activate: %v", err)
				return err
			}
			r.step("slot %s already booted: the activation went through before the cut", strings.ToUpper(target))
			if err := r.settle(ctx, 0); err != nil {
				return err
			}
			continue
		}
		r.phase(ctx, i, PhaseBoot)
		// The reboot's completion may be lost with the vehicle going
		// down: what counts is the board's next boot.
		boots, seen := r.brd.Count("boot"), len(r.brd.Events())
		for try := 1; ; try++ {
			if _, err := r.ground().SendCommand(ctx, vehicleID, "reboot", nil); err != nil {
				return err
			}
			r.step("reboot commanded")
			err := poll(ctx, commandWait, func() (bool, error) { return r.brd.Count("boot") > boots, nil })
			if err == nil {
				break
			}
			if ctx.Err() != nil || try == 4 {
				r.fail("no reboot after the reboot command: %v", err)
				return err
			}
			// The command or its reports were lost: the board did not
			// reboot, so the reboot was not run; send it again.
			r.step("no reboot in %v: the command was lost", commandWait)
		}
		if err := r.settle(ctx, seen); err != nil {
			return err
		}
	}
	r.faults.Wait()
	return r.awaitOutcome(ctx)
}

func upDown(st link.LinkState) string {
	if st.Forward {
		return "up"
	}
	return "down"
}

// watchBoard fires the receive and install phases of update i from what
// the board shows: the receive phase once flightd staged more than a
// plan's worth of the bundle (the ground learns of progress from the
// vehicle's reports, too late to cut the power in the middle), the install
// phase the moment the target slot is being written (a slot write of a
// few MB lasts tens of milliseconds).
func (r *run) watchBoard(ctx context.Context, update int, target string) (stop func()) {
	want := map[string]bool{}
	for _, f := range r.sc.Faults {
		if f.Update == update {
			want[orDefault(f.During, PhaseReceive)] = true
		}
	}
	if !want[PhaseReceive] && !want[PhaseInstall] {
		return func() {}
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		recv := !want[PhaseReceive]
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			if !recv && r.brd.StagedBytes() > 8<<10 {
				recv = true
				r.step("the vehicle is receiving the bundle (%d bytes staged)", r.brd.StagedBytes())
				r.phase(ctx, update, PhaseReceive)
			}
			if want[PhaseInstall] && r.writing(target) {
				r.step("slot %s being written", strings.ToUpper(target))
				r.phase(ctx, update, PhaseInstall)
				return
			}
			if recv && !want[PhaseInstall] {
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// writing reports whether the board's slot is being written.
func (r *run) writing(slot string) bool {
	st, err := r.brd.State()
	return err == nil && st.Slots[strings.ToUpper(slot)] == "writing"
}

// settle waits until the board runs a flightd that pets the watchdog
// (through resets and rollbacks), reporting each boot.
func (r *run) settle(ctx context.Context, seen int) error {
	return poll(ctx, time.Hour, func() (bool, error) {
		evs := r.brd.Events()
		for _, e := range evs[seen:] {
			switch e.Kind {
			case "boot":
				r.step("board booted slot %s", e.Slot)
			case "watchdog_reset":
				r.step("watchdog reset the board (slot %s not petting)", e.Slot)
			case "hang":
				r.step("slot %s hangs at boot: flightd never starts", e.Slot)
			case "reboot":
				r.step("flightd rebooted the board from slot %s", e.Slot)
			}
		}
		seen = len(evs)
		return r.brd.Petted() && time.Since(evs[len(evs)-1].At) > 2*time.Second, nil
	})
}

// commandWait is how long a command's final report is waited for before
// the command is sent again.
const commandWait = 10 * time.Second

// command sends a command through groundd and waits for its final
// report. A command that timed out (the vehicle was off) is sent again; a
// resend the vehicle answers "replayed" ran already.
func (r *run) command(ctx context.Context, op string, args map[string]any) error {
	for try := 1; ; try++ {
		c, err := r.ground().SendCommand(ctx, vehicleID, op, args)
		if err != nil {
			return err
		}
		r.step("command %s %v sent (seq %d)", op, args, c.Seq)
		var final groundd.Command
		err = poll(ctx, commandWait, func() (bool, error) {
			d := r.ground()
			if d == nil {
				return false, nil
			}
			got, err := d.CommandShow(ctx, c.ID)
			if err != nil {
				return false, nil
			}
			final = got
			switch got.Stage {
			case groundd.CmdCompleted, groundd.CmdFailed, groundd.CmdRejected, groundd.CmdTimedOut, groundd.CmdCancelled:
				return true, nil
			}
			return false, nil
		})
		if err != nil && ctx.Err() == nil && try < 4 {
			// Its reports were lost (a loss, a power cut): send it again.
			r.step("command %s: no final report in %v (%s)", op, commandWait, final.Stage)
			continue
		}
		if err != nil {
			return err
		}
		r.step("command %s: %s %s", op, final.Stage, final.Reason)
		switch {
		case final.Stage == groundd.CmdCompleted:
			return nil
		case final.Stage == groundd.CmdRejected && strings.Contains(final.Reason, "replay"):
			return nil
		case final.Stage == groundd.CmdTimedOut && try < 4:
			continue
		}
		return fmt.Errorf("%w: %s: %s %s", errFailed, op, final.Stage, final.Reason)
	}
}

// phase fires the faults of update i at phase p.
func (r *run) phase(ctx context.Context, update int, p string) {
	for fi, f := range r.sc.Faults {
		during := f.During
		if during == "" {
			during = PhaseReceive
		}
		r.mu.Lock()
		fired := r.fired[fi]
		r.fired[fi] = true
		r.mu.Unlock()
		if f.Update != update || during != p || fired {
			if !fired && (f.Update != update || during != p) {
				r.mu.Lock()
				delete(r.fired, fi)
				r.mu.Unlock()
			}
			continue
		}
		r.faults.Add(1)
		go func() {
			defer r.faults.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(f.After)):
			}
			r.inject(ctx, f)
		}()
	}
}

func (r *run) inject(ctx context.Context, f Fault) {
	switch f.Kind {
	case FaultPowerCut:
		off := time.Duration(f.Off)
		if off == 0 {
			off = time.Second
		}
		r.brd.PowerCut()
		r.step("POWER CUT during %s; power back in %v", orDefault(f.During, PhaseReceive), off)
		select {
		case <-ctx.Done():
			return
		case <-time.After(off):
		}
		if err := r.brd.PowerOn(); err != nil {
			r.fail("power on: %v", err)
		}
		r.step("power on")
	case FaultGroundRestart:
		r.step("GROUND RESTART during %s", orDefault(f.During, PhaseReceive))
		r.stopGround()
		if err := r.startGround(ctx); err != nil {
			r.fail("ground restart: %v", err)
		}
		r.step("groundd back on its store")
	case FaultForgedCommand:
		forger := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x66}, ed25519.SeedSize))
		def, _ := dict.CommandByName("reboot")
		c, err := def.NewCommand(vehicleID, 1<<40, nil)
		if err == nil {
			err = protocol.SignCommand(c, groundKeyID, forger)
		}
		var b []byte
		if err == nil {
			b, err = r.gl.codec.Encode(c)
		}
		if err != nil {
			r.fail("forge: %v", err)
			return
		}
		for i := 0; i < 3; i++ {
			r.gl.Link.Send(ctx, b)
		}
		r.step("FORGED reboot command injected 3 times (signed by an unknown key under the ground's key id)")
	case FaultTamperedChunk:
		n := f.Count
		if n == 0 {
			n = 3
		}
		r.gl.tamper(n)
		r.step("TAMPERING with the next %d chunk frames (data altered, frame re-encoded)", n)
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// awaitOutcome polls the expectations until they hold (a rollback takes
// a few boots) or the run's time is out.
func (r *run) awaitOutcome(ctx context.Context) error {
	err := poll(ctx, time.Hour, func() (bool, error) {
		r.collect()
		return r.check(false), nil
	})
	if err != nil {
		return err
	}
	r.step("outcome reached: booted %s version %d, slots %v", r.res.Booted, r.res.Version, r.res.Slots)
	return nil
}

// collect gathers the final state from the board and the ground.
func (r *run) collect() {
	if r.brd != nil {
		if st, err := r.brd.State(); err == nil {
			r.res.Booted, r.res.Slots = st.Booted, st.Slots
		}
		r.res.BoardEvents = map[string]int{}
		for _, e := range r.brd.Events() {
			r.res.BoardEvents[e.Kind]++
		}
	}
	d := r.ground()
	if d == nil {
		return
	}
	ctx := context.Background()
	if v, err := d.VehicleShow(ctx, vehicleID); err == nil {
		r.res.Version = 0
		for _, s := range v.Slots {
			if strings.EqualFold(s.Name, r.res.Booted) {
				r.res.Version = slotVersion(s, r.set)
			}
		}
	}
	if ul, err := d.QueueList(ctx); err == nil {
		r.res.Uplinks = r.res.Uplinks[:0]
		for _, u := range ul {
			r.res.Uplinks = append(r.res.Uplinks, string(u.State))
		}
	}
	recs, err := d.TelemetryRange(ctx, vehicleID, time.Time{}, time.Now().Add(time.Hour), 100000)
	if err != nil {
		return
	}
	seen := map[string]bool{}
	r.res.VehicleEvents = r.res.VehicleEvents[:0]
	r.res.Counters = map[string]uint64{}
	for _, rec := range recs {
		if rec.Kind == "event" && !seen[rec.Name] {
			seen[rec.Name] = true
			r.res.VehicleEvents = append(r.res.VehicleEvents, rec.Name)
		}
		if rec.Kind == "tm" && rec.Name == dict.HKBoot.Name {
			r.res.Outcome = fmt.Sprint(rec.Values["last_outcome"])
			if v, ok := toUint(rec.Values["last_outcome"]); ok {
				r.res.Outcome = dict.EnumBootOutcome.NameOf(v)
			}
			if v, ok := toUint(rec.Values["reset_cause"]); ok {
				r.res.ResetCause = dict.EnumResetCause.NameOf(v)
			}
			r.res.BootCount, _ = toUint(rec.Values["boot_count"])
		}
		if rec.Kind == "tm" && rec.Name == dict.HKCounters.Name {
			for i := 1; i <= dict.TopDrops; i++ {
				reason := fmt.Sprint(rec.Values[fmt.Sprintf("drop%d_reason", i)])
				if n, ok := toUint(rec.Values[fmt.Sprintf("drop%d_count", i)]); ok && n > 0 {
					if v, ok := toUint(rec.Values[fmt.Sprintf("drop%d_reason", i)]); ok {
						reason = dict.EnumReason.NameOf(v)
					}
					r.res.Counters[reason] = max(r.res.Counters[reason], n)
				}
			}
		}
	}
	sort.Strings(r.res.VehicleEvents)
}

func toUint(v any) (uint64, bool) {
	switch x := v.(type) {
	case uint64:
		return x, true
	case int64:
		return uint64(x), x >= 0
	case float64:
		return uint64(x), x >= 0
	case int:
		return uint64(x), x >= 0
	}
	return 0, false
}

// check compares the result with the expectations; final records the
// failures.
func (r *run) check(final bool) bool {
	e := r.sc.Expect
	var bad []string
	if r.res.Booted != e.Booted {
		bad = append(bad, fmt.Sprintf("booted slot %q, want %q", r.res.Booted, e.Booted))
	}
	if e.Version != 0 && r.res.Version != e.Version {
		bad = append(bad, fmt.Sprintf("the ground knows version %d in the booted slot, want %d", r.res.Version, e.Version))
	}
	if e.Outcome != "" && r.res.Outcome != e.Outcome {
		bad = append(bad, fmt.Sprintf("the ground knows the last trial's outcome as %q, want %q", r.res.Outcome, e.Outcome))
	}
	for s, want := range e.Slots {
		if got := r.res.Slots[s]; got != want {
			bad = append(bad, fmt.Sprintf("slot %s %q, want %q", s, got, want))
		}
	}
	want := e.Uplinks
	if want == "" {
		want = string(groundd.UplinkDone)
	}
	for i, u := range r.res.Uplinks {
		if u != want {
			bad = append(bad, fmt.Sprintf("uplink %d %s, want %s", i+1, u, want))
		}
	}
	if len(r.res.Uplinks) != len(r.sc.Updates) {
		bad = append(bad, fmt.Sprintf("%d uplinks, want %d", len(r.res.Uplinks), len(r.sc.Updates)))
	}
	have := map[string]bool{}
	for _, ev := range r.res.VehicleEvents {
		have[ev] = true
	}
	for _, ev := range e.Events {
		if !have[ev] {
			bad = append(bad, fmt.Sprintf("vehicle event %s not received", ev))
		}
	}
	for k, n := range e.Board {
		if r.res.BoardEvents[k] < n {
			bad = append(bad, fmt.Sprintf("board %s %d times, want at least %d", k, r.res.BoardEvents[k], n))
		}
	}
	if r.gl != nil {
		r.gl.mu.Lock()
		r.res.Tampered = r.gl.Tampered
		r.gl.mu.Unlock()
	}
	if r.res.Tampered < e.Tampered {
		bad = append(bad, fmt.Sprintf("%d chunk frames tampered with, want at least %d", r.res.Tampered, e.Tampered))
	}
	for k, n := range e.Counters {
		if r.res.Counters[k] < n {
			bad = append(bad, fmt.Sprintf("vehicle counter %s %d, want at least %d", k, r.res.Counters[k], n))
		}
	}
	if final {
		r.mu.Lock()
		r.res.Failures = append(r.res.Failures, bad...)
		r.mu.Unlock()
	}
	return len(bad) == 0
}

// imageBytes sums the image's layer blobs as stored (0 if the layout
// cannot be read: a figure, not a check).
func imageBytes(im images.Image) (int64, int) {
	ref, err := oci.ParseRef(im.Ref)
	if err != nil {
		return 0, 0
	}
	oim, err := oci.Open(ref)
	if err != nil {
		return 0, 0
	}
	var n int64
	for _, l := range oim.Layers() {
		n += l.Size
	}
	return n, len(oim.Layers())
}

// peakRSS is the peak resident set (VmHWM) of process pid in bytes, 0 if
// it cannot be read.
func peakRSS(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" && f[2] == "kB" {
			var kb int64
			if _, err := fmt.Sscan(f[1], &kb); err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// slotVersion is the release version of the image in slot s as the
// report gives it: the vehicle's (hk.slots, from flightd's install
// record), or, when the vehicle reports none (the factory image, which
// flightd did not install), the version of the set's image whose manifest
// the slot's digest names.
func slotVersion(s groundd.Slot, set *images.Set) uint64 {
	if s.Version != 0 || len(s.Digest) < 8 || set == nil {
		return s.Version
	}
	for _, im := range []images.Image{set.Base, set.Update, set.Hang, set.Unhealthy} {
		if im.Manifest != "" && strings.HasPrefix(im.Manifest.Encoded(), s.Digest) {
			return im.Version
		}
	}
	return 0
}
