package uplink

import _ "github.com/bootorbit/bootorbit/internal/testrand"
