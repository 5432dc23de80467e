package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

func init() {
	commands.Add("", newTransfers)
}

// watchFlags are the flags of a command that can follow progress.
type watchFlags struct {
	watch    bool
	interval time.Duration
}

func addWatchFlags(c *cobra.Command, w *watchFlags) {
	c.Flags().BoolVar(&w.watch, "watch", false, "follow the progress: a bar on a terminal, plain lines otherwise, one JSON document per line with --json")
	cli.DurationVar(c.Flags(), &w.interval, "interval", 2*time.Second, "how often --watch asks the server")
}

func newTransfers() *cobra.Command {
	var f clientFlags
	var w watchFlags
	var vehicle uint32
	var uplink uint64
	c := &cobra.Command{
		Use:   "transfers",
		Short: "show the transfers in flight and their progress",
		Long: `Transfers lists the transfers in flight (each uplink sends its plan, then its
bundle): the chunks and bytes the vehicle reported holding, the bytes the
uplink still has to send and the estimate of passes remaining (-1: no
scheduled pass can carry it). With --watch it follows them with progress
bars until none is in flight (plain lines when standard output is not a
terminal; with --json one document per line, at each change).`,
		Example: `  groundd transfers
  groundd transfers --watch --vehicle 7
  groundd transfers --uplink 12 --json`,
		Args: cli.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := f.client(c)
			if err != nil {
				return err
			}
			if w.interval <= 0 {
				return cli.Usagef("--interval must be more than 0")
			}
			fetch := func(ctx context.Context) ([]groundd.Transfer, error) { return cl.Transfers(ctx, uplink, vehicle) }
			if w.watch {
				seen := map[uint64]groundd.Transfer{}
				return watch(c, &f, &w, func(ctx context.Context) ([]groundd.Transfer, string, error) {
					ts, err := fetch(ctx)
					if err != nil {
						return nil, "", err
					}
					if ts, err = withEnded(ctx, cl, seen, ts); err != nil {
						return nil, "", err
					}
					if !inFlight(ts) {
						return ts, "no transfer in flight", nil
					}
					return ts, "", nil
				})
			}
			ts, err := fetch(c.Context())
			if err != nil {
				return err
			}
			if f.json {
				return cli.WriteJSON(c.OutOrStdout(), orEmpty(ts))
			}
			if len(ts) == 0 {
				fmt.Fprintln(c.OutOrStdout(), "no transfer in flight")
				return nil
			}
			return transferTable(c.OutOrStdout(), ts)
		},
	}
	c.Flags().Uint32Var(&vehicle, "vehicle", 0, "only this vehicle's (`ID`)")
	c.Flags().Uint64Var(&uplink, "uplink", 0, "every transfer of this uplink (`ID`), done or not")
	addWatchFlags(c, &w)
	addClientFlags(c, &f)
	return c
}

// withEnded adds to ts, the transfers in flight, the last state of those
// seen in flight before and gone now (done, or cancelled), from their
// uplink's list, so that a watcher sees them end rather than vanish.
func withEnded(ctx context.Context, cl *api.Client, seen map[uint64]groundd.Transfer, ts []groundd.Transfer) ([]groundd.Transfer, error) {
	now := map[uint64]bool{}
	for _, t := range ts {
		now[t.ID] = true
	}
	byUplink := map[uint64][]groundd.Transfer{}
	for id, old := range seen {
		if now[id] {
			continue
		}
		delete(seen, id)
		all, ok := byUplink[old.Uplink]
		if !ok {
			var err error
			if all, err = cl.Transfers(ctx, old.Uplink, 0); err != nil {
				return nil, err
			}
			byUplink[old.Uplink] = all
		}
		for _, t := range all {
			if t.ID == id {
				ts = append(ts, t)
			}
		}
	}
	for _, t := range ts {
		if !t.Done {
			seen[t.ID] = t
		}
	}
	return ts, nil
}

func inFlight(ts []groundd.Transfer) bool {
	for _, t := range ts {
		if !t.Done {
			return true
		}
	}
	return false
}

func transferTable(w io.Writer, ts []groundd.Transfer) error {
	t := newTable(w, "UPLINK", "VEHICLE", "TRANSFER", "KIND", "CHUNKS", "HELD", "SIZE", "LEFT", "PASSES", "RESENT")
	for _, x := range ts {
		t.row(strconv.FormatUint(x.Uplink, 10), strconv.FormatUint(uint64(x.Vehicle), 10), strconv.FormatUint(x.ID, 10), x.Kind,
			fmt.Sprintf("%d/%d", x.Chunks, x.Total), fmt.Sprintf("%s (%s)", bytesText(x.Bytes), percent(x)),
			bytesText(x.Size), bytesText(x.Remaining), passes(x), strconv.FormatInt(x.Resent, 10))
	}
	return t.flush()
}

func percent(t groundd.Transfer) string {
	if t.Done {
		return "100%"
	}
	if t.Size == 0 {
		return "0%"
	}
	return fmt.Sprintf("%d%%", t.Bytes*100/t.Size)
}

