package flightd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/link"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/opencontainers/go-digest"
)

// The end-to-end test: a ground stand-in (protocol/transfer's Sender, plans
// signed with protocol/update, signed commands) against a real flightd Run
// over UDP on loopback through a seeded lossy relay, with directory slots,
// a GRUB environment file, and the bootloader model playing the board's
// reboots.

const (
	e2eHardware  = "obc-rev-c"
	e2eGroundID  = 1
	e2eReleaseID = 5
)

func e2eKey(n byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
}

// lossyRelay forwards datagrams between the ground's socket and the
// vehicle's, dropping a seeded fraction of them each way.
type lossyRelay struct {
	conn    *net.UDPConn
	vehicle *net.UDPAddr
	mu      sync.Mutex
	rng     *rand.Rand
	loss    float64
	ground  *net.UDPAddr
	dropped atomic.Int64
}

func newLossyRelay(t *testing.T, vehicle *net.UDPAddr, rng *rand.Rand, loss float64) *lossyRelay {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	mustT(t, err)
	r := &lossyRelay{conn: c, vehicle: vehicle, rng: rng, loss: loss}
	go r.run()
	t.Cleanup(func() { c.Close() })
	return r
}

func (r *lossyRelay) addr() *net.UDPAddr { return r.conn.LocalAddr().(*net.UDPAddr) }

func (r *lossyRelay) run() {
	buf := make([]byte, 65536)
	for {
		n, from, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		lose := r.rng.Float64() < r.loss
		to := r.vehicle
		if from.Port == r.vehicle.Port && from.IP.Equal(r.vehicle.IP) {
			to = r.ground
		} else {
			r.ground = from
		}
		r.mu.Unlock()
		if lose || to == nil {
			r.dropped.Add(1)
			continue
		}
		r.conn.WriteToUDP(buf[:n], to)
	}
}

// groundStation is the stand-in: one UDP socket towards the relay, a
// return-link verifier for the vehicle, the ground and release keys.
type groundStation struct {
	t       *testing.T
	conn    *net.UDPConn
	relay   *net.UDPAddr
	codec   *protocol.Codec
	ver     *protocol.ReturnVerifier
	ground  ed25519.PrivateKey
	release ed25519.PrivateKey
	seq     uint64
	xfer    uint64
	// seen collects the vehicle's events, verifications and telemetry.
	events []*protocol.Event
	verifs []*protocol.Verification
	tlm    map[uint16]*protocol.Telemetry
	// requested counts the chunk frames sent per transfer.
	chunks map[uint64]int
	// tick, if set, is called at every turn of the ground's loops (the
	// power-cut test cuts the vehicle's power there).
	tick    func()
	replays int
	// contradictions and resent total the Senders' stats.
	contradictions, resent int64
	// onEvent, if set, sees every event from the vehicle.
	onEvent func(*protocol.Event)
}

func (g *groundStation) sendFrame(b []byte) {
	g.conn.WriteToUDP(b, g.relay)
}

