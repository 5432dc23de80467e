package transfertest_test

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/transfer/transfertest"
)

var (
	_ transfer.Journal = (*transfertest.MemJournal)(nil)
	_ transfer.Store   = (*transfertest.MemStore)(nil)
)

func put(k, v string) transfer.Record {
	return transfer.Record{Op: transfer.OpPut, Key: []byte(k), Value: []byte(v)}
}

func TestMemJournal(t *testing.T) {
	j := transfertest.NewMemJournal()
	if err := j.Commit([]transfer.Record{put("tb", "2"), put("ta", "1"), put("d", "x")}); err != nil {
		t.Fatal(err)
	}
	if err := j.Commit([]transfer.Record{{Op: transfer.OpDeletePrefix, Key: []byte("t")}, put("tc", "3")}); err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"d": "x", "tc": "3"}; !reflect.DeepEqual(j.Snapshot(), want) {
		t.Fatalf("snapshot %v, want %v (records apply in order)", j.Snapshot(), want)
	}
	if j.Commits != 2 || j.Len() != 2 || !j.Has([]byte("tc")) || j.Has([]byte("ta")) {
		t.Fatalf("commits %d, len %d, has tc %v, has ta %v", j.Commits, j.Len(), j.Has([]byte("tc")), j.Has([]byte("ta")))
	}
	recs, err := j.Load()
	if err != nil {
		t.Fatal(err)
	}
	if want := []transfer.Record{put("d", "x"), put("tc", "3")}; !reflect.DeepEqual(recs, want) {
		t.Fatalf("Load %v, want %v, sorted by key", recs, want)
	}
	recs[0].Value[0] = 'y' // Load returns copies
	if j.Snapshot()["d"] != "x" {
		t.Fatal("changing Load's result changed the journal")
	}
}

// A commit is all or nothing, also when it fails: a batch with a record the
// journal cannot apply changes nothing and is not counted.
func TestMemJournalCommitAtomic(t *testing.T) {
	j := transfertest.NewMemJournal()
	if err := j.Commit([]transfer.Record{put("a", "1")}); err != nil {
		t.Fatal(err)
	}
	before := j.Snapshot()
	err := j.Commit([]transfer.Record{put("b", "2"), {Op: transfer.OpDeletePrefix, Key: []byte("a")}, {Op: 99, Key: []byte("c")}})
	if err == nil {
		t.Fatal("a record with an unknown op was accepted")
	}
	if !reflect.DeepEqual(j.Snapshot(), before) || j.Commits != 1 {
		t.Fatalf("a failed commit changed the journal: %v (was %v), commits %d", j.Snapshot(), before, j.Commits)
	}
}

func TestMemStorePowerLoss(t *testing.T) {
	s := transfertest.NewMemStore()
	if err := s.WriteAt(1, 4, []byte("ef")); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(1, 0, []byte("ab")); err != nil {
		t.Fatal(err)
	}
	if len(s.Bytes(1)) != 0 {
		t.Fatalf("unsynced writes are durable: %q", s.Bytes(1))
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if want := []byte("ab\x00\x00ef"); !bytes.Equal(s.Bytes(1), want) {
		t.Fatalf("after sync %q, want %q", s.Bytes(1), want)
	}
	if err := s.WriteAt(1, 2, []byte("cd")); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(2, 0, []byte("z")); err != nil {
		t.Fatal(err)
	}
	s.PowerLoss()
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if want := []byte("ab\x00\x00ef"); !bytes.Equal(s.Bytes(1), want) || s.Bytes(2) != nil {
		t.Fatalf("after power loss and sync: %q, %q; want %q and nothing", s.Bytes(1), s.Bytes(2), want)
	}
	if s.Syncs != 2 {
		t.Fatalf("syncs %d, want 2", s.Syncs)
	}
	if err := s.WriteAt(1, -1, []byte("x")); err == nil {
		t.Fatal("a negative offset was accepted")
	}
}

// Persist writes and syncs the data before it commits the records that
// point to it: a power cut right after it loses nothing it journaled.
func TestPersistSyncsBeforeCommit(t *testing.T) {
	j, s := transfertest.NewMemJournal(), transfertest.NewMemStore()
	rd := &transfer.Ready{
		Writes:  []transfer.Write{{ID: 7, Offset: 0, Data: []byte("chunk")}},
		Records: []transfer.Record{put("t7c0", "")},
	}
	if err := transfer.Persist(rd, s, j); err != nil {
		t.Fatal(err)
	}
	s.PowerLoss()
	if !j.Has([]byte("t7c0")) || !bytes.Equal(s.Bytes(7), []byte("chunk")) || s.Syncs != 1 || j.Commits != 1 {
		t.Fatalf("journal %v, store %q, syncs %d, commits %d", j.Snapshot(), s.Bytes(7), s.Syncs, j.Commits)
	}
}
