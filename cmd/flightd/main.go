//go:build linux

// Command flightd is bootorbit's onboard daemon and its bench tools. Each
// command group lives in a file of its own and registers itself with
// commands; the conventions (help, exit codes, units, --json) are
// internal/cli's, described in docs/cli.md.
//
// flightd runs on Linux only, like the flightd library: every file of this
// command carries a linux build constraint, so that building it for another
// system stops at once with "build constraints exclude all Go files"
// (internal/repotest checks that every file keeps it).
package main

import "github.com/bootorbit/bootorbit/internal/cli"

var commands = &cli.App{
	Name:  "flightd",
	Short: "bootorbit onboard update daemon and bench tools",
	Long: `flightd runs on the flight computer: it installs OS images into the inactive
A/B slot, arms them for a trial boot in the bootloader environment, and
commits or abandons them. Its commands are the same steps the daemon takes,
for the bench and for an engineer at the console.

Exit status: 0 ok, 1 the command failed, 2 bad usage.`,
}

func main() { commands.Main() }
