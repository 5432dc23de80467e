package transfertest_test

// Every test binary of the module accepts -seed and -long; see internal/testrand.
import _ "github.com/bootorbit/bootorbit/internal/testrand"
