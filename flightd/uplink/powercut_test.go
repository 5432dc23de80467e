package uplink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
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
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/opencontainers/go-digest"
)

// The child side of TestPowerCutSIGKILL: it runs the whole uplink of one
// plan against a vehicle directory, printing a line at every point where
// the parent may kill it, and a final "done" line with its counts.
const (
	childEnv = "BOOTORBIT_UPLINK_CHILD" // the vehicle directory
	imgEnv   = "BOOTORBIT_UPLINK_IMG"   // the directory with plan, bundle and base
)

type progressReader struct {
	r   io.Reader
	out io.Writer
	n   int
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.n += n
	if r.n >= 32<<10 {
		r.n = 0
		fmt.Fprintln(r.out, "install")
	}
	return n, err
}

// childVehicle opens the vehicle of dir, with a return-link epoch bumped
// durably first (the vehicle's boot counter).
func childVehicle(t testing.TB, dir string, img *childImages) *vehicle {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ep := filepath.Join(dir, "epoch")
	var epoch uint32
	if b, err := os.ReadFile(ep); err == nil && len(b) == 4 {
		epoch = binary.BigEndian.Uint32(b)
	}
	epoch++
	if err := os.WriteFile(ep+".tmp", binary.BigEndian.AppendUint32(nil, epoch), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(ep+".tmp", ep); err != nil {
		t.Fatal(err)
	}
	base := delta.MapBase{}
	for d, b := range img.base {
		base[digest.Digest(d)] = bytes.NewReader(b)
	}
	v := newVehicleNoOpen(t, dir, false, base)
	v.epoch = epoch - 1
	v.open()
	return v
}

type childImages struct {
	plan, bundle []byte
	base         map[string][]byte
}

// TestUplinkChild is the child process of TestPowerCutSIGKILL; it does
// nothing in an ordinary run.
func TestUplinkChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("child of TestPowerCutSIGKILL only")
	}
	imgDir := os.Getenv(imgEnv)
	img := loadChildImages(t, imgDir)
	out := bufio.NewWriter(os.Stdout)
	line := func(s string) { fmt.Fprintln(out, s); out.Flush() }
	v := childVehicle(t, dir, img)
	v.inst.out = &lineWriter{line}
	seed, _ := strconv.ParseUint(os.Getenv("BOOTORBIT_UPLINK_CHILD_SEED"), 10, 64)
	// A lossy link for the first run; a resume counts what is received
	// again, on a clean link.
	r := &relay{rng: rand.New(rand.NewPCG(seed, 1)), loss: 0.1, dup: 0.02}
	if v.e.Status().Plan != 0 || dirBytes(t, filepath.Join(v.cfg.Dir, "staging")) > 0 {
		r.loss, r.dup = 0, 0
	}
	g := newGround(t)
	line(fmt.Sprintf("open %s", v.e.Status().StateName))
	// The chunks journaled at the start: one listed missing in a report
	// is one the vehicle asked for again.
	held := map[[2]uint64]bool{}
	recs, err := v.e.j.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if k := rec.Key; len(k) == 14 && k[0] == 't' {
			held[[2]uint64{binary.BigEndian.Uint64(k[1:9]), uint64(binary.BigEndian.Uint32(k[10:]))}] = true
		}
	}
	var resent int64
	v.onReport = func(r *protocol.Report) {
		pos := uint64(r.Cursor)
		for i := 0; i+1 < len(r.Missing); i += 2 {
			s := pos + uint64(r.Missing[i])
			for x := s; x < s+uint64(r.Missing[i+1]); x++ {
				if held[[2]uint64{r.ID, x}] {
					resent++
				}
			}
			pos = s + uint64(r.Missing[i+1])
		}
	}
	for _, tr := range []struct {
		id     uint64
		target []byte
		data   []byte
	}{{1, update.TargetPlan(7), img.plan}, {2, update.TargetBundle(7), img.bundle}} {
		g.next = tr.id
		s := g.sender(tr.target, tr.data)
		v.run(s, r, 400000, func(step int) bool {
			if step%3 == 0 {
				line("receive")
			}
			return false
		})
		if !s.Done() || s.Err() != nil {
			t.Fatalf("transfer %d: done %v, %v", tr.id, s.Done(), s.Err())
		}
	}
	if _, err := v.e.RunInstall(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := v.e.Status()
	line(fmt.Sprintf("done %s dups %d resent %d", st.StateName, st.Receiver.Duplicates, resent))
	v.close()
}

type lineWriter struct{ line func(string) }

func (w *lineWriter) Write(b []byte) (int, error) {
	w.line(strings.TrimSpace(string(b)))
	return len(b), nil
}

