package api_test

import (
	"context"
	"encoding/json"
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
	"github.com/bootorbit/bootorbit/groundd/api/apitest"
	"github.com/bootorbit/bootorbit/groundd/metrics"
)

const token = "0123456789abcdef-test-token"

var t0 = time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)

func vehicles() []groundd.Vehicle {
	return []groundd.Vehicle{
		{ID: 7, Name: "sat-7", BootedSlot: "a", LastContact: t0.Add(-90 * time.Second), Link: true,
			Slots: []groundd.Slot{{Name: "a", State: "good", Version: 3, Digest: "4f2c01aa00112233", Booted: true}, {Name: "b", State: "empty"}}},
		{ID: 9, Name: "sat-9"},
	}
}

// serve starts the API of a fake daemon on a loopback test server.
func serve(t *testing.T, tok string) (*apitest.Fake, *httptest.Server, *api.Client) {
	t.Helper()
	f := apitest.New(func() time.Time { return t0 }, vehicles()...)
	s, err := api.New(f, api.Config{Token: tok, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	c, err := api.NewClient(ts.URL, tok)
	if err != nil {
		t.Fatal(err)
	}
	return f, ts, c
}

func apiErr(t *testing.T, err error, status int, code string) {
	t.Helper()
	e, ok := errors.AsType[*api.Error](err)
	if !ok {
		t.Fatalf("err %v, want an *api.Error %d %s", err, status, code)
	}
	if e.Status != status || e.Code != code || e.Message == "" {
		t.Fatalf("err %+v, want %d %s with a message", e, status, code)
	}
}

func TestQueue(t *testing.T) {
	ctx := context.Background()
	_, _, c := serve(t, "")
	u1, err := c.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: 7, Image: "oci:images:os-2", Priority: 1, Deadline: t0.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if u1.ID == 0 || u1.State != groundd.UplinkQueued || u1.Image != "oci:images:os-2" || !u1.Deadline.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("added %+v", u1)
	}
	u2, err := c.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: 9, Image: "oci:images:os-3"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: 8, Image: "oci:images:os-3"}); err != nil {
		apiErr(t, err, 400, api.CodeBadRequest)
	} else {
		t.Fatal("an unknown vehicle was queued")
	}
	_, err = c.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: 7})
	apiErr(t, err, 400, api.CodeBadRequest)

	us, err := c.QueueList(ctx)
	if err != nil || len(us) != 2 || us[0].ID != u1.ID {
		t.Fatalf("list %+v, %v", us, err)
	}
	got, err := c.QueueShow(ctx, u2.ID)
	if err != nil || got.ID != u2.ID || got.Vehicle != 9 {
		t.Fatalf("show %+v, %v", got, err)
	}
	_, err = c.QueueShow(ctx, 99)
	apiErr(t, err, 404, api.CodeNotFound)
	if !api.IsNotFound(err) {
		t.Error("IsNotFound is false for a 404")
	}

	if _, err := c.QueueReorder(ctx, u2.ID, 0); err != nil {
		t.Fatal(err)
	}
	if us, _ := c.QueueList(ctx); us[0].ID != u2.ID {
		t.Fatalf("after reorder: %+v", us)
	}
	_, err = c.QueueReorder(ctx, u2.ID, -1)
	apiErr(t, err, 400, api.CodeBadRequest)

	cu, err := c.QueueCancel(ctx, u1.ID)
	if err != nil || cu.State != groundd.UplinkCancelled {
		t.Fatalf("cancel %+v, %v", cu, err)
	}
	_, err = c.QueueCancel(ctx, u1.ID)
	apiErr(t, err, 409, api.CodeConflict)
	_, err = c.QueueReorder(ctx, u1.ID, 0)
	apiErr(t, err, 409, api.CodeConflict)
}

