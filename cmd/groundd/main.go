// Command groundd is bootorbit's ground daemon and its tools. Each subcommand
// lives in a file of its own and registers itself with commands.
package main

import "github.com/bootorbit/bootorbit/internal/cli"

var commands = &cli.Set{Name: "groundd", Summary: "bootorbit ground station update daemon and tools"}

func main() { commands.Main() }
