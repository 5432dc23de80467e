//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/flightd"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/groundd/images"
	hillink "github.com/bootorbit/bootorbit/hil/link"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	plink "github.com/bootorbit/bootorbit/protocol/link"
	"github.com/bootorbit/bootorbit/protocol/linksim"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
)

// TestFlightdEndToEnd is issue 12's end to end with both real daemons:
// groundd's Daemon running its own loop on the wall clock behind the real
// API, and flightd's Run with directory slots, a GRUB environment and the
// bootloader model playing the board's reboots, talking over UDP on
// loopback through hil/link's emulator (random loss both ways, passes of
// a compressed orbit: the station's link signals follow the emulator's
// link state). The operator queues a multi-layer image with `groundd queue
// add` and follows it with `groundd queue show --watch`, which rides
// through a restart of groundd in the middle of the bundle; after the
// restart no chunk the vehicle had reported holding is sent again (a tap
// between groundd and the emulator reads every frame). The watch ends with
// the slots from the vehicle's telemetry (slot B holds the new version);
// then `groundd cmd` activates slot B and reboots the vehicle, which boots
// B on trial, passes its health check and marks it good, as `groundd
// vehicles` shows. -long: larger images, more loss, three restarts.
func TestFlightdEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end over UDP with both daemons")
	}
	rng := testrand.New(t)
	long := testrand.Long()
	dir := t.TempDir()
	gen, extra, loss, restarts := ocitest.GenOptions{Layers: 3, Files: 10, MaxFileSize: 12 << 10}, ocitest.GenOptions{Layers: 1, Files: 20, MaxFileSize: 24 << 10}, 0.08, 2
	if long {
		gen, extra, loss, restarts = ocitest.GenOptions{Layers: 4, Files: 40, MaxFileSize: 48 << 10}, ocitest.GenOptions{Layers: 1, Files: 40, MaxFileSize: 64 << 10}, 0.15, 4
	}

	// The images: v1 runs on the vehicle; v2 changes some files and adds a
	// layer (reuse, delta and full data in one plan).
	layout := filepath.Join(dir, "images")
	l1 := ocitest.RandomLayers(rng, gen)
	l2, changes := ocitest.Modify(rng, l1, ocitest.ModifyOptions{})
	l2 = append(l2, ocitest.RandomLayers(rng, extra)...)
	t.Logf("v2: %v and a new layer", changes)
	v1 := ocitest.Build(t, layout, "os-1", l1)
	v2 := ocitest.Build(t, layout, "os-2", l2)

	// Keys: the release key as groundd keygen writes it, the images signed
	// beside themselves as groundd sign does; the ground key; the
	// vehicle's return-link MAC key.
	kf, err := images.GenerateKey(filepath.Join(dir, "release"), 5, bytes.NewReader(bytes.Repeat([]byte{0x52}, 64)))
	must(t, err)
	_, relPriv, err := images.ReadPrivateKey(kf.Private)
	must(t, err)
	for i, im := range []ocitest.Image{v1, v2} {
		r, err := images.ParseRef(im.Ref.String())
		must(t, err)
		_, _, err = images.Sign(context.Background(), r, images.Options{}, 5, relPriv, uint64(i+1), "obc-rev-c")
		must(t, err)
	}
	groundSeed := bytes.Repeat([]byte{0x47}, 32)
	mac := bytes.Repeat([]byte{0x4d}, protocol.MACKeyLen)
	writeHex := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte(hex.EncodeToString(b)+"\n"), mode))
		return p
	}

	veh := newBoard(t, filepath.Join(dir, "vehicle"), v1, boardKeys{
		ground:  writeHex("flight-ground.pub", ed25519.NewKeyFromSeed(groundSeed).Public().(ed25519.PublicKey), 0o644),
		release: writeHex("flight-release.pub", relPriv.Public().(ed25519.PublicKey), 0o644),
		mac:     writeHex("vehicle.mac", mac, 0o600),
	})

	// The link: the emulator between the tap (the ground side) and
	// flightd. 48-minute passes every 96 minutes, 1920 times faster: up
	// 1.5 s of every 3 s.
	spec := hillink.Spec{Name: "e2e",
		Forward:  hillink.Channel{Channel: linksim.Channel{Rate: 256e3, Delay: 5 * time.Millisecond, Loss: loss}, Queue: 64 << 10},
		Return:   hillink.Channel{Channel: linksim.Channel{Rate: 256e3, Delay: 5 * time.Millisecond, Loss: loss}, Queue: 64 << 10},
		Schedule: linksim.Schedule{PassPeriod: 96 * time.Minute, PassUp: 48 * time.Minute}, TimeScale: 1920}
	tap := newTap(t)
	emu, err := hillink.New(hillink.Config{Spec: spec, Seed: rng.Uint64(), A: tap.addr().String(), B: veh.addr})
	must(t, err)
	t.Logf("link: emulator seed %d, loss %.2f each way, passes of %v every %v", emu.Seed(), loss,
		time.Duration(float64(spec.Schedule.PassUp)/spec.TimeScale), time.Duration(float64(spec.Schedule.PassPeriod)/spec.TimeScale))
	tap.emu = net.UDPAddrFromAddrPort(emu.AddrA())

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	emuDone := make(chan error, 1)
	go func() { emuDone <- emu.Run(ctx) }()
	defer func() { cancel(); <-emuDone }()
	vehDone := veh.start(ctx)

	// groundd: the config an operator writes, the real API in front.
	cfg := groundd.Config{
		StateDir: filepath.Join(dir, "ground"), GroundKey: writeHex("ground.key", groundSeed, 0o600), GroundKeyID: 3, MaxFrame: 1024,
		ReleaseKeys: kf.Public,
		Vehicles: []groundd.VehicleConfig{{ID: 7, Name: "sat-7", HardwareID: "obc-rev-c",
			MACKey: groundd.KeyRef{ID: 1, File: filepath.Join(dir, "vehicle.mac")},
			Link:   groundd.LinkConfig{Kind: "udp", Listen: "127.0.0.1:0", Peer: tap.addr().String()},
			Rate:   200e3, RTT: groundd.Duration(50 * time.Millisecond)}},
	}
	g := &ground{t: t, cfg: cfg, emu: emu, unavailable: make(chan struct{}, 1)}
	g.start(ctx)
	defer g.stop()
	_, err = g.daemon().RegisterImage(ctx, v1.Ref.String())
	must(t, err)
	hs := httptest.NewServer(g)
	defer hs.Close()
	go g.followLink(ctx)

	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := commands.Execute(ctx, append(args, "--server", hs.URL), &out, &errb)
		return code, out.String(), errb.String()
	}
	// The operator's commands through the API. A command lost on the
	// lossy link times out at the ground (groundd does not resend one by
	// itself), so the operator sends it again.
	command := func(what string, args ...string) string {
		t.Helper()
		for try := 1; ; try++ {
			code, out, errOut := run(append([]string{"cmd", "7"}, append(args, "--wait", "4s")...)...)
			if code == 0 {
				t.Logf("groundd cmd 7 %s:\n%s", strings.Join(args, " "), out)
				return out
			}
			if try == 8 || ctx.Err() != nil {
				t.Fatalf("%s: exit %d\n%s%s", what, code, out, errOut)
			}
			t.Logf("%s: try %d: exit %d (%s), again", what, try, code, strings.TrimSpace(errOut))
		}
	}
	// First the vehicle's status, so that groundd knows its slots: it
	// asks by itself too, but only every 30 s if that is lost.
	// (Its housekeeping may still be lost on the way: groundd asks again.)
	command("status", "status")
	_, out, _ := run("vehicles")
	t.Logf("groundd vehicles:\n%s", out)
	code, out, errOut := run("queue", "add", "--vehicle", "7", "--image", v2.Ref.String())
	if code != 0 || !strings.Contains(out, "uplink 1 queued") {
		t.Fatalf("queue add: exit %d\n%s%s", code, out, errOut)
	}
	type result struct {
		code     int
		out, err string
	}
	watched := make(chan result, 1)
	go func() {
		code, out, errOut := run("queue", "show", "1", "--watch", "--interval", "500ms")
		watched <- result{code, out, errOut}
	}()

	// Restart groundd first when it has sent 40% of the bundle's chunks
	// (in the middle of the stream, whatever the vehicle said so far),
	// then each time the vehicle has reported holding more of the bundle
	// than at the last restart, but not all of it, by groundd's own
	// account (its transfers view): the report reached it, so the next
	// groundd must not send those chunks again. The tap tells of every
	// frame. (The vehicle reports when the sender asks, at the end of a
	// round or when a new sender resumes, and at least every 5 s while
	// chunks arrive.)
	last := 0
	var r result
	ended := false
