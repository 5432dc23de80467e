package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol/linksim"
)

func TestLinkUsage(t *testing.T) {
	for _, args := range [][]string{
		{"link", "--profile", "nope"},
		{"link", "--loss", "2"},
		{"link", "--profile", "leo-fast", "--ret-ge-p", "0.1"}, // without r
		{"link", "--delay", "90"},
		{"link", "--fwd-queue", "lots"},
		{"link", "--time-scale", "-1"},
		{"link", "--interval", "0s"},
		{"link", "--ns-a", "x"},
		{"link", "--ip", "--listen-a", "127.0.0.1:1"},
		{"link", "extra"},
		{"link", "--outage-at", "10m"},
		{"link", "--fwd-outage-at", "10m+-1m"},
	} {
		var out, errb bytes.Buffer
		// --for: a case wrongly accepted ends instead of relaying forever.
		if code := commands.Execute(context.Background(), append(args, "--for", "1s"), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage): %s", args, code, errb.String())
		}
	}
}

// freeUDP returns a loopback UDP address nobody listens on (just freed).
func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// TestLinkRelay runs hil link between two loopback sockets: frames from
// the ground reach the vehicle, the counters are printed on exit, and
// --json prints one document with them.
func TestLinkRelay(t *testing.T) {
	for _, asJSON := range []bool{false, true} {
		vehicle, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer vehicle.Close()
		listenA := freeUDP(t)
		args := []string{"link", "--profile", "leo-fast", "--always-up", "--loss", "0", "--delay", "5ms", "--seed", "7",
			"--listen-a", listenA, "--b", vehicle.LocalAddr().String()}
		if asJSON {
			args = append(args, "--json")
		}
		ctx, cancel := context.WithCancel(context.Background())
		var out, errb bytes.Buffer
		code := make(chan int, 1)
		go func() { code <- commands.Execute(ctx, args, &out, &errb) }()
		ground, err := net.Dial("udp", listenA)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		got := 0
		for range 100 { // until the emulator is up: earlier datagrams are refused by the kernel
			ground.Write([]byte("frame"))
			vehicle.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, _, err := vehicle.ReadFrom(buf); err == nil && string(buf[:n]) == "frame" {
				got++
				break
			}
		}
		ground.Close()
		cancel()
		if c := <-code; c != 0 || got == 0 {
			t.Fatalf("exit %d, %d frames relayed; stderr:\n%s", c, got, errb.String())
		}
		if !asJSON {
			for _, want := range []string{"profile leo-fast, seed 7", "forward: 2e+06 bit/s, delay 5ms", "schedule: always up", "delivered 1", "dropped: loss 0"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			continue
		}
		var doc linkDoc
		if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
			t.Fatalf("--json: %v:\n%s", err, out.String())
		}
		if doc.Seed != 7 || doc.Mode != "udp" || doc.ListenA != listenA || doc.Stats.Forward.Delivered < 1 || doc.Link.Forward.Delay != 5*time.Millisecond {
			t.Errorf("--json: %+v", doc)
		}
		if !strings.Contains(errb.String(), "profile leo-fast") {
			t.Errorf("--json: the start lines are not on stderr:\n%s", errb.String())
		}
	}
}

func TestLinkSpecFlags(t *testing.T) {
	f := &linkFlags{}
	cmd := newLinkCommand(f)
	if err := cmd.ParseFlags([]string{"--profile", "sband", "--loss", "0.01", "--ret-loss", "0.02", "--fwd-rate", "1200", "--jitter", "5ms",
		"--ge-p", "0.01", "--ge-r", "0.25", "--reorder", "0.1", "--fwd-drop-corrupt", "--queue", "64KiB",
		"--always-up", "--outage-every", "1h", "--outage-for", "5m", "--time-scale", "60",
		"--outage-at", "10m+5m", "--ret-outage-at", "1h+1s", "--outage-at", "2h+1m"}); err != nil {
		t.Fatal(err)
	}
	s, err := f.spec()
	if err != nil {
		t.Fatal(err)
	}
	fw, rt := s.Forward, s.Return
	if fw.Loss != 0.01 || rt.Loss != 0.02 || fw.Rate != 1200 || rt.Rate != 4.3e6 || fw.Jitter != 5*time.Millisecond || rt.Jitter != 5*time.Millisecond {
		t.Errorf("channels: %+v / %+v", fw, rt)
	}
	// sband's Gilbert-Elliott loses every frame in the bad state; the
	// flags change p and r only.
	if fw.GE.P != 0.01 || fw.GE.R != 0.25 || fw.GE.LossBad != 1 || fw.ReorderDelay != 20*time.Millisecond || !fw.DropCorrupt || rt.DropCorrupt || fw.Queue != 64<<10 {
		t.Errorf("forward: %+v", fw)
	}
	sc := s.Schedule
	if len(sc.ForwardOutages) != 2 || len(sc.ReturnOutages) != 3 || sc.ReturnOutages[2] != (linksim.Window{Start: time.Hour, End: time.Hour + time.Second}) ||
		sc.ForwardOutages[1].End != 2*time.Hour+time.Minute {
		t.Errorf("windows: %+v / %+v", sc.ForwardOutages, sc.ReturnOutages)
	}
	if sc.PassPeriod != 0 || sc.OutageEvery != time.Hour || sc.OutageFor != 5*time.Minute || s.TimeScale != 60 || s.Name != "sband" {
		t.Errorf("schedule: %+v, scale %v", sc, s.TimeScale)
	}

	// Gilbert-Elliott on a profile without it loses every frame in the
	// bad state unless told otherwise.
	f = &linkFlags{}
	cmd = newLinkCommand(f)
	cmd.ParseFlags([]string{"--profile", "leo-fast", "--ge-p", "0.01", "--ge-r", "0.25"})
	if s, err = f.spec(); err != nil || s.Forward.GE.LossBad != 1 || s.Return.GE.LossBad != 1 {
		t.Errorf("%v %+v", err, s.Forward.GE)
	}
}
