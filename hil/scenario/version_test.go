package scenario

import (
	"testing"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/opencontainers/go-digest"
)

// TestSlotVersion: the factory slot, whose install flightd has no release
// record of (hk.slots says version 0), is reported with the factory
// image's version when its manifest digest is the factory image's; a
// version the vehicle reports is kept; an unknown image stays 0.
func TestSlotVersion(t *testing.T) {
	base, upd := digest.FromString("base"), digest.FromString("update")
	set := &images.Set{Base: images.Image{Name: "base", Version: 1, Manifest: base}, Update: images.Image{Name: "update", Version: 2, Manifest: upd}}
	for _, c := range []struct {
		slot groundd.Slot
		want uint64
	}{
		{groundd.Slot{Name: "a", Digest: base.Encoded()[:16]}, 1},
		{groundd.Slot{Name: "b", Version: 2, Digest: upd.Encoded()[:16]}, 2},
		{groundd.Slot{Name: "b", Digest: upd.Encoded()[:16]}, 2},
		{groundd.Slot{Name: "a", Digest: digest.FromString("other").Encoded()[:16]}, 0},
		{groundd.Slot{Name: "a"}, 0},
	} {
		if got := slotVersion(c.slot, set); got != c.want {
			t.Errorf("slot %+v: version %d, want %d", c.slot, got, c.want)
		}
	}
}
