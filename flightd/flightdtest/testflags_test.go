package flightdtest

import _ "github.com/bootorbit/bootorbit/internal/testrand"
