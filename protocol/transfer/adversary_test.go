package transfer

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/bootorbit/bootorbit/protocol"
)

// TestOldCancelDoS is finding 7: replaying a captured cancel of a transfer
// this vehicle never saw (id 1000) must not make a genuine later offer
// (id 8) look replayed.
func TestOldCancelDoS(t *testing.T) {
	f := newRxFixture(t)
	old := signedCancel(f, 1000)
	if err := f.step(f.encode(old)); err != nil {
		t.Logf("old cancel: %v", err)
	}
	plan := testPlan(t, f.codec, 8, bytes.Repeat([]byte{3}, 3000), f.priv)
	if err := f.step(f.encode(&plan.Offer)); err != nil {
		t.Fatalf("genuine offer 8 after a replayed cancel of 1000: %v", err)
	}
	if !f.j.Has(keyOffer(8)) {
		t.Fatal("offer 8 not journaled")
	}
	// The cancel still ends only the transfer it names: 1000, should its
	// offer arrive late, is refused.
	late := testPlan(t, f.codec, 1000, bytes.Repeat([]byte{4}, 3000), f.priv)
	if err := f.step(f.encode(&late.Offer)); !errors.Is(err, protocol.ErrReplayed) {
		t.Fatalf("offer 1000 after its cancel: %v, want replayed", err)
	}
}

// signedCancel is a genuine ground cancel of transfer id for the fixture's
// vehicle.
func signedCancel(f *rxFixture, id uint64) *protocol.Cancel {
	c := &protocol.Cancel{ID: id, Reason: protocol.CancelByGround}
	c.Sig = ed25519.Sign(f.priv, protocol.CancelSigningBytes(c))
	return c
}
