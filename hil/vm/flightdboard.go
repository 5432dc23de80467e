package vm

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/flightd"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/opencontainers/go-digest"
)

// The flightd board: ABBoard with flightd (linux/arm64) as the system in
// each slot. Slots A and B are raw slots (/dev/vda2, /dev/vda3) whose
// image is an ext4 filesystem holding the initrd U-Boot loads: the guest
// init, the modules, flightd, its configuration and keys. flightd's state
// (slots' records, the uplink journal and staging) lives in a directory
// of the boot partition, mounted at /boot. The guest reaches the host
// over virtio-net and QEMU's UDP forward, behind hil/link's emulator.
const (
	// FlightdPort is flightd's UDP link port in the guest.
	FlightdPort = 7400
	// FlightdVehicle and FlightdHardware are the board's identity.
	FlightdVehicle  = 42
	FlightdHardware = "qemu-virt-arm64"
	// flightdState is flightd's state directory on the boot partition.
	flightdState = "bootorbit"
	// slotFSSize is the ext4 filesystem of a slot image: the initrd
	// (about 15 MB) and a margin, below the 24 MiB partition.
	slotFSSize = 20 * mib
)

// The behaviours of a flightd slot image (its /image says which).
const (
	// BehaviourFlightd is the system that runs flightd.
	BehaviourFlightd = "flightd"
	// BehaviourFlightdHang runs flightd too, and hangs at boot: flightd's
	// first health check freezes flightd (SIGSTOP) once it holds the
	// watchdog, before it can mark the slot good. The watchdog resets the
	// board. See the guest init's hang.
	BehaviourFlightdHang = "flightd-hang"
)

// FlightdKeys are the board's keys: the ground's and the release
// authority's signing keys (the guest holds their public halves) and the
// vehicle's return-link MAC key (the guest holds it, the ground verifies
// with it). Deterministic: a bench, not a vehicle.
type FlightdKeys struct {
	Ground, Release ed25519.PrivateKey
	GroundID        uint32
	ReleaseID       uint32
	MAC             protocol.MACKey
}

// BenchKeys returns the bench's fixed keys.
func BenchKeys() FlightdKeys {
	seed := func(b byte) ed25519.PrivateKey {
		return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
	}
	return FlightdKeys{Ground: seed(1), Release: seed(2), GroundID: 1, ReleaseID: 5,
		MAC: protocol.MACKey{ID: 1, Key: bytes.Repeat([]byte{9}, 32)}}
}

// FlightdBoard is the A/B board running flightd.
type FlightdBoard struct {
	*ABBoard
	Keys    FlightdKeys
	Flightd string // the linux/arm64 flightd binary
	// Images are the slot images built so far, by version.
	Images map[uint64]*FlightdImage
	// treeHook, if set, is called on an image's source tree before it is
	// formatted (tests: touch the tree as another build would).
	treeHook func(dir string) error
}

// FlightdImage is one slot image: an OCI image whose single layer is the
// raw ext4 filesystem (flightd's RawImage form for raw slots).
type FlightdImage struct {
	Version   uint64
	Behaviour string // BehaviourFlightd or BehaviourFlightdHang
	FS        string // the filesystem image
	Ref       oci.Ref
	Image     *oci.Image
	DiffID    digest.Digest
}

// BuildFlightd cross-compiles flightd for linux/arm64 to out.
func BuildFlightd(ctx context.Context, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out,
		"github.com/bootorbit/bootorbit/cmd/flightd")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: build flightd: %w: %s", ErrBoard, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// NewFlightdBoard builds flightd and wraps ab (its own disk: use
// ABBoard.Copy for a fresh one).
func NewFlightdBoard(ctx context.Context, ab *ABBoard) (*FlightdBoard, error) {
	fb := &FlightdBoard{ABBoard: ab, Keys: BenchKeys(), Flightd: filepath.Join(ab.Dir, "flightd"), Images: map[uint64]*FlightdImage{}}
	if _, err := os.Stat(fb.Flightd); err != nil {
		if err := BuildFlightd(ctx, fb.Flightd); err != nil {
			return nil, err
		}
	}
	return fb, nil
}