// recv waits for one frame until deadline; nil when none came.
func (g *groundStation) recv(deadline time.Time) []byte {
	g.conn.SetReadDeadline(deadline)
	buf := make([]byte, 65536)
	n, _, err := g.conn.ReadFromUDP(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// take handles a frame from the vehicle: transfer answers go to s (if
// any), the rest are verified and recorded.
func (g *groundStation) take(now time.Time, b []byte, s *transfer.Sender) {
	m, err := g.codec.Decode(b)
	if err != nil {
		g.t.Errorf("ground: undecodable frame from the vehicle: %v", err)
		return
	}
	switch msg := m.(type) {
	case *protocol.Report, *protocol.Complete, *protocol.Cancel:
		if s != nil {
			s.Step(now, b)
		}
		return
	case *protocol.Event:
		if !g.verify(m) {
			return
		}
		g.events = append(g.events, msg)
		if g.onEvent != nil {
			g.onEvent(msg)
		}
		if e, ok := dict.EventByID(msg.ID); ok {
			g.t.Logf("vehicle event %s %q %v", e.Name, msg.Text, msg.Args)
		}
	case *protocol.Verification:
		if !g.verify(m) {
			return
		}
		g.verifs = append(g.verifs, msg)
	case *protocol.Telemetry:
		if !g.verify(m) {
			return
		}
		g.tlm[msg.Packet] = msg
	}
}

// verify checks a frame's return-link MAC. A replay is dropped quietly: a
// frame of a previous start (an older epoch) still in flight, or an event
// the vehicle kept while no link was up, arriving after newer ones, is no
// forgery. A bad MAC is a test failure.
func (g *groundStation) verify(m protocol.Message) bool {
	err := g.ver.Verify(m)
	switch {
	case err == nil:
		return true
	case errors.Is(err, protocol.ErrReplayed):
		g.replays++
		return false
	}
	g.t.Errorf("ground: %v MAC: %v", m.Type(), err)
	return false
}

// transfer sends data as target until the vehicle completes it.
func (g *groundStation) transfer(target, data []byte, timeout time.Duration) {
	g.t.Helper()
	if err := g.transferErr(target, data, timeout); err != nil {
		g.t.Fatalf("transfer %d: %v", g.xfer, err)
	}
}

// transferErr sends data as target until the vehicle completes or
// refuses it.
func (g *groundStation) transferErr(target, data []byte, timeout time.Duration) error {
	g.t.Helper()
	g.xfer++
	p, err := transfer.NewPlan(g.codec, testVehicle, g.xfer, target, bytes.NewReader(data), uint64(len(data)), 0, e2eGroundID, g.ground)
	mustT(g.t, err)
	s, err := transfer.NewSender(transfer.SenderConfig{Codec: g.codec, Rate: 2 << 20, RTT: 20 * time.Millisecond, Verifier: g.ver}, p)
	mustT(g.t, err)
	end := time.Now().Add(timeout)
	for !s.Done() {
		if g.tick != nil {
			g.tick()
		}
		now := time.Now()
		if now.After(end) {
			done, total := s.Progress()
			g.t.Fatalf("transfer %d (%x) not done in %v: %d/%d", g.xfer, target, timeout, done, total)
		}
		s.Tick(now)
		rd := s.Ready()
		for _, m := range rd.Messages {
			if _, ok := m.Msg.(*protocol.Chunk); ok {
				g.chunks[g.xfer]++
			}
			g.sendFrame(m.Frame)
		}
		s.Advance()
		wait := now.Add(5 * time.Millisecond)
		if !rd.Deadline.IsZero() && rd.Deadline.Before(wait) {
			wait = rd.Deadline
		}
		for b := g.recv(wait); b != nil; b = g.recv(wait) {
			g.take(time.Now(), b, s)
		}
	}
	// A report never takes back a chunk an earlier one claimed: what the
	// vehicle said it journaled, it still holds after any restart or cut,
	// so nothing journaled is asked for again.
	if n := s.Stats.Contradictions; n != 0 {
		g.t.Errorf("transfer %d: %d contradictory reports from the vehicle", g.xfer, n)
	}
	g.contradictions += s.Stats.Contradictions
	g.resent += s.Stats.ChunksResent
	return s.Err()
}

// command signs and sends a command until its final verification report
// arrives (resending the same command, which the vehicle answers as a
// replay once it has run it), and returns that report.
func (g *groundStation) command(name string, args dict.Values, timeout time.Duration) *protocol.Verification {
	g.t.Helper()
	def, _ := dict.CommandByName(name)
	g.seq++
	c, err := def.NewCommand(testVehicle, g.seq, args)
	mustT(g.t, err)
	mustT(g.t, protocol.SignCommand(c, e2eGroundID, g.ground))
	b, err := g.codec.Encode(c)
	mustT(g.t, err)
	end := time.Now().Add(timeout)
	// A resend that reaches the vehicle while the first copy still runs,
	// or after it ran, is rejected as replayed; that rejection may come
	// before the first copy's final report, which is what counts. It is
	// the answer only if no final report comes before the deadline (the
	// first copy's was lost).
	var replayed *protocol.Verification
	for time.Now().Before(end) {
		if g.tick != nil {
			g.tick()
		}
		g.sendFrame(b)
		resend := time.Now().Add(300 * time.Millisecond)
		for rb := g.recv(resend); rb != nil; rb = g.recv(resend) {
			g.take(time.Now(), rb, nil)
			for _, v := range g.verifs {
				if v.Seq != c.Seq {
					continue
				}
				if v.Stage == protocol.StageCompleted || v.Stage == protocol.StageFailed ||
					v.Stage == protocol.StageRejected && v.Code != protocol.CodeOf(protocol.ReasonReplayed) {
					return v
				}
				if v.Stage == protocol.StageRejected && replayed == nil {
					replayed = v
					// The first copy ran: give its final report a
					// little longer, then take the replay as the answer.
					if grace := time.Now().Add(3 * time.Second); grace.Before(end) {
						end = grace
					}
				}
			}
		}
	}
	if replayed != nil {
		return replayed
	}
	if name == "reboot" {
		// The vehicle goes down as it runs a reboot: its final report
		// may be lost with nobody left to repeat it. The caller checks
		// that Run ended with ErrRebooted.
		return nil
	}
	g.t.Fatalf("command %s: no final report in %v", name, timeout)
	return nil
}

// ranBefore says whether r is the rejection of a resent command as a
// replay: the first copy ran, and its final report was lost on the link
// (the vehicle does not repeat it for a duplicate). What it did is checked
// by what follows: the slot booted after the reboot.
func ranBefore(r *protocol.Verification) bool {
	return r.Stage == protocol.StageRejected && r.Code == protocol.CodeOf(protocol.ReasonReplayed)
}

// waitEvent listens until the vehicle reports event e (after index from
// in g.events), asking for status now and then.
func (g *groundStation) waitEvent(e *dict.Event, from int, timeout time.Duration) (*protocol.Event, int) {
	g.t.Helper()
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		for i := from; i < len(g.events); i++ {
			if g.events[i].ID == e.ID {
				return g.events[i], i + 1
			}
		}
		for b := g.recv(time.Now().Add(200 * time.Millisecond)); b != nil; b = g.recv(time.Now().Add(50 * time.Millisecond)) {
			g.take(time.Now(), b, nil)
		}
	}
	g.t.Fatalf("no event %s in %v", e.Name, timeout)
	return nil, 0
}

// waitHK asks for housekeeping (the status command) until packet p
// satisfies ok: what the ground knows of the vehicle comes from telemetry,
// events being lost on a lossy link like any frame.
func (g *groundStation) waitHK(p *dict.Packet, what string, ok func(dict.Values) bool, timeout time.Duration) dict.Values {
	g.t.Helper()
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		delete(g.tlm, p.ID)
		g.command("status", nil, timeout)
		for b := g.recv(time.Now().Add(100 * time.Millisecond)); b != nil; b = g.recv(time.Now().Add(50 * time.Millisecond)) {
			g.take(time.Now(), b, nil)
		}
		if m, have := g.tlm[p.ID]; have {
			v, err := p.Decode(m.Params)
			mustT(g.t, err)
			if ok(v) {
				return v
			}
		}
	}
	g.t.Fatalf("%s: %s never seen in %v", p.Name, what, timeout)
	return nil
}

