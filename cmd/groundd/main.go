// Command groundd is bootorbit's ground daemon and its tools. Each command
// lives in a file of its own and registers itself with commands; the
// conventions (help, exit codes, units, --json) are internal/cli's,
// described in docs/cli.md.
package main

import "github.com/bootorbit/bootorbit/internal/cli"

var commands = &cli.App{
	Name:  "groundd",
	Short: "bootorbit ground station update daemon and tools",
	Long: `groundd runs at the ground station: it plans what to send for an update
(nothing, a delta or the full layer, per layer) and sends it over the link
during passes. Its tools compute what the daemon would send.

Exit status: 0 ok, 1 the command failed, 2 bad usage.`,
}

func main() { commands.Main() }
