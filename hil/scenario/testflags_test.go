package scenario_test

import _ "github.com/bootorbit/bootorbit/internal/testrand"
