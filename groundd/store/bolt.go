package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bolt is a Store in one bbolt file: the embedded default for a single
// ground station. Every value is stored behind the 8-byte revision of the
// transaction that wrote it; the store's revision and the counters live in a
// bucket of their own. bbolt commits are atomic and fsynced, so a Txn or a
// Next is durable when it returns.
type Bolt struct {
	db *bolt.DB

	mu     sync.Mutex
	closed bool
}

var (
	bucketKV   = []byte("kv")
	bucketMeta = []byte("meta")
	keyRev     = []byte("rev")
	prefixCtr  = "ctr/"
)

// OpenBolt opens (creating if needed) the store at path.
func OpenBolt(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketKV, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: init %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

func (b *Bolt) live() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	return nil
}

func decodeValue(key string, v []byte) (KV, error) {
	if len(v) < 8 {
		return KV{}, fmt.Errorf("store: corrupt value at %q", key)
	}
	return KV{Key: key, Rev: int64(binary.BigEndian.Uint64(v)), Value: bytes.Clone(v[8:])}, nil
}

// Get implements Store.
func (b *Bolt) Get(ctx context.Context, key string) (KV, error) {
	if err := checkKey(key); err != nil {
		return KV{}, err
	}
	if err := b.live(); err != nil {
		return KV{}, err
	}
	var kv KV
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketKV).Get([]byte(key))
		if v == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		var err error
		kv, err = decodeValue(key, v)
		return err
	})
	return kv, err
}

// List implements Store.
func (b *Bolt) List(ctx context.Context, prefix string) ([]KV, error) {
	if err := b.live(); err != nil {
		return nil, err
	}
	var out []KV
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketKV).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			kv, err := decodeValue(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, kv)
		}
		return nil
	})
	return out, err
}

// Txn implements Store.
func (b *Bolt) Txn(ctx context.Context, cmps []Cmp, ops []Op) (bool, error) {
	for _, c := range cmps {
		if err := checkKey(c.Key); err != nil {
			return false, err
		}
	}
	for _, o := range ops {
		if err := checkKey(o.Key); err != nil {
			return false, err
		}
	}
	if err := b.live(); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	ok := true
	err := b.db.Update(func(tx *bolt.Tx) error {
		kvb := tx.Bucket(bucketKV)
		for _, c := range cmps {
			var rev int64
			if v := kvb.Get([]byte(c.Key)); v != nil {
				kv, err := decodeValue(c.Key, v)
				if err != nil {
					return err
				}
				rev = kv.Rev
			}
			if rev != c.Rev {
				ok = false
				return nil
			}
		}
		if len(ops) == 0 {
			return nil
		}
		rev, err := bumpRev(tx)
		if err != nil {
			return err
		}
		for _, o := range ops {
			if o.Delete {
				if err := kvb.Delete([]byte(o.Key)); err != nil {
					return err
				}
				continue
			}
			v := make([]byte, 8+len(o.Value))
			binary.BigEndian.PutUint64(v, uint64(rev))
			copy(v[8:], o.Value)
			if err := kvb.Put([]byte(o.Key), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store: txn: %w", err)
	}
	return ok, nil
}

func bumpRev(tx *bolt.Tx) (int64, error) {
	return bump(tx.Bucket(bucketMeta), keyRev)
}

// bump increments the counter at key. A counter record that is not 8
// bytes is an error: starting again from 1 would hand out ids, sequence
// numbers and revisions a second time.
func bump(b *bolt.Bucket, key []byte) (int64, error) {
	var n uint64
	if v := b.Get(key); v != nil {
		if len(v) != 8 {
			return 0, fmt.Errorf("store: counter %q: corrupt record of %d bytes", key, len(v))
		}
		n = binary.BigEndian.Uint64(v)
	}
	n++
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], n)
	return int64(n), b.Put(key, v[:])
}

// Next implements Store.
func (b *Bolt) Next(ctx context.Context, counter string) (uint64, error) {
	if err := checkKey(counter); err != nil {
		return 0, err
	}
	if err := b.live(); err != nil {
		return 0, err
	}
	var n int64
	err := b.db.Update(func(tx *bolt.Tx) error {
		var err error
		n, err = bump(tx.Bucket(bucketMeta), []byte(prefixCtr+counter))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: counter %s: %w", counter, err)
	}
	return uint64(n), nil
}

// Close implements Store.
func (b *Bolt) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	return b.db.Close()
}