restarting:
	for k := 1; k <= restarts; k++ {
		for {
			select {
			case <-tap.frames:
			case r = <-watched:
				if k == 1 {
					t.Fatalf("the watch ended before the first restart: exit %d\n%s%s", r.code, r.out, r.err)
				}
				// The vehicle reported the rest at once: no partial
				// report left to restart on.
				t.Logf("the uplink ended before restart %d", k)
				ended = true
				break restarting
			case <-ctx.Done():
				t.Fatalf("restart %d: no new report of the bundle", k)
			}
			ts, err := g.daemon().UplinkTransfers(ctx, 1)
			must(t, err)
			var b *groundd.Transfer
			for i := range ts {
				if ts[i].Kind == "bundle" {
					b = &ts[i]
				}
			}
			if b == nil || b.Done {
				continue
			}
			total := int64(b.Total)
			if total == 0 {
				total = int64(b.Size) / 960 // about the chunks of 1024-byte frames
			}
			if k == 1 && float64(b.Sent) >= 0.4*float64(total) || k > 1 && b.Chunks > last && b.Chunks < b.Total {
				t.Logf("restart %d of groundd: it sent %d chunks of bundle %d; the vehicle reported %d/%d, %d bytes left, passes remaining %d",
					k, b.Sent, b.ID, b.Chunks, b.Total, b.Remaining, b.Passes)
				last = b.Chunks
				break
			}
		}
		select { // a 503 of the last restart, not seen yet
		case <-g.unavailable:
		default:
		}
		g.stop()
		tap.restarted()
		// The API answers 503 until the watch has seen it, so that the
		// watch is shown to ride through the restart.
		select {
		case <-g.unavailable:
		case <-ctx.Done():
		}
		g.start(ctx)
	}

	// The watch ends with the uplink done and the slots from telemetry.
	if !ended {
		select {
		case r = <-watched:
		case <-ctx.Done():
			t.Fatal("the uplink did not end")
		}
	}
	t.Logf("groundd queue show 1 --watch:\n%s", r.out)
	t.Logf("its stderr:\n%s", r.err)
	if r.code != 0 {
		t.Fatalf("queue show --watch: exit %d: %s", r.code, r.err)
	}
	short := v2.ManifestDigest.Encoded()[:16]
	contains(t, "queue show --watch", r.out, "uplink 1 vehicle 7 plan", "uplink 1 vehicle 7 bundle", "passes remaining",
		"(100%), done", "uplink 1 done\nvehicle 7 slots: a ")
	// Slot B holds the new image; its version shows once flightd's
	// housekeeping carries it (a round right after the install may show
	// the slot written before its release is recorded).
	if !regexp.MustCompile(`; b written (v2 )?` + short + `\n`).MatchString(r.out) {
		t.Errorf("queue show --watch does not end with slot B holding v2 %s", short)
	}
	contains(t, "queue show --watch's stderr", r.err, "server unavailable", "retrying", "server back")
	c := tap.counts()
	t.Logf("chunks sent: %d in all, %d after a restart; sent although the vehicle had reported holding them: %d after a restart, %d in all; chunks reported held at the restarts: %v",
		c.sent, c.sentAfter, c.resentAfter, c.resentHeld, c.heldAtRestart)
	if c.sentAfter == 0 {
		t.Error("no chunk sent after a restart: the restart was not in the middle of the transfer")
	}
	if c.resentAfter != 0 || c.resentHeld != 0 {
		t.Errorf("chunks the vehicle had reported holding were sent again: %d after a restart, %d in all", c.resentAfter, c.resentHeld)
	}

	// Activate slot B and reboot.
	command("activate slot B", "activate", "slot=b", "attempts=3")
	// The reboot: flightd ends Run once it has reported the command, then
	// the board's bootloader picks B.
	rebooted := false
	for try := 1; !rebooted; try++ {
		code, out, errOut := run("cmd", "7", "reboot", "--wait", "4s")
		t.Logf("groundd cmd 7 reboot: exit %d\n%s%s", code, out, errOut)
		ran := func(err error) {
			if !errors.Is(err, flightd.ErrRebooted) {
				t.Fatalf("flightd Run: %v, want ErrRebooted", err)
			}
			rebooted = true
		}
		if code == 0 { // it ran: Run ends right after it reported
			select {
			case err := <-vehDone:
				ran(err)
			case <-time.After(30 * time.Second):
				t.Fatal("the reboot completed, but flightd's Run did not end")
			}
			continue
		}
		select { // exit 1: the command or its report was lost; did it run?
		case err := <-vehDone:
			ran(err)
		default:
			if try == 8 {
				t.Fatal("the vehicle never rebooted")
			}
		}
	}
	if s := veh.reboot(); s != slots.B {
		t.Fatalf("the bootloader booted %s, want B", s)
	}
	vehDone = veh.start(ctx)
	// The vehicle talks once it hears the ground: a status command, until
	// its housekeeping shows B booted and good.
	var vj groundd.Vehicle
	for try := 1; ; try++ {
		command("status", "status")
		_, out, _ := run("vehicles", "7", "--json")
		must(t, json.Unmarshal([]byte(out), &vj))
		if vj.BootedSlot == "b" && slotState(vj, "b") == "good" {
			break
		}
		if try == 8 {
			t.Fatalf("the vehicle never showed B booted and good: %s", out)
		}
	}
	_, out, _ = run("vehicles")
	t.Logf("groundd vehicles:\n%s", out)
	contains(t, "vehicles", out, "sat-7", " b ", "good v2 "+short)
	// The telemetry archive: housekeeping comes every second while the
	// link is up (events may be lost on the way, packets come again).
	_, out, _ = run("tlm", "7", "--name", "hk.boot", "--limit", "10000")
	contains(t, "tlm", out, "hk.boot")
	// The traffic of the last groundd, for the dashboards.
	resp, err := http.Get(hs.URL + "/metrics")
	must(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(t, err)
	for _, series := range []string{`groundd_vehicle_frames_sent_total{vehicle="7"}`, `groundd_vehicle_frames_received_total{vehicle="7"}`,
		`groundd_vehicle_passes_total{vehicle="7"}`, `groundd_queue_uplinks{state="done"} 1`} {
		if !strings.Contains(string(body), series) {
			t.Errorf("metrics lack %s", series)
		}
	}
	cancel()
	if err := <-vehDone; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("flightd: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func slotState(v groundd.Vehicle, name string) string {
	for _, s := range v.Slots {
		if s.Name == name {
			return s.State
		}
	}
	return ""
}

// ground is groundd as an operator runs it, restartable: a Daemon on the
// state directory, its Run loop and the API, which answers 503 while the
// daemon restarts (as a server that is down would fail).
type ground struct {
	t   *testing.T
	cfg groundd.Config
	emu *hillink.Emulator

	// unavailable is told when the API answered 503 (restarting).
	unavailable chan struct{}

	mu      sync.Mutex
	d       *groundd.Daemon
	handler http.Handler
	cancel  context.CancelFunc
	ran     chan error
}

func (g *ground) daemon() *groundd.Daemon {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.d
}

func (g *ground) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	h := g.handler
	g.mu.Unlock()
	if h == nil {
		http.Error(w, `{"error": {"code": "unavailable", "message": "restarting"}}`, http.StatusServiceUnavailable)
		select {
		case g.unavailable <- struct{}{}:
		default:
		}
		return
	}
	h.ServeHTTP(w, r)
}

