package groundd_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
)

// TestWriteBundle: the offline update file carries a plan signed by the
// ground key for the vehicle, with the release signature, and a bundle that
// rebuilds the image from the one named as base; plan ids come from the
// same counter as the queue's.
func TestWriteBundle(t *testing.T) {
	w := newWorld(t, testrand.New(t), 0, nil)
	ctx := context.Background()
	d := w.open()
	defer d.Close()
	if _, err := d.WriteBundle(ctx, groundd.BundleRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()}, io.Discard); err == nil || !strings.Contains(err.Error(), "not reported its slots") {
		t.Fatalf("a bundle for a vehicle groundd knows nothing of, with no base: %v", err)
	}
	if _, err := d.WriteBundle(ctx, groundd.BundleRequest{Vehicle: 99, Image: w.v2.Ref.String()}, io.Discard); err == nil {
		t.Fatal("a bundle for an unknown vehicle")
	}
	var ids []uint64
	for _, full := range []bool{false, true} {
		var buf bytes.Buffer
		req := groundd.BundleRequest{Vehicle: vehicleID, Image: w.v2.Ref.String(), Base: w.v1.Ref.String(), Full: full}
		info, err := d.WriteBundle(ctx, req, &buf)
		if err != nil {
			t.Fatal(err)
		}
		if info.FileSize != int64(buf.Len()) {
			t.Fatalf("info says %d bytes, wrote %d", info.FileSize, buf.Len())
		}
		p, br, err := update.ReadFile(&buf)
		if err != nil {
			t.Fatal(err)
		}
		gk, _ := protocol.NewKeyring(protocol.Key{ID: groundKey, Pub: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x47}, 32)).Public().(ed25519.PublicKey)})
		if err := update.VerifyPlan(gk, vehicleID, p); err != nil {
			t.Fatal(err)
		}
		if err := update.VerifyPlan(gk, vehicleID+1, p); err == nil {
			t.Fatal("the plan verifies for another vehicle")
		}
		bundle, err := io.ReadAll(br)
		if err != nil {
			t.Fatal(err)
		}
		h := checkBundle(t, bundle, w.v2, w.v1)
		for li, l := range h.Layers {
			if full && l.Decision != delta.Full {
				t.Errorf("full bundle: layer %d %s", li, l.Decision)
			}
		}
		if !full && p.Base != w.v1.ManifestDigest {
			t.Errorf("base %s", p.Base)
		}
		ids = append(ids, p.ID)
	}
	if ids[1] <= ids[0] {
		t.Fatalf("plan ids %v do not increase", ids)
	}
}
