package groundd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// TestOperatorAPI runs the real Daemon behind the real HTTP API (groundd/api)
// on loopback, driven in lockstep with the vehicle stand-in through the
// passes on a fake clock: an operator queues the uplink, watches its
// progress and the passes estimate mid-transfer, sends a command and sees
// its stages, follows the telemetry, and reads the final slot status and
// the metrics, all through the API's client.
func TestOperatorAPI(t *testing.T) {
	rng := testrand.New(t)
	w := newWorld(t, rng, 0.1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := w.open()
	defer d.Close()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	const token = "operator-api-test-token-0123456789"
	srv, err := api.New(d, api.Config{Token: token, Now: func() time.Time { return w.now }})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	cl, err := api.NewClient(hs.URL, token)
	if err != nil {
		t.Fatal(err)
	}

	// Telemetry followed from the start; events reach the test through it.
	events := make(chan string, 1024)
	followed := make(chan error, 1)
	go func() {
		followed <- cl.FollowTelemetry(ctx, vehicleID, api.TelemetryQuery{Kind: "event"}, func(r groundd.TelemetryRecord) error {
			events <- r.Name
			return nil
		})
	}()

	u, err := cl.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String(), Deadline: t0.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID + 1, Image: w.v2.Ref.String()}); err == nil {
		t.Fatal("an uplink to an unconfigured vehicle was queued")
	} else if e, ok := errors.AsType[*api.Error](err); !ok || e.Status != 400 {
		t.Fatalf("unconfigured vehicle: %v", err)
	}

	var cmd groundd.Command
	var midway groundd.Transfer
	var in [][]byte
	polls := 0
	for ; polls < 200000; polls++ {
		_, up := w.schedule.At(vehicleID, w.now)
		w.relay.Link = up
		w.veh.SetLink(w.now, up)
		out, _, err := d.Poll(ctx, vehicleID, w.now, in)
		if err != nil {
			t.Fatal(err)
		}
		delivered, err := w.relay.Up(out)
		if err != nil {
			t.Fatal(err)
		}
		vout, err := w.veh.Step(w.now, delivered)
		if err != nil {
			t.Fatal(err)
		}
		if in, err = w.relay.Down(vout); err != nil {
			t.Fatal(err)
		}
		if polls%50 == 0 {
			// What the operator sees now.
			ts, err := cl.Transfers(ctx, 0, vehicleID)
			if err != nil {
				t.Fatal(err)
			}
			for _, tr := range ts {
				if tr.Kind == "bundle" && tr.Chunks > 0 && tr.Chunks < tr.Total && midway.ID == 0 {
					midway = tr
				}
			}
			if cmd.ID == 0 {
				if v, err := cl.VehicleShow(ctx, vehicleID); err != nil {
					t.Fatal(err)
				} else if !v.LastContact.IsZero() {
					if cmd, err = cl.SendCommand(ctx, vehicleID, "verify_slot", map[string]any{"slot": "a"}); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, err := cl.QueueShow(ctx, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.State.Final() {
				break
			}
		}
		if up {
			w.now = w.now.Add(20 * time.Millisecond)
		} else if c := w.schedule.Change(vehicleID, w.now); !c.IsZero() {
			w.now = c
		} else {
			t.Fatal("out of passes")
		}
	}
	t.Logf("uplink ended after %d polls at %v", polls, w.now.Sub(t0))
	if midway.ID == 0 {
		t.Fatal("the API never showed the bundle part way")
	}
	t.Logf("midway: %d/%d chunks, %d bytes held, %d left, %d passes estimated", midway.Chunks, midway.Total, midway.Bytes, midway.Remaining, midway.Passes)
	if midway.Remaining == 0 || midway.Passes < 1 || midway.Bytes == 0 || midway.Uplink != u.ID {
		t.Errorf("midway progress %+v", midway)
	}

	got, err := cl.QueueShow(ctx, u.ID)
	if err != nil || got.State != groundd.UplinkDone || len(got.Layers) == 0 || got.Base != w.v1.ManifestDigest.String() {
		t.Fatalf("uplink %+v %v", got, err)
	}
	// The final slot status, from the vehicle's telemetry.
	v, err := cl.VehicleShow(ctx, vehicleID)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Slots) != 2 || v.Slots[1].Manifest != w.v2.ManifestDigest.String() || v.Slots[1].State != "written" {
		t.Fatalf("slots %+v", v.Slots)
	}
	if _, err := cl.QueueCancel(ctx, u.ID); err == nil {
		t.Error("a done uplink was cancelled")
	}
	// The command went through its stages.
	if cmd.ID == 0 {
		t.Fatal("the vehicle was never heard: no command sent")
	}
	c, err := cl.CommandShow(ctx, cmd.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("command %d %s: %s", c.ID, c.Opcode, c.Stage)
	if c.Stage == groundd.CmdQueued || c.Stage == groundd.CmdTimedOut {
		t.Errorf("command stage %s", c.Stage)
	}
	// The archive has the install; the follower saw it.
	recs, err := cl.Telemetry(ctx, vehicleID, api.TelemetryQuery{Name: "install_done"})
	if err != nil || len(recs) == 0 {
		t.Fatalf("install_done in the archive: %d, %v", len(recs), err)
	}
	for name := range events {
		if name == "install_done" {
			break
		}
	}
	// Metrics.
	req, _ := http.NewRequest("GET", hs.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`groundd_queue_uplinks{state="done"} 1`, `groundd_transfers_active 0`, `groundd_vehicle_last_contact_age_seconds{vehicle="7"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The daemon's traffic counters (api.Counterer): every series of the
	// vehicle, and traffic both ways over more than one pass.
	for _, name := range []string{"frames_sent", "bytes_sent", "frames_received", "bytes_received", "passes"} {
		series := "groundd_vehicle_" + name + `_total{vehicle="7"} `
		i := strings.Index(string(body), series)
		if i < 0 {
			t.Errorf("metrics lack %s", series)
			continue
		}
		var v float64
		if _, err := fmt.Sscan(string(body[i+len(series):]), &v); err != nil || v < 2 {
			t.Errorf("%s%v (%v)", series, v, err)
		}
	}
	cancel()
	if err := <-followed; !errors.Is(err, context.Canceled) {
		t.Errorf("follow ended with %v", err)
	}
}
