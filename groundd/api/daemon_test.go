package api_test

import (
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/groundd/api/apitest"
)

// The real Daemon and the fake serve the same API.
var (
	_ api.Daemon    = (*groundd.Daemon)(nil)
	_ api.Daemon    = (*apitest.Fake)(nil)
	_ api.Counterer = (*apitest.Fake)(nil)
)