func TestVehiclesAndTransfers(t *testing.T) {
	ctx := context.Background()
	f, _, c := serve(t, "")
	f.SetTransfers(
		groundd.Transfer{Uplink: 1, Vehicle: 7, Plan: 4, ID: 10, Kind: "plan", Size: 900, Done: true, Chunks: 4, Total: 4},
		groundd.Transfer{Uplink: 1, Vehicle: 7, Plan: 4, ID: 11, Kind: "bundle", Size: 1 << 20, Chunks: 300, Total: 1024, Remaining: 700 << 10, Passes: 3},
		groundd.Transfer{Uplink: 2, Vehicle: 9, Plan: 5, ID: 12, Kind: "plan", Size: 800, Total: 4, Remaining: 800, Passes: -1},
	)
	vs, err := c.Vehicles(ctx)
	if err != nil || len(vs) != 2 || vs[0].ID != 7 || vs[0].Slots[0].Version != 3 || len(vs[0].Transfers) != 1 || vs[0].Active != 1 {
		t.Fatalf("vehicles %+v, %v", vs, err)
	}
	v, err := c.VehicleShow(ctx, 9)
	if err != nil || v.Name != "sat-9" {
		t.Fatalf("vehicle %+v, %v", v, err)
	}
	_, err = c.VehicleShow(ctx, 8)
	apiErr(t, err, 404, api.CodeNotFound)

	ts, err := c.Transfers(ctx, 0, 0)
	if err != nil || len(ts) != 2 {
		t.Fatalf("transfers %+v, %v", ts, err)
	}
	ts, err = c.Transfers(ctx, 0, 7)
	if err != nil || len(ts) != 1 || ts[0].ID != 11 || ts[0].Passes != 3 || ts[0].Remaining != 700<<10 {
		t.Fatalf("transfers of 7 %+v, %v", ts, err)
	}
	ts, err = c.Transfers(ctx, 1, 0)
	if err != nil || len(ts) != 2 || !ts[0].Done {
		t.Fatalf("transfers of uplink 1 %+v, %v", ts, err)
	}
}

func TestCommands(t *testing.T) {
	ctx := context.Background()
	f, ts, c := serve(t, "")
	cmd, err := c.SendCommand(ctx, 7, "activate", map[string]any{"slot": "b", "attempts": 3})
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Stage != groundd.CmdQueued || cmd.Opcode != "activate" || cmd.Args["slot"] != "b" {
		t.Fatalf("sent %+v", cmd)
	}
	f.SetStage(cmd.ID, groundd.CmdRejected, 263, "bad_state")
	got, err := c.CommandShow(ctx, cmd.ID)
	if err != nil || got.Stage != groundd.CmdRejected || got.Code != 263 || got.Reason != "bad_state" {
		t.Fatalf("show %+v, %v", got, err)
	}
	cs, err := c.Commands(ctx, 7)
	if err != nil || len(cs) != 1 {
		t.Fatalf("list %+v, %v", cs, err)
	}
	// A uint64 above 2^53 keeps every digit through JSON.
	big := uint64(1<<63 + 12345)
	cmd, err = c.SendCommand(ctx, 7, "delete_staged", map[string]any{"plan": big})
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := cmd.Args["plan"].(float64); !ok || n == 0 {
		t.Fatalf("plan arg %T %v", cmd.Args["plan"], cmd.Args["plan"])
	}
	raw := httpDo(t, ts, "", "GET", "/v1/commands/2", "", "")
	if !strings.Contains(raw.body, "9223372036854788153") {
		t.Errorf("the plan id lost digits: %s", raw.body)
	}

	for _, tc := range []struct {
		op   string
		args map[string]any
	}{
		{"fly_to_moon", nil},
		{"activate", map[string]any{"slot": "c", "attempts": 3}},          // no such label
		{"activate", map[string]any{"slot": "b", "attempts": 10}},         // out of range
		{"activate", map[string]any{"slot": "b", "attempts": "x"}},        // wrong type
		{"activate", map[string]any{"slot": "b"}},                         // missing
		{"activate", map[string]any{"slot": "b", "attempts": -1}},         // negative
		{"activate", map[string]any{"slot": "b", "attempts": 1.5}},        // fraction
		{"noop", map[string]any{"x": 1}},                                  // no arguments
		{"delete_staged", map[string]any{"plan": "18446744073709551616"}}, // a string
	} {
		_, err := c.SendCommand(ctx, 7, tc.op, tc.args)
		apiErr(t, err, 400, api.CodeBadRequest)
	}
	_, err = c.SendCommand(ctx, 8, "noop", nil)
	apiErr(t, err, 404, api.CodeNotFound)
	_, err = c.CommandShow(ctx, 99)
	apiErr(t, err, 404, api.CodeNotFound)
}

