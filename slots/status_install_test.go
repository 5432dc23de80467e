package slots

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

// heldReader reads r, but holds at byte at until release is closed
// (entered is closed once it holds): a slot write stopped in the middle,
// as a large image on a slow medium is for minutes.
type heldReader struct {
	r                io.Reader
	n, at            int
	entered, release chan struct{}
	once             sync.Once
}

func newHeldReader(b []byte, at int) *heldReader {
	return &heldReader{r: bytes.NewReader(b), at: at, entered: make(chan struct{}), release: make(chan struct{})}
}

func (h *heldReader) Read(p []byte) (int, error) {
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

// TestStatusDoesNotWaitForInstall: while Install writes a slot (held in
// the middle of its write), Status, Base, Verify and MarkGood of a slot
// already good answer at once: they
// read the state under the short state lock, not the operation lock the
// install holds. flightd's main loop reads Status for its housekeeping
// telemetry between two watchdog pets; before, it blocked there for the
// whole write and the board reset (docs/flightd.md, the watchdog).
func TestStatusDoesNotWaitForInstall(t *testing.T) {
	rig := newMemRig(t)
	m, err := Open(rig.o)
	if err != nil {
		t.Fatal(err)
	}
	img := bytes.Repeat([]byte("image B "), rigSlotSize/16)
	held := newHeldReader(img, len(img)/2)
	t.Cleanup(func() {
		select {
		case <-held.release:
		default:
			close(held.release)
		}
	})
	done := make(chan error, 1)
	go func() {
		_, err := m.Install(context.Background(), B, Image{Label: "sha256:feed", Layers: []io.Reader{held}, RawStream: true,
			Digest: fmt.Sprintf("sha256:%x", sha256.Sum256(img))})
		done <- err
	}()
	select {
	case <-held.entered:
	case err := <-done:
		t.Fatalf("install returned before its write held: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the install did not reach its write")
	}

	answered := make(chan Status, 1)
	go func() {
		s := m.Status()
		// Base and Verify read the state as Status does; their answer
		// for this rig (no index, no recorded digest) does not matter,
		// only that they return.
		if b, err := m.Base(A); err == nil {
			b.Close()
		}
		m.Verify(context.Background(), A)
		// The commit of a healthy boot: A is already good, nothing to
		// write, nothing to wait for.
		if err := m.MarkGood(A); err != nil {
			t.Errorf("MarkGood of the good booted slot: %v", err)
		}
		answered <- s
	}()
	var s Status
	select {
	case s = <-answered:
	case <-time.After(10 * time.Second):
		t.Fatal("Status waited for the install's slot write")
	}
	if s.Slots[1].State != Writing || s.Slots[1].Image != "sha256:feed" || s.Slots[0].State != Good {
		t.Fatalf("status during the write: %+v", s)
	}

	close(held.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := m.Status(); s.Slots[1].State != Written || s.Seq <= 1 {
		t.Fatalf("after the write: %+v", s)
	}
}
