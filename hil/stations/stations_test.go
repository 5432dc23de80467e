package stations_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	gimages "github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/groundd/images/imagestest"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/groundd/store/etcdtest"
	"github.com/bootorbit/bootorbit/hil/board"
	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/bootorbit/bootorbit/hil/link"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/internal/testtool"
	"github.com/bootorbit/bootorbit/protocol"
	plink "github.com/bootorbit/bootorbit/protocol/link"
	"github.com/bootorbit/bootorbit/protocol/linksim"
)

const (
	vehicleID   = 7
	hardware    = "obc-stations"
	groundKeyID = 1
	macKeyID    = 1
	maxFrame    = 512
	// lease is the stations' lease (etcd's minimum is about a second and
	// a half with etcdtest's timing).
	lease = 2 * time.Second
	// delay is each link's one-way delay.
	delay = 20 * time.Millisecond
	// dataTime is the link time the bundle needs at the links' rate, which
	// the test derives from the bundle's size: longer than the passes
	// before the last fault, so that every fault finds data left to send.
	dataTime = 12 * time.Second
	// grace: a chunk that reaches the vehicle this long after the vehicle
	// reported it journaled was sent again knowingly (not merely in
	// flight while the report travelled).
	grace = time.Second
	// imageSize is the base image's size: its update's delta bundle is
	// a few hundred chunks.
	imageSize = 4 << 20
)

// pass is a station's pass: its link is up in [from, to) of the run.
type pass struct {
	station  int
	from, to time.Duration
}

// timeline is the run's passes and faults, as offsets from the start of
// the links' schedules.
type timeline struct {
	passes []pass
	// overlap are the windows in which two stations see the vehicle and
	// neither is cut off: only one may transmit.
	overlap  [][2]time.Duration
	killAt   time.Duration // the transmitting station is killed
	memberAt time.Duration // an etcd member is killed (-long; 0: not)
	cutAt    time.Duration // the transmitting station is cut off from etcd
	end      time.Duration
}

// schedule returns the passes of the run (2.5 s each, 0.3 s apart): they
// alternate between the stations; two stations see the vehicle at once in
// pass 1; station 0's second pass ends with its death; in pass 4 station 2,
// then also station 1, see the vehicle, and the holder is cut off from
// etcd; after it, the two stations share passes until the uplink
// completes. The faults come at fixed times, the links' rate makes sure
// that data is left to send at each (dataTime).
func schedule(long bool) timeline {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tl := timeline{
		passes: []pass{
			{0, 0, ms(2500)},
			{1, ms(2800), ms(5300)},
			{2, ms(2800), ms(5300)},
			{0, ms(5600), ms(8100)},
			{1, ms(8400), ms(10900)},
			{2, ms(11200), ms(15200)},
			{1, ms(11700), ms(15200)},
		},
		overlap: [][2]time.Duration{{ms(2800), ms(5300)}},
		killAt:  ms(6800),
		cutAt:   ms(12700),
	}
	if long {
		tl.memberAt = ms(9000)
	}
	at := ms(15500)
	for range 8 {
		tl.passes = append(tl.passes, pass{1, at, at + ms(2500)}, pass{2, at, at + ms(2500)})
		at += ms(2800)
	}
	tl.end = at
	return tl
}

// spec is station i's link: the rate both ways, and outages announced
// everywhere outside its passes.
func (tl timeline) spec(i int, rate float64) link.Spec {
	ch := link.Channel{Channel: linksim.Channel{Rate: rate, Delay: delay, MaxFrame: maxFrame}}
	sp := link.Spec{Name: fmt.Sprintf("station-%d", i), Forward: ch, Return: ch}
	var down []linksim.Window
	at := time.Duration(0)
	for _, p := range tl.passes {
		if p.station != i {
			continue
		}
		if p.from > at {
			down = append(down, linksim.Window{Start: at, End: p.from})
		}
		at = p.to
	}
	down = append(down, linksim.Window{Start: at, End: at + 24*time.Hour})
	sp.Schedule.ForwardOutages, sp.Schedule.ReturnOutages = down, down
	return sp
}

type chunkKey struct {
	id  uint64
	idx uint32
}

