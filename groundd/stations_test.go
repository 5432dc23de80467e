package groundd_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/groundd/store/etcdtest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
)

// testLease is the stations' lease in these tests: etcd's minimum is about
// a second and a half with etcdtest's timing.
const testLease = 2 * time.Second

// pollTick is the test clock's step between two polls of the stations.
const pollTick = 50 * time.Millisecond

// net is the ground network of a stations test: a three-member etcd
// cluster, three groundd stations in-process on it, and the test's vehicle
// stand-in (groundtest.Vehicle), reached by whichever stations' links are
// up, through a seeded lossy channel.
type stationNet struct {
	w        *world
	cluster  *etcdtest.Cluster
	rng      *rand.Rand
	loss     float64
	stations []*stationUnderTest
	// reported are the chunks reports that reached any station said the
	// vehicle held; resent counts chunks sent after such a report.
	reported map[chunkKey]bool
	resent   int
}

type stationUnderTest struct {
	name string
	d    *groundd.Daemon
	st   *store.Etcd
	// proxies are the station's ways to etcd, one per member.
	proxies []*etcdtest.Proxy
	dead    bool
	isCut   bool
	cutAt   time.Time
	// lastSent is the wall-clock time of the station's last frame.
	lastSent time.Time
	in       [][]byte
	// chunks counts the chunk frames this station sent; sentAt the polls
	// at which it sent anything.
	chunks int
	frames int
	// cmds counts the command frames it sent.
	cmds int
}

func newStationNet(t *testing.T, loss float64) *stationNet {
	rng := testrand.New(t)
	w := newWorld(t, rng, 0, nil)
	// A slow link, so that the uplink takes several passes.
	w.cfg.Vehicles[0].Rate = 8000
	n := &stationNet{w: w, cluster: etcdtest.Start(t, 3), rng: rng, loss: loss, reported: map[chunkKey]bool{}}
	for i := range 3 {
		s := &stationUnderTest{name: fmt.Sprintf("station-%d", i)}
		// Each station reaches etcd through a proxy of its own, which a
		// test can cut.
		for _, m := range n.cluster.Members {
			s.proxies = append(s.proxies, etcdtest.NewProxy(t, m.ClientURL))
		}
		n.open(s)
		n.stations = append(n.stations, s)
	}
	return n
}