// passes is the estimate of passes remaining, as an operator reads it.
func passes(t groundd.Transfer) string {
	switch {
	case t.Done:
		return "0"
	case t.Passes < 0:
		return "none scheduled"
	}
	return strconv.Itoa(t.Passes)
}

// watchUplink follows one uplink's transfers until the uplink ends; an
// uplink that ends other than done is an error (exit 1).
func watchUplink(c *cobra.Command, f *clientFlags, w *watchFlags, cl *api.Client, id uint64) error {
	var final groundd.Uplink
	err := watch(c, f, w, func(ctx context.Context) ([]groundd.Transfer, string, error) {
		u, err := cl.QueueShow(ctx, id)
		if err != nil {
			return nil, "", err
		}
		ts, err := cl.Transfers(ctx, id, 0)
		if err != nil {
			return nil, "", err
		}
		if u.State == groundd.UplinkDone {
			// The vehicle installed it, so it holds every byte, whatever
			// the transfer records said at their last report.
			for i := range ts {
				ts[i].Done, ts[i].Bytes, ts[i].Chunks, ts[i].Remaining, ts[i].Passes = true, ts[i].Size, ts[i].Total, 0, 0
			}
		}
		if u.State.Final() {
			final = u
			msg := fmt.Sprintf("uplink %d %s", u.ID, u.State)
			if u.Error != "" {
				msg += ": " + u.Error
			}
			// And what the vehicle's telemetry says its slots hold: after
			// an install, the housekeeping that shows it follows the
			// install_done event, so wait a few rounds for it.
			v, err := cl.VehicleShow(ctx, u.Vehicle)
			for i := 0; err == nil && u.State == groundd.UplinkDone && !holds(v, u.Manifest) && i < settleRounds; i++ {
				select {
				case <-ctx.Done():
					return nil, "", ctx.Err()
				case <-time.After(w.interval):
				}
				v, err = cl.VehicleShow(ctx, u.Vehicle)
			}
			if err == nil && len(v.Slots) > 0 {
				msg += fmt.Sprintf("\nvehicle %d slots:", v.ID)
				for _, s := range v.Slots {
					msg += fmt.Sprintf(" %s %s", s.Name, slotText(v, s.Name))
					if s.Booted {
						msg += " (booted)"
					}
					msg += ";"
				}
				msg = strings.TrimSuffix(msg, ";")
			}
			return ts, msg, nil
		}
		return ts, "", nil
	})
	if err != nil {
		return err
	}
	if final.State != groundd.UplinkDone {
		return fmt.Errorf("uplink %d %s", final.ID, final.State)
	}
	return nil
}

// settleRounds bounds the rounds queue show --watch waits, after an
// uplink is done, for the vehicle's telemetry to show the new image.
const settleRounds = 10

// holds reports whether the vehicle's telemetry shows manifest in a slot
// (telemetry carries the digest's first 8 bytes).
func holds(v groundd.Vehicle, manifest string) bool {
	_, hex, ok := strings.Cut(manifest, ":")
	if !ok || len(hex) < 16 {
		return false
	}
	for _, s := range v.Slots {
		if s.Digest == hex[:16] {
			return true
		}
	}
	return false
}

// watchRetry is how long a watch keeps polling a server that does not
// answer, or answers 5xx, before it gives up.
const watchRetry = 2 * time.Minute

// transient says whether a request's error may pass: no answer at all (the
// watch's own context ending is checked apart), or a server error (a 5xx:
// the daemon shutting down or failing); a 4xx is the request's fault and
// will not.
func transient(err error) bool {
	if e, ok := errors.AsType[*api.Error](err); ok {
		return e.Status >= 500
	}
	return true
}

// progress shows successive snapshots of transfers.
type progress interface {
	update(ts []groundd.Transfer) error
	// finish ends the display with a last line.
	finish(msg string) error
}

