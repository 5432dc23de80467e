package installbench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/link"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/bootorbit/bootorbit/watchdog"
	"github.com/opencontainers/go-digest"
)

// RSSOptions configures RunRSS: the layers as Options says, and the
// flightd process measured.
type RSSOptions struct {
	// Dir, Old, New, Size, Seed, PartSize, Keep and Log are as in Options.
	Dir      string
	Old, New string
	Size     int64
	Seed     uint64
	PartSize int64
	Keep     bool
	Log      io.Writer
	// Flightd is the command line of the measured daemon; RunRSS appends
	// "--config FILE" (e.g. ["flightd", "run"], or hil's own child that
	// runs flightd.Run as `flightd run` does). Env is added to its
	// environment.
	Flightd []string
	Env     []string
	// MemoryLimit is the configuration's memory_limit (0: flightd's
	// default).
	MemoryLimit int64
	// MaxFrame is the link's frame size (default 8192); Rate the ground's
	// uplink rate in bits per second (default 200 Mbit/s).
	MaxFrame int
	Rate     float64
	// Timeout bounds the receive and the install (default 30 min).
	Timeout time.Duration
}

// RSSResult is what RunRSS measured.
type RSSResult struct {
	Generated bool  `json:"generated"`
	OldLayer  int64 `json:"old_layer_bytes"`
	NewLayer  int64 `json:"new_layer_bytes"`
	Bundle    int64 `json:"bundle_bytes"`
	Plan      int64 `json:"plan_bytes"`
	// PeakRSS is the flightd process's VmHWM (/proc/PID/status), read
	// after the install, before it is stopped: its peak over its whole
	// life, receive and install included.
	PeakRSS int64 `json:"peak_rss_bytes"`
	// MemoryLimit is the memory_limit of the daemon's configuration.
	MemoryLimit int64 `json:"memory_limit_bytes"`
	// StoragePeak and StorageAfter are the bytes under slots.state_dir
	// (the uplink journal and staging, the slot records, the layer
	// indexes, the pristine /etc) beside the slots: the largest sampled
	// during the receive and install, and after it. StateBefore is the
	// same before the daemon started (slot A's index and records).
	StateBefore  int64         `json:"state_before_bytes"`
	StoragePeak  int64         `json:"storage_peak_bytes"`
	StorageAfter int64         `json:"storage_after_bytes"`
	Receive      time.Duration `json:"receive_ns"`
	Install      time.Duration `json:"install_ns"`
	ChunksResent int64         `json:"chunks_resent"`
	WorkDir      string        `json:"work_dir,omitempty"`
}

// Keys and ids of the bench's ground, release authority and vehicle.
const (
	rssVehicle   = 42
	rssHardware  = "bench"
	rssGroundID  = 1
	rssReleaseID = 5
	rssPlanID    = 1
)