// FlightdConfig is flightd's configuration in the guest.
func (fb *FlightdBoard) FlightdConfig() *flightd.Config {
	state := "/boot/" + flightdState
	return &flightd.Config{
		Vehicle: flightd.VehicleConfig{ID: FlightdVehicle, HardwareID: FlightdHardware},
		Links:   []flightd.LinkConfig{{Name: "sband", Kind: "udp", Listen: fmt.Sprintf("0.0.0.0:%d", FlightdPort), MaxFrame: 1024}},
		Keys: flightd.KeysConfig{
			Release: []flightd.KeyFile{{ID: fb.Keys.ReleaseID, File: "/release.pub"}},
			Ground:  []flightd.KeyFile{{ID: fb.Keys.GroundID, File: "/ground.pub"}},
			Vehicle: &flightd.KeyFile{ID: uint32(fb.Keys.MAC.ID), File: "/vehicle.key"},
		},
		Slots: flightd.SlotsConfig{StateDir: state + "/slots",
			A: flightd.SlotConfig{Backend: "raw", Path: "/dev/vda2"},
			B: flightd.SlotConfig{Backend: "raw", Path: "/dev/vda3"}},
		Boot: flightd.BootConfig{FWEnvConfig: "/fw_env.config", UBootLockFile: "/run/fw_env.lock",
			Attempts: watchdog.DefaultAttempts, Watchdog: "/dev/watchdog0", WatchdogTimeoutS: 20,
			RecordDir: state + "/boot", Reboot: []string{"/init", "reboot"}},
		Health:  flightd.HealthConfig{Checks: []flightd.HealthCheck{{Name: "system", Command: []string{"/init", "health"}}}},
		Storage: flightd.StorageConfig{Dir: state + "/uplink", Quota: 16 << 20},
		Control: flightd.ControlConfig{Socket: "/run/flightd.sock"},
	}
}

// BuildImage builds the slot image of version: the initrd (guest init,
// modules, flightd, its configuration and keys, /image saying to run
// flightd) in an ext4 filesystem made byte-reproducibly (fixed UUID, hash
// seed and times, every inode's times reset after mkfs: a rebuild gives
// the same bytes, two versions differ where their files do), as an OCI
// image in the layout under the work directory.
func (fb *FlightdBoard) BuildImage(ctx context.Context, version uint64) (*FlightdImage, error) {
	return fb.BuildImageAs(ctx, version, BehaviourFlightd)
}

