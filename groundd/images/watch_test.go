package images_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/groundd/images/imagestest"
	"github.com/opencontainers/go-digest"
)

// fakeClock moves only when told; waiting tells the test that Run is
// waiting for the next poll.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []fakeTimer
	waiting chan struct{}
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), waiting: make(chan struct{}, 16)}
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.timers = append(c.timers, fakeTimer{c.now.Add(d), ch})
	c.waiting <- struct{}{}
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	keep := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.ch <- c.now
		} else {
			keep = append(keep, t)
		}
	}
	c.timers = keep
}

// TestWatcherLayout follows a layout tag through a fake clock: the first
// poll reports where the tag is, a poll before the interval does nothing,
// a move to a newer signed image is to be followed, an unsigned image is
// not (with the reason), its signature arriving later is reported, and an
// image signed with an old version or for other hardware is not followed.
func TestWatcherLayout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	lay := filepath.Join(dir, "lay")
	priv, kr := newKey(t, dir, 1)
	build := func(tag, content string) oci.Descriptor {
		im := ocitest.Build(t, lay, tag, []ocitest.Layer{{Entries: []ocitest.Entry{{Name: "etc/version", Data: []byte(content)}}, Compression: oci.Zstd}})
		return oci.Descriptor{MediaType: oci.MediaTypeOCIManifest, Digest: im.ManifestDigest, Size: sizeOf(t, lay, im.ManifestDigest)}
	}
	sign := func(tag string, version uint64, hw string) {
		if _, _, err := images.Sign(ctx, mustRef(t, "oci:"+lay+":"+tag), images.Options{}, 1, priv, version, hw); err != nil {
			t.Fatal(err)
		}
	}
	v1 := build("v1", "1")
	v2 := build("v2", "2")
	v3 := build("v3", "3")
	v4 := build("v4", "4")
	sign("v1", 1, "obc")
	sign("v2", 2, "obc")
	sign("v4", 1, "obc") // an old version
	imagestest.SetTags(t, lay, map[string]oci.Descriptor{"stable": v1})

	clk := newFakeClock()
	installed := uint64(1)
	w, err := images.NewWatcher(images.WatchConfig{
		Ref: mustRef(t, "oci:"+lay+":stable"), Interval: 10 * time.Minute, Keys: kr, HardwareID: "obc",
		Above: func() uint64 { return installed }, Clock: clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan images.TagEvent)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, events) }()
	next := func(want digest.Digest) images.TagEvent {
		t.Helper()
		ev := <-events
		<-clk.waiting
		if ev.Manifest.Digest != want {
			t.Fatalf("event for %s, want %s (%v)", ev.Manifest.Digest, want, ev)
		}
		return ev
	}
	// First poll: v1, signed as version 1, which the vehicle runs.
	if ev := next(v1.Digest); ev.Follow() || ev.Reason != images.ReasonNotNewer {
		t.Errorf("first event %v, want %q", ev, images.ReasonNotNewer)
	}
	// The tag moves; nothing until the interval passes.
	imagestest.SetTags(t, lay, map[string]oci.Descriptor{"stable": v2})
	clk.Advance(9 * time.Minute)
	select {
	case ev := <-events:
		t.Fatalf("event before the interval: %v", ev)
	default:
	}
	clk.Advance(time.Minute)
	ev := next(v2.Digest)
	if !ev.Follow() || ev.Release.Release.Version != 2 || ev.Previous != v1.Digest {
		t.Fatalf("move to v2: %v", ev)
	}
	// Unchanged: no event.
	clk.Advance(10 * time.Minute)
	<-clk.waiting
	select {
	case ev := <-events:
		t.Fatalf("event without a move: %v", ev)
	default:
	}
	// Unsigned v3: reported, not to follow.
	imagestest.SetTags(t, lay, map[string]oci.Descriptor{"stable": v3})
	clk.Advance(10 * time.Minute)
	if ev := next(v3.Digest); ev.Follow() || ev.Reason != "unsigned image on tag" {
		t.Fatalf("unsigned: %v", ev)
	}
	// Its signature arrives: reported as to follow.
	sign("v3", 3, "obc")
	clk.Advance(10 * time.Minute)
	if ev := next(v3.Digest); !ev.Follow() || ev.Release.Release.Version != 3 {
		t.Fatalf("signed later: %v", ev)
	}
	// An old version: not to follow.
	imagestest.SetTags(t, lay, map[string]oci.Descriptor{"stable": v4})
	installed = 3
	clk.Advance(10 * time.Minute)
	if ev := next(v4.Digest); ev.Follow() || ev.Reason != images.ReasonNotNewer {
		t.Fatalf("old version: %v", ev)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run returned %v", err)
	}

	// Another hardware's signature only.
	w2, _ := images.NewWatcher(images.WatchConfig{Ref: mustRef(t, "oci:"+lay+":v2"), Keys: kr, HardwareID: "other-board", Clock: clk})
	ev, moved, err := w2.Check(context.Background())
	if err != nil || !moved || ev.Reason != images.ReasonHardware {
		t.Fatalf("other hardware: %v %v %v", ev, moved, err)
	}
	// An untrusted key only.
	_, otherKeys := newKey(t, dir, 9)
	w3, _ := images.NewWatcher(images.WatchConfig{Ref: mustRef(t, "oci:"+lay+":v2"), Keys: otherKeys, HardwareID: "obc", Clock: clk})
	if ev, _, err := w3.Check(context.Background()); err != nil || ev.Reason != images.ReasonUntrusted {
		t.Fatalf("untrusted: %v %v", ev, err)
	}
}

func sizeOf(t *testing.T, lay string, d digest.Digest) int64 {
	t.Helper()
	im, err := oci.Open(oci.Ref{Layout: lay, Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(im.ManifestBytes))
}
