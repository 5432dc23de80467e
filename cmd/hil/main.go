// Command hil is bootorbit's bench: scenarios, fault injection and the
// measurement commands that print our numbers beside those of other tools.
// Each command lives in a file of its own and registers itself with
// commands; the conventions (help, exit codes, units, --json) are
// internal/cli's, described in docs/cli.md.
package main

import "github.com/bootorbit/bootorbit/internal/cli"

var commands = &cli.App{
	Name:  "hil",
	Short: "bootorbit hardware-in-the-loop bench and measurements",
	Long: `hil is the bench that proves the daemons before anything flies: an emulated
disk, a QEMU arm64 board with a real watchdog driver, and the measurement
commands that print our figures beside those of other tools, measured side by
side in one run.

Exit status: 0 ok, 1 the command failed, 2 bad usage.`,
}

func main() { commands.Main() }