// RunRSS measures the real daemon: it prepares the layers and the bundle
// (as Run does), installs the old image into directory slot A (good,
// booted), writes a flightd configuration and keys, starts the daemon
// (o.Flightd) on a UDP listener on loopback, and plays the ground with
// the protocol's Sender: the signed plan, then the bundle, read from its
// file. flightd receives both (journal, staging), installs slot B from the
// bundle with slot A as the delta base, and reports install_done; RunRSS
// then reads the daemon's VmHWM and stops it.
func RunRSS(ctx context.Context, o RSSOptions) (*RSSResult, error) {
	if len(o.Flightd) == 0 {
		return nil, errors.New("installbench: no flightd command")
	}
	if o.MaxFrame == 0 {
		o.MaxFrame = 8192
	}
	if o.Rate == 0 {
		o.Rate = 200e6
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Minute
	}
	work, err := os.MkdirTemp(o.Dir, "flightd-rss-")
	if err != nil {
		return nil, err
	}
	res := &RSSResult{}
	if o.Keep {
		res.WorkDir = work
	} else {
		defer os.RemoveAll(work)
	}
	po := Options{Dir: o.Dir, Old: o.Old, New: o.New, Size: o.Size, Seed: o.Seed, PartSize: o.PartSize, Log: o.Log}
	var ir Result
	pre, err := prepare(ctx, &po, work, &ir)
	if err != nil {
		return nil, err
	}
	res.Generated, res.OldLayer, res.NewLayer, res.Bundle = ir.Generated, ir.OldLayer, ir.NewLayer, ir.Bundle
	// The layer tars are the ground's business: out of the vehicle's way.
	bench := benchSetup{work: work, state: filepath.Join(work, "state"), a: filepath.Join(work, "a"), b: filepath.Join(work, "b")}
	po.logf("installing the old image into slot A")
	if err := bench.installOld(ctx, pre); err != nil {
		return nil, err
	}
	plan, ground, release, err := bench.plan(pre, res)
	if err != nil {
		return nil, err
	}
	mac := bytes.Repeat([]byte{0x5a}, protocol.MACKeyLen)
	port, err := freeUDPPort()
	if err != nil {
		return nil, err
	}
	cfgPath, err := bench.config(ground, release, mac, port, o, res)
	if err != nil {
		return nil, err
	}
	if res.StateBefore, err = dirSize(bench.state); err != nil {
		return nil, err
	}

	po.logf("starting %s", strings.Join(o.Flightd, " "))
	args := append(append([]string(nil), o.Flightd[1:]...), "--config", cfgPath)
	cmd := exec.Command(o.Flightd[0], args...)
	cmd.Env = append(os.Environ(), o.Env...)
	logf, err := os.Create(filepath.Join(work, "flightd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("installbench: flightd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	g, err := newRSSGround(o, port, mac, ground)
	if err != nil {
		stop()
		return nil, err
	}
	defer g.close()
	g.exited = exited
	g.sample = func() {
		if n, err := dirSize(bench.state); err == nil {
			res.StoragePeak = max(res.StoragePeak, n)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	start := time.Now()
	po.logf("ground: sending the plan (%d bytes)", len(plan))
	err = g.send(ctx, 1, update.TargetPlan(rssPlanID), bytes.NewReader(plan), int64(len(plan)))
	if err == nil {
		var bf *os.File
		if bf, err = os.Open(pre.bundle); err == nil {
			po.logf("ground: sending the bundle (%d bytes)", res.Bundle)
			err = g.send(ctx, 2, update.TargetBundle(rssPlanID), bf, res.Bundle)
			bf.Close()
		}
	}
	res.Receive = time.Since(start)
	if err == nil {
		po.logf("ground: waiting for the install")
		start = time.Now()
		err = g.waitInstall(ctx)
		res.Install = time.Since(start)
	}
	if err != nil {
		stop()
		return nil, fmt.Errorf("%w (flightd's log: %s)", err, tail(filepath.Join(work, "flightd.log")))
	}
	res.PeakRSS, err = procHWM(cmd.Process.Pid)
	g.sample()
	stop()
	if err != nil {
		return nil, err
	}
	res.ChunksResent = g.resent
	if res.StorageAfter, err = dirSize(bench.state); err != nil {
		return nil, err
	}
	return res, nil
}

// benchSetup is the vehicle's side of the bench: slots, state, keys.
type benchSetup struct{ work, state, a, b string }

func (b benchSetup) slotOptions() slots.Options {
	return ChildConfig{State: b.state, A: b.a, B: b.b}.options("")
}

// installOld installs the old layer into slot A and marks it good, as a
// vehicle that booted it and committed it.
func (b benchSetup) installOld(ctx context.Context, pre *prepared) error {
	for _, d := range []string{b.state, b.a, b.b} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	m, err := slots.Open(b.slotOptions())
	if err != nil {
		return err
	}
	f, err := os.Open(pre.oldPath)
	if err != nil {
		return err
	}
	defer f.Close()
	ir, err := m.Install(ctx, slots.A, slots.Image{Label: "sha256:" + strings.Repeat("0", 64), Layers: []io.Reader{bufio.NewReaderSize(f, 1<<20)}, DiffIDs: []digest.Digest{pre.oldID}})
	if err != nil {
		return err
	}
	if ir.IndexBytes == 0 {
		return fmt.Errorf("installbench: no index for the old image: %s", ir.IndexSkipped)
	}
	return errors.Join(m.MarkPending(slots.A), m.MarkGood(slots.A))
}

// plan is the signed plan of the update: release 2 of the new image for
// the bench's hardware, its bundle the one prepared.
func (b benchSetup) plan(pre *prepared, res *RSSResult) ([]byte, ed25519.PrivateKey, ed25519.PrivateKey, error) {
	ground := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	release := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
	config, err := benchConfig(pre.newID)
	if err != nil {
		return nil, nil, nil, err
	}
	manifest := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`,
		digest.FromBytes(config), len(config), pre.newID, res.NewLayer))
	rs, err := update.SignRelease(release, rssReleaseID, update.Release{Manifest: digest.FromBytes(manifest), Version: 2, HardwareID: rssHardware})
	if err != nil {
		return nil, nil, nil, err
	}
	bd, _, err := hashFile(pre.bundle)
	if err != nil {
		return nil, nil, nil, err
	}
	p := &update.Plan{ID: rssPlanID, Vehicle: rssVehicle, Release: rs, Manifest: manifest, Config: config,
		BundleSize: uint64(res.Bundle), BundleDigest: bd, Staging: uint64(res.Bundle)}
	if err := update.SignPlan(ground, rssGroundID, p); err != nil {
		return nil, nil, nil, err
	}
	enc, err := update.EncodePlan(p)
	res.Plan = int64(len(enc))
	return enc, ground, release, err
}

// config writes the keys, the boot environment, the kernel command line
// and the flightd configuration.
func (b benchSetup) config(ground, release ed25519.PrivateKey, mac []byte, port int, o RSSOptions, res *RSSResult) (string, error) {
	keys := filepath.Join(b.work, "keys")
	if err := os.MkdirAll(keys, 0o755); err != nil {
		return "", err
	}
	write := func(name string, data []byte, mode os.FileMode) (string, error) {
		p := filepath.Join(keys, name)
		return p, os.WriteFile(p, data, mode)
	}
	gp, err1 := write("ground.pub", []byte(hex.EncodeToString(ground.Public().(ed25519.PublicKey))+"\n"), 0o644)
	rp, err2 := write("release.pub", []byte(hex.EncodeToString(release.Public().(ed25519.PublicKey))+"\n"), 0o644)
	vk, err3 := write("vehicle.key", []byte(hex.EncodeToString(mac)+"\n"), 0o600)
	if err := errors.Join(err1, err2, err3); err != nil {
		return "", err
	}
	blk, err := watchdog.NewGRUBBlock(watchdog.GRUBEnvSize)
	if err != nil {
		return "", err
	}
	if err := blk.Replace(watchdog.Vars{watchdog.VarBootOrder: "A", watchdog.LeftVar("A"): "3", watchdog.LeftVar("B"): "0"}); err != nil {
		return "", err
	}
	env, err := blk.Bytes()
	if err != nil {
		return "", err
	}
	grubenv := filepath.Join(b.work, "grubenv")
	cmdline := filepath.Join(b.work, "cmdline")
	if err := errors.Join(os.WriteFile(grubenv, env, 0o644), os.WriteFile(cmdline, []byte("rauc.slot=A\n"), 0o644)); err != nil {
		return "", err
	}
	res.MemoryLimit = o.MemoryLimit
	if res.MemoryLimit == 0 {
		res.MemoryLimit = 24 << 20 // flightd.DefaultMemoryLimit
	}
	cfg := map[string]any{
		"vehicle": map[string]any{"id": rssVehicle, "hardware_id": rssHardware},
		"links":   []any{map[string]any{"name": "bench", "kind": "udp", "listen": fmt.Sprintf("127.0.0.1:%d", port), "max_frame": o.MaxFrame}},
		"keys": map[string]any{
			"release": []any{map[string]any{"id": rssReleaseID, "file": rp}},
			"ground":  []any{map[string]any{"id": rssGroundID, "file": gp}},
			"vehicle": map[string]any{"id": 1, "file": vk},
		},
		"slots": map[string]any{"state_dir": b.state, "cmdline": cmdline,
			"a": map[string]any{"backend": "dir", "path": b.a}, "b": map[string]any{"backend": "dir", "path": b.b}},
		"boot":         map[string]any{"grubenv": grubenv, "attempts": 3, "record_dir": b.state},
		"health":       map[string]any{"checks": []any{map[string]any{"name": "true", "command": []string{"/bin/true"}}}},
		"storage":      map[string]any{"quota": res.Bundle + update.MaxPlanSize + 1<<20},
		"telemetry":    map[string]any{"period": "1s"},
		"memory_limit": res.MemoryLimit,
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	p := filepath.Join(b.work, "flightd.json")
	return p, os.WriteFile(p, data, 0o644)
}

// rssGround is the ground of RunRSS: a UDP link to the daemon, the
// protocol Sender, and the return link's verifier.
type rssGround struct {
	o      RSSOptions
	l      link.Link
	codec  *protocol.Codec
	ver    *protocol.ReturnVerifier
	key    ed25519.PrivateKey
	in     chan []byte
	cancel context.CancelFunc
	exited chan error
	sample func()
	resent int64
	// installed: install_done (nil) or install_failed (an error).
	installed chan error
}

func newRSSGround(o RSSOptions, port int, mac []byte, key ed25519.PrivateKey) (*rssGround, error) {
	l, err := link.Open(link.Config{Name: "ground", Kind: link.KindUDP, Peer: fmt.Sprintf("127.0.0.1:%d", port), MaxFrame: o.MaxFrame})
	if err != nil {
		return nil, err
	}
	codec, err := protocol.NewCodec(o.MaxFrame)
	if err != nil {
		l.Close()
		return nil, err
	}
	ver, err := protocol.NewReturnVerifier(rssVehicle, protocol.MACKey{ID: 1, Key: mac})
	if err != nil {
		l.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &rssGround{o: o, l: l, codec: codec, ver: ver, key: key, in: make(chan []byte, 256), cancel: cancel, installed: make(chan error, 1)}
	go func() {
		for {
			b, err := l.Recv(ctx)
			if err != nil {
				return
			}
			select {
			case g.in <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	return g, nil
}

func (g *rssGround) close() { g.cancel(); g.l.Close() }

// take handles a frame from the vehicle: transfer answers go to s, events
// are watched for the install's outcome.
func (g *rssGround) take(now time.Time, b []byte, s *transfer.Sender) {
	m, err := g.codec.Decode(b)
	if err != nil {
		return
	}
	switch msg := m.(type) {
	case *protocol.Report, *protocol.Complete, *protocol.Cancel:
		if s != nil {
			s.Step(now, b)
		}
	case *protocol.Event:
		if g.ver.Verify(m) != nil {
			return
		}
		e, ok := dict.EventByID(msg.ID)
		if !ok {
			return
		}
		if g.o.Log != nil {
			fmt.Fprintf(g.o.Log, "vehicle event %s %q\n", e.Name, msg.Text)
		}
		var res error
		switch e {
		case dict.EvInstallDone:
		case dict.EvInstallFailed, dict.EvPlanRefused, dict.EvBaseMismatch, dict.EvTransferAborted:
			res = fmt.Errorf("installbench: vehicle event %s: %s", e.Name, msg.Text)
		default:
			return
		}
		select {
		case g.installed <- res:
		default:
		}
	}
}

// send transfers size bytes of r as target, transfer id, until the
// vehicle completes it.
func (g *rssGround) send(ctx context.Context, id uint64, target []byte, r io.ReaderAt, size int64) error {
	p, err := transfer.NewPlan(g.codec, rssVehicle, id, target, r, uint64(size), 0, rssGroundID, g.key)
	if err != nil {
		return err
	}
	s, err := transfer.NewSender(transfer.SenderConfig{Codec: g.codec, Rate: g.o.Rate, RTT: 20 * time.Millisecond, Verifier: g.ver}, p)
	if err != nil {
		return err
	}
	nextSample := time.Now()
	for !s.Done() {
		now := time.Now()
		if !now.Before(nextSample) {
			g.sample()
			nextSample = now.Add(50 * time.Millisecond)
		}
		s.Tick(now)
		rd := s.Ready()
		for _, m := range rd.Messages {
			g.l.Send(ctx, m.Frame) // a frame lost is the Sender's to resend
		}
		s.Advance()
		wait := 5 * time.Millisecond
		if !rd.Deadline.IsZero() {
			wait = min(wait, max(time.Until(rd.Deadline), 0))
		}
		t := time.NewTimer(wait)
		select {
		case b := <-g.in:
			g.take(time.Now(), b, s)
		drain:
			for {
				select {
				case b := <-g.in:
					g.take(time.Now(), b, s)
				default:
					break drain
				}
			}
		case <-t.C:
		case err := <-g.exited:
			t.Stop()
			return fmt.Errorf("installbench: flightd exited: %v", err)
		case <-ctx.Done():
			t.Stop()
			done, total := s.Progress()
			return fmt.Errorf("installbench: transfer %d: %d of %d chunks: %w", id, done, total, ctx.Err())
		}
		t.Stop()
	}
	g.resent += s.Stats.ChunksResent
	g.sample() // the bundle is whole in the staging now
	return s.Err()
}

// waitInstall waits for the vehicle's install_done (or a failure).
func (g *rssGround) waitInstall(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-g.installed:
			return err
		case b := <-g.in:
			g.take(time.Now(), b, nil)
		case <-tick.C:
			g.sample()
		case err := <-g.exited:
			return fmt.Errorf("installbench: flightd exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("installbench: waiting for the install: %w", ctx.Err())
		}
	}
}

// procHWM is the VmHWM of process pid (/proc/PID/status), in bytes.
func procHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("installbench: no VmHWM in /proc/%d/status", pid)
}

// freeUDPPort is a UDP port on loopback free a moment ago.
func freeUDPPort() (int, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// tail is the end of a log file, for an error message.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}
