package groundd

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd/gateway"
	"github.com/bootorbit/bootorbit/groundd/gateway/gatewaytest"
	"github.com/bootorbit/bootorbit/groundd/store"
)

// TestStoreArchive: the gateway's archive on groundd's store keeps the
// gateway's contract.
func TestStoreArchive(t *testing.T) {
	gatewaytest.TestArchive(t, func(t *testing.T) gateway.Archive {
		s, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return storeArchive{st: s}
	})
}

// TestStoreArchiveOnce: one frame heard by two stations is archived once
// though it carries no vehicle time (the record's time is then each
// station's reception time), and two frames that differ are two records.
func TestStoreArchiveOnce(t *testing.T) {
	s, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := storeArchive{st: s}
	at := time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC)
	for i, f := range [][]byte{[]byte("frame one"), []byte("frame one"), []byte("frame two")} {
		// Heard 30 ms apart: no vehicle time, so Time is the reception's.
		rt := at.Add(time.Duration(i) * 30 * time.Millisecond)
		if err := a.Append(&gateway.Record{Kind: gateway.KindTelemetry, Vehicle: 7, ID: 1, Time: rt, Received: rt, Frame: f}); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := a.Records(gateway.Query{Vehicle: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d records, want 2 (one per distinct frame)", len(rs))
	}
}
