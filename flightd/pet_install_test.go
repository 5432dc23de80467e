package flightd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

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
	once             sync.Once
}

func newHeldLayer(b []byte, at int) *heldLayer {
	return &heldLayer{r: bytes.NewReader(b), at: at, entered: make(chan struct{}), release: make(chan struct{})}
}

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
