package gateway_test

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd/gateway"
	"github.com/bootorbit/bootorbit/groundd/gateway/gatewaytest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

const (
	vehicleID = 7
	keyID     = 3
)

var t0 = time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)

// env is a gateway, its archive and sequencer, and a vehicle stand-in that
// trusts the gateway's key.
type env struct {
	t    *testing.T
	g    *gateway.Gateway
	cfg  gateway.Config
	arch *gatewaytest.Archive
	seq  *gatewaytest.Sequencer
	veh  *gatewaytest.Vehicle
	now  time.Time // the fake clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pub, priv := key(1)
	kr, err := protocol.NewKeyring(protocol.Key{ID: keyID, Pub: pub})
	if err != nil {
		t.Fatal(err)
	}
	codec, err := protocol.NewCodec(protocol.MinMaxFrame)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, arch: new(gatewaytest.Archive), seq: new(gatewaytest.Sequencer), now: t0,
		veh: &gatewaytest.Vehicle{ID: vehicleID, Keys: kr, Codec: codec}}
	e.cfg = gateway.Config{Key: keyID, Priv: priv, Seq: e.seq, Archive: e.arch,
		AckTimeout: time.Minute, CompleteTimeout: 5 * time.Minute, QueueTimeout: time.Hour, LateWindow: 24 * time.Hour}
	e.restart()
	return e
}

func key(seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	priv := ed25519.NewKeyFromSeed(append(make([]byte, 31), seed))
	return priv.Public().(ed25519.PublicKey), priv
}

