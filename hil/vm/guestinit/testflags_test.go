//go:build linux

package main

import _ "github.com/bootorbit/bootorbit/internal/testrand"