// signedPlan signs a plan for image im with bundle.
func (g *groundStation) signedPlan(id, version uint64, im *oci.Image, bundle []byte) []byte {
	return g.signedPlanFor(id, version, e2eHardware, im, bundle)
}

func (g *groundStation) signedPlanFor(id, version uint64, hardware string, im *oci.Image, bundle []byte) []byte {
	g.t.Helper()
	rs, err := update.SignRelease(g.release, e2eReleaseID, update.Release{Manifest: im.ManifestDigest, Version: version, HardwareID: hardware})
	mustT(g.t, err)
	p := &update.Plan{ID: id, Vehicle: testVehicle, Release: rs, Manifest: im.ManifestBytes, Config: im.ConfigBytes,
		BundleSize: uint64(len(bundle)), BundleDigest: digest.FromBytes(bundle), Staging: uint64(len(bundle))}
	mustT(g.t, update.SignPlan(g.ground, e2eGroundID, p))
	b, err := update.EncodePlan(p)
	mustT(g.t, err)
	return b
}

// e2eVehicle is the board: config, slot dirs, GRUB env, kernel command line.
type e2eVehicle struct {
	t       *testing.T
	dir     string
	cfg     *Config
	cmdline string
	env     *watchdog.GRUBEnv
	mu      sync.Mutex
	// unhealthy makes the health check of a slot fail.
	unhealthy map[slots.SlotID]bool
	// opts, if set, edits the Options of every start.
	opts func(*Options)
}

func (v *e2eVehicle) booted() slots.SlotID {
	b, err := os.ReadFile(v.cmdline)
	mustT(v.t, err)
	id, err := slots.ParseCmdline(string(b))
	mustT(v.t, err)
	return id
}

// reboot plays the bootloader: the model's decision becomes the command line.
func (v *e2eVehicle) reboot() slots.SlotID {
	dec, err := watchdog.BootloaderModel{Attempts: 3}.Boot(v.env)
	mustT(v.t, err)
	if dec.Reset {
		v.t.Fatal("the bootloader found no slot to boot")
	}
	mustT(v.t, os.WriteFile(v.cmdline, []byte("console=ttyS0 "+dec.Cmdline()+"\n"), 0o644))
	return slots.SlotID(dec.Slot)
}

