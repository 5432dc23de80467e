package flightd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/flightd/uplink"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
)

// Power cuts of the real daemon: flightd runs in a child process (this
// test binary re-executed, running Run as flightd run does, its delta base
// the booted slot itself) and is killed with SIGKILL at seeded points
// of the receive, the install and the activation. After each cut the
// parent runs the checks `flightd check` runs, plays the bootloader (a
// power cut is a new boot: the boot script runs and counts), and starts
// flightd again; the ground stand-in goes on as a ground station would,
// from telemetry. At the end the vehicle runs the new release, marked
// good, or (when the cuts used the trial's attempts) the old one.

const (
	envChild  = "BOOTORBIT_FLIGHTD_CHILD"
	envBootID = "BOOTORBIT_FLIGHTD_BOOTID"
)

// childSpec tells the child what to run.
type childSpec struct {
	Config string
}

// TestFlightdPowerCutChild is the child of TestPowerCutSIGKILL; it runs
// only when that test starts it.
func TestFlightdPowerCutChild(t *testing.T) {
	specPath := os.Getenv(envChild)
	if specPath == "" {
		t.Skip("the child process of TestPowerCutSIGKILL")
	}
	b, err := os.ReadFile(specPath)
	mustT(t, err)
	var sp childSpec
	mustT(t, json.Unmarshal(b, &sp))
	cfg, err := LoadConfig(sp.Config)
	mustT(t, err)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	err = Run(ctx, cfg, Options{
		Log:    discard,
		BootID: os.Getenv(envBootID),
		Reboot: func(context.Context) error { return nil },
	})
	switch {
	case errors.Is(err, ErrRebooted):
		os.Exit(3)
	case err != nil && ctx.Err() == nil:
		fmt.Fprintln(os.Stderr, "flightd:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func toU(v any) uint64 { u, _ := v.(uint64); return u }

// freePort returns a loopback UDP port that was free a moment ago.
func freePort(t *testing.T) int {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	mustT(t, err)
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func TestPowerCutSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("power cuts of a child process")
	}
	rng := testrand.New(t)
	dir := t.TempDir()
	gen := ocitest.GenOptions{Layers: 2, Files: 60, MaxFileSize: 16 << 10}
	v1L := ocitest.RandomLayers(rng, gen)
	v2L, _ := ocitest.Modify(rng, v1L, ocitest.ModifyOptions{Changes: []ocitest.Change{ocitest.Edit, ocitest.Add, ocitest.Add}})
	var ims [2]ocitest.Image
	var oims [2]*oci.Image
	for i, l := range [][]ocitest.Layer{v1L, v2L} {
		var err error
		ims[i], err = ocitest.Write(filepath.Join(dir, fmt.Sprintf("img%d", i+1)), fmt.Sprintf("v%d", i+1), l)
		mustT(t, err)
		oims[i], err = oci.Open(ims[i].Ref)
		mustT(t, err)
	}
	bp := filepath.Join(dir, "bundle12")
	_, err := delta.ComputeFile(context.Background(), oims[0], oims[1], bp, delta.Options{TempDir: dir, PartSize: 16 << 10})
	mustT(t, err)
	b12, err := os.ReadFile(bp)
	mustT(t, err)

	runs := 4
	if testrand.Long() {
		runs = 200
	}
	for i := range runs {
		seed := rng.Uint64()
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Logf("seed %d", seed)
			powerCutRun(t, rand.New(rand.NewPCG(seed, 0)), filepath.Join(dir, fmt.Sprint("v", i)), ims, oims, b12)
		})
	}
}