func (g *ground) start(ctx context.Context) {
	g.t.Helper()
	d, err := groundd.Open(g.cfg, groundd.Options{Log: slog.New(slog.NewTextHandler(testLog{g.t}, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	must(g.t, err)
	srv, err := api.New(d, api.Config{})
	must(g.t, err)
	st := g.emu.Up()
	d.SetLink(7, st.Forward && st.Return)
	rctx, cancel := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- d.Run(rctx, nil) }()
	g.mu.Lock()
	g.d, g.handler, g.cancel, g.ran = d, srv, cancel, ran
	g.mu.Unlock()
}

// stop ends Run and closes the daemon: what a restart loses, it loses.
func (g *ground) stop() {
	g.mu.Lock()
	d, cancel, ran := g.d, g.cancel, g.ran
	g.d, g.handler, g.cancel = nil, nil, nil
	g.mu.Unlock()
	if d == nil {
		return
	}
	cancel()
	if err := <-ran; err != nil {
		g.t.Errorf("groundd Run: %v", err)
	}
	must(g.t, d.Close())
}

// followLink gives the station's link signals to groundd: up while the
// emulated link is up both ways.
func (g *ground) followLink(ctx context.Context) {
	states, stop := g.emu.Subscribe()
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case st, ok := <-states:
			if !ok {
				return
			}
			g.mu.Lock()
			if g.d != nil {
				g.d.SetLink(7, st.Forward && st.Return)
			}
			g.mu.Unlock()
		}
	}
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// tap sits between groundd and the emulator's ground side and reads every
// frame: the chunks groundd sends, and what the vehicle's reports say it
// holds.
type tap struct {
	t      *testing.T
	conn   *net.UDPConn
	emu    *net.UDPAddr
	codec  *protocol.Codec
	frames chan struct{}

	mu     sync.Mutex
	ground *net.UDPAddr
	// held: every chunk a report that passed the tap said the vehicle
	// holds; atRestart: held at the last restart of groundd.
	held, atRestart map[[2]uint64]bool
	c               tapCounts
	closed          atomic.Bool
}

type tapCounts struct {
	sent, sentAfter int // chunks groundd sent, in all and after a restart
	// resentHeld: chunks sent that a report which passed before said the
	// vehicle held; resentAfter: chunks sent after a restart that the
	// vehicle had reported holding before it.
	resentHeld, resentAfter int
	heldAtRestart           []int
}

func newTap(t *testing.T) *tap {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	codec, err := protocol.NewCodec(1024)
	must(t, err)
	p := &tap{t: t, conn: c, codec: codec, frames: make(chan struct{}, 1), held: map[[2]uint64]bool{}}
	go p.run()
	t.Cleanup(func() { p.closed.Store(true); c.Close() })
	return p
}

func (p *tap) addr() *net.UDPAddr { return p.conn.LocalAddr().(*net.UDPAddr) }

func (p *tap) run() {
	buf := make([]byte, 65536)
	for {
		n, from, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			if p.closed.Load() {
				return
			}
			continue
		}
		m, _ := p.codec.Decode(buf[:n])
		p.mu.Lock()
		var to *net.UDPAddr
		if from.AddrPort() == p.emu.AddrPort() {
			to = p.ground
			if r, ok := m.(*protocol.Report); ok && to != nil {
				for i := range heldChunks(r) {
					p.held[[2]uint64{r.ID, uint64(i)}] = true
				}
			}
		} else {
			p.ground, to = from, p.emu
			if c, ok := m.(*protocol.Chunk); ok {
				k := [2]uint64{c.ID, uint64(c.Index)}
				p.c.sent++
				if p.held[k] {
					p.c.resentHeld++
				}
				if len(p.c.heldAtRestart) > 0 {
					p.c.sentAfter++
					if p.atRestart[k] {
						p.c.resentAfter++
					}
				}
			}
		}
		p.mu.Unlock()
		select {
		case p.frames <- struct{}{}:
		default:
		}
		if to != nil {
			p.conn.WriteToUDP(buf[:n], to)
		}
	}
}

// restarted marks a restart of groundd: what the vehicle reported until
// now must not be sent again.
func (p *tap) restarted() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.atRestart = map[[2]uint64]bool{}
	for k := range p.held {
		p.atRestart[k] = true
	}
	p.c.heldAtRestart = append(p.c.heldAtRestart, len(p.atRestart))
}

