package transfer_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/bootorbit/bootorbit/protocol"
	. "github.com/bootorbit/bootorbit/protocol/transfer"
)

// TestReceiverAccept: the acceptance hook sees an offer only after the
// receiver's own checks, a refusal is answered with the hook's reason and
// records nothing, and the same offer asked again is asked about again.
func TestReceiverAccept(t *testing.T) {
	f := newRxFixture(t)
	var asked []uint64
	allow := false
	f.r.Config().Accept = func(o *protocol.Offer) (uint8, bool) {
		asked = append(asked, o.ID)
		return protocol.CancelRefused, allow
	}
	data := bytes.Repeat([]byte("accept "), 200)
	plan := testPlan(t, f.codec, 7, data, f.priv)

	forged := plan.Offer
	forged.Sig = append([]byte(nil), plan.Offer.Sig...)
	forged.Sig[3] ^= 1
	if err := f.step(f.encode(&forged)); !errors.Is(err, protocol.ErrBadSignature) {
		t.Fatalf("forged offer: %v", err)
	}
	if len(asked) != 0 {
		t.Fatalf("the hook was asked about a forged offer")
	}
	for range 2 {
		err := f.step(f.encode(&plan.Offer))
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("refused offer: %v", err)
		}
		if f.j.Len() != 0 || f.j.Commits != 0 {
			t.Fatalf("a refused offer wrote the journal: %v", f.j.Snapshot())
		}
		if len(f.out) != 1 {
			t.Fatalf("refusal answered with %d messages", len(f.out))
		}
		if c, ok := f.out[0].(*protocol.Cancel); !ok || c.Reason != protocol.CancelRefused || c.ID != 7 {
			t.Fatalf("refusal answered with %#v", f.out[0])
		}
	}
	if len(asked) != 2 || f.r.Stats.OffersRefused != 2 || len(f.r.Active()) != 0 {
		t.Fatalf("asked %v, refused %d, active %v", asked, f.r.Stats.OffersRefused, f.r.Active())
	}
	allow = true
	if err := f.step(f.encode(&plan.Offer)); err != nil {
		t.Fatalf("accepted offer: %v", err)
	}
	if !f.j.Has(KeyOffer(7)) {
		t.Fatal("accepted offer not journaled")
	}
	// A repeat of an accepted offer is not asked about again.
	if err := f.step(f.encode(&plan.Offer)); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 3 {
		t.Fatalf("asked %v", asked)
	}

	// Abandon: the transfer is finished as cancelled, forgotten in the
	// journal, the ground told, and the offer then refused as replayed.
	if f.r.Abandon(99, protocol.CancelRefused) {
		t.Fatal("abandoned a transfer that is not active")
	}
	if !f.r.Abandon(7, protocol.CancelRefused) {
		t.Fatal("Abandon(7) false")
	}
	if err := f.step(nil); err == nil {
		t.Fatal("empty frame accepted")
	}
	if f.j.Has(KeyOffer(7)) || !f.j.Has(KeyDone(7)) {
		t.Fatalf("journal after Abandon: %v", f.j.Snapshot())
	}
	if len(f.out) != 1 {
		t.Fatalf("Abandon sent %d messages", len(f.out))
	}
	if c, ok := f.out[0].(*protocol.Cancel); !ok || c.Reason != protocol.CancelRefused {
		t.Fatalf("Abandon sent %#v", f.out[0])
	}
	if err := f.step(f.encode(&plan.Offer)); !errors.Is(err, protocol.ErrReplayed) {
		t.Fatalf("offer after Abandon: %v", err)
	}
}
