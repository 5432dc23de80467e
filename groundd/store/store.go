// Package store is groundd's state behind a small key-value interface: the
// uplink queue, what groundd knows of each vehicle, transfers in flight, the
// telemetry archive and the counters that feed plan, transfer and sequence
// numbers.
//
// The interface is the one etcd offers (get, put, delete, list by prefix,
// transactions that compare revisions, then write), so that several ground
// stations share one etcd cluster behind it with no change to groundd: every
// read-modify-write that two stations could race on is a Txn guarded by the
// revisions read, and Next never hands out a value twice, whoever asks.
// Bolt, on bbolt, is the embedded default for one station; Etcd is the
// shared store of several. Both pass the same conformance suite
// (storetest).
package store

import (
	"context"
	"errors"
	"fmt"
)

// Errors of the store.
var (
	// ErrNotFound: no value at the key.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a transaction's comparison failed again and again
	// (Update gave up), or a caller asked for a write that lost a race.
	ErrConflict = errors.New("store: conflict")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store: closed")
	// ErrKey: an empty or oversized key.
	ErrKey = errors.New("store: bad key")
)

// MaxKeyLen bounds a key (etcd's default limit is far above; bbolt's is 32 KiB).
const MaxKeyLen = 512

// KV is one key with its value and the revision of its last change.
type KV struct {
	Key   string
	Value []byte
	// Rev is the store revision at which the key was last written (> 0).
	// Revisions increase with every transaction that writes; a Cmp with the
	// Rev read is how a caller says "only if nobody wrote it since".
	Rev int64
}

// Cmp is a transaction's guard: Key's revision must be Rev (0: the key must
// not exist).
type Cmp struct {
	Key string
	Rev int64
}

// Op is a transaction's write: put Value at Key, or delete Key.
type Op struct {
	Key    string
	Value  []byte
	Delete bool
}

// Store is groundd's state. Implementations are safe for concurrent use.
// Values returned are the caller's to keep.
type Store interface {
	// Get returns the value at key, or ErrNotFound.
	Get(ctx context.Context, key string) (KV, error)
	// List returns every key starting with prefix, in key order.
	List(ctx context.Context, prefix string) ([]KV, error)
	// Txn applies ops atomically and durably if every cmp holds, and says
	// whether it did. Nothing is written when ok is false.
	Txn(ctx context.Context, cmps []Cmp, ops []Op) (ok bool, err error)
	// Next returns the next value of the named counter, starting at 1. It
	// never returns a value twice, across restarts and whichever client
	// asks: the value is durable before it is returned.
	Next(ctx context.Context, counter string) (uint64, error)
	// Close releases the store.
	Close() error
}

// Put writes value at key unconditionally.
func Put(ctx context.Context, s Store, key string, value []byte) error {
	_, err := s.Txn(ctx, nil, []Op{{Key: key, Value: value}})
	return err
}

// Delete removes key unconditionally.
func Delete(ctx context.Context, s Store, key string) error {
	_, err := s.Txn(ctx, nil, []Op{{Key: key, Delete: true}})
	return err
}

// maxRetries bounds Update's compare-and-swap loop.
const maxRetries = 64

// Update is a compare-and-swap read-modify-write of one key: fn gets the
// current value (nil, false when absent) and returns the new one (nil
// deletes; ErrSkip leaves it alone). It retries while another writer wins the
// race, and returns fn's error as is.
func Update(ctx context.Context, s Store, key string, fn func(old []byte, found bool) ([]byte, error)) error {
	for range maxRetries {
		kv, err := s.Get(ctx, key)
		found := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		nv, err := fn(kv.Value, found)
		if errors.Is(err, ErrSkip) {
			return nil
		}
		if err != nil {
			return err
		}
		op := Op{Key: key, Value: nv, Delete: nv == nil}
		ok, err := s.Txn(ctx, []Cmp{{Key: key, Rev: kv.Rev}}, []Op{op})
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return fmt.Errorf("%w: %s", ErrConflict, key)
}

// ErrSkip, returned by an Update function, leaves the key unchanged.
var ErrSkip = errors.New("store: skip")

func checkKey(k string) error {
	if k == "" || len(k) > MaxKeyLen {
		return fmt.Errorf("%w: %d bytes", ErrKey, len(k))
	}
	return nil
}