func (p *tap) counts() tapCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c
}

// heldChunks returns the chunks a report says the vehicle journaled.
func heldChunks(r *protocol.Report) map[uint32]bool {
	h := map[uint32]bool{}
	for i := uint32(0); i < r.Watermark; i++ {
		h[i] = true
	}
	missing := map[uint32]bool{}
	r.Ranges(func(s, e uint32) {
		for i := s; i < e; i++ {
			missing[i] = true
		}
	})
	for i := r.Cursor; i < r.End; i++ {
		if !missing[i] {
			h[i] = true
		}
	}
	return h
}

// board is the vehicle: flightd's config, directory slots, a GRUB
// environment and the kernel command line the bootloader model writes.
type board struct {
	t       *testing.T
	dir     string
	addr    string // flightd's UDP address, the same across reboots
	cfg     *flightd.Config
	cmdline string
	env     *watchdog.GRUBEnv
	boots   int
}

type boardKeys struct{ ground, release, mac string }

func newBoard(t *testing.T, dir string, factory ocitest.Image, k boardKeys) *board {
	b := &board{t: t, dir: dir, cmdline: filepath.Join(dir, "cmdline")}
	for _, d := range []string{"a", "b", "state"} {
		must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	// The factory image in slot A, good; B empty; A boots.
	m, err := slots.Open(slots.Options{StateDir: filepath.Join(dir, "state"), Log: slog.New(slog.DiscardHandler),
		A: slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(dir, "a")}, B: slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(dir, "b")}})
	must(t, err)
	layers := make([]io.Reader, len(factory.Tars))
	for i, tb := range factory.Tars {
		layers[i] = bytes.NewReader(tb)
	}
	_, err = m.Install(context.Background(), slots.A, slots.Image{Label: string(factory.ManifestDigest), Layers: layers})
	must(t, err)
	must(t, m.MarkPending(slots.A))
	must(t, m.MarkGood(slots.A))
	b.env = &watchdog.GRUBEnv{Path: filepath.Join(dir, "grubenv")}
	blk, err := watchdog.NewGRUBBlock(1024)
	must(t, err)
	must(t, blk.Replace(watchdog.Vars{watchdog.VarBootOrder: "A", watchdog.LeftVar("A"): "3", watchdog.LeftVar("B"): "0"}))
	env, err := blk.Bytes()
	must(t, err)
	must(t, os.WriteFile(b.env.Path, env, 0o644))
	must(t, os.WriteFile(b.cmdline, []byte("rauc.slot=A\n"), 0o644))
	// A fixed address: the emulator sends to it across reboots.
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	b.addr = c.LocalAddr().String()
	c.Close()
	b.cfg = &flightd.Config{
		Vehicle: flightd.VehicleConfig{ID: 7, HardwareID: "obc-rev-c"},
		Links:   []flightd.LinkConfig{{Name: "sband", Kind: "udp", Listen: b.addr, MaxFrame: 1024}},
		Keys: flightd.KeysConfig{Release: []flightd.KeyFile{{ID: 5, File: k.release}},
			Ground:  []flightd.KeyFile{{ID: 3, File: k.ground}},
			Vehicle: &flightd.KeyFile{ID: 1, File: k.mac}},
		Slots: flightd.SlotsConfig{StateDir: filepath.Join(dir, "state"), Cmdline: b.cmdline,
			A: flightd.SlotConfig{Backend: "dir", Path: filepath.Join(dir, "a")}, B: flightd.SlotConfig{Backend: "dir", Path: filepath.Join(dir, "b")}},
		Boot:      flightd.BootConfig{GRUBEnv: b.env.Path, Attempts: 3},
		Health:    flightd.HealthConfig{Checks: []flightd.HealthCheck{{Name: "payload", Command: []string{"/bin/true"}}}},
		Storage:   flightd.StorageConfig{Quota: 64 << 20},
		Telemetry: flightd.TelemetryConfig{Period: flightd.Duration(time.Second)},
	}
	must(t, b.cfg.ValidateRun())
	return b
}

