package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/groundd/api/apitest"
	"github.com/bootorbit/bootorbit/internal/cli/clitest"
)

// The operator commands against the API of a fake daemon on a loopback
// test server.

var t0 = time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)

const testToken = "0123456789abcdef-cli-token"

type opsEnv struct {
	f   *apitest.Fake
	url string
	// before, if set, runs before the API answers each request (to move
	// the fake along between two polls of a --watch).
	mu     sync.Mutex
	before func(r *http.Request)
	// down, while > 0, answers that many requests 503 (a daemon
	// restarting behind its API), one less each time.
	down int
}

func newOps(t *testing.T, token string) *opsEnv {
	t.Helper()
	oldNow := now
	now = func() time.Time { return t0 }
	t.Cleanup(func() { now = oldNow })
	f := apitest.New(func() time.Time { return t0 },
		groundd.Vehicle{ID: 7, Name: "sat-7", BootedSlot: "a", LastContact: t0.Add(-90 * time.Second), Link: true,
			Keys:  groundd.VehicleKeys{GroundKeyID: 1, MACKeyID: 2},
			Slots: []groundd.Slot{{Name: "a", State: "good", Version: 3, Digest: "4f2c01aa00112233", Booted: true, Attempts: 0}, {Name: "b", State: "empty"}}},
		groundd.Vehicle{ID: 9, Name: "sat-9"})
	s, err := api.New(f, api.Config{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	e := &opsEnv{f: f}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		before, down := e.before, e.down > 0
		if down {
			e.down--
		}
		e.mu.Unlock()
		if down {
			http.Error(w, `{"error": {"code": "unavailable", "message": "restarting"}}`, http.StatusServiceUnavailable)
			return
		}
		if before != nil {
			before(r)
		}
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	e.url = ts.URL
	return e
}

func (e *opsEnv) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return clitest.Run(commands, append(args, "--server", e.url)...)
}

func (e *opsEnv) ok(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := e.run(t, args...)
	if code != 0 {
		t.Fatalf("groundd %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

func contains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

func decodeJSON(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("not one JSON document: %v\n%s", err, out)
	}
}

func TestQueueCommands(t *testing.T) {
	e := newOps(t, "")
	out := e.ok(t, "queue", "add", "--vehicle", "7", "--image", "oci:images:os-2", "--priority", "2", "--deadline", "48h")
	contains(t, "queue add", out, "uplink 1 queued: oci:images:os-2 to vehicle 7")
	var u groundd.Uplink
	decodeJSON(t, e.ok(t, "queue", "add", "--vehicle", "9", "--image", "oci:images:os-3", "--not-before", "2026-12-08T00:00:00Z", "--json"), &u)
	if u.ID != 2 || u.Vehicle != 9 || !u.NotBefore.Equal(t0.Add(16*time.Hour)) {
		t.Fatalf("queue add --json: %+v", u)
	}
	if u1, _ := e.f.QueueShow(context.Background(), 1); !u1.Deadline.Equal(t0.Add(48 * time.Hour)) {
		t.Errorf("--deadline 48h gave %v", u1.Deadline)
	}

	out = e.ok(t, "queue", "ls")
	contains(t, "queue ls", out, "ID  VEHICLE  IMAGE", "1   7        oci:images:os-2  queued  2     -                     2026-12-09 08:00:00Z")
	var us []groundd.Uplink
	decodeJSON(t, e.ok(t, "queue", "ls", "--json"), &us)
	if len(us) != 2 || us[0].ID != 1 {
		t.Fatalf("queue ls --json: %+v", us)
	}

	contains(t, "queue reorder", e.ok(t, "queue", "reorder", "2", "0"), "uplink 2 moved to position 0")
	if code, _, errOut := e.run(t, "queue", "approve", "2"); code != 1 || !strings.Contains(errOut, "not pending") {
		t.Errorf("approving a queued uplink: exit %d %s", code, errOut)
	}
	u2, _ := e.f.QueueShow(context.Background(), 2)
	u2.State = groundd.UplinkPending
	e.f.SetUplink(u2)
	contains(t, "queue approve", e.ok(t, "queue", "approve", "2"), "uplink 2 queued: oci:images:os-3 to vehicle 9")
	contains(t, "queue cancel", e.ok(t, "queue", "cancel", "1"), "uplink 1 cancelled")
	if out := e.ok(t, "queue", "ls"); strings.Contains(out, "cancelled") {
		t.Errorf("queue ls shows an ended uplink:\n%s", out)
	}
	contains(t, "queue ls --all", e.ok(t, "queue", "ls", "--all"), "cancelled")

	code, _, errOut := e.run(t, "queue", "cancel", "1")
	if code != 1 || !strings.Contains(errOut, "groundd queue cancel: ") || !strings.Contains(errOut, "conflict") {
		t.Errorf("cancelling twice: exit %d, %s", code, errOut)
	}
	code, _, errOut = e.run(t, "queue", "show", "99")
	if code != 1 || !strings.Contains(errOut, "not_found") {
		t.Errorf("show 99: exit %d, %s", code, errOut)
	}

	// Usage errors: exit 2, one line and a hint.
	for _, args := range [][]string{
		{"queue", "add", "--image", "oci:a:b"},
		{"queue", "add", "--vehicle", "7", "--image", "oci:a:b", "--deadline", "tomorrow"},
		{"queue", "show", "x"},
		{"queue", "show"},
		{"queue", "reorder", "2", "-1"},
		{"queue", "ls", "extra"},
	} {
		if code, _, errOut := e.run(t, args...); code != 2 || !strings.Contains(errOut, "--help' for usage") {
			t.Errorf("groundd %v: exit %d, %s", args, code, errOut)
		}
	}
}

func TestQueueShow(t *testing.T) {
	e := newOps(t, "")
	e.ok(t, "queue", "add", "--vehicle", "7", "--image", "oci:images:os-2")
	u, _ := e.f.QueueShow(context.Background(), 1)
	u.State, u.Plans, u.Manifest = groundd.UplinkActive, []uint64{4}, "sha256:"+strings.Repeat("ab", 32)
	u.Layers = []groundd.LayerDecision{{DiffID: "sha256:" + strings.Repeat("cd", 32), Decision: "delta", Size: 50 << 20, Payload: 3 << 20}}
	e.f.SetUplink(u)
	e.f.SetTransfers(
		groundd.Transfer{Uplink: 1, Vehicle: 7, Plan: 4, ID: 10, Kind: "plan", Size: 900, Done: true, Chunks: 4, Total: 4, Bytes: 900},
		groundd.Transfer{Uplink: 1, Vehicle: 7, Plan: 4, ID: 11, Kind: "bundle", Size: 3 << 20, Chunks: 1024, Total: 3072, Bytes: 1 << 20, Remaining: 2 << 20, Passes: 3})
	out := e.ok(t, "queue", "show", "1")
	contains(t, "queue show", out, "state       active", "plans       4", "sha256:cdcdcdcdcdcd  delta     50.0MiB  3.0MiB",
		"UPLINK  VEHICLE  TRANSFER  KIND", "1       7        11        bundle  1024/3072  1.0MiB (33%)  3.0MiB  2.0MiB  3")
	var v struct {
		Uplink    groundd.Uplink
		Transfers []groundd.Transfer
	}
	decodeJSON(t, e.ok(t, "queue", "show", "1", "--json"), &v)
	if v.Uplink.ID != 1 || len(v.Transfers) != 2 || v.Transfers[1].Passes != 3 {
		t.Fatalf("queue show --json: %+v", v)
	}
}

func TestVehiclesCommand(t *testing.T) {
	e := newOps(t, "")
	out := e.ok(t, "vehicles")
	contains(t, "vehicles", out, "ID  NAME   LINK  BOOTED  SLOT A", "7   sat-7  up    a       good v3 4f2c01aa00112233  empty   1m30s ago", "9   sat-9  down  -")
	var vs []groundd.Vehicle
	decodeJSON(t, e.ok(t, "vehicles", "--json"), &vs)
	if len(vs) != 2 || vs[0].Slots[0].Version != 3 {
		t.Fatalf("vehicles --json: %+v", vs)
	}
	out = e.ok(t, "vehicles", "7")
	contains(t, "vehicles 7", out, "name          sat-7", "key ids       ground 1, mac 2", "a     good   3")
	if code, _, errOut := e.run(t, "vehicles", "8"); code != 1 || !strings.Contains(errOut, "not_found") {
		t.Errorf("vehicles 8: exit %d %s", code, errOut)
	}
}

func TestCmdCommand(t *testing.T) {
	e := newOps(t, "")
	out := e.ok(t, "cmd", "7", "activate", "slot=b", "attempts=3")
	contains(t, "cmd", out, "command 1 (activate, seq 101) to vehicle 7: queued")
	c, _ := e.f.CommandShow(context.Background(), 1)
	if c.Args["slot"] != "b" || c.Args["attempts"] != uint64(3) {
		t.Errorf("args reached the daemon as %#v", c.Args)
	}
	var cmd groundd.Command
	decodeJSON(t, e.ok(t, "cmd", "7", "delete_staged", "plan=0x10", "--json"), &cmd)
	if cmd.ID != 2 || cmd.Opcode != "delete_staged" {
		t.Fatalf("cmd --json: %+v", cmd)
	}
	for _, args := range [][]string{
		{"cmd", "7"},
		{"cmd", "7", "launch"},
		{"cmd", "7", "activate", "slot=c", "attempts=3"},
		{"cmd", "7", "activate", "slot=b", "attempts=10"},
		{"cmd", "7", "activate", "slot=b"},
		{"cmd", "7", "activate", "slot=b", "attempts=3", "attempts=4"},
		{"cmd", "7", "activate", "b", "3"},
		{"cmd", "x", "noop"},
	} {
		if code, _, errOut := e.run(t, args...); code != 2 {
			t.Errorf("groundd %v: exit %d, want 2: %s", args, code, errOut)
		}
	}

	// --wait follows the stages; a rejection exits 1 with the reason code.
	stages := []groundd.CommandStage{groundd.CmdSent, groundd.CmdRejected}
	e.before = func(r *http.Request) {
		if r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/v1/commands/") && len(stages) > 0 {
			code, reason := uint16(0), ""
			if stages[0] == groundd.CmdRejected {
				code, reason = 263, "bad_state"
			}
			e.f.SetStage(3, stages[0], code, reason)
			stages = stages[1:]
		}
	}
	code, out, errOut := e.run(t, "cmd", "7", "reboot", "--wait", "1h", "--interval", "1ms")
	if code != 1 || !strings.Contains(errOut, "command 3 rejected (bad_state, code 263)") {
		t.Errorf("cmd --wait rejected: exit %d\n%s%s", code, out, errOut)
	}
	contains(t, "cmd --wait", out, "command 3: sent", "command 3: rejected (bad_state, code 263)")
}

// syncBuffer is an output a test can wait on.
type syncBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	select {
	case s.wrote <- struct{}{}:
	default:
	}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestTlmCommand(t *testing.T) {
	e := newOps(t, "")
	e.f.Publish(groundd.TelemetryRecord{Vehicle: 7, Received: t0.Add(-time.Hour), Kind: "tm", Name: "hk.boot", Seq: 1, Values: map[string]any{"booted": "a", "boot_count": 4}})
	e.f.Publish(groundd.TelemetryRecord{Vehicle: 7, Received: t0.Add(-time.Minute), Kind: "event", Name: "install_done", Seq: 2, Severity: "info", Values: map[string]any{"plan": 4, "slot": "b"}})
	out := e.ok(t, "tlm", "7")
	contains(t, "tlm", out, "RECEIVED              KIND   NAME          SEQ  VALUES",
		"2026-12-07 07:00:00Z  tm     hk.boot       1    boot_count=4 booted=a",
		"2026-12-07 07:59:00Z  event  install_done  2    [info] plan=4 slot=b")
	contains(t, "tlm --from", e.ok(t, "tlm", "7", "--from", "-30m"), "install_done")
	if out := e.ok(t, "tlm", "7", "--from", "-30m"); strings.Contains(out, "hk.boot") {
		t.Errorf("tlm --from -30m shows an older record:\n%s", out)
	}
	var recs []groundd.TelemetryRecord
	decodeJSON(t, e.ok(t, "tlm", "7", "--kind", "tm", "--json"), &recs)
	if len(recs) != 1 || recs[0].Name != "hk.boot" {
		t.Fatalf("tlm --json: %+v", recs)
	}
	if code, _, _ := e.run(t, "tlm", "7", "--kind", "x"); code != 2 {
		t.Errorf("tlm --kind x: exit %d", code)
	}

	// --follow prints records as they come until interrupted.
	ctx, cancel := context.WithCancel(context.Background())
	out2 := &syncBuffer{wrote: make(chan struct{}, 1)}
	done := make(chan int, 1)
	go func() {
		done <- commands.Execute(ctx, []string{"tlm", "7", "--follow", "--server", e.url}, out2, &bytes.Buffer{})
	}()
	<-e.f.Subscribed
	e.f.Publish(groundd.TelemetryRecord{Vehicle: 7, Received: t0, Kind: "event", Name: "marked_good", Seq: 3, Values: map[string]any{"slot": "b"}})
	<-out2.wrote
	cancel()
	if code := <-done; code != 1 {
		t.Errorf("tlm --follow interrupted: exit %d", code)
	}
	if got := out2.String(); got != "2026-12-07 08:00:00Z event marked_good #3 slot=b\n" {
		t.Errorf("tlm --follow printed %q", got)
	}
}

// progressSteps makes each poll of the transfers see the next state of a
// bundle transfer: 0/4 chunks, 2/4, then done.
func progressSteps(e *opsEnv, done func()) {
	step := 0
	e.before = func(r *http.Request) {
		if r.URL.Path != "/v1/transfers" {
			return
		}
		t := groundd.Transfer{Uplink: 1, Vehicle: 7, Plan: 4, ID: 11, Kind: "bundle", Size: 4096, Total: 4, Remaining: 4096, Passes: 2}
		switch step {
		case 0:
		case 1:
			t.Chunks, t.Bytes, t.Remaining, t.Passes = 2, 2048, 2048, 1
		case 2:
			t.Chunks, t.Bytes, t.Remaining, t.Passes = 2, 2048, 2048, 1 // no change: no line
		default:
			t.Chunks, t.Bytes, t.Remaining, t.Passes, t.Done = 4, 4096, 0, 0, true
			if done != nil {
				done()
			}
		}
		step++
		e.f.SetTransfers(t)
	}
}

func TestTransfersWatchPlain(t *testing.T) {
	e := newOps(t, "")
	progressSteps(e, nil)
	out := e.ok(t, "transfers", "--watch", "--interval", "1ms")
	want := `uplink 1 vehicle 7 bundle 11: 0/4 chunks, 0B of 4.0KiB (0%), 4.0KiB left, passes remaining 2
uplink 1 vehicle 7 bundle 11: 2/4 chunks, 2.0KiB of 4.0KiB (50%), 2.0KiB left, passes remaining 1
uplink 1 vehicle 7 bundle 11: 4/4 chunks, 4.0KiB of 4.0KiB (100%), done
no transfer in flight
`
	if out != want {
		t.Errorf("transfers --watch on a pipe:\n%s\nwant:\n%s", out, want)
	}
	if strings.Contains(out, "\x1b") || strings.Contains(out, "\r") {
		t.Error("escape codes on a pipe")
	}
}

func TestTransfersWatchJSON(t *testing.T) {
	e := newOps(t, "")
	progressSteps(e, nil)
	out := e.ok(t, "transfers", "--watch", "--interval", "1ms", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 JSON lines (two changes, done, the end):\n%s", out)
	}
	var doc struct {
		Transfers []groundd.Transfer
		Final     string
	}
	decodeJSON(t, lines[1], &doc)
	if len(doc.Transfers) != 1 || doc.Transfers[0].Chunks != 2 {
		t.Errorf("second line %s", lines[1])
	}
	decodeJSON(t, lines[3], &doc)
	if doc.Final != "no transfer in flight" {
		t.Errorf("last line %s", lines[3])
	}
}

func TestTransfersTable(t *testing.T) {
	e := newOps(t, "")
	contains(t, "transfers", e.ok(t, "transfers"), "no transfer in flight")
	e.f.SetTransfers(groundd.Transfer{Uplink: 1, Vehicle: 7, ID: 11, Kind: "bundle", Size: 4096, Total: 4, Remaining: 4096, Passes: -1})
	contains(t, "transfers", e.ok(t, "transfers"), "1       7        11        bundle  0/4     0B (0%)  4.0KiB  4.0KiB  none scheduled  0")
	var ts []groundd.Transfer
	decodeJSON(t, e.ok(t, "transfers", "--vehicle", "9", "--json"), &ts)
	if len(ts) != 0 {
		t.Errorf("transfers of vehicle 9: %+v", ts)
	}
}

func TestQueueShowWatch(t *testing.T) {
	e := newOps(t, "")
	e.ok(t, "queue", "add", "--vehicle", "7", "--image", "oci:images:os-2")
	progressSteps(e, func() {
		u, _ := e.f.QueueShow(context.Background(), 1)
		u.State = groundd.UplinkDone
		e.f.SetUplink(u)
	})
	// queue show polls the uplink, then its transfers: move the uplink
	// to done on the last poll of the transfers, seen at the next round.
	out := e.ok(t, "queue", "show", "1", "--watch", "--interval", "1ms")
	contains(t, "queue show --watch", out, "2/4 chunks", "4/4 chunks, 4.0KiB of 4.0KiB (100%), done", "uplink 1 done\nvehicle 7 slots: a good v3 4f2c01aa00112233 (booted); b empty\n")

	// A daemon restarting behind the API (503s, then a server that does
	// not answer at all is the same to the client) does not end a watch:
	// it says so on stderr and carries on.
	e.ok(t, "queue", "add", "--vehicle", "7", "--image", "oci:images:os-3")
	e.mu.Lock()
	e.down = 3
	e.mu.Unlock()
	u, _ := e.f.QueueShow(context.Background(), 2)
	u.State = groundd.UplinkDone
	e.f.SetUplink(u)
	code, out, errOut := e.run(t, "queue", "show", "2", "--watch", "--interval", "1ms")
	if code != 0 || !strings.Contains(out, "uplink 2 done") || !strings.Contains(errOut, "retrying") {
		t.Errorf("watch through a restart: exit %d\n%s%s", code, out, errOut)
	}

	e.ok(t, "queue", "add", "--vehicle", "7", "--image", "oci:images:os-3")
	u, _ = e.f.QueueShow(context.Background(), 3)
	u.State, u.Error = groundd.UplinkFailed, "vehicle refused the plan: wrong_hardware"
	e.f.SetUplink(u)
	e.before = nil
	code, out, errOut = e.run(t, "queue", "show", "3", "--watch", "--interval", "1ms")
	if code != 1 || !strings.Contains(out, "uplink 3 failed: vehicle refused the plan: wrong_hardware") || !strings.Contains(errOut, "uplink 3 failed") {
		t.Errorf("watching a failed uplink: exit %d\n%s%s", code, out, errOut)
	}
}

func TestTokenFile(t *testing.T) {
	e := newOps(t, testToken)
	if code, _, errOut := e.run(t, "vehicles"); code != 1 || !strings.Contains(errOut, "unauthorized") {
		t.Errorf("no token: exit %d %s", code, errOut)
	}
	dir := t.TempDir()
	tf := filepath.Join(dir, "token")
	if err := os.WriteFile(tf, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	contains(t, "vehicles with a token", e.ok(t, "vehicles", "--token-file", tf), "sat-7")
	if err := os.WriteFile(tf, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := e.run(t, "vehicles", "--token-file", tf); code != 2 {
		t.Errorf("a bad token: exit %d", code)
	}
	if code, _, _ := clitest.Run(commands, "vehicles", "--server", "ftp://x"); code != 2 {
		t.Errorf("a bad --server: exit %d", code)
	}
}

// TestRunRefusesExposedAPI: groundd run stops before it opens anything when
// its API would listen beyond loopback without a token.
func TestRunRefusesExposedAPI(t *testing.T) {
	for _, f := range []apiFlags{{addr: "0.0.0.0:7468"}, {addr: ":7468"}} {
		err := runWithAPI(context.Background(), groundd.Config{}, groundd.Options{}, &f)
		if !errors.Is(err, api.ErrNoToken) {
			t.Errorf("--api %s: %v, want ErrNoToken", f.addr, err)
		}
	}
	tf := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tf, []byte("short"), 0o600)
	if err := runWithAPI(context.Background(), groundd.Config{}, groundd.Options{}, &apiFlags{addr: "0.0.0.0:7468", tokenFile: tf}); !errors.Is(err, api.ErrBadToken) {
		t.Errorf("a short token: %v", err)
	}
}

func TestVerboseLogsRequests(t *testing.T) {
	e := newOps(t, "")
	code, _, errOut := e.run(t, "vehicles", "-v")
	if code != 0 || !strings.Contains(errOut, "api request") || !strings.Contains(errOut, "/v1/vehicles") || !strings.Contains(errOut, "status=200") {
		t.Errorf("vehicles -v: exit %d, stderr %q", code, errOut)
	}
	if _, _, errOut := e.run(t, "vehicles"); errOut != "" {
		t.Errorf("vehicles without -v logged %q", errOut)
	}
}
