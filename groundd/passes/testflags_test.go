package passes

import _ "github.com/bootorbit/bootorbit/internal/testrand"