// held returns the chunks r says the vehicle holds durably.
func held(r *protocol.Report) []uint32 {
	missing := map[uint32]bool{}
	r.Ranges(func(s, e uint32) {
		for i := s; i < e; i++ {
			missing[i] = true
		}
	})
	var h []uint32
	for i := uint32(0); i < r.Watermark; i++ {
		h = append(h, i)
	}
	for i := max(r.Cursor, r.Watermark); i < r.End; i++ {
		if !missing[i] {
			h = append(h, i)
		}
	}
	return h
}

// antenna is the vehicle's radio: flightd's frames go into every
// station's link, and what any link delivers goes to flightd. It sees
// both directions, so it measures from the vehicle's side: the chunks the
// vehicle reported journaled, and the chunks that reached it again.
type antenna struct {
	conn  *net.UDPConn
	board netip.AddrPort
	links []netip.AddrPort
	codec *protocol.Codec

	mu sync.Mutex
	// journaled is when the vehicle first reported each chunk journaled.
	journaled map[chunkKey]time.Time
	delivered map[chunkKey]int
	// chunks counts chunk frames delivered to the vehicle; again those
	// delivered more than once, late those delivered more than grace
	// after the vehicle reported them journaled.
	chunks, again, late int
	reports             int
	kinds               map[string]int
}

func newAntenna(t *testing.T, codec *protocol.Codec) *antenna {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &antenna{conn: c, codec: codec, journaled: map[chunkKey]time.Time{}, delivered: map[chunkKey]int{}, kinds: map[string]int{}}
}

