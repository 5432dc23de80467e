package store

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func openTest(t *testing.T) (*Bolt, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenBolt(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, p
}

func TestBoltBasics(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	if _, err := s.Get(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	if err := Put(ctx, s, "q/1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := Put(ctx, s, "q/2", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := Put(ctx, s, "r/1", []byte("other")); err != nil {
		t.Fatal(err)
	}
	kvs, err := s.List(ctx, "q/")
	if err != nil || len(kvs) != 2 || string(kvs[0].Value) != "one" || string(kvs[1].Value) != "two" {
		t.Fatalf("list: %v %v", kvs, err)
	}
	if kvs[1].Rev <= kvs[0].Rev {
		t.Fatalf("revisions do not increase: %d then %d", kvs[0].Rev, kvs[1].Rev)
	}
	if err := Delete(ctx, s, "q/1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "q/1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
	if _, err := s.Get(ctx, ""); !errors.Is(err, ErrKey) {
		t.Fatalf("empty key: %v", err)
	}
}

// TestBoltCompareAndSwap: a write guarded by a stale revision does nothing,
// so of two read-modify-writes racing on a key one wins and one retries.
func TestBoltCompareAndSwap(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	ok, err := s.Txn(ctx, []Cmp{{Key: "k", Rev: 0}}, []Op{{Key: "k", Value: []byte("first")}})
	if !ok || err != nil {
		t.Fatalf("create: %v %v", ok, err)
	}
	ok, err = s.Txn(ctx, []Cmp{{Key: "k", Rev: 0}}, []Op{{Key: "k", Value: []byte("second")}})
	if ok || err != nil {
		t.Fatalf("create over an existing key: %v %v", ok, err)
	}
	kv, _ := s.Get(ctx, "k")
	if string(kv.Value) != "first" {
		t.Fatalf("value %q", kv.Value)
	}
	ok, _ = s.Txn(ctx, []Cmp{{Key: "k", Rev: kv.Rev}}, []Op{{Key: "k", Value: []byte("third")}, {Key: "other", Value: []byte("x")}})
	if !ok {
		t.Fatal("guarded write with the current revision refused")
	}
	ok, _ = s.Txn(ctx, []Cmp{{Key: "k", Rev: kv.Rev}}, []Op{{Key: "other", Delete: true}})
	if ok {
		t.Fatal("guarded write with a stale revision applied")
	}
	if _, err := s.Get(ctx, "other"); err != nil {
		t.Fatalf("a refused transaction wrote: %v", err)
	}

	// Concurrent increments through Update lose nothing.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				err := Update(ctx, s, "n", func(old []byte, _ bool) ([]byte, error) {
					return append(old, 'x'), nil
				})
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	kv, _ = s.Get(ctx, "n")
	if len(kv.Value) != 80 {
		t.Fatalf("%d increments of 80 survived", len(kv.Value))
	}
}

// TestBoltCounterSurvivesReopen: a counter never repeats a value, across a
// close and reopen of the file.
func TestBoltCounterSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	s, p := openTest(t)
	seen := map[uint64]bool{}
	for range 5 {
		n, err := s.Next(ctx, "plan")
		if err != nil || seen[n] {
			t.Fatalf("next: %d %v", n, err)
		}
		seen[n] = true
	}
	if n, _ := s.Next(ctx, "other"); n != 1 {
		t.Fatalf("a second counter starts at %d", n)
	}
	s.Close()
	if _, err := s.Next(ctx, "plan"); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed store: %v", err)
	}
	s2, err := OpenBolt(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	n, err := s2.Next(ctx, "plan")
	if err != nil || n != 6 {
		t.Fatalf("after reopen: %d %v", n, err)
	}
}

// TestBoltCounterCorrupt: a counter record that is not 8 bytes (a bad
// record in the file) must fail Next, not restart the counter at 1: ids
// and sequence numbers handed out again are replays to a vehicle (plans,
// commands) and reused keys to groundd. Likewise the revision counter.
func TestBoltCounterCorrupt(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	for range 5 {
		if _, err := s.Next(ctx, "plan"); err != nil {
			t.Fatal(err)
		}
	}
	if err := Put(ctx, s, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	corrupt := func(key []byte) {
		t.Helper()
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(key, []byte{0, 0, 5}) }); err != nil {
			t.Fatal(err)
		}
	}
	corrupt([]byte(prefixCtr + "plan"))
	if n, err := s.Next(ctx, "plan"); err == nil {
		t.Errorf("Next on a corrupt counter: %d, want an error", n)
	}
	corrupt(keyRev)
	if err := Put(ctx, s, "k", []byte("w")); err == nil {
		t.Error("Put with a corrupt revision counter: no error")
	}
}
