package groundd

import _ "github.com/bootorbit/bootorbit/internal/testrand"