// BuildImageAs is BuildImage with the image's behaviour (BehaviourFlightd
// or BehaviourFlightdHang). A version is built once, with one behaviour.
func (fb *FlightdBoard) BuildImageAs(ctx context.Context, version uint64, behaviour string) (*FlightdImage, error) {
	if behaviour != BehaviourFlightd && behaviour != BehaviourFlightdHang {
		return nil, fmt.Errorf("%w: image behaviour %q: want %s or %s", ErrBoard, behaviour, BehaviourFlightd, BehaviourFlightdHang)
	}
	if im := fb.Images[version]; im != nil {
		if im.Behaviour != behaviour {
			return nil, fmt.Errorf("%w: version %d is already built as %s", ErrBoard, version, im.Behaviour)
		}
		return im, nil
	}
	init, err := os.ReadFile(filepath.Join(fb.Dir, "init"))
	if err != nil {
		return nil, err
	}
	fdBin, err := os.ReadFile(fb.Flightd)
	if err != nil {
		return nil, err
	}
	cfg, err := json.MarshalIndent(fb.FlightdConfig(), "", "  ")
	if err != nil {
		return nil, err
	}
	pub := func(k ed25519.PrivateKey) []byte { return []byte(hex.EncodeToString(k.Public().(ed25519.PublicKey))) }
	dir := filepath.Join(fb.Dir, fmt.Sprintf("fdimage%d", version))
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	image := fmt.Sprintf("version=%d\nbehaviour=%s\nip=%s/%d\n", version, behaviour, GuestIP, GuestPrefix)
	if err := BuildInitramfs(filepath.Join(dir, "initrd"), init, fb.Mods,
		File{Name: "image", Perm: 0o644, Data: []byte(image)},
		File{Name: "flightd", Perm: 0o755, Data: fdBin},
		File{Name: "flightd.json", Perm: 0o644, Data: cfg},
		File{Name: "ground.pub", Perm: 0o644, Data: pub(fb.Keys.Ground)},
		File{Name: "release.pub", Perm: 0o644, Data: pub(fb.Keys.Release)},
		File{Name: "vehicle.key", Perm: 0o600, Data: []byte(hex.EncodeToString(fb.Keys.MAC.Key))},
		File{Name: "fw_env.config", Perm: 0o644, Data: []byte(watchdog.FormatFWEnvConfig([]watchdog.UBootLocation{{Path: fmt.Sprintf("/dev/vda%d", EnvPart), Size: EnvSize}}))},
	); err != nil {
		return nil, err
	}
	if fb.treeHook != nil {
		if err := fb.treeHook(dir); err != nil {
			return nil, err
		}
	}
	fsImg := filepath.Join(fb.Dir, fmt.Sprintf("fdimage%d.ext4", version))
	os.Remove(fsImg)
	cmd := exec.CommandContext(ctx, fb.Mkfs, "-q", "-F", "-U", "626f6f74-6f72-6269-7400-000000000001",
		"-E", "hash_seed=626f6f74-6f72-6269-7400-000000000002", "-d", dir, fsImg, fmt.Sprintf("%dk", slotFSSize/1024))
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME="+fixedFSTime)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w: %s", ErrBoard, fb.Mkfs, err, strings.TrimSpace(string(out)))
	}
	if err := fixInodeTimes(ctx, fsImg, dir); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(fsImg)
	if err != nil {
		return nil, err
	}
	layout := filepath.Join(fb.Dir, "oci")
	w, err := oci.CreateScratch(layout)
	if err != nil {
		return nil, err
	}
	d, err := w.WriteBlobBytes(oci.MediaTypeOCILayer, raw)
	if err != nil {
		return nil, err
	}
	diff := digest.FromBytes(raw)
	tag := fmt.Sprintf("v%d", version)
	if _, err := w.Commit(tag, oci.NewConfig(oci.Platform{OS: "linux", Architecture: "arm64"}, []digest.Digest{diff}), []oci.Descriptor{d}, nil); err != nil {
		return nil, err
	}
	ref := oci.Ref{Layout: layout, Tag: tag}
	o, err := oci.Open(ref)
	if err != nil {
		return nil, err
	}
	im := &FlightdImage{Version: version, Behaviour: behaviour, FS: fsImg, Ref: ref, Image: o, DiffID: diff}
	fb.Images[version] = im
	return im, nil
}

// fixedFSTime is every time a slot image's filesystem holds (Unix
// seconds): E2FSPROGS_FAKE_TIME's, and every inode's once fixInodeTimes
// ran.
const fixedFSTime = "1700000000"

