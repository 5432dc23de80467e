package uplink

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/opencontainers/go-digest"
)

const memChildEnv = "BOOTORBIT_UPLINK_MEMCHILD" // the work directory

// memEnv sets the size of the synthetic layer of TestMemoryPeak in MiB;
// set, it runs the test without -long.
const memEnv = "BOOTORBIT_UPLINK_MEM_MIB"

// TestMemoryPeak measures the peak RSS (VmHWM) of a child process that
// receives a plan and a delta bundle over an in-process lossy link and
// installs the image into a directory slot, with every large input read
// from files (the ground's bundle, the booted image's layers), so that
// what is counted is the vehicle's work. It runs with -long, or with
// BOOTORBIT_UPLINK_MEM_MIB=N (the layer size):
//
//	BOOTORBIT_UPLINK_MEM_MIB=200 go test -run '^TestMemoryPeak$' -v ./flightd/uplink/
func TestMemoryPeak(t *testing.T) {
	if os.Getenv(memChildEnv) != "" {
		t.Skip("in the child")
	}
	mib := 64
	if s := os.Getenv(memEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a size in MiB", memEnv, s)
		}
		mib = n
	} else if !testrand.Long() {
		t.Skip("a long measurement: run with -long or " + memEnv + "=N")
	}
	rng := testrand.New(t)
	// One big layer of files of up to 1 MiB; the new image edits and adds
	// some of them.
	oldL := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 1, Files: mib * 2, MaxFileSize: 1 << 20})
	newL, _ := ocitest.Modify(rng, oldL, ocitest.ModifyOptions{Changes: []ocitest.Change{ocitest.Edit, ocitest.Add}, MaxFileSize: 1 << 20})
	t.Run("delta", func(t *testing.T) { measure(t, oldL, newL) })
	// The same image as full data (a bundle from an empty image): every
	// byte comes from the bundle's literal streams.
	t.Run("full", func(t *testing.T) { measure(t, nil, newL) })
}

func measure(t *testing.T, oldL, newL []ocitest.Layer) {
	dir := t.TempDir()
	im := makeImagesFrom(t, filepath.Join(dir, "img"), oldL, newL)
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(filepath.Join(work, "base"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "plan"), im.plan(t, planOpts{id: 7, staging: uint64(len(im.bundle))}), 0o600); err != nil {
		t.Fatal(err)
	}
	var layerBytes int
	for i, d := range im.old.DiffIDs {
		if err := os.WriteFile(filepath.Join(work, "base", d.Encoded()), im.old.Tars[i], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tr := range im.new.Tars {
		layerBytes += len(tr)
	}
	if err := os.Rename(im.bundlePath, filepath.Join(work, "bundle")); err != nil {
		t.Fatal(err)
	}
	bundleSize := len(im.bundle)
	im.bundle, im.old.Tars, im.new.Tars = nil, nil, nil

	cmd := exec.Command(os.Args[0], "-test.run=^TestUplinkMemChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), memChildEnv+"="+work)
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, outb)
	}
	var hwm, staged, state int64
	sc := bufio.NewScanner(bytes.NewReader(outb))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "result ") {
			if _, err := fmt.Sscanf(l, "result vmhwm %d staged %d state %d", &hwm, &staged, &state); err != nil {
				t.Fatalf("child result %q: %v", l, err)
			}
		}
	}
	if hwm == 0 {
		t.Fatalf("no result from the child:\n%s", outb)
	}
	t.Logf("receive and install of a %.1f MiB layer (bundle %.1f MiB) into a directory slot: peak RSS (VmHWM of the child) %.1f MiB; largest staging use %.1f MiB; uplink state directory after the install %.1f MiB",
		float64(layerBytes)/(1<<20), float64(bundleSize)/(1<<20), float64(hwm)/(1<<10), float64(staged)/(1<<20), float64(state)/(1<<20))
	if hwm > 64<<10 {
		t.Errorf("peak RSS %d KiB is over 64 MiB", hwm)
	}
	if staged > int64(bundleSize)+update.MaxPlanSize {
		t.Errorf("staging held %d bytes, more than the bundle's %d and a plan", staged, bundleSize)
	}
}

// TestUplinkMemChild is the child of TestMemoryPeak.
func TestUplinkMemChild(t *testing.T) {
	work := os.Getenv(memChildEnv)
	if work == "" {
		t.Skip("child of TestMemoryPeak only")
	}
	plan, err := os.ReadFile(filepath.Join(work, "plan"))
	if err != nil {
		t.Fatal(err)
	}
	base := delta.MapBase{}
	ents, err := os.ReadDir(filepath.Join(work, "base"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(work, "base", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		base[digest.NewDigestFromEncoded(digest.SHA256, e.Name())] = f
	}
	bf, err := os.Open(filepath.Join(work, "bundle"))
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	fi, err := bf.Stat()
	if err != nil {
		t.Fatal(err)
	}
	v := newVehicleNoOpen(t, filepath.Join(work, "vehicle"), false, base)
	v.cfg.StagingQuota = fi.Size() + update.MaxPlanSize
	v.open()
	defer v.close()
	g := newGround(t)
	r := &relay{rng: rand.New(rand.NewPCG(1, 2)), loss: 0.05, dup: 0.01}
	var staged int64
	watch := func(int) bool {
		staged = max(staged, v.e.Status().StagingUsed)
		return false
	}
	send := func(s *transfer.Sender) {
		v.run(s, r, 1<<30, watch)
		if !s.Done() || s.Err() != nil {
			t.Fatalf("transfer: %v", s.Err())
		}
	}
	send(g.sender(update.TargetPlan(7), plan))
	// The ground reads the bundle from its file.
	p, err := transfer.NewPlan(g.codec, testVehicle, g.next, update.TargetBundle(7), bf, uint64(fi.Size()), 0, groundKeyID, groundPriv)
	if err != nil {
		t.Fatal(err)
	}
	s, err := transfer.NewSender(transfer.SenderConfig{Codec: g.codec, Rate: 50e6, RTT: 50e6, Verifier: g.verifier}, p)
	if err != nil {
		t.Fatal(err)
	}
	send(s)
	if _, err := v.e.RunInstall(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := v.e.Status(); st.StateName != "installed" {
		t.Fatalf("status %+v", st)
	}
	fmt.Printf("result vmhwm %d staged %d state %d\n", vmHWM(t), staged, dirBytes(t, v.cfg.Dir))
}

var _ = protocol.Version

// vmHWM is the process's peak resident set, in KiB.
func vmHWM(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
