package groundd_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// TestRun: the daemon's own loop, on the wall clock and a UDP link of its
// configuration, takes an uplink to the vehicle stand-in and sends it a
// command; the test waits on the telemetry feed, never on a sleep.
func TestRun(t *testing.T) {
	rng := testrand.New(t)
	w := newWorld(t, rng, 0, nil)
	w.opts.Schedule, w.opts.Now = nil, nil // always up, wall clock
	vc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	w.cfg.Vehicles[0].Link = groundd.LinkConfig{Kind: "udp", Listen: "127.0.0.1:0", Peer: vc.LocalAddr().String()}
	w.cfg.Vehicles[0].Rate = 2e6
	w.cfg.Vehicles[0].RTT = groundd.Duration(20 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := w.open()
	defer d.Close()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	feed, err := d.TelemetryFollow(ctx, vehicleID)
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(ctx, nil) }()

	// The vehicle: frames in, frames out to whoever sent the last one.
	vehDone := make(chan error, 1)
	go func() {
		buf := make([]byte, maxFrame+1)
		var peer *net.UDPAddr
		w.veh.SetLink(time.Now(), true)
		for ctx.Err() == nil {
			vc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			var in [][]byte
			if n, from, err := vc.ReadFromUDP(buf); err == nil {
				peer = from
				in = append(in, append([]byte(nil), buf[:n]...))
			}
			out, err := w.veh.Step(time.Now(), in)
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

	u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	var sentCmd bool
	var cmd groundd.Command
	for rec := range feed {
		if rec.Kind == "tm" && !sentCmd {
			// The vehicle is heard: a command now.
			if cmd, err = d.SendCommand(ctx, vehicleID, "noop", nil); err != nil {
				t.Fatal(err)
			}
			sentCmd = true
		}
		if rec.Kind == "event" && rec.Name == "install_done" {
			break
		}
	}
	if err := ctx.Err(); err != nil {
		t.Fatalf("no install_done: %v", err)
	}
	got, err := d.QueueShow(ctx, u.ID)
	if err != nil || got.State != groundd.UplinkDone {
		t.Fatalf("uplink %+v %v", got, err)
	}
	c, err := d.CommandShow(ctx, cmd.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("command %d: %s", c.ID, c.Stage)
	if c.Stage != groundd.CmdCompleted && c.Stage != groundd.CmdAccepted {
		t.Errorf("command stage %s", c.Stage)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}
	if err := <-vehDone; err != nil {
		t.Fatal(err)
	}
}
