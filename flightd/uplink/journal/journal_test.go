package journal

import (
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/protocol/transfer"
)

func put(k, v string) transfer.Record {
	return transfer.Record{Op: transfer.OpPut, Key: []byte(k), Value: []byte(v)}
}

func TestJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Commit([]transfer.Record{put("t1", "a"), put("t1c", ""), put("t2", "b")}); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply([]transfer.Record{{Op: transfer.OpDeletePrefix, Key: []byte("t1")}}, []transfer.Record{put("p1", "x")}); err != nil {
		t.Fatal(err)
	}
	// A bad op fails the whole transaction: nothing of it is applied.
	if err := d.Apply([]transfer.Record{put("t3", "c")}, []transfer.Record{{Op: 99, Key: []byte("z")}}); err == nil {
		t.Fatal("bad op accepted")
	}
	if errs := d.Check(); errs != nil {
		t.Fatal(errs)
	}
	d.Close()
	if d, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rx, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	up, err := d.LoadUp()
	if err != nil {
		t.Fatal(err)
	}
	if len(rx) != 1 || string(rx[0].Key) != "t2" || len(up) != 1 || string(up[0].Value) != "x" {
		t.Fatalf("rx %v up %v", rx, up)
	}
}

// TestQuarantineWithFix: the records set aside and the repair records go in
// one transaction: a repair that fails leaves the bad records in place
// (the next start sets them aside again), and one that works lands with
// the set-aside.
func TestQuarantineWithFix(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "j.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Apply([]transfer.Record{put("t1", "a")}, []transfer.Record{put("k1", "bad"), put("p1", "x")}); err != nil {
		t.Fatal(err)
	}
	if err := d.Quarantine([][]byte{[]byte("t1")}, [][]byte{[]byte("k1")}, []transfer.Record{{Op: 99, Key: []byte("k1")}}); err == nil {
		t.Fatal("bad repair op accepted")
	}
	if q, _ := d.Quarantined(); len(q) != 0 {
		t.Fatalf("quarantined %v although the repair failed", q)
	}
	if err := d.Quarantine([][]byte{[]byte("t1")}, [][]byte{[]byte("k1")}, []transfer.Record{put("k1", "good")}); err != nil {
		t.Fatal(err)
	}
	rx, _ := d.Load()
	up, _ := d.LoadUp()
	q, _ := d.Quarantined()
	if len(rx) != 0 || len(up) != 2 || string(up[0].Key) != "k1" || string(up[0].Value) != "good" || len(q) != 2 {
		t.Fatalf("rx %v up %v quarantined %v", rx, up, q)
	}
}
