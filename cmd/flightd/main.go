//go:build linux

// Command flightd is bootorbit's onboard daemon and its bench tools. Each
// subcommand lives in a file of its own and registers itself with commands.
//
// flightd runs on Linux only, like the flightd library: every file of this
// command carries a linux build constraint, so that building it for another
// system stops at once with "build constraints exclude all Go files"
// (internal/repotest checks that every file keeps it).
package main

import "github.com/bootorbit/bootorbit/internal/cli"

var commands = &cli.Set{Name: "flightd", Summary: "bootorbit onboard update daemon and bench tools"}

func main() { commands.Main() }
