package uplink

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
)

// TestPowerCutStore cuts the power of the staging filesystem (a crashable
// MemFS: what was not synced is lost, in part or whole) at random
// operations while the plan and bundle arrive, restarts the engine on what
// survived, and goes on: Check is clean after every restart, and the
// bundle installs (its sha256 is checked), so no record ever pointed at
// data that was not durable.
func TestPowerCutStore(t *testing.T) {
	rng := testrand.New(t)
	dir := t.TempDir()
	im := makeImages(t, rng, filepath.Join(dir, "img"), ocitest.GenOptions{Layers: 2, Files: 30})
	runs := 3
	if testrand.Long() {
		runs = 50
	}
	for run := range runs {
		v := newVehicleNoOpen(t, filepath.Join(dir, "v", string(rune('a'+run%26))+string(rune('0'+run/26))), false, im.oldBase())
		mem := vfs.NewMem()
		v.cfg.FS = mem
		v.open()
		g := newGround(t)
		r := &relay{rng: rng, loss: 0.1, dup: 0.02}
		cuts := 0
		for _, tr := range []struct {
			id     uint64
			target []byte
			data   []byte
		}{{1, update.TargetPlan(7), im.plan(t, planOpts{id: 7})}, {2, update.TargetBundle(7), im.bundle}} {
			for {
				mem.SetCrashAfter(1+rng.IntN(25), rng)
				g.next = tr.id
				s := g.sender(tr.target, tr.data)
				v.run(s, r, 200000, func(int) bool { return mem.Crashed() != nil })
				if crashed := mem.Crashed(); crashed != nil {
					cuts++
					v.close()
					mem = crashed
					v.cfg.FS = mem
					v.open()
					if ps := v.e.Check(); len(ps) > 0 {
						t.Fatalf("run %d, cut %d: Check: %v", run, cuts, ps)
					}
					continue
				}
				if !s.Done() || s.Err() != nil {
					t.Fatalf("run %d: transfer %d: %v", run, tr.id, s.Err())
				}
				break
			}
		}
		mem.SetCrashAfter(-1, nil)
		if _, err := v.e.RunInstall(context.Background()); err != nil {
			t.Fatalf("run %d after %d cuts: %v", run, cuts, err)
		}
		if sb := v.inst.m.Status().Slots[1]; sb.State != slots.Written {
			t.Fatalf("run %d: slot B %s", run, sb.State)
		}
		if ps := v.e.Check(); len(ps) > 0 {
			t.Fatalf("run %d: Check: %v", run, ps)
		}
		t.Logf("run %d: %d power cuts", run, cuts)
		v.close()
	}
}
