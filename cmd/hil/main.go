// Command hil is bootorbit's bench: scenarios, fault injection and the
// measurement commands that print our numbers beside those of other tools.
// Each subcommand lives in a file of its own and registers itself with commands.
package main

import "github.com/bootorbit/bootorbit/internal/cli"

var commands = &cli.Set{Name: "hil", Summary: "bootorbit hardware-in-the-loop bench and measurements"}

func main() { commands.Main() }
