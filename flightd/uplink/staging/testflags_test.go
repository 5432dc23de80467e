package staging

import _ "github.com/bootorbit/bootorbit/internal/testrand"
