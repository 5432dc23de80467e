package uplink

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta"
	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/fxamacker/cbor/v2"
	"github.com/opencontainers/go-digest"
)

const (
	testVehicle  = 42
	testHardware = "obc-rev-c"
	groundKeyID  = 1
	releaseKeyID = 5
)

func seedKey(n byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
}

var (
	groundPriv  = seedKey(1)
	releasePriv = seedKey(2)
	strangerKey = seedKey(3)
	macKey      = protocol.MACKey{ID: 1, Key: bytes.Repeat([]byte{9}, protocol.MACKeyLen)}
	t0          = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
)

// installer is the Installer of the tests: a slots.Manager, the booted
// image's layers as the base.
type installer struct {
	m    *slots.Manager
	base delta.Base
	// installs counts calls of Install.
	installs int
	// out, if set, gets a line every 32 KiB the slot writer reads (the
	// kill points of the power-cut test).
	out io.Writer
	// during, if set, runs at the start of Install, while the engine's
	// lock is free (a command arriving mid-install).
	during func()
	// written, if set, runs when the slot was recorded written, before
	// Install returns to the engine.
	written func()
}

func (i *installer) Status() slots.Status { return i.m.Status() }
func (i *installer) Base() delta.Base     { return i.base }
func (i *installer) Install(ctx context.Context, img slots.Image) (*slots.InstallResult, error) {
	i.installs++
	if i.during != nil {
		i.during()
	}
	if i.out != nil {
		for x, l := range img.Layers {
			img.Layers[x] = &progressReader{r: l, out: i.out}
		}
	}
	res, err := i.m.Install(ctx, i.m.Status().Booted.Other(), img)
	if err == nil && i.written != nil {
		i.written()
	}
	return res, err
}

// images is an old image (booted) and a new one, with the delta bundle
// between them.
type images struct {
	old, new   ocitest.Image
	oldIm      *oci.Image
	newIm      *oci.Image
	bundle     []byte
	bundlePath string
}

// makeImages generates two related images and the bundle from old to new.
func makeImages(t testing.TB, rng *rand.Rand, dir string, gen ocitest.GenOptions) *images {
	t.Helper()
	oldL := ocitest.RandomLayers(rng, gen)
	newL, _ := ocitest.Modify(rng, oldL, ocitest.ModifyOptions{Changes: []ocitest.Change{ocitest.Edit, ocitest.Add}})
	return makeImagesFrom(t, dir, oldL, newL)
}

func makeImagesFrom(t testing.TB, dir string, oldL, newL []ocitest.Layer) *images {
	t.Helper()
	var im images
	var err error
	if im.old, err = ocitest.Write(filepath.Join(dir, "old"), "v1", oldL); err != nil {
		t.Fatal(err)
	}
	if im.new, err = ocitest.Write(filepath.Join(dir, "new"), "v2", newL); err != nil {
		t.Fatal(err)
	}
	if im.oldIm, err = oci.Open(im.old.Ref); err != nil {
		t.Fatal(err)
	}
	if im.newIm, err = oci.Open(im.new.Ref); err != nil {
		t.Fatal(err)
	}
	im.bundlePath = filepath.Join(dir, "bundle")
	if _, err := delta.ComputeFile(context.Background(), im.oldIm, im.newIm, im.bundlePath, delta.Options{TempDir: dir, PartSize: 16 << 10}); err != nil {
		t.Fatal(err)
	}
	if im.bundle, err = os.ReadFile(im.bundlePath); err != nil {
		t.Fatal(err)
	}
	return &im
}

// oldBase is what the vehicle holds of the old image: its layer tars.
func (im *images) oldBase() delta.MapBase {
	b := delta.MapBase{}
	for i, d := range im.old.DiffIDs {
		b[d] = bytes.NewReader(im.old.Tars[i])
	}
	return b
}

// planOpts tweaks a plan before it is signed.
type planOpts struct {
	id         uint64
	version    uint64
	hardware   string
	vehicle    uint32
	staging    uint64
	supplement uint64
	bundle     []byte
	downgrade  bool
	base       digest.Digest
	releaseKey ed25519.PrivateKey
	releaseID  uint32
	groundKey  ed25519.PrivateKey
	groundID   uint32
}

