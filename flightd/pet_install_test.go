package flightd

import (
	"bytes"
	"context"
	"crypto/sha256"
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
	"github.com/bootorbit/bootorbit/protocol/link"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/watchdog"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog/watchdogtest"
)

// heldLayer reads b, but holds at byte at until release is closed
// (entered is closed once it holds): a slot write stopped in the middle,
// as a large image on a slow medium is for minutes.
type heldLayer struct {
	r                io.Reader
	n, at            int
	entered, release chan struct{}
	once, releaseMu  sync.Once
}

func newHeldLayer(b []byte, at int) *heldLayer {
	return &heldLayer{r: bytes.NewReader(b), at: at, entered: make(chan struct{}), release: make(chan struct{})}
}

func (h *heldLayer) releaseOnce() { h.releaseMu.Do(func() { close(h.release) }) }

func (h *heldLayer) Read(p []byte) (int, error) {
	if h.n >= h.at {
		h.once.Do(func() { close(h.entered) })
		<-h.release
	} else if len(p) > h.at-h.n {
		p = p[:h.at-h.n]
	}
	n, err := h.r.Read(p)
	h.n += n
	return n, err
}

// TestDaemonPetsDuringSlotWrite: a slot write that lasts longer than the
// watchdog's timeout (here held in the middle of the write for twice the
// timeout, six pet intervals) does not stop the main loop: the watchdog
// is petted, commands are answered and housekeeping telemetry goes on,
// with hk.slots saying the slot is being written. The write goes through
// Updater.Write, the uplink installer's path, on the daemon's own slot
// manager. Before, the main loop's housekeeping read of the slot status
// waited for the manager's lock, which the install held for the whole
// write: the board reset in the middle of every long write, and the
// install restarted at each boot.
func TestDaemonPetsDuringSlotWrite(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Empty, vars("A", "3", "0", "-"))
	dev := watchdogtest.NewDevice(r.clock, time.Minute, 0)
	r.wd = dev
	run := r.start(slots.A)
	img := bytes.Repeat([]byte("image B "), tableSlot/16)
	held := newHeldLayer(img, len(img)/2)
	// Registered after start's: runs before the daemon is stopped, so
	// that a failing run is not left waiting on the held write.
	t.Cleanup(func() {
		select {
		case <-held.release:
		default:
			close(held.release)
		}
	})
	done := make(chan error, 1)
	go func() {
		_, err := run.up.Write(context.Background(), slots.B, slots.Image{Label: "sha256:feed", Layers: []io.Reader{held},
			RawStream: true, Digest: fmt.Sprintf("sha256:%x", sha256.Sum256(img))})
		done <- err
	}()
	select {
	case <-held.entered:
	case err := <-done:
		t.Fatalf("the write returned before it held: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the write did not start")
	}

	pets := dev.Pets()
	writingState, _ := dict.EnumSlotState.Value(string(slots.Writing))
	// hk.slots packets that say slot B is being written, over 2 minutes
	// of a 1-minute watchdog petted every 20 s.
	writing := 0
	for range 12 {
		r.clock.Advance(10 * time.Second)
		c := r.command(run, "noop", nil, nil)
		r.until(run, fmt.Sprintf("completion of noop %d during the slot write", c.Seq), func(m protocol.Message) bool {
			if tl, ok := m.(*protocol.Telemetry); ok && tl.Packet == dict.HKSlots.ID {
				v, err := dict.HKSlots.Decode(tl.Params)
				mustT(t, err)
				if v["slot_b_state"] == writingState {
					writing++
				}
			}
			v, ok := m.(*protocol.Verification)
			return ok && v.Seq == c.Seq && v.Stage == protocol.StageCompleted
		})
		if dev.Expired() {
			t.Fatalf("the watchdog expired during the slot write (%d pets)", dev.Pets())
		}
	}
	if got := dev.Pets() - pets; got < 5 {
		t.Errorf("%d pets in 2 minutes of slot write, want one every 20 s", got)
	}
	if writing < 3 {
		t.Errorf("%d hk.slots packets with slot B writing in 2 minutes, want one every 30 s", writing)
	}

	close(held.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := run.status().Slots[1].State; st != string(slots.Written) {
		t.Fatalf("slot B %s after the write", st)
	}
}

