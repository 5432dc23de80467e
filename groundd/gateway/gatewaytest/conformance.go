package gatewaytest

import (
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd/gateway"
)

// TestArchive checks an Archive against the contract gateway relies on:
// PutCommand replaces by (Key, Seq), Commands and Records select by every
// field of their query (time ranges half open), order oldest first and
// honour Limit, and nothing returned aliases what was stored. newArchive
// returns an empty archive.
func TestArchive(t *testing.T, newArchive func(t *testing.T) gateway.Archive) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

	t.Run("commands", func(t *testing.T) {
		a := newArchive(t)
		put := func(c gateway.Command) {
			t.Helper()
			if err := a.PutCommand(&c); err != nil {
				t.Fatal(err)
			}
		}
		put(gateway.Command{Vehicle: 1, Key: 1, Seq: 2, Name: "noop", Submitted: at(20), Stage: gateway.Queued, Frame: []byte{1}})
		put(gateway.Command{Vehicle: 1, Key: 1, Seq: 1, Name: "reboot", Submitted: at(10), Stage: gateway.Completed})
		put(gateway.Command{Vehicle: 2, Key: 1, Seq: 3, Name: "noop", Submitted: at(30), Stage: gateway.Timeout})
		put(gateway.Command{Vehicle: 1, Key: 2, Seq: 2, Name: "status", Submitted: at(40), Stage: gateway.Sent})
		// Replace (1, 2): same key and seq, new stage.
		put(gateway.Command{Vehicle: 1, Key: 1, Seq: 2, Name: "noop", Submitted: at(20), Stage: gateway.Sent, Frame: []byte{1}})
		for _, tc := range []struct {
			name string
			q    gateway.CommandQuery
			want []uint64 // seqs, in order
		}{
			{"all", gateway.CommandQuery{}, []uint64{1, 2, 3, 2}},
			{"vehicle", gateway.CommandQuery{Vehicle: 1}, []uint64{1, 2, 2}},
			{"one", gateway.CommandQuery{Key: 2, Seq: 2}, []uint64{2}},
			{"name", gateway.CommandQuery{Name: "noop"}, []uint64{2, 3}},
			{"open", gateway.CommandQuery{Open: true}, []uint64{2, 3, 2}},
			{"range", gateway.CommandQuery{From: at(20), To: at(40)}, []uint64{2, 3}},
			{"limit", gateway.CommandQuery{Limit: 2}, []uint64{1, 2}},
		} {
			cs, err := a.Commands(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, c := range cs {
				got = append(got, c.Seq)
			}
			if !equal(got, tc.want) {
				t.Errorf("%s: seqs %v, want %v", tc.name, got, tc.want)
			}
		}
		cs, _ := a.Commands(gateway.CommandQuery{Key: 1, Seq: 2})
		if len(cs) != 1 || cs[0].Stage != gateway.Sent {
			t.Fatalf("replaced command: %+v", cs)
		}
		cs[0].Frame[0] = 9
		cs, _ = a.Commands(gateway.CommandQuery{Key: 1, Seq: 2})
		if cs[0].Frame[0] != 1 {
			t.Errorf("a returned command aliases the stored one")
		}
	})

	t.Run("records", func(t *testing.T) {
		a := newArchive(t)
		add := func(r gateway.Record) {
			t.Helper()
			if err := a.Append(&r); err != nil {
				t.Fatal(err)
			}
		}
		add(gateway.Record{Kind: gateway.KindTelemetry, Vehicle: 1, ID: 1, Time: at(30), Received: at(31), Seq: 3, Frame: []byte{3}})
		add(gateway.Record{Kind: gateway.KindTelemetry, Vehicle: 1, ID: 2, Time: at(10), Received: at(11), Seq: 1, Frame: []byte{1}})
		add(gateway.Record{Kind: gateway.KindEvent, Vehicle: 1, ID: 1, Time: at(20), Received: at(21), Seq: 2, Frame: []byte{2}})
		add(gateway.Record{Kind: gateway.KindTelemetry, Vehicle: 2, ID: 1, Time: at(40), Received: at(41), Seq: 4, Frame: []byte{4}})
		for _, tc := range []struct {
			name string
			q    gateway.Query
			want []uint64
		}{
			{"all", gateway.Query{}, []uint64{1, 2, 3, 4}},
			{"kind", gateway.Query{Kind: gateway.KindTelemetry}, []uint64{1, 3, 4}},
			{"vehicle", gateway.Query{Vehicle: 1}, []uint64{1, 2, 3}},
			{"id", gateway.Query{Kind: gateway.KindTelemetry, ID: 1}, []uint64{3, 4}},
			{"from", gateway.Query{From: at(20)}, []uint64{2, 3, 4}},
			{"to", gateway.Query{To: at(30)}, []uint64{1, 2}},
			{"limit", gateway.Query{Kind: gateway.KindTelemetry, Limit: 1}, []uint64{1}},
		} {
			rs, err := a.Records(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, r := range rs {
				got = append(got, uint64(r.Seq))
				if r.Frame[0] != byte(r.Seq) {
					t.Errorf("%s: record %d has frame %x", tc.name, r.Seq, r.Frame)
				}
			}
			if !equal(got, tc.want) {
				t.Errorf("%s: seqs %v, want %v", tc.name, got, tc.want)
			}
		}
	})
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
