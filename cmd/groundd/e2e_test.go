package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/groundd/groundtest"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
)

// TestOperatorCLIEndToEnd: the operator's commands against the real
// daemon: groundd's Daemon runs on the wall clock with a UDP link to the
// vehicle stand-in on loopback, behind the real API; `groundd queue add`
// queues a multi-layer image and `groundd queue show --watch` follows it,
// on a pipe, until the uplink is done, then prints the vehicle's slots as
// its telemetry reports them; `groundd vehicles` and `groundd tlm` show
// the same. The test waits on the commands' exits, never on a sleep.
func TestOperatorCLIEndToEnd(t *testing.T) {
	rng := testrand.New(t)
	dir := t.TempDir()
	layout := filepath.Join(dir, "images")
	l1 := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 3, Files: 10, MaxFileSize: 16 << 10})
	l2, _ := ocitest.Modify(rng, l1, ocitest.ModifyOptions{})
	v1 := ocitest.Build(t, layout, "os-1", l1)
	v2 := ocitest.Build(t, layout, "os-2", l2)

	kf, err := images.GenerateKey(filepath.Join(dir, "release"), 5, bytes.NewReader(bytes.Repeat([]byte{0x52}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	_, relPriv, err := images.ReadPrivateKey(kf.Private)
	if err != nil {
		t.Fatal(err)
	}
	relKeys, err := protocol.NewKeyring(protocol.Key{ID: 5, Pub: relPriv.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	for i, im := range []ocitest.Image{v1, v2} {
		r, err := images.ParseRef(im.Ref.String())
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := images.Sign(context.Background(), r, images.Options{}, 5, relPriv, uint64(i+1), "obc-rev-c"); err != nil {
			t.Fatal(err)
		}
	}
	seed := bytes.Repeat([]byte{0x47}, 32)
	mac := bytes.Repeat([]byte{0x4d}, protocol.MACKeyLen)
	writeKey := func(name string, k []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	vc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	cfg := groundd.Config{
		StateDir: filepath.Join(dir, "state"), GroundKey: writeKey("ground.key", seed), GroundKeyID: 3, MaxFrame: 1024,
		ReleaseKeys: kf.Public,
		Vehicles: []groundd.VehicleConfig{{ID: 7, Name: "sat-7", MACKey: groundd.KeyRef{ID: 1, File: writeKey("mac.key", mac)},
			Link: groundd.LinkConfig{Kind: "udp", Listen: "127.0.0.1:0", Peer: vc.LocalAddr().String()},
			Rate: 2e6, RTT: groundd.Duration(20 * time.Millisecond)}},
	}
	codec, err := protocol.NewCodec(1024)
	if err != nil {
		t.Fatal(err)
	}
	veh, err := groundtest.NewVehicle(groundtest.VehicleConfig{
		ID: 7, Codec: codec, MACKey: protocol.MACKey{ID: 1, Key: mac},
		GroundKeys:  map[uint32]ed25519.PublicKey{3: ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)},
		ReleaseKeys: relKeys, Booted: v1.ManifestDigest, Version: 1, Epoch: 1,
	})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := groundd.Open(cfg, groundd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.RegisterImage(ctx, v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(d, api.Config{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(ctx, nil) }()
	vehDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 1025)
		var peer *net.UDPAddr
		veh.SetLink(time.Now(), true)
		for ctx.Err() == nil {
			vc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			var in [][]byte
			if n, from, err := vc.ReadFromUDP(buf); err == nil {
				peer = from
				in = append(in, append([]byte(nil), buf[:n]...))
			}
			out, err := veh.Step(time.Now(), in)
			if err != nil {
				vehDone <- err
				return
			}
			for _, f := range out {
				if peer != nil {
					vc.WriteToUDP(f, peer)
				}
			}
		}
		vehDone <- nil
	}()

	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := commands.Execute(ctx, append(args, "--server", hs.URL), &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errOut := run("queue", "add", "--vehicle", "7", "--image", v2.Ref.String())
	if code != 0 || !strings.Contains(out, "uplink 1 queued") {
		t.Fatalf("queue add: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = run("queue", "show", "1", "--watch", "--interval", "50ms")
	t.Logf("groundd queue show 1 --watch:\n%s", out)
	if code != 0 {
		t.Fatalf("queue show --watch: exit %d: %s", code, errOut)
	}
	short := v2.ManifestDigest.Encoded()[:16]
	if strings.Count(out, "done\n") != 3 {
		t.Errorf("want each transfer said done once, and the uplink")
	}
	contains(t, "queue show --watch", out, "uplink 1 vehicle 7 plan", "uplink 1 vehicle 7 bundle", "(100%), done", "uplink 1 done\nvehicle 7 slots: a ",
		"; b written v2 "+short)
	if strings.Contains(out, "\x1b") {
		t.Error("escape codes on a pipe")
	}
	// The slots as the vehicle's telemetry reports them: groundd learns
	// of slot B from the install and from the next hk.slots.
	code, out, errOut = run("vehicles")
	t.Logf("groundd vehicles:\n%s", out)
	if code != 0 {
		t.Fatalf("vehicles: exit %d %s", code, errOut)
	}
	contains(t, "vehicles", out, "sat-7", "up", "written v2 "+short)
	code, out, errOut = run("tlm", "7", "--kind", "event")
	t.Logf("groundd tlm 7 --kind event:\n%s", out)
	if code != 0 {
		t.Fatalf("tlm: exit %d %s", code, errOut)
	}
	contains(t, "tlm", out, "plan_accepted", "install_done")
	cancel()
	<-runErr
	if err := <-vehDone; err != nil {
		t.Fatal(err)
	}
}
