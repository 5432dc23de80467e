package journal

import _ "github.com/bootorbit/bootorbit/internal/testrand"
