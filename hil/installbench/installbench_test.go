package installbench

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"testing"

	"github.com/bootorbit/bootorbit/internal/testrand"
)

// TestChildProcess is the measured child when the test re-executes
// itself (INSTALLBENCH_CHILD=1); otherwise it does nothing.
func TestChildProcess(t *testing.T) {
	if os.Getenv("INSTALLBENCH_CHILD") != "1" {
		t.Skip("the child of TestInstallBench")
	}
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	var c ChildConfig
	fs.StringVar(&c.State, "state", "", "")
	fs.StringVar(&c.A, "slot-a", "", "")
	fs.StringVar(&c.B, "slot-b", "", "")
	fs.StringVar(&c.Bundle, "bundle", "", "")
	if err := fs.Parse(flag.Args()); err != nil {
		t.Fatal(err)
	}
	res, err := InstallChild(context.Background(), c)
	if err != nil {
		os.Stderr.WriteString(err.Error())
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
	os.Exit(0)
}

// TestInstallBench runs the bench on a small generated tree, its child a
// process of its own: the update is rebuilt from slot A and the bundle,
// and the storage it used beside the slots is the bundle and the state
// directory (the layer indexes, the pristine /etc), no copy of the old
// layer and no scratch.
func TestInstallBench(t *testing.T) {
	size := int64(8 << 20)
	if testrand.Long() {
		size = 200 << 20
	}
	res, err := Run(context.Background(), Options{Dir: t.TempDir(), Size: size, Seed: testrand.Seed(t),
		Child: []string{os.Args[0], "-test.run=^TestChildProcess$", "--"}, Env: []string{"INSTALLBENCH_CHILD=1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Child.Files == 0 || res.Child.Rebuilt != 1 || res.Child.PeakRSS == 0 {
		t.Fatalf("child: %+v", res.Child)
	}
	// The bound, on the 200 MiB tree of -long (a small tree
	// says little about it).
	if testrand.Long() && res.Child.PeakRSS > 64<<20 {
		t.Errorf("peak RSS %d MiB, over 64 MiB", res.Child.PeakRSS>>20)
	}
	if res.Scratch != 0 {
		t.Errorf("%d bytes of scratch", res.Scratch)
	}
	// The state directory holds the two indexes and the pristine /etc:
	// a small fraction of the layer a copy would take.
	if res.StateDir > res.OldLayer/20 || res.IndexOld == 0 || res.IndexNew == 0 {
		t.Errorf("state directory %d bytes (indexes %d, %d) for a %d-byte layer", res.StateDir, res.IndexOld, res.IndexNew, res.OldLayer)
	}
	if res.Storage != res.Bundle+res.StateDir {
		t.Errorf("storage %d, bundle %d, state %d", res.Storage, res.Bundle, res.StateDir)
	}
}

// TestFlightdProcess is the measured daemon of TestRSSBench when the test
// re-executes itself (INSTALLBENCH_FLIGHTD=1): what `flightd run` does.
func TestFlightdProcess(t *testing.T) {
	if os.Getenv("INSTALLBENCH_FLIGHTD") != "1" {
		t.Skip("the daemon of TestRSSBench")
	}
	fs := flag.NewFlagSet("flightd", flag.ContinueOnError)
	config := fs.String("config", "", "")
	if err := fs.Parse(flag.Args()); err != nil {
		t.Fatal(err)
	}
	if err := RunFlightd(context.Background(), *config, os.Stderr); err != nil {
		os.Stderr.WriteString(err.Error())
		os.Exit(1)
	}
	os.Exit(0)
}

// TestRSSBench runs the flightd-rss bench on a small generated tree: the
// real daemon, a process of its own, receives the plan and the bundle over
// UDP on loopback from the protocol Sender and installs slot B; its peak
// RSS is read, and the storage beside the slots stays the bundle plus the
// small state (indexes, records), no copy of the old layer.
func TestRSSBench(t *testing.T) {
	size := int64(8 << 20)
	if testrand.Long() {
		size = 200 << 20
	}
	res, err := RunRSS(context.Background(), RSSOptions{Dir: t.TempDir(), Size: size, Seed: testrand.Seed(t),
		Flightd: []string{os.Args[0], "-test.run=^TestFlightdProcess$", "--"}, Env: []string{"INSTALLBENCH_FLIGHTD=1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.PeakRSS == 0 || res.Bundle == 0 {
		t.Fatalf("result %+v", res)
	}
	if testrand.Long() && res.PeakRSS > 64<<20 {
		t.Errorf("peak RSS %d MiB, over 64 MiB", res.PeakRSS>>20)
	}
	if grown := res.StoragePeak - res.StateBefore; grown > res.Bundle+res.OldLayer/10 {
		t.Errorf("state directory grew by %d bytes for a %d-byte bundle and a %d-byte layer", grown, res.Bundle, res.OldLayer)
	}
}