func TestTelemetry(t *testing.T) {
	ctx := context.Background()
	f, _, c := serve(t, "")
	for i, name := range []string{"hk.slots", "hk.boot", "install_done", "hk.slots"} {
		kind := "tm"
		if !strings.HasPrefix(name, "hk.") {
			kind = "event"
		}
		f.Publish(groundd.TelemetryRecord{Vehicle: 7, Received: t0.Add(time.Duration(i) * time.Minute), Kind: kind, Name: name, Seq: uint32(i),
			Values: map[string]any{"i": i}})
	}
	all, err := c.Telemetry(ctx, 7, api.TelemetryQuery{})
	if err != nil || len(all) != 4 {
		t.Fatalf("all: %d, %v", len(all), err)
	}
	rng, err := c.Telemetry(ctx, 7, api.TelemetryQuery{From: t0.Add(time.Minute), To: t0.Add(3 * time.Minute)})
	if err != nil || len(rng) != 2 || rng[0].Name != "hk.boot" {
		t.Fatalf("range: %+v, %v", rng, err)
	}
	byName, err := c.Telemetry(ctx, 7, api.TelemetryQuery{Name: "hk.slots", Limit: 1})
	if err != nil || len(byName) != 1 || byName[0].Seq != 0 {
		t.Fatalf("by name: %+v, %v", byName, err)
	}
	ev, err := c.Telemetry(ctx, 7, api.TelemetryQuery{Kind: "event"})
	if err != nil || len(ev) != 1 || ev[0].Name != "install_done" {
		t.Fatalf("events: %+v, %v", ev, err)
	}
	_, err = c.Telemetry(ctx, 8, api.TelemetryQuery{})
	apiErr(t, err, 404, api.CodeNotFound)
	_, err = c.Telemetry(ctx, 7, api.TelemetryQuery{Kind: "bogus"})
	apiErr(t, err, 400, api.CodeBadRequest)
	_, err = c.Telemetry(ctx, 7, api.TelemetryQuery{From: t0.Add(time.Hour), To: t0})
	apiErr(t, err, 400, api.CodeBadRequest)
}

func TestTelemetryFollow(t *testing.T) {
	f, _, c := serve(t, "")
	f.Publish(groundd.TelemetryRecord{Vehicle: 7, Received: t0, Kind: "tm", Name: "hk.boot", Seq: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan groundd.TelemetryRecord, 8)
	done := make(chan error, 1)
	go func() {
		done <- c.FollowTelemetry(ctx, 7, api.TelemetryQuery{From: t0, Name: "hk.boot"}, func(r groundd.TelemetryRecord) error {
			got <- r
			return nil
		})
	}()
	<-f.Subscribed
	if r := <-got; r.Seq != 1 {
		t.Fatalf("first record %+v, want the archived one", r)
	}
	f.Publish(groundd.TelemetryRecord{Vehicle: 9, Received: t0.Add(time.Second), Kind: "tm", Name: "hk.boot", Seq: 2})  // another vehicle
	f.Publish(groundd.TelemetryRecord{Vehicle: 7, Received: t0.Add(time.Second), Kind: "tm", Name: "hk.slots", Seq: 3}) // another name
	f.Publish(groundd.TelemetryRecord{Vehicle: 7, Received: t0.Add(2 * time.Second), Kind: "tm", Name: "hk.boot", Seq: 4})
	if r := <-got; r.Seq != 4 {
		t.Fatalf("live record %+v, want seq 4", r)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("follow ended with %v", err)
	}
}

// httpResult is a raw answer.
type httpResult struct {
	status int
	header http.Header
	body   string
}

func httpDo(t *testing.T, ts *httptest.Server, tok, method, path, ctype, body string) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return httpResult{resp.StatusCode, resp.Header, string(b)}
}

