package demo_test

import _ "github.com/bootorbit/bootorbit/internal/testrand"
