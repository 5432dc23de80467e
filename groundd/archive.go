package groundd

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"

	"github.com/bootorbit/bootorbit/groundd/gateway"
	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/protocol"
)

// storeArchive is the gateway's Archive and Sequencer on groundd's store:
// commands under gw/cmd/KEY/SEQ, records under gw/rec/VEHICLE/KIND/HASH
// (Append), command numbers from the store's counters, which
// never hand out a number twice, whichever station asks.
type storeArchive struct {
	st  store.Store
	log *slog.Logger // records set aside (nil: not logged)
}

func keyGWCommand(k protocol.KeyID, seq uint64) string {
	return fmt.Sprintf("gw/cmd/%010d/%020d", k, seq)
}

// PutCommand implements gateway.Archive.
func (a storeArchive) PutCommand(c *gateway.Command) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return store.Put(context.Background(), a.st, keyGWCommand(c.Key, c.Seq), b)
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
