package gatewaytest

import (
	"testing"

	"github.com/bootorbit/bootorbit/groundd/gateway"
)

func TestMemArchive(t *testing.T) {
	TestArchive(t, func(*testing.T) gateway.Archive { return new(Archive) })
}
