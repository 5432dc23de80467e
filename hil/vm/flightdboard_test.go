package vm

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/hil/link"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/opencontainers/go-digest"
)

func needFlightdBoard(t *testing.T, name string) (*FlightdBoard, link.Spec) {
	t.Helper()
	ab := needABBoard(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fb, err := NewFlightdBoard(ctx, ab)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := link.Profile("leo-fast")
	if err != nil {
		t.Fatal(err)
	}
	spec.Schedule = link.Spec{}.Schedule // always up: the update, not the passes
	return fb, spec
}

// BuildImage is byte-reproducible: the same version built on two boards
// (other work directories, the source trees' times apart, as builds at
// other times leave them) gives the same filesystem bytes and the same layer
// digest, so that a rebuilt version diffs to the smallest delta.
func TestFlightdImageReproducible(t *testing.T) {
	fb, _ := needFlightdBoard(t, "flightd-repro")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var digests [2]string
	for i := range digests {
		board := *fb.Board // the shared board's copy: its own work directory
		board.Dir = t.TempDir()
		if err := copyFile(filepath.Join(fb.Dir, "init"), filepath.Join(board.Dir, "init")); err != nil {
			t.Fatal(err)
		}
		ab := *fb.ABBoard
		ab.Board = &board
		b := &FlightdBoard{ABBoard: &ab, Keys: fb.Keys, Flightd: fb.Flightd, Images: map[uint64]*FlightdImage{}}
		// The second build's tree as a build an hour later leaves it: its
		// atime and mtime moved, its ctime now (not one a test can pick).
		later := time.Unix(1800000000+int64(i)*3600, 0)
		b.treeHook = func(dir string) error {
			return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
				if err != nil {
					return err
				}
				return os.Chtimes(p, later, later)
			})
		}
		im, err := b.BuildImage(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		digests[i] = im.DiffID.String()
		t.Logf("build %d in %s: %s", i, board.Dir, im.DiffID)
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds of version 2: %s and %s", digests[0], digests[1])
	}
}

// The factory boot of the flightd board: flightd (linux/arm64) in the
// guest under the real U-Boot, its housekeeping read by a ground on the
// host across hil/link's emulator (RunFlightdBoot). The default run's
// form of TestFlightdBoardUpdate.
func TestFlightdBoardBoot(t *testing.T) {
	fb, spec := needFlightdBoard(t, "flightd-boot")
	rng := testrand.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := fb.RunFlightdBoot(ctx, spec, rng.Uint64())
	checkReport(t, r, err)
	if strings.Join(r.Booted, ",") != "A" {
		t.Fatalf("booted %v", r.Booted)
	}
}

// The nominal update with flightd (linux/arm64) in the guest of the A/B
// board under the real U-Boot, from a ground on the host across
// hil/link's emulator (RunFlightdUpdate). About 25 s here (version 2's
// bundle is a 705-byte raw-layer delta; the boots, the install of the
// 20 MiB slot and flightd's start under TCG are the time): -long only.
func TestFlightdBoardUpdate(t *testing.T) {
	if !testrand.Long() {
		t.Skip("about 25 s: -long or BOOTORBIT_LONG=1 (TestFlightdBoardBoot is the short form)")
	}
	fb, spec := needFlightdBoard(t, "flightd")
	rng := testrand.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r, err := fb.RunFlightdUpdate(ctx, spec, rng.Uint64())
	checkReport(t, r, err)
	if strings.Join(r.Booted, ",") != "AB" {
		t.Fatalf("booted %v", r.Booted)
	}
}

// The watchdog rollback with flightd owning the watchdog (RunFlightdRollback):
// the ground sends version 3, which hangs at boot, across hil/link's
// emulator; flightd installs it into B and reboots into it; B freezes
// with flightd holding the watchdog, the i6300esb resets the board,
// the real U-Boot tries B three times and falls back to A, where flightd
// records B bad and tells the ground. About 1.5 minutes here (three
// 20 s watchdog timeouts): -long only.
func TestFlightdBoardRollback(t *testing.T) {
	if !testrand.Long() {
		t.Skip("about 1.5 minutes: -long or BOOTORBIT_LONG=1 (TestABBoardRollback is the fast rollback under U-Boot, with the guest init's stand-in)")
	}
	fb, spec := needFlightdBoard(t, "flightd-rollback")
	rng := testrand.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	r, err := fb.RunFlightdRollback(ctx, spec, rng.Uint64())
	checkReport(t, r, err)
	if want := "A" + strings.Repeat("B", watchdog.DefaultAttempts) + "A"; strings.Join(r.Booted, ",") != want {
		t.Fatalf("booted %v, want %s", r.Booted, want)
	}
}

// slotVersion: a version the vehicle reports is kept; a slot it reports
// as version 0 (the factory's) is named by its short digest among the
// built images; an unknown or short digest stays 0.
func TestSlotVersion(t *testing.T) {
	img := func(s string) *FlightdImage {
		return &FlightdImage{Image: &oci.Image{ManifestDigest: digest.FromString(s)}}
	}
	fb := &FlightdBoard{Images: map[uint64]*FlightdImage{1: img("v1"), 3: img("v3")}}
	short := func(s string) []byte {
		b, err := hex.DecodeString(digest.FromString(s).Encoded()[:2*dict.ShortDigestLen])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		reported uint64
		digest   any
		want     uint64
	}{
		{0, short("v1"), 1},
		{3, short("v3"), 3},
		{3, short("v1"), 3}, // the vehicle's word
		{0, short("v3"), 3},
		{0, short("other"), 0},
		{0, short("v1")[:4], 0},
		{0, nil, 0},
		{0, "not bytes", 0},
	} {
		if got := fb.slotVersion(c.reported, c.digest); got != c.want {
			t.Errorf("slotVersion(%d, %x) = %d, want %d", c.reported, c.digest, got, c.want)
		}
	}
}