// run starts flightd on the vehicle; it returns Run's result channel.
func (v *e2eVehicle) run(ctx context.Context, l Link, boot int) chan error {
	booted := v.booted()
	opt := Options{
		Log: discard, Links: []Link{l}, BootID: fmt.Sprintf("boot-%d", boot),
		Reboot: func(context.Context) error { return nil },
		RunCheck: func(context.Context, HealthCheck) error {
			v.mu.Lock()
			defer v.mu.Unlock()
			if v.unhealthy[booted] {
				return errors.New("payload self-test failed")
			}
			return nil
		},
	}
	if v.opts != nil {
		v.opts(&opt)
	}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, v.cfg, opt) }()
	return done
}

func newE2EVehicle(t *testing.T, dir string, factory ocitest.Image) *e2eVehicle {
	v := &e2eVehicle{t: t, dir: dir, cmdline: filepath.Join(dir, "cmdline"), unhealthy: map[slots.SlotID]bool{}}
	for _, d := range []string{"a", "b", "state", "keys"} {
		mustT(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	keys := filepath.Join(dir, "keys")
	mustT(t, os.WriteFile(filepath.Join(keys, "ground.pub"), []byte(hex.EncodeToString(e2eKey(1).Public().(ed25519.PublicKey))), 0o644))
	mustT(t, os.WriteFile(filepath.Join(keys, "release.pub"), []byte(hex.EncodeToString(e2eKey(2).Public().(ed25519.PublicKey))), 0o644))
	mustT(t, os.WriteFile(filepath.Join(keys, "vehicle.key"), []byte(hex.EncodeToString(bytes.Repeat([]byte{9}, 32))), 0o600))
	// The factory image in slot A, good; B empty; A boots.
	m, err := slots.Open(slots.Options{StateDir: filepath.Join(dir, "state"), Log: discard,
		A: slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(dir, "a")}, B: slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(dir, "b")}})
	mustT(t, err)
	layers := make([]io.Reader, len(factory.Tars))
	for i, tb := range factory.Tars {
		layers[i] = bytes.NewReader(tb)
	}
	_, err = m.Install(context.Background(), slots.A, slots.Image{Label: string(factory.ManifestDigest), Layers: layers})
	mustT(t, err)
	mustT(t, m.MarkPending(slots.A))
	mustT(t, m.MarkGood(slots.A))
	v.env = &watchdog.GRUBEnv{Path: filepath.Join(dir, "grubenv")}
	blk, err := watchdog.NewGRUBBlock(1024)
	mustT(t, err)
	mustT(t, blk.Replace(watchdog.Vars{watchdog.VarBootOrder: "A", watchdog.LeftVar("A"): "3", watchdog.LeftVar("B"): "0"}))
	b, err := blk.Bytes()
	mustT(t, err)
	mustT(t, os.WriteFile(v.env.Path, b, 0o644))
	mustT(t, os.WriteFile(v.cmdline, []byte("rauc.slot=A\n"), 0o644))
	v.cfg = &Config{
		Vehicle: VehicleConfig{ID: testVehicle, HardwareID: e2eHardware},
		Links:   []LinkConfig{{Name: "sband", Kind: "udp", Listen: "127.0.0.1:0", MaxFrame: 1024}},
		Keys: KeysConfig{Release: []KeyFile{{ID: e2eReleaseID, File: filepath.Join(keys, "release.pub")}},
			Ground:  []KeyFile{{ID: e2eGroundID, File: filepath.Join(keys, "ground.pub")}},
			Vehicle: &KeyFile{ID: 1, File: filepath.Join(keys, "vehicle.key")}},
		Slots: SlotsConfig{StateDir: filepath.Join(dir, "state"), Cmdline: v.cmdline,
			A: SlotConfig{Backend: "dir", Path: filepath.Join(dir, "a")}, B: SlotConfig{Backend: "dir", Path: filepath.Join(dir, "b")}},
		Boot:    BootConfig{GRUBEnv: v.env.Path, Attempts: 3},
		Health:  HealthConfig{Checks: []HealthCheck{{Name: "payload", Command: []string{"/bin/true"}}}},
		Storage: StorageConfig{Quota: 64 << 20},
	}
	mustT(t, v.cfg.ValidateRun())
	return v
}

