package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdConfig is how a station reaches the shared etcd cluster.
type EtcdConfig struct {
	// Endpoints are the cluster's client URLs (https://HOST:2379, ...).
	Endpoints []string `json:"endpoints"`
	// Prefix is prepended to every key (default "bootorbit/"), so that one
	// cluster can carry several ground networks, or other tenants.
	Prefix string `json:"prefix,omitempty"`
	// CAFile, CertFile and KeyFile are the TLS files: the cluster's CA, and
	// the station's client certificate and key (both or neither).
	CAFile   string `json:"ca_file,omitempty"`
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// DialTimeout bounds the first connection (default 5s).
	DialTimeout time.Duration `json:"-"`
	// RequestTimeout bounds every call that comes without a deadline of
	// its own (default 5s): a station cut off from the cluster gets an
	// error, not a wait without end.
	RequestTimeout time.Duration `json:"-"`
}

// DefaultEtcdPrefix is EtcdConfig.Prefix's default.
const DefaultEtcdPrefix = "bootorbit/"

// Validate checks the configuration without touching the files it names.
func (c *EtcdConfig) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("store: etcd: endpoints are required")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("store: etcd: cert_file and key_file go together")
	}
	return nil
}

// Etcd is a Store on an etcd cluster: the shared state of several ground
// stations. Values are stored as they are (no header): etcd keeps each key's
// modification revision, which is KV.Rev. A Txn is one etcd transaction
// whose comparisons are on mod revisions (a missing key's is 0), so every
// read-modify-write that two stations race on is a compare-and-swap; Next is
// a compare-and-swap loop on the counter's key, so no two stations are ever
// handed the same value. etcd commits a transaction through raft to a
// majority of members, each of which has fsynced it, before it answers: a
// Txn or a Next is durable when it returns.
type Etcd struct {
	cli    *clientv3.Client
	prefix string
	// kv and ctr are where values and counters live under prefix: apart,
	// as in Bolt's two buckets, so no key can alias a counter.
	kv, ctr string
	own     bool
	timeout time.Duration

	mu     sync.Mutex
	closed bool
}

// OpenEtcd connects to the cluster of c. Close it.
func OpenEtcd(c EtcdConfig) (*Etcd, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cc := clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout,
		// The client's own logger is zap; groundd logs with slog, and the
		// client's errors reach it through the calls that fail.
		Logger: zap.NewNop(),
		// A station cut off from the cluster must notice: keepalives on
		// the connection, also while no call is in flight.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		PermitWithoutStream:  true,
	}
	if cc.DialTimeout == 0 {
		cc.DialTimeout = 5 * time.Second
	}
	if c.CAFile != "" || c.CertFile != "" {
		tc, err := tlsConfig(c)
		if err != nil {
			return nil, err
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("store: etcd: %w", err)
	}
	s := NewEtcd(cli, c.Prefix)
	s.own = true
	if c.RequestTimeout > 0 {
		s.timeout = c.RequestTimeout
	}
	return s, nil
}

func tlsConfig(c EtcdConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("store: etcd: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("store: etcd: ca_file %s: no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		crt, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			// The key file's content is never echoed.
			return nil, fmt.Errorf("store: etcd: client certificate %s: %w", c.CertFile, err)
		}
		tc.Certificates = []tls.Certificate{crt}
	}
	return tc, nil
}

// NewEtcd is a Store on an existing client, its keys under prefix (""
// means DefaultEtcdPrefix). Close leaves the client open.
func NewEtcd(cli *clientv3.Client, prefix string) *Etcd {
	if prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	return &Etcd{cli: cli, prefix: prefix, kv: prefix + "kv/", ctr: prefix + prefixCtr, timeout: defaultRequestTimeout}
}

// Client is the store's etcd client: the station's election shares it.
func (e *Etcd) Client() *clientv3.Client { return e.cli }

// Prefix is the prefix of the store's keys in etcd.
func (e *Etcd) Prefix() string { return e.prefix }

// defaultRequestTimeout is EtcdConfig.RequestTimeout's default.
const defaultRequestTimeout = 5 * time.Second

// bound gives ctx the store's request timeout unless it has a deadline.
func (e *Etcd) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, e.timeout)
}

func (e *Etcd) live() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	return nil
}

func etcdErr(what string, err error) error { return fmt.Errorf("store: etcd %s: %w", what, err) }

