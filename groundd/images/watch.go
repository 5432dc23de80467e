package images

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/opencontainers/go-digest"
)

// Clock is a Watcher's time: tests pass a fake one and move it.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Why a tag's image is not to be followed. The uplink queue shows them to
// operators as they are.
const (
	ReasonUnsigned  = "unsigned image on tag"
	ReasonUntrusted = "no valid signature by a trusted release key"
	ReasonHardware  = "not signed for this hardware"
	ReasonNotNewer  = "release version not above the installed one"
)

// WatchConfig is what a Watcher follows and how it judges what it finds.
type WatchConfig struct {
	// Ref is the tag to follow (docker://HOST/REPO:TAG or oci:PATH:TAG).
	Ref     Ref
	Options Options // platform (the vehicle's) and registry settings
	// Interval between polls (default one minute).
	Interval time.Duration
	// Keys are the trusted release keys.
	Keys *protocol.Keyring
	// HardwareID the release must be signed for.
	HardwareID string
	// Above returns the version a release must exceed, read at each
	// verdict (typically what the vehicle runs); nil means 0.
	Above func() uint64
	Clock Clock        // nil: the real clock
	Log   *slog.Logger // nil: discarded
}

// TagEvent reports a tag moving to a new image, or a new verdict on the
// image it points to (a signature pushed after the image, a key rotated,
// the vehicle's version moved).
type TagEvent struct {
	Ref      Ref
	Time     time.Time
	Tag      digest.Digest  // what the tag points to (an index or the manifest)
	Previous digest.Digest  // what it pointed to at the last event ("" at the first)
	Manifest oci.Descriptor // the image manifest for the vehicle's platform
	// Release is the verified signature to follow: for the hardware, the
	// highest version, above the floor. Nil unless Reason is "".
	Release *update.ReleaseSignature
	// Reason is "" when the image is to be followed, else one of the
	// Reason constants; Detail says more (versions, keys).
	Reason string
	Detail string
}

// Follow reports whether the tag's image is a release to queue.
func (e TagEvent) Follow() bool { return e.Reason == "" && e.Release != nil }

func (e TagEvent) String() string {
	if e.Follow() {
		return fmt.Sprintf("%s -> %s: release %d for %s", e.Ref, e.Manifest.Digest, e.Release.Release.Version, e.Release.Release.HardwareID)
	}
	return fmt.Sprintf("%s -> %s: %s (%s)", e.Ref, e.Manifest.Digest, e.Reason, e.Detail)
}

// Watcher polls a tag. Check is one poll; Run polls until its context ends.
// A Watcher is not safe for concurrent use.
type Watcher struct {
	cfg     WatchConfig
	last    digest.Digest // tag digest of the last event
	verdict string        // the last event's verdict, to report changes
}

// NewWatcher checks cfg and returns a watcher that has seen nothing yet:
// its first poll reports where the tag points.
func NewWatcher(cfg WatchConfig) (*Watcher, error) {
	if cfg.Ref.Tag == "" {
		return nil, fmt.Errorf("%w: %s: a watcher follows a tag", ErrBadRef, cfg.Ref)
	}
	if cfg.Keys == nil {
		return nil, fmt.Errorf("images: watcher: no release keys")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg}, nil
}

// Check polls the tag once. It returns an event, and true, when the tag
// points somewhere new or the verdict on its image changed; an error when
// the tag or the image's signatures could not be read (nothing is
// reported then: the next poll tries again).
func (w *Watcher) Check(ctx context.Context) (TagEvent, bool, error) {
	src, err := openSource(ctx, w.cfg.Ref, w.cfg.Options)
	if err != nil {
		return TagEvent{}, false, err
	}
	top, err := src.head(ctx)
	if err != nil {
		return TagEvent{}, false, err
	}
	if top == w.last && w.verdict == "" {
		return TagEvent{}, false, nil // same image, already found good
	}
	desc, _, err := src.resolve(ctx, w.cfg.Options.platform())
	if err != nil {
		return TagEvent{}, false, err
	}
	arts, err := src.signatures(ctx, desc.Digest)
	if err != nil {
		return TagEvent{}, false, err
	}
	ev := TagEvent{Ref: w.cfg.Ref, Time: w.cfg.Clock.Now(), Tag: top, Previous: w.last, Manifest: desc}
	w.judge(&ev, decodedSignatures(arts))
	key := ev.Reason + "\x00" + ev.Detail
	if top == w.last && key == w.verdict {
		return TagEvent{}, false, nil
	}
	w.last, w.verdict = top, key
	if ev.Follow() {
		w.verdict = ""
	}
	return ev, true, nil
}

// judge sets ev's Release or Reason from the signatures found.
func (w *Watcher) judge(ev *TagEvent, sigs []update.ReleaseSignature) {
	ok, err := VerifyReleases(w.cfg.Keys, ev.Manifest.Digest, sigs)
	switch {
	case errors.Is(err, ErrUnsigned):
		ev.Reason, ev.Detail = ReasonUnsigned, fmt.Sprintf("no release signature beside %s", ev.Manifest.Digest)
		return
	case err != nil:
		ev.Reason, ev.Detail = ReasonUntrusted, err.Error()
		return
	}
	var above uint64
	if w.cfg.Above != nil {
		above = w.cfg.Above()
	}
	var best *update.ReleaseSignature
	var hw []string
	for i := range ok {
		rs := &ok[i]
		if rs.Release.HardwareID != w.cfg.HardwareID {
			hw = append(hw, rs.Release.HardwareID)
			continue
		}
		if best == nil || rs.Release.Version > best.Release.Version {
			best = rs
		}
	}
	switch {
	case best == nil:
		ev.Reason, ev.Detail = ReasonHardware, fmt.Sprintf("signed for %v, want %s", hw, w.cfg.HardwareID)
	case best.Release.Version <= above:
		ev.Reason, ev.Detail = ReasonNotNewer, fmt.Sprintf("version %d, installed %d", best.Release.Version, above)
	default:
		rs := *best
		ev.Release = &rs
	}
}

// Run polls at once and then every Interval until ctx ends, sending each
// event on events (and waiting for it to be taken). Poll errors are logged
// and retried at the next interval. It returns ctx's error.
func (w *Watcher) Run(ctx context.Context, events chan<- TagEvent) error {
	for {
		ev, moved, err := w.Check(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			w.cfg.Log.Warn("tag poll failed", "ref", w.cfg.Ref.String(), "err", err)
		case moved:
			w.cfg.Log.Info("tag moved", "ref", w.cfg.Ref.String(), "digest", ev.Manifest.Digest, "follow", ev.Follow(), "reason", ev.Reason)
			select {
			case events <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case <-w.cfg.Clock.After(w.cfg.Interval):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