// TestDaemonPetsDuringFactoryReset: a pending factory_reset, applied by
// activate to the slot about to boot, empties the persistent /var, which
// takes as long as /var holds files. Held here for twice the watchdog's
// timeout, it does not stop the main loop: the watchdog is petted,
// commands are answered (those that change the slots with busy), and
// activate completes, armed, once the reset ends.
func TestDaemonPetsDuringFactoryReset(t *testing.T) {
	r := newDaemonRig(t, slots.A, slots.Good, slots.Written, vars("A", "3", "0", "-"))
	dev := watchdogtest.NewDevice(r.clock, time.Minute, 0)
	r.wd = dev
	entered, release := make(chan slots.SlotID, 1), make(chan struct{})
	var once sync.Once
	r.opts = func(o *Options) {
		o.factoryReset = func(_ context.Context, id slots.SlotID, wipeVar bool) error {
			if !wipeVar {
				t.Errorf("factory reset of slot %s keeps /var", id)
			}
			entered <- id
			<-release
			return nil
		}
	}
	run := r.start(slots.A)
	// Registered after start's: runs before the daemon is stopped, so
	// that a failing run is not left waiting on the held reset.
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	c := r.command(run, "factory_reset", nil, nil)
	r.verification(run, c.Seq, protocol.StageCompleted)
	act := r.command(run, "activate", dict.Values{"slot": "b", "attempts": uint64(2)}, nil)
	r.verification(run, act.Seq, protocol.StageStarted)
	select {
	case id := <-entered:
		if id != slots.B {
			t.Fatalf("factory reset of slot %s, want B", id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the factory reset did not start")
	}

	pets := dev.Pets()
	for range 12 {
		r.clock.Advance(10 * time.Second)
		c := r.command(run, "noop", nil, nil)
		r.verification(run, c.Seq, protocol.StageCompleted)
		if dev.Expired() {
			t.Fatalf("the watchdog expired during the factory reset (%d pets)", dev.Pets())
		}
	}
	if got := dev.Pets() - pets; got < 5 {
		t.Errorf("%d pets in 2 minutes of factory reset, want one every 20 s", got)
	}
	c = r.command(run, "reboot", nil, nil)
	if v := r.verification(run, c.Seq, protocol.StageFailed); v.Code != dict.CodeBusy {
		t.Errorf("reboot during the factory reset: %s, want busy", dict.EnumReason.NameOf(uint64(v.Code)))
	}

	once.Do(func() { close(release) })
	if ev := r.event(run, dict.EvArmed); ev["attempts"] != uint64(2) {
		t.Errorf("armed %v", ev)
	}
	r.verification(run, act.Seq, protocol.StageCompleted)
	if s := run.status(); s.Next != "B" {
		t.Errorf("next boot %q after activate, want B", s.Next)
	}
	// Applied: the next activate does not reset again.
	act = r.command(run, "activate", dict.Values{"slot": "b", "attempts": uint64(2)}, nil)
	r.verification(run, act.Seq, protocol.StageCompleted)
	select {
	case id := <-entered:
		t.Fatalf("a second factory reset of slot %s", id)
	default:
	}
}

// petSignal is a watchdog that counts its keepalives and signals each
// one on pets (dropped when nobody listens).
type petSignal struct {
	n    atomic.Int64
	pets chan struct{}
}

func (p *petSignal) Keepalive() error {
	p.n.Add(1)
	select {
	case p.pets <- struct{}{}:
	default:
	}
	return nil
}
func (p *petSignal) SetTimeout(d time.Duration) (time.Duration, error) { return d, nil }
func (p *petSignal) BootStatus() (watchdog.BootStatus, error)          { return 0, nil }
func (p *petSignal) Close() error                                      { return nil }

// TestInstallKeepsPetting: the uplink's own install (a delta bundle sent
// over UDP, installed by the engine off the main loop into a directory
// slot), held in the middle of its slot write: the watchdog (3 s, petted
// every second) keeps being petted, the status command is answered and
// hk.slots says slot B is being written; released, the install completes.
// Before, the first housekeeping round after the write began blocked on
// the slot manager until the write ended.
func TestInstallKeepsPetting(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end over UDP")
	}
	rng := testrand.New(t)
	dir := t.TempDir()
	v1L := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 1, Files: 10, MaxFileSize: 4 << 10})
	v2L, _ := ocitest.Modify(rng, v1L, ocitest.ModifyOptions{Changes: []ocitest.Change{ocitest.Edit, ocitest.Add}})
	var ims [2]ocitest.Image
	var oims [2]*oci.Image
	for i, l := range [][]ocitest.Layer{v1L, v2L} {
		var err error
		ims[i], err = ocitest.Write(filepath.Join(dir, "img", string(rune('1'+i))), "v", l)
		mustT(t, err)
		oims[i], err = oci.Open(ims[i].Ref)
		mustT(t, err)
	}
	bp := filepath.Join(dir, "bundle")
	_, err := delta.ComputeFile(context.Background(), oims[0], oims[1], bp, delta.Options{TempDir: dir})
	mustT(t, err)
	bundle, err := os.ReadFile(bp)
	mustT(t, err)

	v := newE2EVehicle(t, filepath.Join(dir, "vehicle"), ims[0])
	// Named for the configuration only: Options.Watchdog replaces it.
	v.cfg.Boot.Watchdog, v.cfg.Boot.WatchdogTimeoutS = "/dev/watchdog0", 3
	v.cfg.Telemetry.Period = Duration(time.Second) // a housekeeping round every second
	wd := &petSignal{pets: make(chan struct{})}
	heldCh := make(chan *heldLayer, 1)
	v.opts = func(o *Options) {
		o.Watchdog = wd
		o.installLayers = func(ls []io.Reader) []io.Reader {
			// Hold the first layer's stream 512 bytes in: the slot is
			// recorded writing and its extraction has begun.
			h := &heldLayer{r: ls[0], at: 512, entered: make(chan struct{}), release: make(chan struct{})}
			heldCh <- h
			return append([]io.Reader{h}, ls[1:]...)
		}
	}
	codec, err := protocol.NewCodec(1024)
	mustT(t, err)
	ver, err := protocol.NewReturnVerifier(testVehicle, protocol.MACKey{ID: 1, Key: bytes.Repeat([]byte{9}, 32)})
	mustT(t, err)
	gconn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	mustT(t, err)
	defer gconn.Close()
	g := &groundStation{t: t, conn: gconn, codec: codec, ver: ver, ground: e2eKey(1), release: e2eKey(2),
		tlm: map[uint16]*protocol.Telemetry{}, chunks: map[uint64]int{}}
	l, err := link.Open(link.Config{Name: "sband", Kind: "udp", Listen: "127.0.0.1:0", MaxFrame: 1024})
	mustT(t, err)
	addr := l.(interface{ Addr() net.Addr }).Addr().(*net.UDPAddr)
	g.relay = newLossyRelay(t, addr, rand.New(rand.NewPCG(rng.Uint64(), 1)), 0).addr()
	ctx, cancel := context.WithCancel(context.Background())
	done := v.run(ctx, l, 1)
	defer func() { cancel(); <-done }()

	g.transfer(update.TargetPlan(1), g.signedPlan(1, 2, oims[1], bundle), 30*time.Second)
	g.transfer(update.TargetBundle(1), bundle, 30*time.Second)
	var h *heldLayer
	select {
	case h = <-heldCh:
	case <-time.After(60 * time.Second):
		t.Fatal("the install did not start its slot write")
	}
	defer h.releaseOnce() // before the daemon is stopped
	select {
	case <-h.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the install did not reach its slot write")
	}

	// Three pets (a second apart) and an answered status while the write
	// is held: the main loop goes on.
	for range 3 {
		select {
		case <-wd.pets:
		case <-time.After(10 * time.Second):
			t.Fatalf("no watchdog pet for 10 s during the slot write (%d in all)", wd.n.Load())
		}
	}
	writingState, _ := dict.EnumSlotState.Value(string(slots.Writing))
	g.waitHK(dict.HKSlots, "slot b writing", func(hv dict.Values) bool { return hv["slot_b_state"] == writingState }, 20*time.Second)

	h.releaseOnce()
	g.waitEvent(dict.EvInstallDone, 0, 60*time.Second)
	writtenState, _ := dict.EnumSlotState.Value(string(slots.Written))
	g.waitHK(dict.HKSlots, "slot b written", func(hv dict.Values) bool { return hv["slot_b_state"] == writtenState }, 20*time.Second)
}