func powerCutRun(t *testing.T, rng *rand.Rand, dir string, ims [2]ocitest.Image, oims [2]*oci.Image, bundle []byte) {
	v := newE2EVehicle(t, dir, ims[0])
	port := freePort(t)
	v.cfg.Links[0].Listen = fmt.Sprintf("127.0.0.1:%d", port)
	cb, err := json.Marshal(v.cfg)
	mustT(t, err)
	cfgPath := filepath.Join(dir, "flightd.json")
	mustT(t, os.WriteFile(cfgPath, cb, 0o644))
	sb, err := json.Marshal(childSpec{Config: cfgPath})
	mustT(t, err)
	specPath := filepath.Join(dir, "spec.json")
	mustT(t, os.WriteFile(specPath, sb, 0o644))

	codec, err := protocol.NewCodec(1024)
	mustT(t, err)
	ver, err := protocol.NewReturnVerifier(testVehicle, protocol.MACKey{ID: 1, Key: bytes.Repeat([]byte{9}, 32)})
	mustT(t, err)
	gconn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	mustT(t, err)
	defer gconn.Close()
	relay := newLossyRelay(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, rand.New(rand.NewPCG(rng.Uint64(), 1)), 0)
	g := &groundStation{t: t, conn: gconn, relay: relay.addr(), codec: codec, ver: ver, ground: e2eKey(1), release: e2eKey(2),
		tlm: map[uint16]*protocol.Telemetry{}, chunks: map[uint64]int{}}

	// The child.
	boot := 0
	var cmd *exec.Cmd
	var stderr bytes.Buffer
	var exited chan int
	start := func() {
		boot++
		cmd = exec.Command(os.Args[0], "-test.run=^TestFlightdPowerCutChild$")
		cmd.Env = append(os.Environ(), envChild+"="+specPath, fmt.Sprintf("%s=boot-%d", envBootID, boot))
		stderr.Reset()
		cmd.Stderr = &stderr
		mustT(t, cmd.Start())
		ch := make(chan int, 1)
		exited = ch
		c := cmd
		go func() {
			c.Wait()
			ch <- c.ProcessState.ExitCode()
		}()
	}
	defer func() {
		if cmd != nil && cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	}()
	// check runs what `flightd check` runs after a restart: the uplink
	// engine opened as flightd's start opens it (which removes what a cut
	// left between a staged write and its record), then the checks.
	check := func(when string) {
		t.Helper()
		off, err := OpenOffline(v.cfg, discard)
		mustT(t, err)
		if off.Engine != nil {
			mustT(t, off.Engine.Close())
		}
		keys, err := v.cfg.LoadKeys()
		mustT(t, err)
		off.Engine, err = uplink.Open(v.cfg.UplinkConfig(keys), &installer{u: off.Updater, log: discard}, discard)
		mustT(t, err)
		ps := off.Check()
		mustT(t, off.Close())
		if len(ps) > 0 {
			t.Fatalf("%s: flightd check: %s", when, strings.Join(ps, "; "))
		}
	}
	phase := "start"
	// newBoot plays the bootloader and checks it boots a complete slot.
	newBoot := func() {
		t.Helper()
		s := v.reboot()
		o, err := v.cfg.Slots.SlotOptions(false)
		mustT(t, err)
		o.Log = discard
		m, err := slots.Open(o)
		mustT(t, err)
		for _, sl := range m.Status().Slots {
			if sl.ID == s && sl.State != slots.Good && sl.State != slots.Pending {
				t.Fatalf("boot %d: the bootloader boots slot %s, which is %s", boot+1, s, sl.State)
			}
			if sl.ID == s && sl.State == slots.Pending {
				phase = "trial" // until the next poll: flightd starts, checks, commits
			}
		}
		start()
	}
	cuts, rebootsSeen := 0, 0
	maxCuts := 1 + rng.IntN(4)
	// Each cut is aimed at a phase (the receive of the plan or the
	// bundle, the install, the activation, the reboot command, the trial
	// boot), a seeded number of ground turns into it.
	phases := []string{"plan", "bundle", "install", "activate", "reboot", "trial"}
	ticks := 0
	aim, wait := phases[rng.IntN(len(phases))], rng.IntN(2)
	var cutPhases []string
	g.onEvent = func(e *protocol.Event) {
		if e.ID == dict.EvInstallStarted.ID {
			phase = "install"
		}
	}
	g.tick = func() {
		ticks++
		select {
		case code := <-exited:
			if code != 3 {
				t.Fatalf("flightd exited %d:\n%s", code, stderr.String())
			}
			rebootsSeen++
			check("after a reboot")
			newBoot()
		default:
		}
		if phase == aim && wait > 0 {
			wait--
		} else if phase == aim && cuts < maxCuts {
			cuts++
			cmd.Process.Kill()
			<-exited
			check(fmt.Sprintf("cut %d at tick %d (%s)", cuts, ticks, phase))
			cutPhases = append(cutPhases, phase)
			newBoot()
			aim, wait = phases[rng.IntN(len(phases))], rng.IntN(2)
		}
	}
	start()

	poll := func() (tr, bt, sl dict.Values) {
		for _, p := range []*dict.Packet{dict.HKTransfer, dict.HKBoot, dict.HKSlots} {
			delete(g.tlm, p.ID)
		}
		g.command("status", nil, 30*time.Second)
		for b := g.recv(time.Now().Add(50 * time.Millisecond)); b != nil; b = g.recv(time.Now().Add(20 * time.Millisecond)) {
			g.take(time.Now(), b, nil)
		}
		dec := func(p *dict.Packet) dict.Values {
			m, ok := g.tlm[p.ID]
			if !ok {
				return dict.Values{}
			}
			v, err := p.Decode(m.Params)
			mustT(t, err)
			return v
		}
		return dec(dict.HKTransfer), dec(dict.HKBoot), dec(dict.HKSlots)
	}
	held := map[uint64]uint64{}
	planSent, bundleSent := false, false
	for iter := 0; ; iter++ {
		if iter > 200 {
			t.Fatalf("no end after 200 rounds (%d cuts)", cuts)
		}
		tr, bt, sl := poll()
		switch {
		case bt["trial"] == true:
			phase = "trial"
		case tr["state"] == uint64(4) || bundleSent && tr["state"] == uint64(2):
			phase = "install"
		default:
			phase = "poll"
		}
		if x, ok := tr["transfer_id"].(uint64); ok && x != 0 && tr["state"] == uint64(2) {
			h := tr["chunks_held"].(uint64)
			if h < held[x] {
				t.Fatalf("transfer %d: %d chunks held after a cut, %d before: journaled chunks lost", x, h, held[x])
			}
			held[x] = h
		}
		bootedB := bt["booted_slot"] == uint64(2)
		switch {
		case bootedB && sl["slot_b_state"] == uint64(4) && bt["trial"] == false:
			t.Logf("done: B good after %d cuts %v and %d reboots, %d boots; chunk frames sent %v, %d resent", cuts, cutPhases, rebootsSeen, boot, g.chunks, g.resent)
			return
		case !bootedB && sl["slot_b_state"] == uint64(5) && bt["last_outcome"] == uint64(3):
			// The cuts used the trial's attempts: the bootloader fell
			// back to A, which is good. Also a safe end.
			t.Logf("done: B's trial attempts used by %d cuts %v, back on A", cuts, cutPhases)
			return
		case !planSent:
			phase = "plan"
			g.transfer(update.TargetPlan(1), g.signedPlan(1, 2, oims[1], bundle), 60*time.Second)
			planSent = true
		case !bundleSent:
			phase = "bundle"
			g.transfer(update.TargetBundle(1), bundle, 60*time.Second)
			bundleSent = true
		case !bootedB && tr["state"] == uint64(5):
			phase = "activate"
			g.command("activate", dict.Values{"slot": "b", "attempts": uint64(3)}, 30*time.Second)
		case !bootedB && (tr["state"] == uint64(8) || sl["slot_b_state"] == uint64(3)):
			phase = "reboot"
			g.command("reboot", nil, 30*time.Second)
		}
	}
}
