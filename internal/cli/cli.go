// Package cli is the small subcommand dispatcher shared by bootorbit's
// binaries. A binary declares a Set; each of its files adds its subcommands to
// the Set in an init function, so that capabilities land in separate files.
// Main parses nothing itself: it picks the subcommand (one or two words, such
// as "boot status") and hands it the remaining arguments and a context that is
// cancelled on SIGINT or SIGTERM.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// ErrUsage is returned by a command whose arguments are wrong; Main prints the
// command's usage and exits with status 2.
var ErrUsage = errors.New("usage")

// Command is one subcommand of a binary.
type Command struct {
	// Name is the words that select the command, such as "delta" or
	// "boot status".
	Name string
	// Args is the argument synopsis shown in usage, such as "--bundle FILE".
	Args string
	// Summary is one line that says what the command does.
	Summary string
	// Run runs the command with the arguments that follow its name. Output
	// for people and scripts goes to stdout; diagnostics go to stderr.
	Run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// Set is the subcommands of one binary.
type Set struct {
	Name     string // the binary's name
	Summary  string // what the binary is
	commands map[string]Command
}

// Add registers c. It panics on a duplicate name, which is a programming error.
func (s *Set) Add(c Command) {
	if s.commands == nil {
		s.commands = make(map[string]Command)
	}
	if _, dup := s.commands[c.Name]; dup {
		panic("cli: duplicate command " + c.Name)
	}
	s.commands[c.Name] = c
}

// Lookup finds the command named by the first one or two words of args and
// returns it with the rest of args.
func (s *Set) Lookup(args []string) (Command, []string, bool) {
	if len(args) >= 2 {
		if c, ok := s.commands[args[0]+" "+args[1]]; ok {
			return c, args[2:], true
		}
	}
	if len(args) >= 1 {
		if c, ok := s.commands[args[0]]; ok {
			return c, args[1:], true
		}
	}
	return Command{}, nil, false
}

// Usage writes the list of commands.
func (s *Set) Usage(w io.Writer) {
	fmt.Fprintf(w, "%s: %s\n\nusage: %s COMMAND [flags]\n\ncommands:\n", s.Name, s.Summary, s.Name)
	names := make([]string, 0, len(s.commands))
	for n := range s.commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := s.commands[n]
		fmt.Fprintf(w, "  %s %s\n      %s\n", n, c.Args, c.Summary)
	}
}

// Execute runs the command selected by args and returns the process exit
// status: 0 on success, 1 when the command failed, 2 on a usage error.
func (s *Set) Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		s.Usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, rest, ok := s.Lookup(args)
	if !ok {
		fmt.Fprintf(stderr, "%s: unknown command %q\n\n", s.Name, strings.Join(args[:min(2, len(args))], " "))
		s.Usage(stderr)
		return 2
	}
	err := c.Run(ctx, rest, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrUsage):
		fmt.Fprintf(stderr, "%s %s: %v\nusage: %s %s %s\n", s.Name, c.Name, err, s.Name, c.Name, c.Args)
		return 2
	default:
		fmt.Fprintf(stderr, "%s %s: %v\n", s.Name, c.Name, err)
		return 1
	}
}

// Main runs the binary: it executes os.Args[1:] under a context cancelled by
// SIGINT or SIGTERM and exits with the command's status.
func (s *Set) Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := s.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Usagef returns an error that makes Execute print usage and exit 2.
func Usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// FlagSet returns a flag set for a command that reports errors as usage
// errors rather than exiting, with its output sent to stderr.
func FlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// Given reports whether the flag name was set on the command line (as
// opposed to left at its default).
func Given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// Parse parses args with fs and turns a flag error into a usage error.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return nil
}
