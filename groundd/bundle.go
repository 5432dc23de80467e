package groundd

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/bootorbit/bootorbit/protocol/update"
)

// BundleRequest asks for an offline update file.
type BundleRequest struct {
	Vehicle uint32
	Image   string
	// Base is the image the vehicle holds (a reference); "" takes the
	// vehicle's booted slot from what groundd knows of it.
	Base string
	// Full plans every layer as full data, whatever the vehicle holds.
	Full           bool
	AllowDowngrade bool
}

// BundleInfo describes an update file written.
type BundleInfo struct {
	Plan       uint64          `json:"plan"`
	Vehicle    uint32          `json:"vehicle"`
	Manifest   string          `json:"manifest"`
	Base       string          `json:"base,omitempty"`
	BundleSize uint64          `json:"bundle_size"`
	FileSize   int64           `json:"file_size"`
	Layers     []LayerDecision `json:"layers"`
}

// WriteBundle plans r as for the uplink queue, signs the plan with the
// ground key (its id from the same counter, so a vehicle's replay floor
// holds across uplinks and files) and writes the update file (protocol/
// update's File: the plan, then the bundle) to w, for `flightd install`.
func (d *Daemon) WriteBundle(ctx context.Context, r BundleRequest, w io.Writer) (BundleInfo, error) {
	if _, ok := d.sessionOf(r.Vehicle); !ok {
		return BundleInfo{}, fmt.Errorf("%w: vehicle %d is not configured", ErrInvalid, r.Vehicle)
	}
	u := &Uplink{UplinkRequest: UplinkRequest{Vehicle: r.Vehicle, Image: r.Image, AllowDowngrade: r.AllowDowngrade}}
	var pl *planned
	var err error
	switch {
	case r.Full:
		pl, err = d.planAgainst(ctx, u, nil)
	case r.Base != "":
		base, err := d.RegisterImage(ctx, r.Base)
		if err != nil {
			return BundleInfo{}, err
		}
		pl, err = d.planAgainst(ctx, u, base)
		if err != nil {
			return BundleInfo{}, err
		}
	default:
		var s *session
		s, _ = d.sessionOf(r.Vehicle)
		pl, err = d.planUplink(ctx, u, s)
		if errors.Is(err, errNoKnowledge) {
			return BundleInfo{}, fmt.Errorf("groundd: vehicle %d has not reported its slots: name the image it holds (base) or ask for full layers", r.Vehicle)
		}
	}
	if err != nil {
		return BundleInfo{}, err
	}
	bt := pl.transfers[1]
	f, err := d.openBlob(bt.Blob, bt.Size)
	if err != nil {
		return BundleInfo{}, err
	}
	defer f.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return BundleInfo{}, err
	}
	cw := &countWriter{w: w}
	if err := update.WriteFile(cw, pl.plan, f); err != nil {
		return BundleInfo{}, err
	}
	info := BundleInfo{Plan: pl.plan.ID, Vehicle: r.Vehicle, Manifest: pl.plan.Release.Release.Manifest.String(),
		Base: pl.plan.Base.String(), BundleSize: pl.plan.BundleSize, FileSize: int64(cw.n), Layers: pl.layers}
	d.log.Info("groundd: update file written", "vehicle", r.Vehicle, "plan", info.Plan, "bytes", info.FileSize)
	return info, nil
}