// restart builds a new gateway on the same archive, as after a crash.
func (e *env) restart() {
	e.t.Helper()
	g, err := gateway.New(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.g = g
}

func (e *env) advance(d time.Duration) { e.now = e.now.Add(d) }

func (e *env) submit(name string, args dict.Values) *gateway.Command {
	e.t.Helper()
	c, err := e.g.Submit(e.now, gateway.Request{Vehicle: vehicleID, Name: name, Args: args})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// send takes the next queued command and returns the vehicle's reports.
func (e *env) send() (gateway.Out, []*protocol.Verification) {
	e.t.Helper()
	out, ok, err := e.g.Next(e.now, vehicleID)
	if err != nil || !ok {
		e.t.Fatalf("Next: ok %v, %v", ok, err)
	}
	reps, err := e.veh.Handle(out.Frame)
	if err != nil {
		e.t.Fatal(err)
	}
	return out, reps
}

func (e *env) receive(reps ...*protocol.Verification) {
	e.t.Helper()
	for _, r := range reps {
		e.advance(time.Second)
		if err := e.g.Receive(e.now, vehicleID, r); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) command(seq uint64) *gateway.Command {
	e.t.Helper()
	c, err := e.g.Command(keyID, seq)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func stages(c *gateway.Command) string {
	var s []string
	for _, h := range c.History {
		x := h.Stage.String()
		if h.Step != 0 {
			x += "#" + string(rune('0'+h.Step))
		}
		if h.Reason != "" {
			x += "(" + h.Reason + ")"
		}
		if h.Waited != 0 {
			x += "(" + h.Waited.String() + ")"
		}
		if h.Late {
			x += "!late"
		}
		s = append(s, x)
	}
	return strings.Join(s, " ")
}

func TestCommandCompletes(t *testing.T) {
	e := newEnv(t)
	e.veh.Answers = map[string]gatewaytest.Answer{"verify_slot": {Steps: 2}}
	var changes []string
	e.cfg.OnChange = func(c *gateway.Command) { changes = append(changes, c.Stage.String()) }
	e.restart()
	c := e.submit("verify_slot", dict.Values{"slot": "b"})
	if c.Stage != gateway.Queued || c.Seq != 1 || c.Key != keyID || c.Opcode != dict.CmdVerify.Opcode {
		t.Fatalf("submitted: %+v", c)
	}
	out, reps := e.send()
	if out.Seq != c.Seq || e.command(c.Seq).Stage != gateway.Sent {
		t.Fatalf("after Next: %+v, archived %v", out, e.command(c.Seq).Stage)
	}
	e.receive(reps...)
	got := e.command(c.Seq)
	if want := "queued sent accepted started progress#1 progress#2 completed"; stages(got) != want {
		t.Errorf("history %q, want %q", stages(got), want)
	}
	if got.Open() || got.Code != 0 {
		t.Errorf("final command: open %v code %d", got.Open(), got.Code)
	}
	if strings.Join(changes, " ") != "queued sent accepted started progress progress completed" {
		t.Errorf("OnChange saw %v", changes)
	}
	vals, err := got.Values()
	if err != nil || vals["slot"] != uint64(2) {
		t.Errorf("args: %v, %v", vals, err)
	}
	if len(e.veh.Ran) != 1 || e.veh.Ran[0] != "verify_slot" {
		t.Errorf("vehicle ran %v", e.veh.Ran)
	}
	// JSON, as the operator API will serve it: stage names.
	b, err := json.Marshal(got)
	if err != nil || !strings.Contains(string(b), `"stage":"completed"`) {
		t.Errorf("json: %s, %v", b, err)
	}
	// A duplicate of a report on a finished command changes nothing.
	// It is told apart from a report that matches nothing ever sent
	// (ErrSettled, which groundd logs below WARN).
	if err := e.g.Receive(e.now, vehicleID, reps[len(reps)-1]); !errors.Is(err, gateway.ErrUnmatched) || !errors.Is(err, gateway.ErrSettled) {
		t.Errorf("report on a finished command: %v", err)
	}
	if err := e.g.Receive(e.now, vehicleID, &protocol.Verification{Vehicle: vehicleID, Seq: c.Seq + 100, Stage: protocol.StageCompleted, Opcode: c.Opcode}); !errors.Is(err, gateway.ErrUnmatched) || errors.Is(err, gateway.ErrSettled) {
		t.Errorf("report on a command never sent: %v", err)
	}
	if stages(e.command(c.Seq)) != stages(got) {
		t.Errorf("a duplicate changed the history")
	}
}

// TestUnreachableVehicleTimesOut: a command sent to a vehicle that never
// answers times out AckTimeout after it was sent, visibly, with the time
// and the stage it waited in; one that never gets a link times out at its
// NotAfter without being sent; a late report still counts.
func TestUnreachableVehicleTimesOut(t *testing.T) {
	e := newEnv(t)
	e.veh.Answers = map[string]gatewaytest.Answer{"reboot": {Silent: true}}
	c := e.submit("reboot", nil)
	e.advance(10 * time.Second)
	_, reps := e.send()
	if len(reps) != 0 {
		t.Fatalf("silent vehicle answered %v", reps)
	}
	sentAt := e.now
	if d, ok := e.g.NextDeadline(); !ok || !d.Equal(sentAt.Add(time.Minute)) {
		t.Errorf("next deadline %v %v, want %v", d, ok, sentAt.Add(time.Minute))
	}
	e.now = sentAt.Add(time.Minute - time.Millisecond)
	if to, err := e.g.Tick(e.now); err != nil || len(to) != 0 {
		t.Fatalf("tick before the deadline: %v, %v", to, err)
	}
	e.now = sentAt.Add(time.Minute)
	to, err := e.g.Tick(e.now)
	if err != nil || len(to) != 1 || to[0].Seq != c.Seq {
		t.Fatalf("tick at the deadline: %v, %v", to, err)
	}
	got := e.command(c.Seq)
	last := got.Last()
	if got.Stage != gateway.Timeout || last.Waited != gateway.Sent || !last.Time.Equal(sentAt.Add(time.Minute)) {
		t.Fatalf("timed out: stage %v, last %+v", got.Stage, last)
	}
	// Never sent: the link never came up before NotAfter.
	q, err := e.g.Submit(e.now, gateway.Request{Vehicle: vehicleID, Name: "noop", NotAfter: e.now.Add(30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	e.advance(30 * time.Second)
	if _, ok, _ := e.g.Next(e.now, vehicleID); ok {
		t.Fatalf("Next handed out a command past its NotAfter")
	}
	if _, err := e.g.Tick(e.now); err != nil {
		t.Fatal(err)
	}
	if got := e.command(q.Seq); stages(got) != "queued timeout(queued)" {
		t.Errorf("unsent command: %q", stages(got))
	}
	// A report on the never-sent command matches nothing.
	v := &protocol.Verification{Vehicle: vehicleID, Seq: q.Seq, Stage: protocol.StageAccepted, Opcode: dict.CmdNoop.Opcode}
	if err := e.g.Receive(e.now, vehicleID, v); !errors.Is(err, gateway.ErrUnmatched) || errors.Is(err, gateway.ErrSettled) {
		t.Errorf("report on an unsent command: %v", err)
	}
	// The vehicle was reachable after all (next pass): late reports count,
	// after a restart too.
	e.restart()
	e.advance(time.Hour)
	e.receive(&protocol.Verification{Vehicle: vehicleID, Seq: c.Seq, Stage: protocol.StageAccepted, Opcode: dict.CmdReboot.Opcode})
	if got := e.command(c.Seq); stages(got) != "queued sent timeout(sent) accepted!late" || got.Stage != gateway.Accepted {
		t.Errorf("late report: %q", stages(got))
	}
	// ... and its completion timer runs again.
	e.advance(5 * time.Minute)
	if _, err := e.g.Tick(e.now); err != nil {
		t.Fatal(err)
	}
	if got := e.command(c.Seq); stages(got) != "queued sent timeout(sent) accepted!late timeout(accepted)" {
		t.Errorf("second timeout: %q", stages(got))
	}
	// Past the late window the gateway forgets it; the archive keeps it.
	e.advance(24 * time.Hour)
	if _, err := e.g.Tick(e.now); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.g.NextDeadline(); ok {
		t.Errorf("a deadline after every command is settled")
	}
	if err := e.g.Receive(e.now, vehicleID, &protocol.Verification{Vehicle: vehicleID, Seq: c.Seq, Stage: protocol.StageCompleted, Opcode: dict.CmdReboot.Opcode}); !errors.Is(err, gateway.ErrUnmatched) {
		t.Errorf("report past the late window: %v", err)
	}
}

// TestRejectedKeepsReason: the vehicle's reason code stays on the command,
// named through the dictionary.
func TestRejectedKeepsReason(t *testing.T) {
	e := newEnv(t)
	e.veh.Answers = map[string]gatewaytest.Answer{"activate": {Reject: dict.CodeBadState}, "rollback": {Fail: dict.CodeHealthCheckFailed}}
	c := e.submit("activate", dict.Values{"slot": "b", "attempts": 3})
	_, reps := e.send()
	e.receive(reps...)
	got := e.command(c.Seq)
	if got.Stage != gateway.Rejected || got.Code != dict.CodeBadState || got.Reason != "bad_state" || stages(got) != "queued sent rejected(bad_state)" {
		t.Errorf("rejected: stage %v code %d reason %q history %q", got.Stage, got.Code, got.Reason, stages(got))
	}
	c = e.submit("rollback", nil)
	_, reps = e.send()
	e.receive(reps...)
	if got := e.command(c.Seq); got.Stage != gateway.Failed || got.Reason != "health_check_failed" {
		t.Errorf("failed: %v %q", got.Stage, got.Reason)
	}
	// A vehicle that does not trust the key rejects with protocol's reason.
	pub, _ := key(2)
	e.veh.Keys, _ = protocol.NewKeyring(protocol.Key{ID: keyID, Pub: pub})
	c = e.submit("noop", nil)
	_, reps = e.send()
	e.receive(reps...)
	if got := e.command(c.Seq); got.Stage != gateway.Rejected || got.Reason != "bad_signature" {
		t.Errorf("bad signature: %v %q (code %d)", got.Stage, got.Reason, got.Code)
	}
}

// TestReportChecks: reports must come from the command's vehicle and name
// a command sent to it; they move a command only forward.
func TestReportChecks(t *testing.T) {
	e := newEnv(t)
	e.veh.Answers = map[string]gatewaytest.Answer{"delete_staged": {Steps: 3}}
	c := e.submit("delete_staged", dict.Values{"plan": 0})
	queued := e.submit("noop", nil)
	_, reps := e.send() // accepted started p1 p2 p3 completed
	op := dict.CmdDeleteStaged.Opcode
	for _, tc := range []struct {
		name string
		from uint32
		m    protocol.Message
		want error
	}{
		{"other vehicle says so", vehicleID, &protocol.Verification{Vehicle: 8, Seq: c.Seq, Stage: protocol.StageAccepted, Opcode: op}, gateway.ErrWrongVehicle},
		{"from another vehicle", 8, &protocol.Verification{Vehicle: 8, Seq: c.Seq, Stage: protocol.StageAccepted, Opcode: op}, gateway.ErrUnmatched},
		{"unknown seq", vehicleID, &protocol.Verification{Vehicle: vehicleID, Seq: 99, Stage: protocol.StageAccepted, Opcode: op}, gateway.ErrUnmatched},
		{"other opcode", vehicleID, &protocol.Verification{Vehicle: vehicleID, Seq: c.Seq, Stage: protocol.StageAccepted, Opcode: op + 1}, gateway.ErrUnmatched},
		{"not sent", vehicleID, &protocol.Verification{Vehicle: vehicleID, Seq: queued.Seq, Stage: protocol.StageAccepted, Opcode: dict.CmdNoop.Opcode}, gateway.ErrUnmatched},
		{"a command", vehicleID, &protocol.Command{Vehicle: vehicleID, Seq: 1}, gateway.ErrNotMine},
	} {
		if err := e.g.Receive(e.now, tc.from, tc.m); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if !errors.Is(gateway.ErrWrongVehicle, protocol.ErrWrongVehicle) {
		t.Errorf("ErrWrongVehicle does not wrap protocol's")
	}
	if got := e.command(c.Seq); got.Stage != gateway.Sent {
		t.Fatalf("refused reports moved the command to %v", got.Stage)
	}
	// Out of order: progress 2 before accepted; older reports then change
	// nothing; a rejection after acceptance is a contradiction.
	e.receive(reps[3], reps[0], reps[1], reps[3], reps[2])
	if got := e.command(c.Seq); stages(got) != "queued sent progress#2" {
		t.Errorf("out of order: %q", stages(got))
	}
	rej := &protocol.Verification{Vehicle: vehicleID, Seq: c.Seq, Stage: protocol.StageRejected, Code: dict.CodeBusy, Opcode: op}
	if err := e.g.Receive(e.now, vehicleID, rej); !errors.Is(err, gateway.ErrConflict) {
		t.Errorf("rejected after progress: %v", err)
	}
	e.receive(reps[4], reps[5])
	if got := e.command(c.Seq); stages(got) != "queued sent progress#2 progress#3 completed" {
		t.Errorf("finished: %q", stages(got))
	}
	// Cancel: only before it is sent.
	if _, err := e.g.Cancel(e.now, vehicleID, c.Seq); !errors.Is(err, gateway.ErrNotFound) {
		t.Errorf("cancel a finished command: %v", err)
	}
	got, err := e.g.Cancel(e.now, vehicleID, queued.Seq)
	if err != nil || got.Stage != gateway.Cancelled {
		t.Fatalf("cancel: %v, %v", got, err)
	}
	if _, ok, _ := e.g.Next(e.now, vehicleID); ok {
		t.Errorf("Next handed out a cancelled command")
	}
}

// TestReportsInAnyOrder: whatever order (and duplication) the return link
// delivers a command's reports in, the command ends completed with its
// last progress step, and its history only moves forward.
func TestReportsInAnyOrder(t *testing.T) {
	r := testrand.New(t)
	e := newEnv(t)
	e.veh.Answers = map[string]gatewaytest.Answer{"status": {Steps: 4}}
	for range 50 {
		c := e.submit("status", nil)
		_, reps := e.send()
		for range r.IntN(4) {
			reps = append(reps, reps[r.IntN(len(reps))])
		}
		r.Shuffle(len(reps), func(i, j int) { reps[i], reps[j] = reps[j], reps[i] })
		for _, v := range reps {
			e.advance(time.Second)
			if err := e.g.Receive(e.now, vehicleID, v); err != nil && !errors.Is(err, gateway.ErrUnmatched) {
				t.Fatal(err)
			}
		}
		got := e.command(c.Seq)
		if got.Stage != gateway.Completed {
			t.Fatalf("seq %d: %q", c.Seq, stages(got))
		}
		rank := 0
		for _, h := range got.History {
			if int(h.Stage) < rank && h.Stage != gateway.Progress {
				t.Fatalf("seq %d went back: %q", c.Seq, stages(got))
			}
			rank = int(h.Stage)
		}
	}
}

// TestRestartKeepsQueue: queued and sent commands survive a restart of the
// gateway (they are archived before Submit and Next return); a sequencer
// that hands out a used number is refused.
func TestRestartKeepsQueue(t *testing.T) {
	e := newEnv(t)
	a := e.submit("noop", nil)
	b := e.submit("status", nil)
	out, ok, err := e.g.Next(e.now, vehicleID)
	if err != nil || !ok || out.Seq != a.Seq {
		t.Fatalf("Next: %v %v %v", out, ok, err)
	}
	e.restart()
	out, ok, err = e.g.Next(e.now, vehicleID)
	if err != nil || !ok || out.Seq != b.Seq {
		t.Fatalf("Next after restart: %+v %v %v", out, ok, err)
	}
	// The link refused the frame: back in the queue.
	if err := e.g.Unsend(e.now, vehicleID, out.Seq); err != nil {
		t.Fatal(err)
	}
	if got := e.command(b.Seq); stages(got) != "queued" {
		t.Errorf("unsent: %q", stages(got))
	}
	e.seq.Set(keyID, 1) // a broken sequencer: hands out 2 again
	if _, err := e.g.Submit(e.now, gateway.Request{Vehicle: vehicleID, Name: "noop"}); !errors.Is(err, gateway.ErrSequence) {
		t.Errorf("a used sequence number: %v", err)
	}
	// Archive and sequencer failures: nothing is queued.
	e.seq.Set(keyID, 10)
	e.arch.Err = errors.New("disk full")
	if _, err := e.g.Submit(e.now, gateway.Request{Vehicle: vehicleID, Name: "noop"}); err == nil {
		t.Errorf("submit with a failing archive succeeded")
	}
	if _, ok, err := e.g.Next(e.now, vehicleID); ok || err == nil {
		t.Errorf("Next with a failing archive: %v %v", ok, err)
	}
	e.arch.Err = nil
	e.seq.Err = errors.New("store down")
	if _, err := e.g.Submit(e.now, gateway.Request{Vehicle: vehicleID, Name: "noop"}); err == nil {
		t.Errorf("submit with a failing sequencer succeeded")
	}
	e.seq.Err = nil
	if got := e.command(b.Seq); got.Stage != gateway.Queued {
		t.Errorf("a failed Next changed the command: %v", got.Stage)
	}
	// Bad requests spend no sequence number.
	for _, r := range []gateway.Request{
		{Vehicle: vehicleID, Name: "no_such_command"},
		{Vehicle: vehicleID, Name: "activate", Args: dict.Values{"slot": "c", "attempts": 3}},
		{Vehicle: vehicleID, Name: "activate", Args: dict.Values{"slot": "a", "attempts": 10}},
	} {
		if _, err := e.g.Submit(e.now, r); !errors.Is(err, dict.ErrValue) {
			t.Errorf("%s %v: %v", r.Name, r.Args, err)
		}
	}
	// 11 went to the command the archive failed to store: a number is
	// never handed out twice, even one that never flew.
	if c := e.submit("noop", nil); c.Seq != 12 {
		t.Errorf("seq %d after refused requests, want 12", c.Seq)
	}
}

func TestQueueBound(t *testing.T) {
	e := newEnv(t)
	e.cfg.MaxQueued = 2
	e.restart()
	e.submit("noop", nil)
	e.submit("noop", nil)
	if _, err := e.g.Submit(e.now, gateway.Request{Vehicle: vehicleID, Name: "noop"}); !errors.Is(err, gateway.ErrQueueFull) {
		t.Errorf("third command: %v", err)
	}
	if _, err := e.g.Submit(e.now, gateway.Request{Vehicle: vehicleID + 1, Name: "noop"}); err != nil {
		t.Errorf("another vehicle: %v", err)
	}
}

func TestConfig(t *testing.T) {
	_, priv := key(1)
	for _, cfg := range []gateway.Config{
		{Seq: new(gatewaytest.Sequencer), Archive: new(gatewaytest.Archive)},
		{Priv: priv, Archive: new(gatewaytest.Archive)},
		{Priv: priv, Seq: new(gatewaytest.Sequencer)},
		{Priv: priv, Seq: new(gatewaytest.Sequencer), Archive: new(gatewaytest.Archive), AckTimeout: -1},
		{Priv: priv, Seq: new(gatewaytest.Sequencer), Archive: new(gatewaytest.Archive), MaxFrame: 100},
	} {
		if _, err := gateway.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	a := &gatewaytest.Archive{Err: errors.New("down")}
	if _, err := gateway.New(gateway.Config{Priv: priv, Seq: new(gatewaytest.Sequencer), Archive: a}); err == nil {
		t.Errorf("New with an archive that cannot load succeeded")
	}
}

// TestDuplicatedCommandFrame: the forward link delivers a command twice;
// the vehicle runs the first copy and answers the second "replayed". In
// whatever order the return link delivers the answers, the command ends
// completed; a "replayed" rejection alone stands (the number was too old
// for the vehicle's window: nothing ran) until the late window ends.
func TestDuplicatedCommandFrame(t *testing.T) {
	e := newEnv(t)
	c := e.submit("mark_good", nil)
	out, first := e.send()
	second, err := e.veh.Handle(out.Frame)
	if err != nil || len(second) != 1 || second[0].Stage != protocol.StageRejected || reasonOf(second[0]) != "replayed" {
		t.Fatalf("the duplicate's answer: %+v, %v", second, err)
	}
	e.receive(second[0])
	if got := e.command(c.Seq); got.Stage != gateway.Rejected || got.Reason != "replayed" || !got.Open() {
		t.Fatalf("after the replayed rejection: %v %q open %v", got.Stage, got.Reason, got.Open())
	}
	e.receive(first...)
	got := e.command(c.Seq)
	if got.Stage != gateway.Completed || got.Code != 0 || got.Reason != "" || got.Open() {
		t.Fatalf("after the first copy's reports: %q code %d", stages(got), got.Code)
	}
	if stages(got) != "queued sent rejected(replayed) accepted!late started completed" {
		t.Errorf("history %q", stages(got))
	}
	// Reports in the usual order: the duplicate's answer changes nothing.
	c = e.submit("mark_good", nil)
	out, first = e.send()
	second, _ = e.veh.Handle(out.Frame)
	e.receive(first[0])
	e.receive(second...)
	e.receive(first[1:]...)
	if got := e.command(c.Seq); stages(got) != "queued sent accepted started completed" {
		t.Errorf("in order: %q", stages(got))
	}
	// Only "replayed": it stands, and is forgotten after the late window.
	c = e.submit("noop", nil)
	e.send()
	e.receive(&protocol.Verification{Vehicle: vehicleID, Seq: c.Seq, Stage: protocol.StageRejected, Code: protocol.CodeOf(protocol.ReasonReplayed), Opcode: dict.CmdNoop.Opcode})
	e.advance(24 * time.Hour)
	if _, err := e.g.Tick(e.now); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.g.NextDeadline(); ok {
		t.Errorf("a deadline left after the late window")
	}
	if got := e.command(c.Seq); got.Stage != gateway.Rejected || got.Reason != "replayed" {
		t.Errorf("rejected as replayed: %q", stages(got))
	}
}

func reasonOf(v *protocol.Verification) string { return gateway.ReasonName(v.Code) }

// TestConcurrentUse: the API submits while the link loop sends and
// receives (run with -race).
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t)
	e.cfg.MaxQueued = 1000
	e.restart()
	const writers, each = 4, 25
	done := make(chan struct{})
	var sent int
	go func() {
		defer close(done)
		for sent < writers*each {
			out, ok, err := e.g.Next(t0, vehicleID)
			if err != nil {
				t.Error(err)
				return
			}
			if !ok {
				continue
			}
			sent++
			reps, err := e.veh.Handle(out.Frame)
			if err != nil {
				t.Error(err)
				return
			}
			for _, r := range reps {
				if err := e.g.Receive(t0, vehicleID, r); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	errs := make(chan error, writers)
	for range writers {
		go func() {
			for range each {
				if _, err := e.g.Submit(t0, gateway.Request{Vehicle: vehicleID, Name: "noop"}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	<-done
	cs, err := e.g.Commands(gateway.CommandQuery{Vehicle: vehicleID})
	if err != nil || len(cs) != writers*each {
		t.Fatalf("%d commands, %v", len(cs), err)
	}
	for _, c := range cs {
		if c.Stage != gateway.Completed {
			t.Fatalf("seq %d: %q", c.Seq, stages(c))
		}
	}
}

// TestResendBackoff: a sent command without a report is handed out again
// after base, then twice as long after each copy, at most MaxResends
// times and never after its ack timeout; a report stops it.
func TestResendBackoff(t *testing.T) {
	e := newEnv(t)
	c := e.submit("noop", nil)
	if _, ok, err := e.g.Next(e.now, vehicleID); !ok || err != nil {
		t.Fatalf("Next: %v %v", ok, err)
	}
	const base = time.Second
	var at []time.Duration
	for now := e.now; now.Before(t0.Add(2 * time.Minute)); now = now.Add(100 * time.Millisecond) {
		o, ok, err := e.g.Resend(now, vehicleID, base)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if o.Seq != c.Seq {
				t.Fatalf("resent seq %d, want %d", o.Seq, c.Seq)
			}
			at = append(at, now.Sub(t0))
		}
	}
	want := []time.Duration{time.Second, 3 * time.Second, 7 * time.Second, 15 * time.Second}
	if len(at) != len(want) {
		t.Fatalf("copies at %v, want %v", at, want)
	}
	for i := range want {
		if at[i] != want[i] {
			t.Fatalf("copies at %v, want %v", at, want)
		}
	}
	got, err := e.g.Command(keyID, c.Seq)
	if err != nil || got.Resends != 4 || got.Stage != gateway.Sent {
		t.Fatalf("command %+v %v", got, err)
	}

	// With a long base, no copy would come before the ack timeout: none.
	c2 := e.submit("noop", nil)
	if _, ok, _ := e.g.Next(e.now, vehicleID); !ok {
		t.Fatal("Next")
	}
	if tm, ok := e.g.NextResend(vehicleID, time.Hour); ok {
		t.Fatalf("a copy due at %v after the ack timeout", tm)
	}
	// Acknowledged: no more copies.
	if tm, ok := e.g.NextResend(vehicleID, base); !ok || !tm.Equal(e.now.Add(base)) {
		t.Fatalf("NextResend %v %v", tm, ok)
	}
	if err := e.g.Receive(e.now, vehicleID, &protocol.Verification{Vehicle: vehicleID, Seq: c2.Seq, Stage: protocol.StageAccepted, Opcode: c2.Opcode}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := e.g.Resend(e.now.Add(time.Minute), vehicleID, base); ok {
		t.Fatal("an accepted command was resent")
	}
}

// TestSharedArchive: three gateways (stations) share one archive. A
// command submitted at a goes out once, from b, which syncs before it
// sends; c, stale, cannot send it again (its change loses the
// compare-and-swap, and it reloads); a report heard at a and then at c
// moves it once; every gateway sees where it is, and a timeout is written
// once.
func TestSharedArchive(t *testing.T) {
	e := newEnv(t)
	a := e.g
	open := func(station string) *gateway.Gateway {
		cfg := e.cfg
		cfg.Station = station
		g, err := gateway.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	b := open("b")
	cmd := e.submit("noop", nil)
	c := open("c") // c loads the command as queued, and stays stale
	// b has not read it yet: nothing to send until it syncs.
	if _, ok, err := b.Next(e.now, vehicleID); ok || err != nil {
		t.Fatalf("b sent a command it had not read: %v %v", ok, err)
	}
	if err := b.Sync(vehicleID); err != nil {
		t.Fatal(err)
	}
	out, ok, err := b.Next(e.now, vehicleID)
	if err != nil || !ok || out.Seq != cmd.Seq {
		t.Fatalf("b.Next: %+v %v %v", out, ok, err)
	}
	// c's copy is stale: its hand-out loses the race, and then it has
	// nothing left to send.
	if _, ok, err := c.Next(e.now, vehicleID); !errors.Is(err, gateway.ErrStale) || ok {
		t.Fatalf("c sent it again: ok %v, %v", ok, err)
	}
	if _, ok, err := c.Next(e.now, vehicleID); ok || err != nil {
		t.Fatalf("c after reload: ok %v, %v", ok, err)
	}
	reps, err := e.veh.Handle(out.Frame)
	if err != nil {
		t.Fatal(err)
	}
	// a, which has it as queued, hears the reports; c hears them again
	// (duplicates of a command that ended: unmatched, as on one station).
	for _, r := range reps {
		if err := a.Receive(e.now, vehicleID, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range reps {
		if err := c.Receive(e.now, vehicleID, r); !errors.Is(err, gateway.ErrUnmatched) {
			t.Fatalf("c: a duplicate report: %v", err)
		}
	}
	for _, g := range []*gateway.Gateway{a, b, c} {
		got, err := g.Command(keyID, cmd.Seq)
		if err != nil {
			t.Fatal(err)
		}
		if st := stages(got); st != "queued sent accepted started completed" || got.SentBy() != "b" {
			t.Errorf("command %s, sent by %q", st, got.SentBy())
		}
	}
	// A second command, sent by b, never answered: a, b and c tick past
	// its ack timeout; it times out once.
	cmd2 := e.submit("noop", nil)
	if err := b.Sync(vehicleID); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.Next(e.now, vehicleID); err != nil || !ok {
		t.Fatalf("b.Next: %v %v", ok, err)
	}
	e.advance(2 * time.Minute)
	for _, g := range []*gateway.Gateway{a, c, b} {
		if _, err := g.Tick(e.now); err != nil {
			t.Fatal(err)
		}
	}
	if st := stages(e.command(cmd2.Seq)); st != "queued sent timeout(sent)" {
		t.Errorf("command 2: %s", st)
	}
	// The gateways stop waiting for late reports after LateWindow: the
	// command is closed in the archive, once, and no longer open.
	e.advance(25 * time.Hour)
	for _, g := range []*gateway.Gateway{c, a, b} {
		if _, err := g.Tick(e.now); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.command(cmd2.Seq); !got.Closed || got.Open() {
		t.Errorf("command 2 after the late window: closed %v open %v", got.Closed, got.Open())
	}
	if open, _ := e.arch.OpenCommands(vehicleID); len(open) != 0 {
		t.Errorf("%d commands still open", len(open))
	}
}

// racingArchive is a shared archive where another station times a
// command out between this gateway's read and its write.
type racingArchive struct {
	*gatewaytest.Archive
	raced bool
}

func (a *racingArchive) PutCommand(c *gateway.Command) error {
	if c.Stage == gateway.Timeout && !a.raced {
		a.raced = true
		other, err := a.Archive.Command(c.Key, c.Seq)
		if err != nil {
			return err
		}
		other.Stage, other.Version = gateway.Timeout, other.Version+1
		other.History = append(other.History, gateway.Entry{Stage: gateway.Timeout, Time: c.Last().Time, Waited: gateway.Sent})
		if err := a.Archive.PutCommand(other); err != nil {
			return err
		}
	}
	return a.Archive.PutCommand(c)
}

// TestTickLosesRace: a timeout another station wrote first is not an
// error of Tick: the gateway reloads the command, which stays timed out
// once.
func TestTickLosesRace(t *testing.T) {
	e := newEnv(t)
	ra := &racingArchive{Archive: e.arch}
	e.cfg.Archive = ra
	e.restart()
	c := e.submit("noop", nil)
	if _, ok, err := e.g.Next(e.now, vehicleID); err != nil || !ok {
		t.Fatalf("Next: %v %v", ok, err)
	}
	e.advance(2 * time.Minute)
	timedOut, err := e.g.Tick(e.now)
	if err != nil || len(timedOut) != 0 || !ra.raced {
		t.Fatalf("Tick: %d timed out here, %v (raced %v)", len(timedOut), err, ra.raced)
	}
	if st := stages(e.command(c.Seq)); st != "queued sent timeout(sent)" {
		t.Errorf("command: %s", st)
	}
	if _, err := e.g.Tick(e.now.Add(time.Minute)); err != nil {
		t.Errorf("the next Tick: %v", err)
	}
}