// plan returns the encoded signed plan for im's new image.
func (im *images) plan(t testing.TB, o planOpts) []byte {
	t.Helper()
	b, err := update.EncodePlan(im.planStruct(t, o))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// planStruct returns the signed plan for im's new image.
func (im *images) planStruct(t testing.TB, o planOpts) *update.Plan {
	t.Helper()
	if o.version == 0 {
		o.version = 2
	}
	if o.hardware == "" {
		o.hardware = testHardware
	}
	if o.vehicle == 0 {
		o.vehicle = testVehicle
	}
	if o.bundle == nil {
		o.bundle = im.bundle
	}
	if o.staging == 0 {
		o.staging = uint64(len(o.bundle))
	}
	if o.releaseKey == nil {
		o.releaseKey, o.releaseID = releasePriv, releaseKeyID
	}
	if o.groundKey == nil {
		o.groundKey, o.groundID = groundPriv, groundKeyID
	}
	rs, err := update.SignRelease(o.releaseKey, o.releaseID, update.Release{Manifest: im.newIm.ManifestDigest, Version: o.version, HardwareID: o.hardware})
	if err != nil {
		t.Fatal(err)
	}
	p := &update.Plan{ID: o.id, Vehicle: o.vehicle, Release: rs, Manifest: im.newIm.ManifestBytes, Config: im.newIm.ConfigBytes,
		Base: o.base, AllowDowngrade: o.downgrade, BundleSize: uint64(len(o.bundle)), BundleDigest: digest.FromBytes(o.bundle),
		Staging: o.staging, Supplement: o.supplement}
	if err := update.SignPlan(o.groundKey, o.groundID, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// rawPlan encodes p as it is, signed by priv when priv is set (else with
// no signature), without the checks of SignPlan and EncodePlan: what a
// hostile or broken ground could send.
func rawPlan(t testing.TB, p *update.Plan, priv ed25519.PrivateKey) []byte {
	t.Helper()
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	p.Sig = nil
	if priv != nil {
		msg, err := em.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		p.Sig = protocol.Sign(priv, update.DomainPlan, msg)
	}
	b, err := em.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// vehicle is an engine over a directory with slots, reopened at will.
type vehicle struct {
	t     testing.TB
	dir   string
	cfg   Config
	inst  *installer
	slotO slots.Options
	e     *Engine
	epoch uint32
	now   time.Time
	// onReport, if set, sees every report the vehicle sends.
	onReport func(r *protocol.Report)
}

func newVehicle(t testing.TB, dir string, raw bool, base delta.MapBase) *vehicle {
	t.Helper()
	v := newVehicleNoOpen(t, dir, raw, base)
	v.open()
	return v
}

func newVehicleNoOpen(t testing.TB, dir string, raw bool, base delta.MapBase) *vehicle {
	t.Helper()
	v := &vehicle{t: t, dir: dir, now: t0}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v.slotO = slots.Options{StateDir: filepath.Join(dir, "slotstate"), Booted: slots.A, Log: slog.New(slog.DiscardHandler)}
	if raw {
		for _, n := range []string{"rawA", "rawB"} {
			if err := os.WriteFile(filepath.Join(dir, n), make([]byte, 4<<20), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		v.slotO.A = slots.Slot{Backend: slots.BackendRaw, Path: filepath.Join(dir, "rawA")}
		v.slotO.B = slots.Slot{Backend: slots.BackendRaw, Path: filepath.Join(dir, "rawB")}
	} else {
		for _, n := range []string{"a", "b"} {
			if err := os.MkdirAll(filepath.Join(dir, n), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		v.slotO.A = slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(dir, "a")}
		v.slotO.B = slots.Slot{Backend: slots.BackendDir, Path: filepath.Join(dir, "b")}
	}
	v.cfg = Config{
		Vehicle: testVehicle, HardwareID: testHardware, Dir: filepath.Join(dir, "uplink"),
		StagingQuota: 64 << 20,
		GroundKeys:   map[uint32]ed25519.PublicKey{groundKeyID: groundPriv.Public().(ed25519.PublicKey)},
		ReleaseKeys:  map[uint32]ed25519.PublicKey{releaseKeyID: releasePriv.Public().(ed25519.PublicKey)},
		MaxFrame:     1024, MinVersion: 1,
	}
	v.inst = &installer{base: base}
	return v
}

// open (re)opens the slots and the engine, with a new return-link epoch.
func (v *vehicle) open() {
	v.t.Helper()
	m, err := slots.Open(v.slotO)
	if err != nil {
		v.t.Fatal(err)
	}
	v.inst.m = m
	v.epoch++
	if v.cfg.ReturnAuth, err = protocol.NewReturnAuth(testVehicle, macKey, v.epoch); err != nil {
		v.t.Fatal(err)
	}
	if v.e, err = Open(v.cfg, v.inst, slog.New(slog.DiscardHandler)); err != nil {
		v.t.Fatal(err)
	}
}

func (v *vehicle) close() {
	if v.e != nil {
		v.e.Close()
		v.e = nil
	}
}

// relay is a seeded lossy link between a Sender and the engine: each frame
// is lost, duplicated or delayed a step at random.
type relay struct {
	rng  *rand.Rand
	loss float64
	dup  float64 // duplication rate
	// requested counts, per transfer, the chunks the ground sent: what a
	// resume must not send again once journaled.
	sent map[uint64]int
}

func (r *relay) pass(frames [][]byte) [][]byte {
	var out [][]byte
	for _, f := range frames {
		x := r.rng.Float64()
		switch {
		case x < r.loss:
		case x < r.loss+r.dup:
			out = append(out, f, f)
		default:
			out = append(out, f)
		}
	}
	if len(out) > 1 && r.rng.IntN(4) == 0 {
		i, j := r.rng.IntN(len(out)), r.rng.IntN(len(out))
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// ground sends transfers to the vehicle's engine.
type ground struct {
	t        testing.TB
	codec    *protocol.Codec
	verifier *protocol.ReturnVerifier
	next     uint64 // next transfer id
}

func newGround(t testing.TB) *ground {
	c, err := protocol.NewCodec(1024)
	if err != nil {
		t.Fatal(err)
	}
	vf, err := protocol.NewReturnVerifier(testVehicle, macKey)
	if err != nil {
		t.Fatal(err)
	}
	return &ground{t: t, codec: c, verifier: vf, next: 1}
}

// sender returns a Sender of data as transfer target.
func (g *ground) sender(target []byte, data []byte) *transfer.Sender {
	g.t.Helper()
	p, err := transfer.NewPlan(g.codec, testVehicle, g.next, target, bytes.NewReader(data), uint64(len(data)), 0, groundKeyID, groundPriv)
	if err != nil {
		g.t.Fatal(err)
	}
	g.next++
	s, err := transfer.NewSender(transfer.SenderConfig{Codec: g.codec, Rate: 200000, RTT: 50 * time.Millisecond, Verifier: g.verifier}, p)
	if err != nil {
		g.t.Fatal(err)
	}
	return s
}

// run drives s against v's engine over r until s is done or maxSteps 10 ms
// steps have passed; stop, if set, is called after every step and ends
// the run when it returns true. It returns the chunks s sent.
func (v *vehicle) run(s *transfer.Sender, r *relay, maxSteps int, stop func(step int) bool) (sentChunks int) {
	v.t.Helper()
	var up, down [][]byte
	for step := 0; step < maxSteps && !s.Done(); step++ {
		for _, f := range r.pass(up) {
			_ = v.e.Step(v.now, f)
		}
		for _, f := range r.pass(down) {
			_ = s.Step(v.now, f)
		}
		up, down = nil, nil
		s.Tick(v.now)
		rd := s.Ready()
		for _, m := range rd.Messages {
			if _, ok := m.Msg.(*protocol.Chunk); ok {
				sentChunks++
			}
			up = append(up, m.Frame)
		}
		s.Advance()
		if err := v.e.Tick(v.now); err != nil {
			if stop != nil && stop(step) {
				return sentChunks // the power is cut
			}
			v.t.Fatal(err)
		}
		down = v.e.Outbox()
		if v.onReport != nil {
			c, _ := protocol.NewCodec(v.cfg.MaxFrame)
			for _, f := range down {
				if m, err := c.Decode(f); err == nil {
					if rep, ok := m.(*protocol.Report); ok {
						v.onReport(rep)
					}
				}
			}
		}
		v.now = v.now.Add(10 * time.Millisecond)
		if stop != nil && stop(step) {
			return sentChunks
		}
	}
	return sentChunks
}

// deliver sends data as transfer target through a lossless link and
// returns the sender's error.
func (v *vehicle) deliver(g *ground, target, data []byte) error {
	v.t.Helper()
	s := g.sender(target, data)
	v.run(s, &relay{rng: rand.New(rand.NewPCG(1, 2))}, 200000, nil)
	if !s.Done() {
		v.t.Fatalf("transfer of %q not done", target)
	}
	return s.Err()
}

// dirBytes is the size of the regular files under dir.
func dirBytes(t testing.TB, dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
