package groundd

import (
	"path/filepath"

	"github.com/bootorbit/bootorbit/groundd/store"
)

// openStore opens the store cfg names: the embedded bbolt file in the state
// directory, or the etcd cluster several stations share.
func openStore(cfg Config) (store.Store, error) {
	if cfg.Store == "etcd" {
		return store.OpenEtcd(cfg.Etcd)
	}
	return store.OpenBolt(filepath.Join(cfg.StateDir, "state.db"))
}