func (n *stationNet) open(s *stationUnderTest) {
	t := n.w.t
	var err error
	var eps []string
	for _, p := range s.proxies {
		eps = append(eps, p.URL())
	}
	s.st, err = store.OpenEtcd(store.EtcdConfig{Endpoints: eps, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg, opts := n.w.cfg, n.w.opts
	cfg.Station, cfg.Lease = s.name, groundd.Duration(testLease)
	opts.Store = s.st
	// Links follow the test's signals, not the schedule.
	opts.Schedule = nil
	if s.d, err = groundd.Open(cfg, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.d.Close(); s.st.Close() })
}

// kill stops a station as a crash would: no resignation, no revocation;
// its lease runs out in etcd.
func (n *stationNet) kill(i int) {
	s := n.stations[i]
	s.dead = true
	s.st.Client().Close()
}

// cut cuts station i off from etcd (every member).
func (n *stationNet) cut(i int) {
	for _, p := range n.stations[i].proxies {
		p.Cut()
	}
}

// step runs one poll of every live station whose link is up (up[i]) and
// of the vehicle, and returns how many stations sent frames.
func (n *stationNet) step(ctx context.Context, up []bool) int {
	t, w := n.w.t, n.w
	anyUp := false
	var toVehicle [][]byte
	senders := 0
	for i, s := range n.stations {
		if s.dead || s.isCut && time.Since(s.cutAt) > 2*testLease {
			// A station cut off from etcd is watched for twice its
			// lease time, then left alone (its every store call waits
			// for a timeout).
			continue
		}
		s.d.SetLink(vehicleID, up[i])
		anyUp = anyUp || up[i]
		for _, f := range s.in {
			if m, err := w.codec.Decode(f); err == nil {
				if r, ok := m.(*protocol.Report); ok {
					for c := range held(r) {
						n.reported[chunkKey{r.ID, c}] = true
					}
				}
			}
		}
		out, _, err := s.d.Poll(ctx, vehicleID, w.now, s.in)
		s.in = nil
		if err != nil {
			if !s.isCut {
				t.Fatalf("%s: %v", s.name, err)
			}
			continue // cut off from etcd: what it could not store, it did not send
		}
		if len(out) > 0 {
			senders++
			s.frames += len(out)
			s.lastSent = time.Now()
		}
		for _, f := range out {
			if !up[i] {
				t.Fatalf("%s sent with its link down", s.name)
			}
			m, err := w.codec.Decode(f)
			if err != nil {
				t.Fatalf("%s sent an undecodable frame: %v", s.name, err)
			}
			if _, ok := m.(*protocol.Command); ok {
				s.cmds++
			}
			if c, ok := m.(*protocol.Chunk); ok {
				s.chunks++
				if n.reported[chunkKey{c.ID, c.Index}] {
					n.resent++
				}
			}
			if n.rng.Float64() >= n.loss {
				toVehicle = append(toVehicle, f)
			}
		}
	}
	w.veh.SetLink(w.now, anyUp)
	back, err := w.veh.Step(w.now, toVehicle)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range n.stations {
		if s.dead || !up[i] {
			continue
		}
		for _, f := range back {
			if n.rng.Float64() >= n.loss {
				s.in = append(s.in, f)
			}
		}
	}
	w.now = w.now.Add(pollTick)
	return senders
}

// TestStations: three stations on a three-member etcd cluster serve one
// vehicle whose passes alternate between them. The uplink completes; no
// chunk the vehicle reported journaled is sent again; every station sees
// the final slot status. Along the way, the faults of issue 14: two
// stations see the vehicle at once (only one transmits, counted in frames
// per station); the transmitting station is killed mid-pass (another
// finishes at the next pass); an etcd member is killed (nothing stops);
// the transmitting station is cut off from etcd during an overlapping pass
// (it stops within its lease time, and the other takes over). The default
// run has the overlap and the killed station; -long adds the etcd member
// killed and the cut (each costs lease times of wall clock).
func TestStations(t *testing.T) {
	long := testrand.Long()
	n := newStationNet(t, 0.05)
	w := n.w
	ctx := context.Background()
	d0 := n.stations[0].d
	if _, err := d0.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	u, err := d0.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	done := func() bool {
		for _, s := range n.stations {
			if s.dead || s.isCut {
				continue
			}
			v, err := s.d.VehicleShow(ctx, vehicleID)
			// The install_done event names the manifest; the slot's
			// state comes with the next hk.slots, which the checks
			// below wait for too.
			if err != nil || len(v.Slots) != 2 || v.Slots[1].Manifest != w.v2.ManifestDigest.String() || v.Slots[1].State != "written" {
				return false
			}
		}
		for _, s := range n.stations {
			if !s.dead && !s.isCut {
				x, err := s.d.QueueShow(ctx, u.ID)
				return err == nil && x.State == groundd.UplinkDone
			}
		}
		return false
	}
	const passPolls = 120 // 6 s of link at pollTick a poll
	var (
		overlapSenders = map[int]bool{}
		killed, cut    = -1, -1
		cutAt          time.Time
		cutFrames      int
		memberKilled   bool
	)
	live := func(i int) bool { return i != killed && i != cut }
	for pass := 0; pass < 60 && !done(); pass++ {
		holder := pass % 3
		for !live(holder) {
			holder = (holder + 1) % 3
		}
		up := make([]bool, 3)
		up[holder] = true
		other := (holder + 1) % 3
		for !live(other) {
			other = (other + 1) % 3
		}
		overlapping := pass == 1 || pass == 4 && long
		if overlapping {
			up[other] = true
		}
		if pass == 3 && long {
			n.cluster.Kill(1)
			memberKilled = true
			t.Logf("pass 3: etcd member m1 killed")
		}
		started := time.Now()
		for p := 0; !done(); p++ {
			// Pass 4 lasts until a station was cut and the other took
			// over (bounded in wall-clock time: leases are).
			if p >= passPolls && (pass != 4 || !long || time.Since(started) > 10*testLease || cut >= 0 && time.Since(cutAt) > 2*testLease) {
				break
			}
			senders := n.step(ctx, up)
			if senders > 1 {
				t.Fatalf("pass %d: %d stations transmitted at once", pass, senders)
			}
			if overlapping {
				for i, s := range n.stations {
					if up[i] && s.lastSent.After(time.Now().Add(-time.Millisecond)) && senders == 1 {
						overlapSenders[i] = true
					}
				}
			}
			if pass == 2 && p == passPolls/2 && killed < 0 {
				n.kill(holder)
				killed = holder
				t.Logf("pass 2: killed %s after %d chunks", n.stations[holder].name, n.stations[holder].chunks)
				break
			}
			if pass == 4 && long && p >= passPolls/3 && cut < 0 {
				// Cut the station that holds the vehicle now.
				hs, err := n.stations[other].d.Stations(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for i, s := range n.stations {
					if hs[0].Holder == s.name && live(i) && up[i] {
						cut = i
					}
				}
				if cut < 0 {
					continue
				}
				n.stations[cut].isCut = true
				n.cut(cut)
				cutAt, cutFrames = time.Now(), n.stations[cut].frames
				n.stations[cut].cutAt = cutAt
				t.Logf("pass 4: %s cut off from etcd after %d frames", n.stations[cut].name, cutFrames)
			}
		}
		// Between passes: the vehicle's link is down everywhere.
		n.step(ctx, make([]bool, 3))
		w.now = w.now.Add(90 * time.Minute)
	}
	if !done() {
		x, _ := n.stations[1].d.QueueShow(ctx, u.ID)
		t.Fatalf("the uplink did not complete: %s %s", x.State, x.Error)
	}
	for _, s := range n.stations {
		t.Logf("%s: %d frames, %d chunks (dead %v, cut %v)", s.name, s.frames, s.chunks, s.dead, s.isCut)
	}
	if len(overlapSenders) == 0 {
		t.Error("in the overlapping passes no station transmitted")
	}
	if killed < 0 || long && (cut < 0 || !memberKilled) {
		t.Fatalf("faults not all injected: killed %d, cut %d, member killed %v", killed, cut, memberKilled)
	}
	if long {
		cs := n.stations[cut]
		if stop := cs.lastSent.Sub(cutAt); stop > testLease {
			t.Errorf("%s sent %v after it was cut off from etcd (lease %v)", cs.name, stop, testLease)
		} else {
			t.Logf("%s stopped transmitting %v after the cut (%d frames after it; lease %v)", cs.name, max(0, stop), cs.frames-cutFrames, testLease)
		}
	}
	if n.resent != 0 {
		t.Errorf("%d chunks the vehicle had reported journaled were sent again", n.resent)
	}
	// Every station that reaches etcd shows the same final state.
	for _, s := range n.stations {
		if s.dead || s.isCut {
			continue
		}
		x, err := s.d.QueueShow(ctx, u.ID)
		if err != nil || x.State != groundd.UplinkDone {
			t.Errorf("%s: uplink %+v %v", s.name, x, err)
		}
		v, err := s.d.VehicleShow(ctx, vehicleID)
		if err != nil || len(v.Slots) != 2 || v.Slots[1].State != "written" {
			t.Errorf("%s: vehicle %+v %v", s.name, v, err)
		}
		// groundd stations, through the HTTP API.
		r := stationsAPI(t, s.d)
		if r.Station != s.name || len(r.Vehicles) != 1 || len(r.Vehicles[0].Contacts) < 2 {
			t.Fatalf("%s: stations %+v", s.name, r)
		}
	}
}

// stationsAPI asks d's HTTP API which station holds which vehicle.
func stationsAPI(t *testing.T, d *groundd.Daemon) api.StationsReply {
	t.Helper()
	srv, err := api.New(d, api.Config{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	cl, err := api.NewClient(hs.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := cl.Stations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestStationsBolt: on the embedded store, the one station holds every
// vehicle it serves, with no lease, and the API says so as it does on etcd.
func TestStationsBolt(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	w.cfg.Station = "lone"
	d := w.open()
	defer d.Close()
	r := stationsAPI(t, d)
	if r.Station != "lone" || len(r.Vehicles) != 1 || r.Vehicles[0].Holder != "lone" || r.Vehicles[0].Lease != "" {
		t.Fatalf("stations %+v", r)
	}
}

// TestEndToEndEtcd is TestEndToEnd, unchanged, on the etcd store (one
// member, one station): the restart in the middle of the bundle is a new
// Daemon on the same cluster, which wins the vehicle again.
func TestEndToEndEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	endToEnd(t, func(w *world) {
		st, err := store.OpenEtcd(store.EtcdConfig{Endpoints: c.Endpoints()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		w.opts.Store = st
		w.cfg.Station, w.cfg.Lease = "station-0", groundd.Duration(testLease)
	})
}

// TestStationsCommands: commands follow the vehicle, not the station whose
// API queued them. A command queued at station-0 goes out from station-1,
// which holds the vehicle, once; its result is visible from every
// station's API; a second command queued at station-2 during station-1's
// pass goes out in that pass; nothing is sent again at the next pass,
// where two stations see the vehicle. Before, station-0's gateway alone
// knew the command: it went out only when station-0 held the vehicle.
func TestStationsCommands(t *testing.T) {
	n := newStationNet(t, 0)
	w := n.w
	ctx := context.Background()
	c1, err := n.stations[0].d.SendCommand(ctx, vehicleID, "noop", nil)
	if err != nil {
		t.Fatal(err)
	}
	var c2 groundd.Command
	pass := func(up []bool, polls int, during func(p int)) {
		for p := range polls {
			if n.step(ctx, up) > 1 {
				t.Fatalf("two stations transmitted at once")
			}
			if during != nil {
				during(p)
			}
		}
		n.step(ctx, make([]bool, 3))
		w.now = w.now.Add(90 * time.Minute)
	}
	// station-1's pass: it sends c1, and c2 queued at station-2 midway.
	pass([]bool{false, true, false}, 60, func(p int) {
		if p == 20 {
			if c2, err = n.stations[2].d.SendCommand(ctx, vehicleID, "noop", nil); err != nil {
				t.Fatal(err)
			}
		}
	})
	// station-0 and station-2 see the vehicle together: nothing is left
	// to send.
	pass([]bool{true, false, true}, 40, nil)
	for i, s := range n.stations {
		t.Logf("%s: %d command frames", s.name, s.cmds)
		if want := map[int]int{1: 2}[i]; s.cmds != want {
			t.Errorf("%s sent %d command frames, want %d", s.name, s.cmds, want)
		}
		for _, id := range []uint64{c1.ID, c2.ID} {
			c, err := s.d.CommandShow(ctx, id)
			if err != nil {
				t.Fatalf("%s: command %d: %v", s.name, id, err)
			}
			if c.Stage != groundd.CmdCompleted || c.SentBy != "station-1" {
				t.Errorf("%s: command %d is %s, sent by %q, want completed, sent by station-1 (%+v)", s.name, id, c.Stage, c.SentBy, c.History)
			}
		}
	}
	got := 0
	for _, c := range w.veh.Commands {
		if c.Seq == c1.Seq || c.Seq == c2.Seq {
			got++
		}
	}
	if got != 2 {
		t.Errorf("the vehicle received %d command frames, want 2 (each once)", got)
	}
}

// TestStationsGroundKey: the first station to open on a shared store
// records its ground key (id and public key); a station with another
// ground_key_id, or another key under the same id, is refused at Open
// with an error naming both (commands are tracked by vehicle and
// sequence, not by key: mixed keys break their tracking); one with the
// same key opens. Before, nothing checked.
func TestStationsGroundKey(t *testing.T) {
	c := etcdtest.Start(t, 1)
	w := newWorld(t, testrand.New(t), 0, nil)
	open := func(name string, keyID uint32, key ed25519.PrivateKey) (*groundd.Daemon, error) {
		st, err := store.OpenEtcd(store.EtcdConfig{Endpoints: c.Endpoints()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		cfg, opts := w.cfg, w.opts
		cfg.Station, cfg.Lease, cfg.StateDir = name, groundd.Duration(testLease), filepath.Join(w.dir, name)
		cfg.GroundKeyID, opts.GroundKey, opts.Store = keyID, key, st
		return groundd.Open(cfg, opts)
	}
	seed := make([]byte, ed25519.SeedSize)
	rng := testrand.New(t)
	for i := range seed {
		seed[i] = byte(rng.IntN(256))
	}
	other := ed25519.NewKeyFromSeed(seed)
	a, err := open("station-a", w.cfg.GroundKeyID, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := open("station-b", w.cfg.GroundKeyID+1, nil); err == nil || !strings.Contains(err.Error(), "ground_key_id") ||
		!strings.Contains(err.Error(), "station-a") {
		t.Fatalf("a station with another ground_key_id: %v", err)
	}
	if _, err := open("station-c", w.cfg.GroundKeyID, other); err == nil || !strings.Contains(err.Error(), "ground key") {
		t.Fatalf("a station with another key under the same id: %v", err)
	}
	d, err := open("station-d", w.cfg.GroundKeyID, nil)
	if err != nil {
		t.Fatalf("a station with the same key: %v", err)
	}
	d.Close()
}
