package groundd

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/bootorbit/bootorbit/groundd/gateway"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/protocol"
)

// storeArchive is the gateway's Archive (a gateway.SharedArchive) and
// Sequencer on groundd's store: commands under gw/cmd/KEY/SEQ, the open
// ones also under gw/open/VEHICLE/KEY/SEQ (written in the same
// transaction: what a station reads before it sends), records under
// gw/rec/VEHICLE/KIND/HASH (Append), command numbers from the store's
// counters, which never hand out a number twice, whichever station asks.
// Every change of a command is a transaction guarded by the revision of
// the copy whose Version it follows, so two stations never both move a
// command (send it, time it out) from the same stage.
type storeArchive struct {
	st  store.Store
	log *slog.Logger // records set aside (nil: not logged)
}

func keyGWCommand(k protocol.KeyID, seq uint64) string {
	return fmt.Sprintf("gw/cmd/%010d/%020d", k, seq)
}

func keyGWOpen(vehicle uint32, k protocol.KeyID, seq uint64) string {
	return fmt.Sprintf("gw/open/%010d/%010d/%020d", vehicle, k, seq)
}

// PutCommand implements gateway.SharedArchive: a command with a Version is
// stored only over the copy of the Version before it.
func (a storeArchive) PutCommand(c *gateway.Command) error {
	ctx := context.Background()
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	key := keyGWCommand(c.Key, c.Seq)
	var cmps []store.Cmp
	if c.Version > 0 {
		kv, err := a.st.Get(ctx, key)
		var old gateway.Command
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(kv.Value, &old); err != nil {
				return fmt.Errorf("groundd: command %s: %w", key, err)
			}
		}
		if old.Version != c.Version-1 {
			return fmt.Errorf("%w: %d/%d is at version %d, not %d", gateway.ErrStale, c.Key, c.Seq, old.Version, c.Version-1)
		}
		cmps = []store.Cmp{{Key: key, Rev: kv.Rev}}
	}
	ops := []store.Op{{Key: key, Value: b}}
	if open := keyGWOpen(c.Vehicle, c.Key, c.Seq); c.Open() {
		ops = append(ops, store.Op{Key: open, Value: b})
	} else {
		ops = append(ops, store.Op{Key: open, Delete: true})
	}
	ok, err := a.st.Txn(ctx, cmps, ops)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %d/%d changed while it was written", gateway.ErrStale, c.Key, c.Seq)
	}
	return nil
}

// Command implements gateway.SharedArchive.
func (a storeArchive) Command(k protocol.KeyID, seq uint64) (*gateway.Command, error) {
	kv, err := a.st.Get(context.Background(), keyGWCommand(k, seq))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %d/%d", gateway.ErrNotFound, k, seq)
	}
	if err != nil {
		return nil, err
	}
	var c gateway.Command
	if err := json.Unmarshal(kv.Value, &c); err != nil {
		return nil, fmt.Errorf("groundd: command %s: %w", kv.Key, err)
	}
	return &c, nil
}

// OpenCommands implements gateway.SharedArchive.
func (a storeArchive) OpenCommands(vehicle uint32) ([]*gateway.Command, error) {
	prefix := "gw/open/"
	if vehicle != 0 {
		prefix = fmt.Sprintf("gw/open/%010d/", vehicle)
	}
	out, err := listJSON[*gateway.Command](context.Background(), a.st, prefix, a.log)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(x, y *gateway.Command) int { return cmp.Compare(x.Seq, y.Seq) })
	return out, nil
}

// indexOpen lists under gw/open/ the open commands archived before that
// index existed (once, at the daemon's start: a station reads it before it
// sends).
func (a storeArchive) indexOpen(ctx context.Context) error {
	open, err := a.Commands(gateway.CommandQuery{Open: true})
	if err != nil {
		return err
	}
	for _, c := range open {
		b, err := json.Marshal(c)
		if err != nil {
			return err
		}
		key := keyGWOpen(c.Vehicle, c.Key, c.Seq)
		// Only if neither the command nor its index entry changed since.
		kv, err := a.st.Get(ctx, keyGWCommand(c.Key, c.Seq))
		if err != nil {
			return err
		}
		if _, err := a.st.Txn(ctx, []store.Cmp{{Key: key}, {Key: kv.Key, Rev: kv.Rev}}, []store.Op{{Key: key, Value: b}}); err != nil {
			return err
		}
	}
	return nil
}

// Commands implements gateway.Archive.
func (a storeArchive) Commands(q gateway.CommandQuery) ([]*gateway.Command, error) {
	prefix := "gw/cmd/"
	if q.Key != 0 {
		prefix = fmt.Sprintf("gw/cmd/%010d/", q.Key)
	}
	all, err := listJSON[*gateway.Command](context.Background(), a.st, prefix, a.log)
	if err != nil {
		return nil, err
	}
	out := slices.DeleteFunc(all, func(c *gateway.Command) bool { return !q.Match(c) })
	slices.SortStableFunc(out, func(x, y *gateway.Command) int {
		if c := x.Submitted.Compare(y.Submitted); c != 0 {
			return c
		}
		return cmp.Compare(x.Seq, y.Seq)
	})
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// Append implements gateway.Archive. A record's key is a hash of its
// frame, which carries the vehicle's MAC over its boot epoch and sequence
// number: the same frame heard by two stations (or twice by one) is
// archived once, and two different frames never share a key. Nothing of
// the station's goes into the key: a record's time is the reception time
// when the vehicle gave none, and differs between stations. (Records
// archived before this had gw/rec/VEHICLE/KIND/TIME/HASH keys; they are
// read the same.)
func (a storeArchive) Append(r *gateway.Record) error {
	ctx := context.Background()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	h := sha256.Sum256(r.Frame)
	key := fmt.Sprintf("gw/rec/%010d/%d/%x", r.Vehicle, r.Kind, h[:16])
	_, err = a.st.Txn(ctx, []store.Cmp{{Key: key}}, []store.Op{{Key: key, Value: b}})
	return err
}

// Records implements gateway.Archive.
func (a storeArchive) Records(q gateway.Query) ([]*gateway.Record, error) {
	prefix := "gw/rec/"
	if q.Vehicle != 0 {
		prefix = fmt.Sprintf("gw/rec/%010d/", q.Vehicle)
		if q.Kind != 0 {
			prefix += fmt.Sprintf("%d/", q.Kind)
		}
	}
	all, err := listJSON[*gateway.Record](context.Background(), a.st, prefix, a.log)
	if err != nil {
		return nil, err
	}
	out := slices.DeleteFunc(all, func(r *gateway.Record) bool {
		return (q.Kind != 0 && r.Kind != q.Kind) || (q.Vehicle != 0 && r.Vehicle != q.Vehicle) || (q.ID != 0 && r.ID != q.ID) ||
			(!q.From.IsZero() && r.Time.Before(q.From)) || (!q.To.IsZero() && !r.Time.Before(q.To))
	})
	slices.SortStableFunc(out, func(x, y *gateway.Record) int {
		if c := x.Time.Compare(y.Time); c != 0 {
			return c
		}
		return x.Received.Compare(y.Received)
	})
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// Next implements gateway.Sequencer.
func (a storeArchive) Next(k protocol.KeyID) (uint64, error) {
	return a.st.Next(context.Background(), fmt.Sprintf("cmdseq/%d", k))
}
