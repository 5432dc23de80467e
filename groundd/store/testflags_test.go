package store

import _ "github.com/bootorbit/bootorbit/internal/testrand"