// watch polls fetch every interval and shows each answer until fetch says
// it is over (a non-empty message) or the context ends.
func watch(c *cobra.Command, f *clientFlags, w *watchFlags, fetch func(context.Context) ([]groundd.Transfer, string, error)) error {
	ctx, out := c.Context(), c.OutOrStdout()
	var p progress
	switch {
	case f.json:
		p = &jsonProgress{enc: json.NewEncoder(out)}
	case isTerminal(out):
		p = newBarProgress(ctx, out)
	default:
		p = &plainProgress{w: out, last: map[uint64]groundd.Transfer{}}
	}
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	var downSince time.Time
	for {
		ts, msg, err := fetch(ctx)
		if err != nil && transient(err) && ctx.Err() == nil {
			// The daemon restarting behind its API (or the API not
			// answering for a while) does not end a watch: the uplink
			// goes on, and so does the operator's view of it.
			if downSince.IsZero() {
				downSince = time.Now()
				fmt.Fprintf(c.ErrOrStderr(), "%s: server unavailable (%v); retrying\n", c.CommandPath(), err)
			}
			if time.Since(downSince) < watchRetry {
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
				continue
			}
		}
		if err != nil {
			p.finish("")
			return err
		}
		if !downSince.IsZero() {
			downSince = time.Time{}
			fmt.Fprintf(c.ErrOrStderr(), "%s: server back\n", c.CommandPath())
		}
		if err := p.update(ts); err != nil {
			return err
		}
		if msg != "" {
			return p.finish(msg)
		}
		select {
		case <-ctx.Done():
			p.finish("")
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// plainProgress writes a line for every transfer that moved, for logs and
// pipes.
type plainProgress struct {
	w    io.Writer
	last map[uint64]groundd.Transfer
}

func (p *plainProgress) update(ts []groundd.Transfer) error {
	for _, t := range ts {
		old, ok := p.last[t.ID]
		if ok && (old == t || old.Done && t.Done) {
			continue // nothing moved; a done transfer is said done once
		}
		p.last[t.ID] = t
		state := fmt.Sprintf("%s left, passes remaining %s", bytesText(t.Remaining), passes(t))
		if t.Done {
			state = "done"
		}
		chunks := fmt.Sprintf("%d/%d chunks", t.Chunks, t.Total)
		switch {
		case t.Done: // the last report may predate the end
			chunks = fmt.Sprintf("%d/%d chunks", t.Total, t.Total)
		case t.Total == 0:
			chunks = "no report yet"
		}
		if _, err := fmt.Fprintf(p.w, "uplink %d vehicle %d %s %d: %s, %s of %s (%s), %s\n",
			t.Uplink, t.Vehicle, t.Kind, t.ID, chunks, bytesText(t.Bytes), bytesText(t.Size), percent(t), state); err != nil {
			return err
		}
	}
	return nil
}

func (p *plainProgress) finish(msg string) error {
	if msg == "" {
		return nil
	}
	_, err := fmt.Fprintln(p.w, msg)
	return err
}

// jsonProgress writes one JSON document per line for every change.
type jsonProgress struct {
	enc  *json.Encoder
	last []byte
}

type watchDoc struct {
	Transfers []groundd.Transfer `json:"transfers"`
	Final     string             `json:"final,omitempty"`
}

func (p *jsonProgress) update(ts []groundd.Transfer) error {
	ts = orEmpty(ts)
	b, _ := json.Marshal(ts)
	if string(b) == string(p.last) {
		return nil
	}
	p.last = b
	return p.enc.Encode(watchDoc{Transfers: ts})
}

func (p *jsonProgress) finish(msg string) error {
	if msg == "" {
		return nil
	}
	return p.enc.Encode(watchDoc{Transfers: []groundd.Transfer{}, Final: msg})
}

// barProgress draws a progress bar per transfer with mpb.
type barProgress struct {
	p    *mpb.Progress
	w    io.Writer
	mu   sync.Mutex
	bars map[uint64]*mpb.Bar
	info map[uint64]groundd.Transfer
}

func newBarProgress(ctx context.Context, w io.Writer) *barProgress {
	return &barProgress{p: mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithWidth(100)), w: w,
		bars: map[uint64]*mpb.Bar{}, info: map[uint64]groundd.Transfer{}}
}

func (b *barProgress) update(ts []groundd.Transfer) error {
	for _, t := range ts {
		b.mu.Lock()
		b.info[t.ID] = t
		b.mu.Unlock()
		bar, ok := b.bars[t.ID]
		if !ok {
			if t.Done {
				continue // done before we looked: nothing to watch
			}
			id := t.ID
			bar = b.p.AddBar(int64(max(t.Size, 1)),
				mpb.PrependDecorators(
					decor.Name(fmt.Sprintf("uplink %d vehicle %d %s %d", t.Uplink, t.Vehicle, t.Kind, t.ID), decor.WCSyncSpaceR),
					decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace),
				),
				mpb.AppendDecorators(
					decor.Percentage(decor.WC{W: 5}),
					decor.Any(func(decor.Statistics) string {
						b.mu.Lock()
						defer b.mu.Unlock()
						x := b.info[id]
						return fmt.Sprintf("  %d/%d chunks, passes %s", x.Chunks, x.Total, passes(x))
					}, decor.WCSyncWidthR),
				))
			b.bars[t.ID] = bar
		}
		if t.Done {
			bar.SetTotal(int64(max(t.Size, 1)), true)
			continue
		}
		bar.SetCurrent(int64(t.Bytes))
	}
	return nil
}

func (b *barProgress) finish(msg string) error {
	for id, bar := range b.bars {
		b.mu.Lock()
		done := b.info[id].Done
		b.mu.Unlock()
		if !done { // a done bar completes by itself, asynchronously
			bar.Abort(false)
		}
	}
	b.p.Wait()
	if msg != "" {
		_, err := fmt.Fprintln(b.w, msg)
		return err
	}
	return nil
}