// Get implements Store.
func (e *Etcd) Get(ctx context.Context, key string) (KV, error) {
	if err := checkKey(key); err != nil {
		return KV{}, err
	}
	if err := e.live(); err != nil {
		return KV{}, err
	}
	ctx, cancel := e.bound(ctx)
	defer cancel()
	r, err := e.cli.Get(ctx, e.kv+key)
	if err != nil {
		return KV{}, etcdErr("get", err)
	}
	if len(r.Kvs) == 0 {
		return KV{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	kv := r.Kvs[0]
	return KV{Key: key, Value: kv.Value, Rev: kv.ModRevision}, nil
}

// listPage bounds one range request of List: a long list is read in pages,
// all at the revision of the first, so that it is one consistent snapshot.
const listPage = 1000

// List implements Store.
func (e *Etcd) List(ctx context.Context, prefix string) ([]KV, error) {
	if err := e.live(); err != nil {
		return nil, err
	}
	ctx, cancel := e.bound(ctx)
	defer cancel()
	full := e.kv + prefix
	end := clientv3.GetPrefixRangeEnd(full)
	var out []KV
	var rev int64
	from := full
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		r, err := e.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, etcdErr("list", err)
		}
		if rev == 0 {
			rev = r.Header.Revision
		}
		for _, kv := range r.Kvs {
			out = append(out, KV{Key: string(kv.Key[len(e.kv):]), Value: kv.Value, Rev: kv.ModRevision})
		}
		if !r.More || len(r.Kvs) == 0 {
			return out, nil
		}
		from = string(r.Kvs[len(r.Kvs)-1].Key) + "\x00"
	}
}

// Txn implements Store.
func (e *Etcd) Txn(ctx context.Context, cmps []Cmp, ops []Op) (bool, error) {
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
	if err := e.live(); err != nil {
		return false, err
	}
	ctx, cancel := e.bound(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if len(cmps) == 0 && len(ops) == 0 {
		return true, nil
	}
	ifs := make([]clientv3.Cmp, 0, len(cmps))
	for _, c := range cmps {
		ifs = append(ifs, clientv3.Compare(clientv3.ModRevision(e.kv+c.Key), "=", c.Rev))
	}
	// etcd refuses two writes of one key in a transaction; the Store
	// contract applies ops in order, so the last write of a key wins.
	last := map[string]int{}
	for i, o := range ops {
		last[o.Key] = i
	}
	thens := make([]clientv3.Op, 0, len(ops))
	for i, o := range ops {
		if last[o.Key] != i {
			continue
		}
		if o.Delete {
			thens = append(thens, clientv3.OpDelete(e.kv+o.Key))
		} else {
			thens = append(thens, clientv3.OpPut(e.kv+o.Key, string(o.Value)))
		}
	}
	r, err := e.cli.Txn(ctx).If(ifs...).Then(thens...).Commit()
	if err != nil {
		return false, etcdErr("txn", err)
	}
	return r.Succeeded, nil
}

// Next implements Store: a compare-and-swap loop on the counter's key, so
// that of two stations asking at once one wins and the other reads the new
// value and tries again.
func (e *Etcd) Next(ctx context.Context, counter string) (uint64, error) {
	if err := checkKey(counter); err != nil {
		return 0, err
	}
	if err := e.live(); err != nil {
		return 0, err
	}
	ctx, cancel := e.bound(ctx)
	defer cancel()
	key := e.ctr + counter
	for range maxRetries {
		r, err := e.cli.Get(ctx, key)
		if err != nil {
			return 0, etcdErr("counter "+counter, err)
		}
		var n uint64
		var rev int64
		if len(r.Kvs) > 0 {
			rev = r.Kvs[0].ModRevision
			if n, err = strconv.ParseUint(string(r.Kvs[0].Value), 10, 64); err != nil {
				return 0, fmt.Errorf("store: etcd counter %s: corrupt value", counter)
			}
		}
		n++
		t, err := e.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, strconv.FormatUint(n, 10))).Commit()
		if err != nil {
			return 0, etcdErr("counter "+counter, err)
		}
		if t.Succeeded {
			return n, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("%w: counter %s", ErrConflict, counter)
}

// Close implements Store: it closes the client if OpenEtcd opened it.
func (e *Etcd) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	if e.own {
		return e.cli.Close()
	}
	return nil
}