func dirSize(t *testing.T, dir string) int64 { return dirSizeExcept(dir, "") }

// dirSizeExcept is the bytes of the regular files under dir but those
// named except.
func dirSizeExcept(dir, except string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Name() != except {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func TestEndToEndUpdateAndRollback(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end over UDP")
	}
	rng := testrand.New(t)
	dir := t.TempDir()
	gen := ocitest.GenOptions{Layers: 2, Files: 20, MaxFileSize: 8 << 10}
	v1L := ocitest.RandomLayers(rng, gen)
	v2L, _ := ocitest.Modify(rng, v1L, ocitest.ModifyOptions{Changes: []ocitest.Change{ocitest.Edit, ocitest.Add}})
	v3L, _ := ocitest.Modify(rng, v2L, ocitest.ModifyOptions{Changes: []ocitest.Change{ocitest.Edit, ocitest.Add}})
	var ims [3]ocitest.Image
	var oims [3]*oci.Image
	for i, l := range [][]ocitest.Layer{v1L, v2L, v3L} {
		var err error
		ims[i], err = ocitest.Write(filepath.Join(dir, fmt.Sprintf("img%d", i+1)), fmt.Sprintf("v%d", i+1), l)
		mustT(t, err)
		oims[i], err = oci.Open(ims[i].Ref)
		mustT(t, err)
	}
	bundle := func(from, to int) []byte {
		p := filepath.Join(dir, fmt.Sprintf("bundle%d%d", from, to))
		_, err := delta.ComputeFile(context.Background(), oims[from], oims[to], p, delta.Options{TempDir: dir, PartSize: 16 << 10})
		mustT(t, err)
		b, err := os.ReadFile(p)
		mustT(t, err)
		return b
	}
	b12, b23 := bundle(0, 1), bundle(1, 2)

	v := newE2EVehicle(t, filepath.Join(dir, "vehicle"), ims[0])
	codec, err := protocol.NewCodec(1024)
	mustT(t, err)
	ver, err := protocol.NewReturnVerifier(testVehicle, protocol.MACKey{ID: 1, Key: bytes.Repeat([]byte{9}, 32)})
	mustT(t, err)
	gconn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	mustT(t, err)
	defer gconn.Close()
	g := &groundStation{t: t, conn: gconn, codec: codec, ver: ver, ground: e2eKey(1), release: e2eKey(2),
		tlm: map[uint16]*protocol.Telemetry{}, chunks: map[uint64]int{}}

	boot := 0
	// start opens the vehicle's UDP link, a relay in front of it, and Run.
	start := func() (context.CancelFunc, chan error) {
		boot++
		l, err := link.Open(link.Config{Name: "sband", Kind: "udp", Listen: "127.0.0.1:0", MaxFrame: 1024})
		mustT(t, err)
		addr := l.(interface{ Addr() net.Addr }).Addr().(*net.UDPAddr)
		g.relay = newLossyRelay(t, addr, rand.New(rand.NewPCG(rng.Uint64(), uint64(boot))), 0.1).addr()
		ctx, cancel := context.WithCancel(context.Background())
		return cancel, v.run(ctx, l, boot)
	}
	rebooted := func(done chan error) {
		t.Helper()
		select {
		case err := <-done:
			if !errors.Is(err, ErrRebooted) {
				t.Fatalf("Run: %v, want ErrRebooted", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("flightd did not reboot")
		}
	}

	// A plan for other hardware is refused before any bundle byte (its
	// bundle transfer is refused), with its reason in telemetry.
	cancel, done := start()
	g.transfer(update.TargetPlan(9), g.signedPlanFor(9, 2, "obc-rev-x", oims[1], b12), 30*time.Second)
	if err := g.transferErr(update.TargetBundle(9), b12, 30*time.Second); !errors.Is(err, transfer.ErrRefused) {
		t.Fatalf("bundle of a plan for other hardware: %v, want refused", err)
	}
	g.waitHK(dict.HKCounters, "a wrong_hardware refusal", func(v dict.Values) bool {
		for i := 1; i <= dict.TopDrops; i++ {
			if v[fmt.Sprintf("drop%d_reason", i)] == uint64(dict.CodeWrongHardware) && v[fmt.Sprintf("drop%d_count", i)] == uint64(1) {
				return true
			}
		}
		return false
	}, 30*time.Second)

	// First update: v1 (A) -> v2 (B), delta against the booted slot.
	// The vehicle's uplink storage while it receives and installs
	// (storage.dir: staging and scratch besides the journal) is sampled at
	// every turn of the ground: the plan and the bundle and bounded
	// scratch, never a copy of the old image. (The slots' state directory
	// also keeps each slot's pristine /etc, for the /etc merge: that is
	// slots' policy, docs/slots.md, not an image copy.)
	var peak int64
	g.tick = func() { peak = max(peak, dirSizeExcept(v.cfg.StorageDir(), "journal.db")) }
	plan1 := g.signedPlan(1, 2, oims[1], b12)
	g.transfer(update.TargetPlan(1), plan1, 30*time.Second)
	g.transfer(update.TargetBundle(1), b12, 60*time.Second)
	installed := func(plan uint64) func(dict.Values) bool {
		return func(v dict.Values) bool { return v["plan_id"] == plan && v["state"] == uint64(5) }
	}
	g.waitHK(dict.HKTransfer, "plan 1 installed", installed(1), 60*time.Second)
	g.tick = nil
	var oldImage int64
	for _, tb := range ims[0].Tars {
		oldImage += int64(len(tb))
	}
	journal := dirSize(t, filepath.Join(v.cfg.StorageDir(), "journal.db"))
	t.Logf("installed; uplink storage peak %d bytes besides the %d-byte journal; plan %d bytes, bundle %d bytes, old image layers %d bytes", peak, journal, len(plan1), len(b12), oldImage)
	if limit := int64(len(plan1)+len(b12)) + 16<<10; peak > limit {
		t.Errorf("the vehicle stored %d bytes besides its journal while receiving and installing, over plan + bundle + 16 KiB (%d): a copy of the old image?", peak, limit)
	}
	if r := g.command("activate", dict.Values{"slot": "b", "attempts": uint64(3)}, 20*time.Second); r.Stage != protocol.StageCompleted && !ranBefore(r) {
		t.Fatalf("activate: %v %s", r.Stage, dict.EnumReason.NameOf(uint64(r.Code)))
	}
	g.command("reboot", nil, 5*time.Second)
	rebooted(done)
	cancel()
	if s := v.reboot(); s != slots.B {
		t.Fatalf("booted %s after activation, want B", s)
	}

	// Trial boot of B: healthy, marked good. The vehicle's UDP listener
	// answers once it hears the ground: the events of the start come
	// after the first command.
	cancel, done = start()
	g.waitHK(dict.HKBoot, "B marked good", func(v dict.Values) bool {
		return v["booted_slot"] == uint64(2) && v["last_outcome"] == uint64(2) && v["trial"] == false
	}, 30*time.Second)

	// Second update: v2 (B) -> v3 (A), whose health check fails.
	g.transfer(update.TargetPlan(2), g.signedPlan(2, 3, oims[2], b23), 30*time.Second)
	g.transfer(update.TargetBundle(2), b23, 60*time.Second)
	g.waitHK(dict.HKTransfer, "plan 2 installed", installed(2), 60*time.Second)
	if r := g.command("activate", dict.Values{"slot": "a", "attempts": uint64(3)}, 20*time.Second); r.Stage != protocol.StageCompleted && !ranBefore(r) {
		t.Fatalf("activate: %v %s", r.Stage, dict.EnumReason.NameOf(uint64(r.Code)))
	}
	g.command("reboot", nil, 5*time.Second)
	rebooted(done)
	cancel()
	v.mu.Lock()
	v.unhealthy[slots.A] = true
	v.mu.Unlock()
	if s := v.reboot(); s != slots.A {
		t.Fatalf("booted %s after the second activation, want A", s)
	}
	// The trial of A fails its health check: flightd records A bad and
	// reboots at once, before the ground is heard.
	cancel, done = start()
	rebooted(done)
	cancel()
	if s := v.reboot(); s != slots.B {
		t.Fatalf("booted %s after the rollback, want B", s)
	}
	cancel, done = start()
	defer func() { cancel(); <-done }()
	g.waitHK(dict.HKBoot, "booted B, rolled back", func(v dict.Values) bool {
		return v["booted_slot"] == uint64(2) && v["last_outcome"] == uint64(3)
	}, 30*time.Second)
	g.waitHK(dict.HKSlots, "A bad, B good at version 2", func(v dict.Values) bool {
		return v["slot_a_state"] == uint64(5) && v["slot_b_state"] == uint64(4) && v["slot_b_version"] == uint64(2)
	}, 30*time.Second)
}
