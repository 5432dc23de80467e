package groundd

import (
	"path/filepath"
	"testing"

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