func (a *antenna) addr() netip.AddrPort { return a.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// run relays until the socket closes. a.board and a.links are set before.
func (a *antenna) run() {
	buf := make([]byte, 1<<16)
	for {
		n, from, err := a.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		f := buf[:n]
		now := time.Now()
		if from == a.board {
			a.heard(now, f)
			for _, l := range a.links {
				a.conn.WriteToUDPAddrPort(f, l)
			}
			continue
		}
		a.received(now, f)
		a.conn.WriteToUDPAddrPort(f, a.board)
	}
}

// heard notes a frame the vehicle sent: its transfer reports.
func (a *antenna) heard(now time.Time, f []byte) {
	m, err := a.codec.Decode(f)
	if err != nil {
		return
	}
	r, ok := m.(*protocol.Report)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reports++
	for _, i := range held(r) {
		k := chunkKey{r.ID, i}
		if _, ok := a.journaled[k]; !ok {
			a.journaled[k] = now
		}
	}
}

// received notes a frame delivered to the vehicle: its chunks.
func (a *antenna) received(now time.Time, f []byte) {
	m, err := a.codec.Decode(f)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.kinds[strings.TrimPrefix(fmt.Sprintf("%T", m), "*protocol.")]++
	c, ok := m.(*protocol.Chunk)
	if !ok {
		return
	}
	k := chunkKey{c.ID, c.Index}
	a.chunks++
	a.delivered[k]++
	if a.delivered[k] > 1 {
		a.again++
	}
	if at, ok := a.journaled[k]; ok && now.Sub(at) > grace {
		a.late++
	}
}

// station is one groundd station under test with its link.
type station struct {
	i      int
	name   string
	cfg    groundd.Config
	st     *store.Etcd
	d      *groundd.Daemon
	emu    *link.Emulator
	gl     plink.Link
	stop   context.CancelFunc
	done   chan struct{}
	prox   []*etcdtest.Proxy
	logf   string
	killed bool
	cut    bool
	// fetches are the bundle fetches counted by the station's earlier
	// daemons (a killed one), by result.
	fetches map[string]uint64
	// runErr is set when the daemon's Run ended before the test stopped it.
	runErr error
}

// sample is the emulators' forward frame counts at a time.
type sample struct {
	at     time.Duration
	frames []int64
}

// TestStations: three groundd stations on a three-member etcd cluster and
// a real flightd behind one link emulator per station, passes alternating
// between the stations. The stations are separate: each its own state
// directory (bundle directory, image store); the images come from a
// registry (Debian's docker-registry on loopback), and so do the bundles:
// the station that plans pushes the plan and bundle as an artifact, and
// every other station fetches it by digest (its log and its
// groundd_vehicle_bundle_fetches_total counter say so). The uplink
// completes; no chunk the vehicle
// reported journaled reaches it again; every station (the killed one
// restarted, the cut one healed) shows the final slot status. Faults: two
// stations see the vehicle at once (only one transmits: frames counted at
// each emulator), the transmitting station is killed mid-pass (another
// finishes), the holder is cut off from etcd in the middle of the bundle
// while another station sees the vehicle too (its forward frames stop
// within its lease time of the cut; the other takes over), and with -long
// an etcd member is killed (nothing stops).
func TestStations(t *testing.T) {
	if testing.Short() {
		t.Skip("builds flightd, runs it, an etcd cluster and a registry")
	}
	long := testrand.Long()
	rng := testrand.New(t)
	begun := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()

	testtool.Need(t, "skopeo") // before anything starts
	regStart := time.Now()
	reg := imagestest.StartRegistry(t, imagestest.RegistryConfig{})
	regTook := time.Since(regStart)
	cluster := etcdtest.Start(t, 3)
	set, err := images.Generate(ctx, images.Options{Dir: filepath.Join(dir, "images"), Seed: rng.Uint64(), Hardware: hardware, Size: imageSize})
	if err != nil {
		t.Fatal(err)
	}
	// The images and their signatures go to the registry, as a release
	// pipeline pushes them: the stations pull them from there.
	repo := "docker://" + reg.Host + "/flight/os"
	pushStart := time.Now()
	for _, im := range []images.Image{set.Base, set.Update} {
		imagestest.SkopeoCopy(t, "oci:"+set.Layout+":"+gimages.SignatureTag(im.Manifest), repo+":"+gimages.SignatureTag(im.Manifest))
		imagestest.SkopeoCopy(t, "oci:"+set.Layout+":"+im.Tag, repo+":"+im.Tag)
	}
	baseRef, updateRef := repo+":"+set.Base.Tag, repo+":"+set.Update.Tag
	t.Logf("registry started in %v, images and signatures pushed in %v", regTook.Round(time.Millisecond), time.Since(pushStart).Round(time.Millisecond))
	bin, emu, err := board.Build(ctx, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	// Keys: the ground's plan key and the vehicle's MAC key.
	seed := make([]byte, ed25519.SeedSize)
	mac := make([]byte, protocol.MACKeyLen)
	for _, b := range [][]byte{seed, mac} {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	gkey := ed25519.NewKeyFromSeed(seed)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(hex.EncodeToString(b)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	groundKey, groundPub, macFile := write("ground.key", seed), write("ground.pub", gkey.Public().(ed25519.PublicKey)), write("vehicle.key", mac)
	codec, err := protocol.NewCodec(maxFrame)
	if err != nil {
		t.Fatal(err)
	}

	// The stations, on the cluster through proxies of their own (which
	// the test can cut), each with its own state directory (bundles,
	// image store), on one registry for the images and the bundles.
	stations := make([]*station, 3)
	openStation := func(s *station) {
		var eps []string
		for _, p := range s.prox {
			eps = append(eps, p.URL())
		}
		st, err := store.OpenEtcd(store.EtcdConfig{Endpoints: eps, RequestTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(s.logf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		log := slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
		d, err := groundd.Open(s.cfg, groundd.Options{Store: st, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		s.st, s.d = st, d
		t.Cleanup(func() { d.Close(); st.Close() })
	}
	for i := range stations {
		s := &station{i: i, name: fmt.Sprintf("station-%d", i), logf: filepath.Join(dir, fmt.Sprintf("station-%d.log", i))}
		for _, m := range cluster.Members {
			s.prox = append(s.prox, etcdtest.NewProxy(t, m.ClientURL))
		}
		stations[i] = s
	}
	defer func() {
		if t.Failed() {
			for _, s := range stations {
				t.Logf("%s's log, last lines:\n%s", s.name, tail(s.logf, 40))
			}
		}
	}()

	// The bundle's size sets the links' rate: dataTime of link time.
	base := groundd.Config{GroundKey: groundKey, GroundKeyID: groundKeyID, MaxFrame: maxFrame,
		ReleaseKeys: set.ReleasePub, Lease: groundd.Duration(lease),
		Registry: groundd.RegistryConfig{PlainHTTP: true}, Bundles: &groundd.BundlesConfig{Registry: reg.Host},
		Vehicles: []groundd.VehicleConfig{{ID: vehicleID, Name: "sat", HardwareID: hardware,
			MACKey: groundd.KeyRef{ID: macKeyID, File: macFile}, RTT: groundd.Duration(2*delay + 200*time.Millisecond)}}}
	stations[0].cfg = base
	stations[0].cfg.Station = stations[0].name
	stations[0].cfg.StateDir = filepath.Join(dir, stations[0].name)
	openStation(stations[0])
	d0 := stations[0].d
	if _, err := d0.RegisterImage(ctx, baseRef); err != nil {
		t.Fatal(err)
	}
	bi, err := d0.WriteBundle(ctx, groundd.BundleRequest{Vehicle: vehicleID, Image: updateRef, Base: baseRef}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rate := float64(bi.BundleSize) * 8 / dataTime.Seconds()
	tl := schedule(long)
	t.Logf("bundle %d bytes, links at %.0f bit/s, %d passes over %v", bi.BundleSize, rate, len(tl.passes), tl.end)

	// The board, the antenna, the links.
	ant := newAntenna(t, codec)
	brd, err := board.New(board.Config{Dir: filepath.Join(dir, "board"), Flightd: bin, Emulator: emu,
		Vehicle: vehicleID, Hardware: hardware, MaxFrame: maxFrame,
		GroundPub: groundPub, GroundKeyID: groundKeyID, ReleasePub: set.ReleasePub, ReleaseKeyID: set.KeyID, VehicleKey: macFile,
		Factory: set.Base, Output: mustCreate(t, filepath.Join(dir, "flightd.log"))})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("flightd's log, last lines:\n%s", tail(filepath.Join(dir, "flightd.log"), 30))
		}
	}()
	ant.board = netip.MustParseAddrPort(brd.Addr())
	brd.SetPeer(ant.addr().String())
	linkSeed := rng.Uint64()
	for i, s := range stations {
		s.emu, err = link.New(link.Config{Spec: tl.spec(i, rate), Seed: linkSeed + uint64(i), B: ant.addr().String()})
		if err != nil {
			t.Fatal(err)
		}
		ant.links = append(ant.links, s.emu.AddrB())
		if s.gl, err = plink.Open(plink.Config{Name: "radio", Kind: plink.KindUDP, Listen: "127.0.0.1:0", Peer: s.emu.AddrA().String(), MaxFrame: maxFrame}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.gl.Close() })
		s.cfg = base
		s.cfg.Station = s.name
		s.cfg.StateDir = filepath.Join(dir, s.name)
		s.cfg.Vehicles = []groundd.VehicleConfig{base.Vehicles[0]}
		s.cfg.Vehicles[0].Rate = rate
		s.cfg.Vehicles[0].Link = groundd.LinkConfig{Kind: "udp", Peer: s.emu.AddrA().String()}
	}
	go ant.run()
	// Station 0 reopens with its link's rate; the others open.
	stations[0].d.Close()
	stations[0].st.Close()
	for _, s := range stations {
		openStation(s)
	}

	u, err := stations[1].d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: updateRef})
	if err != nil {
		t.Fatal(err)
	}
	// A command queued at station-2's API goes out from whichever station
	// holds the vehicle first, once, and every station sees its result.
	cmd, err := stations[2].d.SendCommand(ctx, vehicleID, "noop", nil)
	if err != nil {
		t.Fatal(err)
	}

	go brd.Run(ctx)
	if err := brd.PowerOn(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "flightd petting its watchdog", 20*time.Second, brd.Petted)

	// Go: the links' schedules start now; each station follows its
	// link's announced state, as it would its pass predictions.
	start := time.Now()
	for _, s := range stations {
		go s.emu.Run(ctx)
	}
	for _, s := range stations {
		s.run(ctx)
	}
	since := func() time.Duration { return time.Since(start) }

	// The frame counter: every emulator's forward frames (offered by its
	// station), sampled.
	var (
		smu     sync.Mutex
		samples []sample
	)
	count := func() sample {
		sm := sample{at: since()}
		for _, s := range stations {
			sm.frames = append(sm.frames, s.emu.Stats().Forward.Frames)
		}
		return sm
	}
	samplerDone := make(chan struct{})
	sctx, stopSampler := context.WithCancel(ctx)
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			sm := count()
			smu.Lock()
			samples = append(samples, sm)
			smu.Unlock()
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	finalOK := func(s *station) bool {
		v, err := s.d.VehicleShow(ctx, vehicleID)
		if err != nil || len(v.Slots) != 2 || v.Slots[1].Manifest != set.Update.Manifest.String() || v.Slots[1].State != "written" {
			return false
		}
		x, err := s.d.QueueShow(ctx, u.ID)
		return err == nil && x.State == groundd.UplinkDone
	}
	done := func() bool {
		for _, s := range stations {
			if !s.killed && !s.cut && !finalOK(s) {
				return false
			}
		}
		return true
	}
	holder := func() int {
		for _, s := range stations {
			if s.killed || s.cut {
				continue
			}
			hs, err := s.d.Stations(ctx)
			if err != nil || len(hs) != 1 {
				continue
			}
			for _, h := range stations {
				if hs[0].Holder == h.name {
					return h.i
				}
			}
			return -1
		}
		return -1
	}
	// sending says whether station i's forward frames grew within d.
	sending := func(i int, d time.Duration) bool {
		smu.Lock()
		defer smu.Unlock()
		if len(samples) == 0 {
			return false
		}
		last := samples[len(samples)-1]
		for k := len(samples) - 1; k >= 0 && last.at-samples[k].at <= d; k-- {
			if samples[k].frames[i] < last.frames[i] {
				return true
			}
		}
		return false
	}
	var (
		killed, cut  = -1, -1
		cutAt        time.Duration
		memberKilled bool
	)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		now := since()
		if now > tl.end {
			x, _ := stations[2].d.QueueShow(ctx, u.ID)
			t.Fatalf("the uplink did not complete in %v: %s %s", tl.end, x.State, x.Error)
		}
		if killed < 0 && now >= tl.killAt {
			h := holder()
			if h < 0 {
				t.Fatalf("%v: nobody holds the vehicle to be killed", now)
			}
			killed = h
			ts, _ := stations[h].d.UplinkTransfers(ctx, u.ID)
			stations[h].kill()
			t.Logf("%v: killed %s, the holder (bundle: %d of %d chunks held by the vehicle)", now.Round(time.Millisecond), stations[h].name,
				bundle(ts).Chunks, bundle(ts).Total)
		}
		if tl.memberAt > 0 && !memberKilled && now >= tl.memberAt {
			cluster.Kill(1)
			memberKilled = true
			t.Logf("%v: etcd member m1 killed", now.Round(time.Millisecond))
		}
		if cut < 0 && now >= tl.cutAt {
			// The holder as etcd says, transmitting now (its frames grew
			// in the last half second): a holder that is not (its lease
			// given up but not yet expired, after the member kill) is
			// waited out, for a while.
			h := holder()
			if h >= 0 && !sending(h, 500*time.Millisecond) {
				h = -1
			}
			if h < 0 && now < tl.cutAt+3*lease {
				select {
				case <-tick.C:
				case <-ctx.Done():
				}
				continue
			}
			if h < 0 {
				t.Fatalf("%v: no station holds the vehicle and transmits, to be cut off", now)
			}
			ts, err := stations[h].d.UplinkTransfers(ctx, u.ID)
			if err != nil || !remaining(ts) {
				t.Fatalf("%v: the holder has nothing left to send: the cut would prove nothing (%+v, %v)", now, ts, err)
			}
			cut, cutAt = h, since()
			stations[h].cutOff()
			t.Logf("%v: cut %s, the holder, off from etcd with %d of %d chunks held by the vehicle", cutAt.Round(time.Millisecond),
				stations[h].name, bundle(ts).Chunks, bundle(ts).Total)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	elapsed := since()
	for _, s := range stations {
		select {
		case <-s.done:
			if s.runErr != nil {
				t.Error(s.runErr)
			}
		default:
		}
	}
	stopSampler()
	<-samplerDone
	samples = append(samples, count())
	t.Logf("uplink done %v after the links started (%v in all so far)", elapsed.Round(time.Millisecond), time.Since(begun).Round(time.Millisecond))
	if killed < 0 || cut < 0 || long && !memberKilled {
		t.Fatalf("faults not all injected: killed %d, cut %d, member killed %v", killed, cut, memberKilled)
	}

	// Frames per station, per pass, counted at each emulator.
	framesIn := func(i int, from, to time.Duration) int64 {
		var a, b int64 = -1, 0
		for _, sm := range samples {
			if sm.at < from {
				continue
			}
			if a < 0 {
				a = sm.frames[i]
			}
			if sm.at <= to {
				b = sm.frames[i]
			}
		}
		return max(0, b-max(a, 0))
	}
	final := samples[len(samples)-1]
	for _, s := range stations {
		var per []string
		for _, p := range tl.passes {
			if p.station == s.i && p.from < elapsed {
				per = append(per, fmt.Sprintf("%v-%v: %d", p.from, p.to, framesIn(s.i, p.from, p.to)))
			}
		}
		st := s.emu.Stats().Forward
		t.Logf("%s: %d forward frames (%d delivered, %d dropped out of pass) — per pass %s", s.name, final.frames[s.i], st.Delivered, st.Dropped.Outage, strings.Join(per, ", "))
	}
	// Two stations at once: in every overlap only one transmits.
	for _, w := range tl.overlap {
		var senders []string
		for _, s := range stations {
			if n := framesIn(s.i, w[0], w[1]); n > 0 {
				senders = append(senders, fmt.Sprintf("%s (%d frames)", s.name, n))
			}
		}
		if len(senders) != 1 {
			t.Errorf("overlap %v-%v: transmitting %v, want exactly one station", w[0], w[1], senders)
		}
	}
	// And at no time do two stations' frames grow together (100 ms
	// windows), the cut's hand-over included.
	for k := 10; k < len(samples); k += 10 {
		a, b := samples[k-10], samples[k]
		var both []string
		for i := range stations {
			if b.frames[i] > a.frames[i] {
				both = append(both, stations[i].name)
			}
		}
		if len(both) > 1 {
			t.Errorf("%v-%v: %v transmitted at once", a.at, b.at, both)
		}
	}
	// The cut: the holder's forward frames stop within its lease time of
	// the cut, and another station takes over.
	cs := stations[cut]
	var last time.Duration
	for k := 1; k < len(samples); k++ {
		if samples[k].frames[cut] > samples[k-1].frames[cut] {
			last = samples[k].at
		}
	}
	stop := last - cutAt
	after := final.frames[cut] - framesAt(samples, cut, cutAt)
	t.Logf("%s: last forward frame at %v, %v from the cut (lease %v), %d frames after the cut", cs.name, last.Round(time.Millisecond), stop.Round(time.Millisecond), lease, after)
	if n := framesIn(cut, cutAt-time.Second, cutAt); n == 0 {
		t.Errorf("%s held the vehicle but sent nothing in the second before the cut: the cut proves nothing", cs.name)
	}
	if stop > lease {
		t.Errorf("%s transmitted %v after it was cut off from etcd (lease %v)", cs.name, stop, lease)
	}
	// Who transmitted first after each fault, and when.
	firstAfter := func(not int, from time.Duration) (int, time.Duration) {
		for k := 1; k < len(samples); k++ {
			if samples[k].at <= from {
				continue
			}
			for i := range stations {
				if i != not && samples[k].frames[i] > samples[k-1].frames[i] {
					return i, samples[k].at
				}
			}
		}
		return -1, 0
	}
	if i, at := firstAfter(killed, tl.killAt); i < 0 {
		t.Errorf("no station transmitted after %s was killed", stations[killed].name)
	} else {
		t.Logf("%s killed at %v: %s took over at %v (its pass began at %v)", stations[killed].name, tl.killAt, stations[i].name, at.Round(time.Millisecond), passStart(tl, i, tl.killAt))
	}
	if memberKilled {
		// Nothing stops: the longest time without a forward frame from
		// the member kill until the cut.
		var gap, prev time.Duration = 0, tl.memberAt
		for k := 1; k < len(samples) && samples[k].at <= cutAt; k++ {
			if samples[k].at < tl.memberAt {
				continue
			}
			for i := range stations {
				if samples[k].frames[i] > samples[k-1].frames[i] {
					gap, prev = max(gap, samples[k].at-prev), samples[k].at
					break
				}
			}
		}
		t.Logf("etcd member killed at %v: the longest silence until the cut %v", tl.memberAt, gap.Round(time.Millisecond))
		if gap > 3*lease {
			t.Errorf("the link fell silent for %v after an etcd member was killed (lease %v)", gap, lease)
		}
	}
	if i, at := firstAfter(cut, cutAt); i < 0 {
		t.Errorf("no station transmitted after %s was cut off", cs.name)
	} else {
		t.Logf("%s cut off at %v: %s took over at %v, %v after the cut", cs.name, cutAt.Round(time.Millisecond), stations[i].name, at.Round(time.Millisecond), (at - cutAt).Round(time.Millisecond))
	}

	// No chunk the vehicle journaled reached it again, as it counted at its
	// antenna; and the stations' own counters.
	ant.mu.Lock()
	t.Logf("vehicle: %d chunk frames received, %d received again, %d received more than %v after it reported them journaled (%d reports)",
		ant.chunks, ant.again, ant.late, grace, ant.reports)
	late := ant.late
	t.Logf("vehicle: frames received by kind %v", ant.kinds)
	ant.mu.Unlock()
	if late != 0 {
		t.Errorf("%d chunks the vehicle had reported journaled were sent to it again", late)
	}
	ts, err := stations[3-cut-killed].d.UplinkTransfers(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ts {
		// The stations' counters, over every holder (a station that
		// takes over adds to them; a killed one's last unsaved sends are
		// not in them).
		t.Logf("transfer %d (%s): %d chunks; the stations counted %d sent, %d resent, %d presumed lost", x.ID, x.Kind, x.Total, x.Sent, x.Resent, x.Presumed)
		if !x.Done || x.Resent != 0 {
			t.Errorf("transfer %d (%s): done %v, %d chunks resent", x.ID, x.Kind, x.Done, x.Resent)
		}
	}

	// Bundles through the registry: the station that planned pushed the
	// plan and bundle as an artifact; every other station, its bundle
	// directory empty, fetched them by digest before it could send them.
	x, err := stations[3-cut-killed].d.QueueShow(ctx, u.ID)
	if err != nil || len(x.Bundles) == 0 {
		t.Fatalf("the uplink's bundle artifacts: %v %v", x.Bundles, err)
	}
	for _, s := range stations {
		fetches := s.fetchCounts(ctx)
		if _, planned := logFind(s.logf, "groundd: bundle pushed"); planned {
			t.Logf("%s planned and pushed %v (fetches %v)", s.name, x.Bundles, fetches)
			continue
		}
		for _, art := range x.Bundles {
			line, ok := logFind(s.logf, "groundd: bundle fetched", art)
			if !ok {
				t.Errorf("%s did not plan and did not fetch %s", s.name, art)
				continue
			}
			t.Logf("%s fetched %s at %v (its first forward frame at %v)", s.name, art, logTime(line, start), firstFrame(samples, s.i).Round(time.Millisecond))
		}
		if fetches["ok"] < uint64(len(x.Bundles)) {
			t.Errorf("%s counted fetches %v, want %d ok", s.name, fetches, len(x.Bundles))
		}
	}

	// Every station shows the final state: the killed one restarted (a
	// new daemon on the cluster), the cut one reconnected.
	if memberKilled {
		cluster.Restart(1)
	}
	stations[cut].heal()
	ks := stations[killed]
	openStation(ks)
	healed := time.Now()
	for _, s := range stations {
		waitFor(t, s.name+" showing the final slot status", 30*time.Second, func() bool { return finalOK(s) })
	}
	t.Logf("every station shows slot B written with the update %v after the heal", time.Since(healed).Round(time.Millisecond))
	for _, s := range stations {
		c, err := s.d.CommandShow(ctx, cmd.ID)
		if err != nil {
			t.Fatalf("%s: command %d: %v", s.name, cmd.ID, err)
		}
		sends := 0
		for _, e := range c.History {
			if e.Stage.String() == "sent" {
				sends++
			}
		}
		if c.Stage != groundd.CmdCompleted || sends != 1 || c.SentBy == "" {
			t.Errorf("%s: the command queued at station-2 is %s, sent %d times, by %q", s.name, c.Stage, sends, c.SentBy)
		}
	}
	if c, err := stations[0].d.CommandShow(ctx, cmd.ID); err == nil {
		t.Logf("the command queued at station-2: %s, sent by %s (%d copies resent), seen so at every station", c.Stage, c.SentBy, c.Resends)
	}
	t.Logf("%v in all", time.Since(begun).Round(time.Millisecond))
}

// passStart is the start of station i's pass going on at or beginning
// after at.
func passStart(tl timeline, i int, at time.Duration) time.Duration {
	for _, p := range tl.passes {
		if p.station == i && p.to > at {
			return p.from
		}
	}
	return -1
}

// bundle is ts's bundle transfer.
func bundle(ts []groundd.Transfer) groundd.Transfer {
	for _, x := range ts {
		if x.Kind == "bundle" {
			return x
		}
	}
	return groundd.Transfer{}
}

// remaining says whether the bundle has chunks the vehicle does not hold.
func remaining(ts []groundd.Transfer) bool {
	b := bundle(ts)
	return b.Total > 0 && b.Chunks < b.Total
}

func framesAt(samples []sample, i int, at time.Duration) int64 {
	var n int64
	for _, sm := range samples {
		if sm.at > at {
			break
		}
		n = sm.frames[i]
	}
	return n
}

// run runs s's daemon on its link, following its link's state.
func (s *station) run(ctx context.Context) {
	dctx, stop := context.WithCancel(ctx)
	s.stop, s.done = stop, make(chan struct{})
	states, unsub := s.emu.Subscribe()
	s.d.SetLink(vehicleID, s.emu.Up().Forward)
	d := s.d
	go func() {
		defer unsub()
		for {
			select {
			case <-dctx.Done():
				return
			case st, ok := <-states:
				if !ok {
					return
				}
				d.SetLink(vehicleID, st.Forward)
			}
		}
	}()
	go func() {
		defer close(s.done)
		err := d.Run(dctx, map[uint32]groundd.Link{vehicleID: s.gl})
		if dctx.Err() == nil {
			s.runErr = fmt.Errorf("%s stopped on its own: %v", s.name, err)
		}
	}()
}

// kill stops s as a crash would: no resignation, no revocation (its lease
// runs out in etcd), nothing sent any more.
func (s *station) kill() {
	s.killed = true
	s.fetches = s.fetchCounts(context.Background())
	s.st.Client().Close()
	s.stop()
	<-s.done
}

// cutOff cuts s off from every etcd member, as a partition that drops
// packets would (its connections hang: it learns of the cut only from its
// timeouts and its lease); it runs on.
func (s *station) cutOff() {
	s.cut = true
	for _, p := range s.prox {
		p.Blackhole()
	}
}

// fetchCounts are s's bundle fetches by result: its daemon's counters
// (groundd_vehicle_bundle_fetches_total), and a killed daemon's.
func (s *station) fetchCounts(ctx context.Context) map[string]uint64 {
	out := map[string]uint64{}
	for r, n := range s.fetches {
		out[r] += n
	}
	if !s.killed {
		cs, _ := s.d.VehicleCounters(ctx)
		for r, n := range cs[vehicleID].BundleFetches {
			out[r] += n
		}
	}
	return out
}

func (s *station) heal() {
	for _, p := range s.prox {
		p.Heal()
	}
}

func mustCreate(t *testing.T, path string) *os.File {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// waitFor polls cond (real processes run: there is no clock to move)
// until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	end := time.After(timeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-end:
			t.Fatalf("%s: not within %v", what, timeout)
		}
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) == 0 {
		return "(empty)"
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// logFind returns the first line of the log file path holding every one
// of subs.
func logFind(path string, subs ...string) (string, bool) {
	b, _ := os.ReadFile(path)
next:
	for _, l := range strings.Split(string(b), "\n") {
		for _, sub := range subs {
			if !strings.Contains(l, sub) {
				continue next
			}
		}
		return l, true
	}
	return "", false
}

// logTime is the time of a log line (slog's text form), from start.
func logTime(line string, start time.Time) time.Duration {
	v, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return -1
	}
	return at.Sub(start).Round(time.Millisecond)
}

// firstFrame is when station i's first forward frame was counted.
func firstFrame(samples []sample, i int) time.Duration {
	for k := 1; k < len(samples); k++ {
		if samples[k].frames[i] > samples[k-1].frames[i] {
			return samples[k].at
		}
	}
	return -1
}
