package store_test

import (
	"path/filepath"
	"testing"

	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/groundd/store/etcdtest"
	"github.com/bootorbit/bootorbit/groundd/store/storetest"
)

func TestBoltConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		s, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, func() store.Store { return s }
	})
}

// TestEtcdConformance runs the suite on a one-member etcd cluster started by
// the test; each run gets a prefix of its own, and a second handle is a
// second client, as a second station's.
func TestEtcdConformance(t *testing.T) {
	c := etcdtest.Start(t, 1)
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		prefix := "test/" + t.Name() + "/"
		open := func() store.Store {
			s, err := store.OpenEtcd(store.EtcdConfig{Endpoints: c.Endpoints(), Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		return open(), open
	})
}