// errCode reads the code of an error document, failing on anything else.
func errCode(t *testing.T, r httpResult) string {
	t.Helper()
	var doc struct {
		Error *api.Error `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.body), &doc); err != nil || doc.Error == nil || doc.Error.Message == "" {
		t.Fatalf("status %d: not an error document: %q", r.status, r.body)
	}
	if r.header.Get("Content-Type") != "application/json" {
		t.Errorf("error Content-Type %q", r.header.Get("Content-Type"))
	}
	return doc.Error.Code
}

func TestBadRequests(t *testing.T) {
	_, ts, _ := serve(t, "")
	const js = "application/json"
	big := `{"vehicle":7,"image":"` + strings.Repeat("x", api.DefaultMaxBody) + `"}`
	for _, tc := range []struct {
		name, method, path, ctype, body string
		status                          int
		code                            string
	}{
		{"unknown path", "GET", "/v1/nothing", "", "", 404, api.CodeNotFound},
		{"root", "GET", "/", "", "", 404, api.CodeNotFound},
		{"wrong method", "DELETE", "/v1/queue", "", "", 405, api.CodeMethod},
		{"bad id", "GET", "/v1/queue/abc", "", "", 400, api.CodeBadRequest},
		{"negative id", "GET", "/v1/queue/-1", "", "", 400, api.CodeBadRequest},
		{"id overflow", "GET", "/v1/vehicles/4294967296", "", "", 400, api.CodeBadRequest},
		{"not json", "POST", "/v1/queue", js, "{vehicle: 7", 400, api.CodeBadRequest},
		{"form post", "POST", "/v1/queue", "application/x-www-form-urlencoded", "vehicle=7", 415, api.CodeMediaType},
		{"text post", "POST", "/v1/queue", "text/plain", `{"vehicle":7,"image":"oci:a:b"}`, 415, api.CodeMediaType},
		{"no content type", "POST", "/v1/queue", "", `{"vehicle":7,"image":"oci:a:b"}`, 415, api.CodeMediaType},
		{"unknown field", "POST", "/v1/queue", js, `{"vehicle":7,"image":"oci:a:b","prio":3}`, 400, api.CodeBadRequest},
		{"two documents", "POST", "/v1/queue", js, `{"vehicle":7,"image":"oci:a:b"}{}`, 400, api.CodeBadRequest},
		{"wrong type", "POST", "/v1/queue", js, `{"vehicle":"seven","image":"oci:a:b"}`, 400, api.CodeBadRequest},
		{"vehicle overflow", "POST", "/v1/queue", js, `{"vehicle":4294967296,"image":"oci:a:b"}`, 400, api.CodeBadRequest},
		{"bad time", "POST", "/v1/queue", js, `{"vehicle":7,"image":"oci:a:b","deadline":"tomorrow"}`, 400, api.CodeBadRequest},
		{"deadline before not-before", "POST", "/v1/queue", js, `{"vehicle":7,"image":"oci:a:b","not_before":"2026-12-08T00:00:00Z","deadline":"2026-12-07T00:00:00Z"}`, 400, api.CodeBadRequest},
		{"too large", "POST", "/v1/queue", js, big, 413, api.CodeTooLarge},
		{"reorder no body", "POST", "/v1/queue/1/reorder", js, "", 400, api.CodeBadRequest},
		{"command null args", "POST", "/v1/vehicles/7/commands", js, `{"opcode":"activate","args":{"slot":null,"attempts":2}}`, 400, api.CodeBadRequest},
		{"command empty args", "POST", "/v1/vehicles/7/commands", js, `{"opcode":"noop","args":{}}`, 202, ""},
		{"unknown query", "GET", "/v1/transfers?vehicel=7", "", "", 400, api.CodeBadRequest},
		{"bad uplink query", "GET", "/v1/transfers?uplink=x", "", "", 400, api.CodeBadRequest},
		{"bad from", "GET", "/v1/vehicles/7/telemetry?from=yesterday", "", "", 400, api.CodeBadRequest},
		{"bad limit", "GET", "/v1/vehicles/7/telemetry?limit=0", "", "", 400, api.CodeBadRequest},
		{"limit too high", "GET", "/v1/vehicles/7/telemetry?limit=10001", "", "", 400, api.CodeBadRequest},
		{"bad follow", "GET", "/v1/vehicles/7/telemetry?follow=maybe", "", "", 400, api.CodeBadRequest},
		{"long query", "GET", "/v1/vehicles/7/telemetry?name=" + strings.Repeat("n", 5000), "", "", 400, api.CodeBadRequest},
		{"long name", "GET", "/v1/vehicles/7/telemetry?name=" + strings.Repeat("n", 65), "", "", 400, api.CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httpDo(t, ts, "", tc.method, tc.path, tc.ctype, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.code != "" {
				if code := errCode(t, r); code != tc.code {
					t.Errorf("code %q, want %q", code, tc.code)
				}
			}
			if tc.status == 405 && r.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

func TestDaemonFailure(t *testing.T) {
	f, ts, c := serve(t, "")
	f.Err = errors.New("groundd: store: disk on fire")
	_, err := c.QueueList(context.Background())
	apiErr(t, err, 500, api.CodeInternal)
	// A scrape still serves the runtime's series, without the daemon's.
	r := httpDo(t, ts, "", "GET", "/metrics", "", "")
	if r.status != 200 || !strings.Contains(r.body, "go_goroutines") || strings.Contains(r.body, "groundd_queue_uplinks") {
		t.Errorf("metrics of a failing daemon: %d\n%s", r.status, r.body)
	}
}

func TestAuth(t *testing.T) {
	_, ts, c := serve(t, token)
	if _, err := c.QueueList(context.Background()); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	for _, tc := range []struct{ name, header string }{
		{"none", ""},
		{"wrong", "Bearer " + token + "x"},
		{"prefix", "Bearer " + token[:len(token)-1]},
		{"basic", "Basic " + token},
		{"bare", token},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/v1/queue", "/v1/vehicles/7", "/metrics", "/v1/nothing"} {
				req, _ := http.NewRequest("GET", ts.URL+path, nil)
				if tc.header != "" {
					req.Header.Set("Authorization", tc.header)
				}
				resp, err := ts.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 401 || !strings.Contains(string(b), api.CodeUnauthorized) || resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s: %d %s", path, resp.StatusCode, b)
				}
			}
		})
	}
	// A liveness probe needs no token; a token is accepted with any case
	// of "Bearer".
	if r := httpDo(t, ts, "", "GET", "/healthz", "", ""); r.status != 200 {
		t.Errorf("healthz: %d", r.status)
	}
	req, _ := http.NewRequest("GET", ts.URL+"/v1/queue", nil)
	req.Header.Set("Authorization", "bearer "+token)
	if resp, err := ts.Client().Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("lower-case bearer: %v %v", resp.StatusCode, err)
	}
	// With a token the Host is not checked (the server may be behind a
	// name).
	req, _ = http.NewRequest("GET", ts.URL+"/v1/queue", nil)
	req.Host = "groundd.example"
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := ts.Client().Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("named host with token: %v %v", resp.StatusCode, err)
	}
}

// TestRebinding: without a token, a request whose Host is not a loopback
// name (a DNS-rebinding page) is refused.
func TestRebinding(t *testing.T) {
	_, ts, _ := serve(t, "")
	for host, want := range map[string]int{"evil.example": 403, "evil.example:80": 403, "10.0.0.1": 403, "localhost": 200, "127.0.0.1:1": 200, "[::1]:7468": 200} {
		req, _ := http.NewRequest("GET", ts.URL+"/v1/queue", nil)
		req.Host = host
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %q: %d, want %d", host, resp.StatusCode, want)
		}
	}
}

func TestNewRefusesExposure(t *testing.T) {
	f := apitest.New(nil)
	for _, tc := range []struct {
		addr, tok string
		want      error
	}{
		{"0.0.0.0:7468", "", api.ErrNoToken},
		{":7468", "", api.ErrNoToken},
		{"192.0.2.1:7468", "", api.ErrNoToken},
		{"[::]:7468", "", api.ErrNoToken},
		{"groundd.example:7468", "", api.ErrNoToken},
		{"bogus", "", api.ErrNoToken},
		{"0.0.0.0:7468", "short", api.ErrBadToken},
		{"127.0.0.1:7468", "with space in the token", api.ErrBadToken},
		{"0.0.0.0:7468", token, nil},
		{"127.0.0.1:7468", "", nil},
		{"127.8.9.10:7468", "", nil},
		{"localhost:7468", "", nil},
		{"[::1]:7468", "", nil},
		{"", "", nil},
	} {
		_, err := api.New(f, api.Config{Addr: tc.addr, Token: tc.tok})
		if !errors.Is(err, tc.want) {
			t.Errorf("New(%q, token %q) = %v, want %v", tc.addr, tc.tok, err, tc.want)
		}
	}
}

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	f, ts, c := serve(t, token)
	c.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: 7, Image: "oci:images:os-2"})
	u, _ := c.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: 9, Image: "oci:images:os-2"})
	c.QueueCancel(ctx, u.ID)
	c.SendCommand(ctx, 7, "noop", nil)
	f.SetTransfers(groundd.Transfer{Uplink: 1, Vehicle: 7, ID: 11, Kind: "bundle", Size: 4096, Total: 4, Passes: 2})
	f.SetCounters(7, metrics.Counters{FramesSent: 12, BytesSent: 12288, FramesReceived: 3, BytesReceived: 300,
		Drops: map[string]uint64{"mac": 2, "replay": 1}, Passes: 4, BundleFetches: map[string]uint64{"ok": 2, "failed": 1}})
	r := httpDo(t, ts, token, "GET", "/metrics", "", "")
	if r.status != 200 {
		t.Fatalf("metrics: %d %s", r.status, r.body)
	}
	for _, want := range []string{
		`groundd_queue_uplinks{state="queued"} 1`,
		`groundd_queue_uplinks{state="cancelled"} 1`,
		`groundd_transfers_active 1`,
		`groundd_commands{stage="queued"} 1`,
		`groundd_vehicle_link_up{vehicle="7"} 1`,
		`groundd_vehicle_link_up{vehicle="9"} 0`,
		`groundd_vehicle_last_contact_age_seconds{vehicle="7"} 90`,
		`groundd_vehicle_passes_remaining{vehicle="7"} 2`,
		`groundd_vehicle_frames_sent_total{vehicle="7"} 12`,
		`groundd_vehicle_bytes_sent_total{vehicle="7"} 12288`,
		`groundd_vehicle_frames_received_total{vehicle="7"} 3`,
		`groundd_vehicle_bytes_received_total{vehicle="7"} 300`,
		`groundd_vehicle_frames_dropped_total{reason="mac",vehicle="7"} 2`,
		`groundd_vehicle_frames_dropped_total{reason="replay",vehicle="7"} 1`,
		`groundd_vehicle_passes_total{vehicle="7"} 4`,
		`groundd_vehicle_bundle_fetches_total{result="ok",vehicle="7"} 2`,
		`groundd_vehicle_bundle_fetches_total{result="failed",vehicle="7"} 1`,
		`groundd_api_requests_total{code="201",method="post"} 2`,
		`go_goroutines`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, never := range []string{`groundd_vehicle_last_contact_age_seconds{vehicle="9"}`, `groundd_vehicle_frames_sent_total{vehicle="9"}`} {
		if strings.Contains(r.body, never) {
			t.Errorf("metrics have %s", never)
		}
	}
	if t.Failed() {
		t.Log(r.body)
	}
}

func TestClientRefusesBadServer(t *testing.T) {
	for _, s := range []string{"ftp://127.0.0.1:1", "127.0.0.1:7468", "http://", "http://u:p@127.0.0.1:1", "http://127.0.0.1:1/?x=1"} {
		if _, err := api.NewClient(s, ""); err == nil {
			t.Errorf("NewClient(%q) accepted", s)
		}
	}
	if _, err := api.NewClient("http://127.0.0.1:1", "short"); !errors.Is(err, api.ErrBadToken) {
		t.Errorf("short token: %v", err)
	}
}

// TestVehicleZero: the daemon reads vehicle 0 as "every vehicle" in its
// listing and subscription calls; the API's per-vehicle paths must not
// hand out every vehicle's commands or telemetry under /vehicles/0.
func TestVehicleZero(t *testing.T) {
	f, ts, c := serve(t, "")
	if _, err := c.SendCommand(context.Background(), 7, "noop", nil); err != nil {
		t.Fatal(err)
	}
	_, err := c.Commands(context.Background(), 0)
	apiErr(t, err, 404, api.CodeNotFound)
	f.Publish(groundd.TelemetryRecord{Vehicle: 7, Received: t0, Kind: "tm", Name: "hk.boot", Seq: 1})
	r := httpDo(t, ts, "", "GET", "/v1/vehicles/0/telemetry?follow=true&from=2026-12-07T00:00:00Z", "", "")
	if r.status != 404 {
		t.Fatalf("follow vehicle 0: %d %q", r.status, r.body)
	}
}

// TestFollowLimit: the number of telemetry streams is bounded; one more
// is refused with 503 until one ends.
func TestFollowLimit(t *testing.T) {
	f := apitest.New(func() time.Time { return t0 }, vehicles()...)
	s, err := api.New(f, api.Config{MaxFollowers: 2})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	defer ts.Close()
	c, _ := api.NewClient(ts.URL, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for range 2 {
		go func() {
			done <- c.FollowTelemetry(ctx, 7, api.TelemetryQuery{}, func(groundd.TelemetryRecord) error { return nil })
		}()
		<-f.Subscribed
	}
	err = c.FollowTelemetry(context.Background(), 7, api.TelemetryQuery{}, func(groundd.TelemetryRecord) error { return nil })
	apiErr(t, err, 503, api.CodeUnavailable)
	cancel()
	<-done
	<-done
}

func TestApproveAndCommandCancel(t *testing.T) {
	ctx := context.Background()
	f, _, c := serve(t, "")
	u, _ := c.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: 7, Image: "oci:images:os-2"})
	_, err := c.QueueApprove(ctx, u.ID)
	apiErr(t, err, 409, api.CodeConflict) // queued, not pending
	u.State = groundd.UplinkPending
	f.SetUplink(u)
	got, err := c.QueueApprove(ctx, u.ID)
	if err != nil || got.State != groundd.UplinkQueued {
		t.Fatalf("approve: %+v %v", got, err)
	}
	_, err = c.QueueApprove(ctx, 99)
	apiErr(t, err, 404, api.CodeNotFound)

	cmd, _ := c.SendCommand(ctx, 7, "noop", nil)
	_, err = c.CommandCancel(ctx, 9, cmd.ID)
	apiErr(t, err, 404, api.CodeNotFound) // another vehicle's
	cc, err := c.CommandCancel(ctx, 7, cmd.ID)
	if err != nil || cc.Stage != groundd.CmdCancelled {
		t.Fatalf("cancel: %+v %v", cc, err)
	}
	_, err = c.CommandCancel(ctx, 7, cmd.ID)
	apiErr(t, err, 409, api.CodeConflict)
}

// TestClientTimeout: a server that never answers fails a call after the
// client's Timeout instead of hanging it.
func TestClientTimeout(t *testing.T) {
	stuck := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stuck:
		case <-r.Context().Done():
		}
	}))
	defer ts.Close()
	defer close(stuck)
	c, _ := api.NewClient(ts.URL, "")
	c.Timeout = time.Millisecond
	if _, err := c.Vehicles(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a stuck server: %v", err)
	}
}

// TestCrossSiteForm: without a token, loopback is the only protection; a
// web page the operator has open can still make the browser POST to
// 127.0.0.1 (a form: no preflight, a loopback Host). The bodiless POSTs
// (approve, cancel) must refuse a cross-site browser request; a client
// that is not a browser (no Origin, no Sec-Fetch-Site) still works.
func TestCrossSiteForm(t *testing.T) {
	f, ts, c := serve(t, "")
	ctx := context.Background()
	u, _ := c.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: 7, Image: "oci:images:os-2"})
	u.State = groundd.UplinkPending
	f.SetUplink(u)
	for _, h := range []map[string]string{
		{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
		{"Origin": "http://evil.example"},
	} {
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s/v1/queue/%d/approve", ts.URL, u.ID), strings.NewReader(""))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("cross-site approve with %v: %d, want 403", h, resp.StatusCode)
		}
	}
	if got, err := c.QueueShow(ctx, u.ID); err != nil || got.State != groundd.UplinkPending {
		t.Fatalf("after cross-site approvals: %+v %v, want still pending", got, err)
	}
	if got, err := c.QueueApprove(ctx, u.ID); err != nil || got.State != groundd.UplinkQueued {
		t.Fatalf("approve by the client: %+v %v", got, err)
	}
}