// fixInodeTimes sets the atime, mtime and ctime of every inode mkfs.ext4
// -d copied from the source tree dir into the filesystem image img to
// fixedFSTime, with debugfs. mkfs copies them from the tree (seconds):
// E2FSPROGS_FAKE_TIME covers only the times mkfs makes up (superblock,
// crtime, lost+found), the ctime no one can set moves with every write
// of the tree and the atime with every read, so that without this two
// builds of the same files differ in their inode table.
func fixInodeTimes(ctx context.Context, img, dir string) error {
	tool, err := exec.LookPath("debugfs")
	if err != nil {
		return fmt.Errorf("%w: debugfs (e2fsprogs): %w", ErrBoard, err)
	}
	var cmds strings.Builder
	err = filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := "/" + filepath.ToSlash(strings.TrimPrefix(rel, "."))
		if strings.ContainsAny(name, "\"\n") {
			return fmt.Errorf("%w: image file name %q: debugfs cannot quote it", ErrBoard, name)
		}
		for _, field := range []string{"atime", "mtime", "ctime"} {
			fmt.Fprintf(&cmds, "sif \"%s\" %s @%s\n", name, field, fixedFSTime)
		}
		return nil
	})
	if err != nil {
		return err
	}
	cmdFile := img + ".debugfs"
	if err := os.WriteFile(cmdFile, []byte(cmds.String()), 0o644); err != nil {
		return err
	}
	defer os.Remove(cmdFile)
	cmd := exec.CommandContext(ctx, tool, "-w", "-f", cmdFile, img)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME="+fixedFSTime)
	out, err := cmd.CombinedOutput()
	// debugfs goes on after a command fails, and exits 0: its error
	// lines name the command.
	if err != nil || bytes.Contains(out, []byte("sif:")) {
		return fmt.Errorf("%w: debugfs set_inode_field: %v: %s", ErrBoard, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Bundle computes the delta bundle from one version to another (both
// built) into the work directory and returns its bytes.
func (fb *FlightdBoard) Bundle(ctx context.Context, from, to uint64) ([]byte, delta.Stats, error) {
	f, t := fb.Images[from], fb.Images[to]
	if f == nil || t == nil {
		return nil, delta.Stats{}, fmt.Errorf("%w: bundle %d -> %d: image not built", ErrBoard, from, to)
	}
	p := filepath.Join(fb.Dir, fmt.Sprintf("bundle%d-%d", from, to))
	st, err := delta.ComputeFile(ctx, f.Image, t.Image, p, delta.Options{TempDir: fb.Dir})
	if err != nil {
		return nil, st, fmt.Errorf("%w: delta: %w", ErrBoard, err)
	}
	b, err := os.ReadFile(p)
	return b, st, err
}

// Factory makes the board's factory state offline, as a factory would:
// version's image written into slot A through the slots library (raw
// slot, with its layer index for later deltas), recorded pending then
// good in flightd's state directory on the boot partition, slot B empty,
// and the environment booting A only (B has no attempts left).
func (fb *FlightdBoard) Factory(ctx context.Context, version uint64) error {
	im, err := fb.BuildImage(ctx, version)
	if err != nil {
		return err
	}
	work := filepath.Join(fb.Dir, "factory")
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	state := filepath.Join(fb.Dir, "bootfs", flightdState)
	if err := os.RemoveAll(state); err != nil {
		return err
	}
	// flightd's reset records (Boot.RecordDir, state/boot) are left to
	// flightd, which creates the directory at start: the bench boots it
	// on a partition without one, as a first boot after the factory.
	for _, d := range []string{work, filepath.Join(state, "slots")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	parts := [2]string{filepath.Join(work, "slotA"), filepath.Join(work, "slotB")}
	for _, p := range parts {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return err
		}
		if err := os.Truncate(p, slotSize); err != nil {
			return err
		}
	}
	m, err := slots.Open(slots.Options{StateDir: filepath.Join(state, "slots"), Log: slog.New(slog.DiscardHandler),
		A: slots.Slot{Backend: slots.BackendRaw, Path: parts[0]}, B: slots.Slot{Backend: slots.BackendRaw, Path: parts[1]}})
	if err != nil {
		return err
	}
	raw, err := os.Open(im.FS)
	if err != nil {
		return err
	}
	defer raw.Close()
	if _, err := m.Install(ctx, slots.A, slots.Image{Label: string(im.Image.ManifestDigest), Layers: []io.Reader{raw}, RawStream: true, Digest: string(im.DiffID)}); err != nil {
		return fmt.Errorf("%w: factory install: %w", ErrBoard, err)
	}
	if err := m.MarkPending(slots.A); err != nil {
		return err
	}
	if err := m.MarkGood(slots.A); err != nil {
		return err
	}
	disk, err := os.OpenFile(fb.Disk, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer disk.Close()
	for i, p := range parts {
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.NewOffsetWriter(disk, ABLayout[1+i].Start), src)
		src.Close()
		if err != nil {
			return err
		}
	}
	if err := fb.writeFS(ctx, disk, 1, filepath.Join(fb.Dir, "bootfs")); err != nil {
		return err
	}
	if err := disk.Close(); err != nil {
		return err
	}
	env, err := fb.Env()
	if err != nil {
		return err
	}
	return env.Save(watchdog.Vars{watchdog.VarBootOrder: "A", watchdog.LeftVar("A"): "3", watchdog.LeftVar("B"): "0"})
}

// ResetRecord reads flightd's reset record (watchdog.RecordBootReset in
// Boot.RecordDir) from the boot partition of the disk image, offline (the
// board powered off), with e2fsprogs: the partition is copied out, its
// journal replayed (e2fsck -E journal_only) and the file read with
// debugfs, without mounting it.
func (fb *FlightdBoard) ResetRecord(ctx context.Context) (watchdog.ResetRecord, error) {
	var rec watchdog.ResetRecord
	tool, err := exec.LookPath("debugfs")
	if err != nil {
		return rec, fmt.Errorf("%w: debugfs (e2fsprogs): %w", ErrBoard, err)
	}
	disk, err := os.Open(fb.Disk)
	if err != nil {
		return rec, err
	}
	defer disk.Close()
	part := filepath.Join(fb.Dir, "bootpart.img")
	defer os.Remove(part)
	out, err := os.Create(part)
	if err != nil {
		return rec, err
	}
	p := ABLayout[0]
	_, err = io.Copy(out, io.NewSectionReader(disk, p.Start, p.Size))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return rec, err
	}
	// The guest's last writes may be only in the journal (the board was
	// powered off, not unmounted): replay it on the copy first.
	if fsck, err := exec.LookPath("e2fsck"); err != nil {
		return rec, fmt.Errorf("%w: e2fsck (e2fsprogs): %w", ErrBoard, err)
	} else if out, err := exec.CommandContext(ctx, fsck, "-y", "-E", "journal_only", part).CombinedOutput(); err != nil {
		// Exit status 1: the journal was replayed (errors corrected).
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			return rec, fmt.Errorf("%w: e2fsck -E journal_only: %w: %s", ErrBoard, err, strings.TrimSpace(string(out)))
		}
	}
	cmd := exec.CommandContext(ctx, tool, "-R", "cat /"+flightdState+"/boot/"+watchdog.ResetRecordFile, part)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return rec, fmt.Errorf("%w: debugfs: %w: %s", ErrBoard, err, strings.TrimSpace(stderr.String()))
	}
	if len(b) == 0 {
		return rec, fmt.Errorf("%w: no reset record on the boot partition (%s)", ErrBoard, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("%w: reset record: %w", ErrBoard, err)
	}
	return rec, nil
}

// slotVersion is the release version of the image in a slot as the
// bench reports it: the vehicle's (hk.slots' slot_x_version, from
// flightd's install record), or, when the vehicle reports none, the
// version of the built image whose manifest digest the slot's short
// digest (hk.slots' slot_x_digest, its first bytes) names. flightd knows
// a slot's version only from a release it installed; the factory wrote
// slot A offline through the slots library, which records the image's
// manifest digest (its label) but no release, so flightd reports slot A
// as version 0. hil/scenario names the factory slot's version the same
// way.
func (fb *FlightdBoard) slotVersion(reported uint64, short any) uint64 {
	b, _ := short.([]byte)
	if reported != 0 || len(b) < dict.ShortDigestLen {
		return reported
	}
	for v, im := range fb.Images {
		if im.Image != nil && strings.HasPrefix(im.Image.ManifestDigest.Encoded(), hex.EncodeToString(b)) {
			return v
		}
	}
	return 0
}

// machine is the ABBoard's machine with flightd's UDP port forwarded.
func (fb *FlightdBoard) machine(fwd UDPForward) Machine {
	m := fb.ABBoard.Machine()
	m.UDPForwards = []UDPForward{fwd}
	return m
}
