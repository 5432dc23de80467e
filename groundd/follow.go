package groundd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bootorbit/bootorbit/groundd/images"
)

func keyFollow(v uint32) string { return fmt.Sprintf("follow/%010d", v) }

// FollowEvent acts on a move of the tag vehicle follows (an event of an
// images.Watcher): an image to follow is queued, pinned by digest (auto
// policy) or as pending an operator's approval (approve policy), unless an
// uplink of it is already queued, active or done for the vehicle; one not
// to follow (unsigned, untrusted, other hardware, not newer) is not queued,
// and the vehicle's Following says why. It returns the uplink queued, if any.
func (d *Daemon) FollowEvent(ctx context.Context, vehicle uint32, ev images.TagEvent) (Uplink, bool, error) {
	s, ok := d.sessionOf(vehicle)
	if !ok {
		return Uplink{}, false, fmt.Errorf("%w: vehicle %d", ErrNotFound, vehicle)
	}
	policy := "auto"
	if s.cfg.Follow != nil {
		policy = s.cfg.Follow.Policy
	}
	f := Following{Ref: ev.Ref.String(), Policy: policy, Time: ev.Time.UTC(), Tag: ev.Tag.String(), Manifest: ev.Manifest.Digest.String(),
		Reason: ev.Reason, Detail: ev.Detail}
	var out Uplink
	queued := false
	if ev.Follow() {
		f.Version = ev.Release.Release.Version
		ref := ev.Ref.WithDigest(ev.Manifest.Digest).String()
		us, err := d.vehicleUplinks(ctx, vehicle)
		if err != nil {
			return Uplink{}, false, err
		}
		for _, u := range us {
			if u.Manifest == f.Manifest || u.Image == ref {
				if u.State == UplinkFailed || u.State == UplinkCancelled || u.State == UplinkExpired {
					continue
				}
				out, f.Uplink = u, u.ID
				f.Detail = fmt.Sprintf("uplink %d of it is %s", u.ID, u.State)
			}
		}
		if f.Uplink == 0 {
			u, err := d.queueAdd(ctx, UplinkRequest{Vehicle: vehicle, Image: ref, Source: "follow"}, policy == "approve")
			if err != nil {
				f.Reason, f.Detail = "queue", err.Error()
			} else {
				out, f.Uplink, queued = u, u.ID, true
			}
		}
	}
	if err := updateJSON(ctx, d.st, keyFollow(vehicle), func(v *Following, _ bool) error { *v = f; return nil }); err != nil {
		return out, queued, err
	}
	if queued {
		d.log.Info("groundd: followed tag moved: uplink queued", "vehicle", vehicle, "ref", f.Ref, "manifest", f.Manifest, "uplink", f.Uplink, "policy", policy)
	} else if f.Reason != "" {
		d.log.Warn("groundd: followed tag moved: not queued", "vehicle", vehicle, "ref", f.Ref, "manifest", f.Manifest, "reason", f.Reason, "detail", f.Detail)
	}
	return out, queued, nil
}

// follow runs the watcher of vehicle's followed tag until ctx ends.
func (d *Daemon) follow(ctx context.Context, s *session) error {
	src, ok := d.images.(StoreSource)
	if !ok {
		return errors.New("groundd: following a tag needs the image store")
	}
	ref, err := images.ParseRef(s.cfg.Follow.Ref)
	if err != nil {
		return err
	}
	w, err := images.NewWatcher(images.WatchConfig{Ref: ref, Options: src.Options, Interval: time.Duration(s.cfg.Follow.Interval),
		Keys: src.ReleaseKeys, HardwareID: s.cfg.HardwareID, Log: d.log, Above: func() uint64 { return d.bootedVersion(s.cfg.ID) }})
	if err != nil {
		return err
	}
	events := make(chan images.TagEvent)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-events:
				if _, _, err := d.FollowEvent(ctx, s.cfg.ID, ev); err != nil {
					d.log.Error("groundd: follow", "vehicle", s.cfg.ID, "err", err)
				}
			}
		}
	}()
	if err := w.Run(ctx, events); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// bootedVersion is the release version of the vehicle's booted slot, as
// groundd knows it (0: unknown).
func (d *Daemon) bootedVersion(vehicle uint32) uint64 {
	v, _, err := getJSON[vehicleRec](context.Background(), d.st, keyVehicle(vehicle))
	if err != nil {
		return 0
	}
	if b := bootedSlot(&v.Vehicle); b != nil {
		return b.Version
	}
	return 0
}
