package flightd

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/link"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
)

// TestVerifyHoldsInstall: a bundle that completes while verify_slot reads
// the inactive slot back waits for the verification to end before its
// install writes that slot (an install started meanwhile would make the
// verification's answer meaningless and race the slot's record); the
// install then starts by itself, with no further frame from the ground.
func TestVerifyHoldsInstall(t *testing.T) {
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
	var verifying, overlap atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	v.opts = func(o *Options) {
		o.verifySlot = func(_ context.Context, id slots.SlotID) (*slots.VerifyResult, error) {
			verifying.Store(true)
			close(entered)
			<-release
			verifying.Store(false)
			return &slots.VerifyResult{Slot: id, State: slots.Empty, OK: true}, nil
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
	g.onEvent = func(e *protocol.Event) {
		if e.ID == dict.EvInstallStarted.ID && verifying.Load() {
			overlap.Store(true)
		}
	}
	l, err := link.Open(link.Config{Name: "sband", Kind: "udp", Listen: "127.0.0.1:0", MaxFrame: 1024})
	mustT(t, err)
	addr := l.(interface{ Addr() net.Addr }).Addr().(*net.UDPAddr)
	g.relay = newLossyRelay(t, addr, rand.New(rand.NewPCG(rng.Uint64(), 1)), 0).addr()
	ctx, cancel := context.WithCancel(context.Background())
	done := v.run(ctx, l, 1)
	defer func() { cancel(); <-done }()

	// verify_slot b: its read-back holds until released; its final
	// report comes after that.
	def, _ := dict.CommandByName("verify_slot")
	g.seq++
	c, err := def.NewCommand(testVehicle, g.seq, dict.Values{"slot": "b"})
	mustT(t, err)
	mustT(t, protocol.SignCommand(c, e2eGroundID, g.ground))
	b, err := codec.Encode(c)
	mustT(t, err)
	g.sendFrame(b)
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("verify_slot did not start")
	}
	g.transfer(update.TargetPlan(1), g.signedPlan(1, 2, oims[0+1], bundle), 30*time.Second)
	g.transfer(update.TargetBundle(1), bundle, 30*time.Second)
	// A command's round trip: the vehicle's main loop went past the
	// bundle's completion and sent what the engine reported.
	g.command("status", nil, 20*time.Second)
	if overlap.Load() {
		t.Fatal("the install started while verify_slot was reading the slot")
	}
	close(release)
	g.waitEvent(dict.EvInstallDone, 0, 60*time.Second)
	if overlap.Load() {
		t.Fatal("the install started while verify_slot was reading the slot")
	}
}