// start runs flightd until it reboots or ctx ends.
func (b *board) start(ctx context.Context) chan error {
	b.t.Helper()
	b.boots++
	l, err := plink.Open(plink.Config{Name: "sband", Kind: "udp", Listen: b.addr, MaxFrame: 1024})
	must(b.t, err)
	opt := flightd.Options{
		Log: slog.New(slog.DiscardHandler), Links: []flightd.Link{l}, BootID: fmt.Sprintf("boot-%d", b.boots),
		Reboot:   func(context.Context) error { return nil },
		RunCheck: func(context.Context, flightd.HealthCheck) error { return nil },
	}
	done := make(chan error, 1)
	go func() {
		err := flightd.Run(ctx, b.cfg, opt)
		l.Close()
		done <- err
	}()
	return done
}

// reboot plays the bootloader: its decision becomes the command line.
func (b *board) reboot() slots.SlotID {
	dec, err := watchdog.BootloaderModel{Attempts: 3}.Boot(b.env)
	must(b.t, err)
	if dec.Reset {
		b.t.Fatal("the bootloader found no slot to boot")
	}
	must(b.t, os.WriteFile(b.cmdline, []byte("console=ttyS0 "+dec.Cmdline()+"\n"), 0o644))
	return slots.SlotID(dec.Slot)
}
