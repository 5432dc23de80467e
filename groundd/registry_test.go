package groundd_test

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/groundd/images/imagestest"
	"github.com/bootorbit/bootorbit/internal/testrand"
	"github.com/bootorbit/bootorbit/internal/testtool"
	"github.com/opencontainers/go-digest"
)

// notify is a slog handler that passes every record on and sends the
// messages that start with prefix to a channel: the test waits on the
// daemon's own account of what it did, not on a clock.
type notify struct {
	slog.Handler
	prefix string
	ch     chan slog.Record
}

func (n notify) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, n.prefix) {
		n.ch <- r.Clone()
	}
	return n.Handler.Handle(ctx, r)
}

func (n notify) WithAttrs(as []slog.Attr) slog.Handler {
	return notify{n.Handler.WithAttrs(as), n.prefix, n.ch}
}

func (n notify) WithGroup(g string) slog.Handler {
	return notify{n.Handler.WithGroup(g), n.prefix, n.ch}
}

// skopeoCopy runs skopeo copy with a permissive policy of its own (the
// machine's /etc/containers/policy.json does not matter), to a registry on
// plain HTTP, keeping the manifest's digest: a release signature is over
// that digest, and skopeo re-encodes some manifests unless told not to.
func skopeoCopy(t *testing.T, src, dst string) {
	t.Helper()
	bin := testtool.Need(t, "skopeo")
	pol := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(pol, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--policy", pol, "copy", "--preserve-digests", "--dest-tls-verify=false", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo copy %s %s: %v\n%s", src, dst, err, out)
	}
}

// TestFollowTagRegistry is issue 12's registry bar, through the daemon's
// own follow path (Run's watcher of the vehicle's followed tag, then
// FollowEvent): against a real registry (Debian's docker-registry on
// loopback), skopeo pushes an image signed by groundd sign (the image and
// its signature artifact, as skopeo copies a layout); groundd pulls the tag,
// finds the signature, and queues an uplink for the following vehicle,
// pinned by digest; the tag then moves to an unsigned image, which is not
// queued, and the vehicle's view says why; the queued uplink is planned
// from the registry (the tag has moved on: the digest holds) and completes.
func TestFollowTagRegistry(t *testing.T) {
	reg := imagestest.StartRegistry(t, imagestest.RegistryConfig{})
	rng := testrand.New(t)
	w := newWorld(t, rng, 0, nil)
	layout := filepath.Join(w.dir, "images")
	repo := "docker://" + reg.Host + "/flight/os"
	push := func(tag string, signed digest.Digest) {
		t.Helper()
		// The signature first, as a release pipeline pushes it: a
		// watcher that sees the tag move sees the signature too. (In the
		// other order the first verdict is "unsigned", and the next poll
		// finds the signature and queues.)
		if signed != "" {
			sig := images.SignatureTag(signed)
			skopeoCopy(t, "oci:"+layout+":"+sig, repo+":"+sig)
		}
		skopeoCopy(t, "oci:"+layout+":"+tag, repo+":stable")
	}
	w.cfg.Registry.PlainHTTP = true
	w.cfg.Vehicles[0].HardwareID = "obc-rev-c"
	w.cfg.Vehicles[0].Follow = &groundd.FollowConfig{Ref: repo + ":stable", Policy: "auto", Interval: groundd.Duration(20 * time.Millisecond)}
	moved := make(chan slog.Record, 16)
	w.opts.Log = slog.New(notify{w.opts.Log.Handler(), "groundd: followed tag moved", moved})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := w.open()
	defer d.Close()
	if _, err := d.RegisterImage(ctx, w.v1.Ref.String()); err != nil {
		t.Fatal(err)
	}
	// Run serves the follow path (the vehicle has no link here: the test
	// drives its session with Poll on the fake clock below).
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- d.Run(runCtx, nil) }()
	wait := func(what string) slog.Record {
		t.Helper()
		select {
		case r := <-moved:
			t.Logf("%s: %s", what, r.Message)
			return r
		case err := <-ran:
			t.Fatalf("%s: Run ended: %v", what, err)
		case <-ctx.Done():
			t.Fatalf("%s: the daemon never acted on the tag", what)
		}
		return slog.Record{}
	}

	// The tag: v2, signed (version 2) for the vehicle's hardware.
	push("os-2", w.v2.ManifestDigest)
	if r := wait("signed v2 on the tag"); r.Message != "groundd: followed tag moved: uplink queued" {
		t.Fatalf("signed image: %s", r.Message)
	}
	us, err := d.QueueList(ctx)
	if err != nil || len(us) != 1 {
		t.Fatalf("queue: %+v %v", us, err)
	}
	u := us[0]
	pinned := repo + "@" + w.v2.ManifestDigest.String()
	if u.State != groundd.UplinkQueued || u.Source != "follow" || u.Image != pinned {
		t.Fatalf("uplink %+v, want queued from follow for %s", u, pinned)
	}

	// The tag moves to an image nobody signed: not queued, and said why.
	unsigned := ocitest.Build(t, layout, "os-3", ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 1}))
	push("os-3", "")
	if r := wait("unsigned image on the tag"); r.Message != "groundd: followed tag moved: not queued" {
		t.Fatalf("unsigned image: %s", r.Message)
	}
	stop()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	v, err := d.VehicleShow(ctx, vehicleID)
	if err != nil {
		t.Fatal(err)
	}
	f := v.Following
	if f == nil || f.Manifest != unsigned.ManifestDigest.String() || f.Uplink != 0 || !strings.Contains(f.Reason, "unsigned") {
		t.Fatalf("the vehicle's view of its tag: %+v", f)
	}
	t.Logf("vehicle %d following %s: %s (%s)", vehicleID, f.Ref, f.Reason, f.Detail)
	if us, _ := d.QueueList(ctx); len(us) != 1 {
		t.Fatalf("queue after the unsigned image: %+v", us)
	}

	// The uplink queued from the tag is planned from the registry, by
	// digest, and completes.
	d, _ = w.run(d, u.ID, 0, nil)
	got, err := d.QueueShow(ctx, u.ID)
	if err != nil || got.State != groundd.UplinkDone || got.Manifest != w.v2.ManifestDigest.String() {
		t.Fatalf("followed uplink: %+v %v", got, err)
	}
	if got.Image != pinned {
		t.Fatalf("uplink image %s, want %s", got.Image, pinned)
	}
}
