package xtce_test

// Every test binary of the module accepts -seed and -long, so that
// go test ./... -args -long (or -seed=N) runs in every package; see
// internal/testrand and internal/repotest's TestEveryTestBinaryTakesSeedAndLong.
import _ "github.com/bootorbit/bootorbit/internal/testrand"
