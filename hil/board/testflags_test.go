package board_test

import _ "github.com/bootorbit/bootorbit/internal/testrand"