func loadChildImages(t testing.TB, dir string) *childImages {
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	img := &childImages{plan: read("plan"), bundle: read("bundle"), base: map[string][]byte{}}
	ents, err := os.ReadDir(filepath.Join(dir, "base"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		img.base["sha256:"+e.Name()] = read(filepath.Join("base", e.Name()))
	}
	return img
}

// TestPowerCutSIGKILL kills (SIGKILL) a child process running the uplink at
// random points of the receive and the install, then checks from another
// process that the journal and staging are consistent and the inactive slot
// is never recorded written with anything but the complete image; then a
// child resumes and finishes, and the chunks the journal held are counted
// against what was sent again.
func TestPowerCutSIGKILL(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("in the child")
	}
	rng := testrand.New(t)
	runs := 4
	if testrand.Long() {
		runs = 200
	}
	dir := t.TempDir()
	im := makeImages(t, rng, filepath.Join(dir, "img"), ocitest.GenOptions{Layers: 2, Files: 40, MaxFileSize: 24 << 10})
	imgDir := filepath.Join(dir, "child")
	if err := os.MkdirAll(filepath.Join(imgDir, "base"), 0o755); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(imgDir, "plan"), im.plan(t, planOpts{id: 7}), 0o600))
	must(os.WriteFile(filepath.Join(imgDir, "bundle"), im.bundle, 0o600))
	for i, d := range im.old.DiffIDs {
		must(os.WriteFile(filepath.Join(imgDir, "base", d.Encoded()), im.old.Tars[i], 0o600))
	}
	img := loadChildImages(t, imgDir)

	// A run without a cut gives the number of kill points.
	points := func(vdir string, kill int, seed uint64) (lines []string, killed bool) {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestUplinkChild$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"="+vdir, imgEnv+"="+imgDir, fmt.Sprintf("BOOTORBIT_UPLINK_CHILD_SEED=%d", seed))
		stdout, err := cmd.StdoutPipe()
		must(err)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		must(cmd.Start())
		var all strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l := sc.Text()
			all.WriteString(l + "\n")
			if l == "receive" || l == "install" || strings.HasPrefix(l, "open") || strings.HasPrefix(l, "done") {
				lines = append(lines, l)
			}
			if kill >= 0 && len(lines) == kill {
				cmd.Process.Kill() // SIGKILL: no deferred function runs
				killed = true
				break
			}
		}
		io.Copy(io.Discard, stdout)
		err = cmd.Wait()
		if !killed && err != nil {
			t.Fatalf("child: %v\n%s\n%s", err, all.String(), stderr.String())
		}
		return lines, killed
	}
	full, _ := points(filepath.Join(dir, "v-full"), -1, 1)
	if len(full) < 10 || !strings.HasPrefix(full[len(full)-1], "done installed") {
		t.Fatalf("uncut run: %v", full)
	}
	recvPoints := 0
	for _, l := range full {
		if l == "receive" {
			recvPoints++
		}
	}
	var dupTotal, journaledTotal int
	for i := range runs {
		vdir := filepath.Join(dir, fmt.Sprintf("v%d", i))
		kill := 1 + rng.IntN(len(full)-1)
		_, killed := points(vdir, kill, rng.Uint64())
		// After the cut, from another process: consistent, never half
		// recorded, and what the journal holds.
		v := childVehicle(t, vdir, img)
		if ps := v.e.Check(); len(ps) > 0 {
			t.Fatalf("run %d (kill at %d): Check after the cut: %v", i, kill, ps)
		}
		sb := v.inst.m.Status().Slots[1]
		switch sb.State {
		case slots.Empty, slots.Writing:
		case slots.Written:
			if sb.Image != string(im.newIm.ManifestDigest) {
				t.Fatalf("run %d: slot B written with %q", i, sb.Image)
			}
			if _, err := v.inst.m.Verify(context.Background(), slots.B); err != nil {
				t.Fatalf("run %d: slot B recorded written but does not verify: %v", i, err)
			}
		default:
			t.Fatalf("run %d: slot B is %s", i, sb.State)
		}
		journaled := 0
		if held, _, ok := v.e.rx.Progress(2); ok {
			journaled = held
		}
		v.close()
		// Resume in a child to the end.
		lines, _ := points(vdir, -1, rng.Uint64())
		last := lines[len(lines)-1]
		var dups, resent int
		if _, err := fmt.Sscanf(last, "done installed dups %d resent %d", &dups, &resent); err != nil {
			t.Fatalf("run %d (kill at %d, killed %v): resume ended with %q", i, kill, killed, last)
		}
		// On the clean link of the resume, a chunk is sent twice only if
		// the vehicle asked for it again.
		if resent != 0 {
			t.Errorf("run %d (kill at %d): %d chunks asked for again after the restart", i, kill, resent)
		}
		dupTotal += dups
		journaledTotal += journaled
		v = childVehicle(t, vdir, img)
		if ps := v.e.Check(); len(ps) > 0 {
			t.Fatalf("run %d: Check after the resume: %v", i, ps)
		}
		if sb := v.inst.m.Status().Slots[1]; sb.State != slots.Written || sb.Image != string(im.newIm.ManifestDigest) {
			t.Fatalf("run %d: slot B after the resume: %+v", i, sb)
		}
		checkFiles(t, filepath.Join(vdir, "b"), im.new.Layers)
		v.close()
	}
	t.Logf("%d runs (kill points: %d receiving, %d installing): bundle chunks journaled at the cuts %d, asked for again after the restarts 0, received again (sent by the restarted ground before the vehicle's first report) %d",
		runs, recvPoints, len(full)-recvPoints, journaledTotal, dupTotal)
}
