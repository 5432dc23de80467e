// Command flightd is bootorbit's onboard daemon and its bench tools. Each
// subcommand lives in a file of its own and registers itself with commands.
package main

import "github.com/bootorbit/bootorbit/internal/cli"

var commands = &cli.Set{Name: "flightd", Summary: "bootorbit onboard update daemon and bench tools"}

func main() { commands.Main() }
