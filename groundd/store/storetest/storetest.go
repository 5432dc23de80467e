// Package storetest is the conformance suite of store.Store: every
// implementation (Bolt, Etcd) runs the same tests, so that groundd behaves
// the same on either.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/bootorbit/bootorbit/groundd/store"
)

// Opener returns a fresh, empty store and a function that returns another
// handle on the same data (a second station's client; the same store where
// there is only one handle, as with Bolt). Both are closed by the caller's
// test cleanups.
type Opener func(t *testing.T) (s store.Store, another func() store.Store)

// Run runs the suite.
func Run(t *testing.T, open Opener) {
	t.Run("Basics", func(t *testing.T) { basics(t, open) })
	t.Run("CompareAndSwap", func(t *testing.T) { compareAndSwap(t, open) })
	t.Run("ConcurrentUpdate", func(t *testing.T) { concurrentUpdate(t, open) })
	t.Run("CountersNeverRepeat", func(t *testing.T) { counters(t, open) })
	t.Run("LastWriteOfAKeyWins", func(t *testing.T) { lastWrite(t, open) })
	t.Run("Closed", func(t *testing.T) { closed(t, open) })
}

func basics(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	if _, err := s.Get(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	for k, v := range map[string]string{"q/1": "one", "q/2": "two", "r/1": "other", "q": "prefix itself"} {
		if err := store.Put(ctx, s, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	kvs, err := s.List(ctx, "q/")
	if err != nil || len(kvs) != 2 || kvs[0].Key != "q/1" || string(kvs[0].Value) != "one" || string(kvs[1].Value) != "two" {
		t.Fatalf("list: %v %v", kvs, err)
	}
	if kvs[0].Rev <= 0 || kvs[1].Rev <= 0 {
		t.Fatalf("revisions must be positive: %d %d", kvs[0].Rev, kvs[1].Rev)
	}
	if err := store.Put(ctx, s, "q/1", []byte("one again")); err != nil {
		t.Fatal(err)
	}
	kv, err := s.Get(ctx, "q/1")
	if err != nil || string(kv.Value) != "one again" || kv.Rev <= kvs[1].Rev {
		t.Fatalf("rewrite: %+v %v (the revision must move past %d)", kv, err, kvs[1].Rev)
	}
	if err := store.Delete(ctx, s, "q/1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "q/1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
	if _, err := s.Get(ctx, ""); !errors.Is(err, store.ErrKey) {
		t.Fatalf("empty key: %v", err)
	}
	long := make([]byte, store.MaxKeyLen+1)
	if _, err := s.Txn(ctx, nil, []store.Op{{Key: string(long), Value: []byte("x")}}); !errors.Is(err, store.ErrKey) {
		t.Fatalf("oversized key: %v", err)
	}
	all, err := s.List(ctx, "")
	if err != nil || len(all) != 3 {
		t.Fatalf("list all: %v %v", all, err)
	}
	// Many keys: a list longer than one page of any implementation.
	var ops []store.Op
	for i := range 1500 {
		ops = append(ops, store.Op{Key: fmt.Sprintf("many/%05d", i), Value: []byte{byte(i)}})
		if len(ops) == 100 {
			if _, err := s.Txn(ctx, nil, ops); err != nil {
				t.Fatal(err)
			}
			ops = nil
		}
	}
	many, err := s.List(ctx, "many/")
	if err != nil || len(many) != 1500 {
		t.Fatalf("long list: %d %v", len(many), err)
	}
	for i, kv := range many {
		if kv.Key != fmt.Sprintf("many/%05d", i) {
			t.Fatalf("long list out of order at %d: %s", i, kv.Key)
		}
	}
}

// compareAndSwap: a write guarded by a stale revision does nothing, so of
// two read-modify-writes racing on a key one wins and one retries.
func compareAndSwap(t *testing.T, open Opener) {
	ctx := context.Background()
	s, another := open(t)
	s2 := another()
	ok, err := s.Txn(ctx, []store.Cmp{{Key: "k", Rev: 0}}, []store.Op{{Key: "k", Value: []byte("first")}})
	if !ok || err != nil {
		t.Fatalf("create: %v %v", ok, err)
	}
	ok, err = s2.Txn(ctx, []store.Cmp{{Key: "k", Rev: 0}}, []store.Op{{Key: "k", Value: []byte("second")}})
	if ok || err != nil {
		t.Fatalf("create over an existing key: %v %v", ok, err)
	}
	kv, _ := s2.Get(ctx, "k")
	if string(kv.Value) != "first" {
		t.Fatalf("value %q", kv.Value)
	}
	ok, _ = s2.Txn(ctx, []store.Cmp{{Key: "k", Rev: kv.Rev}}, []store.Op{{Key: "k", Value: []byte("third")}, {Key: "other", Value: []byte("x")}})
	if !ok {
		t.Fatal("guarded write with the current revision refused")
	}
	ok, _ = s.Txn(ctx, []store.Cmp{{Key: "k", Rev: kv.Rev}}, []store.Op{{Key: "other", Delete: true}})
	if ok {
		t.Fatal("guarded write with a stale revision applied")
	}
	if _, err := s.Get(ctx, "other"); err != nil {
		t.Fatalf("a refused transaction wrote: %v", err)
	}
	// A guard on a key that does not exist, with a revision: refused.
	if ok, _ := s.Txn(ctx, []store.Cmp{{Key: "absent", Rev: kv.Rev}}, []store.Op{{Key: "other", Delete: true}}); ok {
		t.Fatal("a guard on a missing key held")
	}
}

// concurrentUpdate: increments through Update from two handles lose
// nothing.
func concurrentUpdate(t *testing.T, open Opener) {
	ctx := context.Background()
	s, another := open(t)
	handles := []store.Store{s, another()}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				err := store.Update(ctx, handles[i%2], "n", func(old []byte, _ bool) ([]byte, error) {
					return append(old, 'x'), nil
				})
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	kv, _ := s.Get(ctx, "n")
	if len(kv.Value) != 80 {
		t.Fatalf("%d increments of 80 survived", len(kv.Value))
	}
}

// counters: Next never hands out a value twice, whichever handle asks, and
// counters are apart from keys and from each other.
func counters(t *testing.T, open Opener) {
	ctx := context.Background()
	s, another := open(t)
	handles := []store.Store{s, another()}
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				n, err := handles[i%2].Next(ctx, "plan")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[n] {
					t.Errorf("counter value %d handed out twice", n)
				}
				seen[n] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for n := uint64(1); n <= 60; n++ {
		if !seen[n] {
			t.Fatalf("counter skipped %d", n)
		}
	}
	if n, err := s.Next(ctx, "other"); n != 1 || err != nil {
		t.Fatalf("a second counter starts at %d: %v", n, err)
	}
	if _, err := s.Get(ctx, "plan"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a counter is visible as a key: %v", err)
	}
	if kvs, _ := s.List(ctx, ""); len(kvs) != 0 {
		t.Fatalf("counters listed as keys: %v", kvs)
	}
}

// lastWrite: ops apply in order, so the last write of a key in one
// transaction is what stays.
func lastWrite(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	if _, err := s.Txn(ctx, nil, []store.Op{{Key: "k", Value: []byte("a")}, {Key: "k", Value: []byte("b")}}); err != nil {
		t.Fatal(err)
	}
	if kv, err := s.Get(ctx, "k"); err != nil || string(kv.Value) != "b" {
		t.Fatalf("%q %v", kv.Value, err)
	}
	if _, err := s.Txn(ctx, nil, []store.Op{{Key: "k", Value: []byte("c")}, {Key: "k", Delete: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("put then delete left %v", err)
	}
}

func closed(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	s.Close()
	if _, err := s.Next(ctx, "plan"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Next on a closed store: %v", err)
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Get on a closed store: %v", err)
	}
}
