package uplink

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/update"
)

// FuzzStep feeds arbitrary frames to an engine: it never panics, and a
// frame no ground key signed never makes it reserve staging, record a plan
// or write anything.
func FuzzStep(f *testing.F) {
	g := newGround(f)
	for _, tr := range [][2][]byte{{update.TargetPlan(3), []byte("not a plan")}, {update.TargetBundle(3), bytes.Repeat([]byte{7}, 3000)}} {
		p, err := transfer.NewPlan(g.codec, testVehicle, g.next, tr[0], bytes.NewReader(tr[1]), uint64(len(tr[1])), 0, groundKeyID, strangerKey)
		if err != nil {
			f.Fatal(err)
		}
		g.next++
		off, err := g.codec.Encode(&p.Offer)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(off)
		c, err := g.codec.Encode(&protocol.Chunk{ID: p.Offer.ID, Index: 0, Data: tr[1][:min(len(tr[1]), 500)]})
		if err == nil {
			f.Add(c)
		}
	}
	f.Add([]byte{0x84, protocol.Version, 1})
	v := newVehicle(f, filepath.Join(f.TempDir(), "v"), false, nil)
	f.Cleanup(v.close)
	f.Fuzz(func(t *testing.T, frame []byte) {
		_ = v.e.Step(v.now, frame)
		if err := v.e.Tick(v.now); err != nil {
			t.Fatal(err)
		}
		v.e.Outbox()
		v.e.Events()
		if used := v.e.st.Used(); used != 0 || len(v.e.plans) != 0 || len(v.e.xfers) != 0 {
			t.Fatalf("an unsigned frame reserved %d bytes, %d plans, %d transfers", used, len(v.e.plans), len(v.e.xfers))
		}
	})
}
