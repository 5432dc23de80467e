// Package cli is the command-line base shared by bootorbit's three binaries
// (flightd, groundd, hil), on spf13/cobra: one root per binary, help at
// every level (`CMD --help`, `CMD help SUB`), shell completion, a context
// cancelled by SIGINT or SIGTERM, and one set of conventions, written in
// docs/cli.md:
//
//   - exit status 0 on success, 1 when the command failed, 2 on a usage
//     error (a bad flag or argument prints one error line and one hint);
//   - durations as Go durations (90s, 1m30s), sizes with units (64MiB,
//     5MB) or plain bytes, through DurationVar and SizeVar;
//   - --json and -v/--verbose on every command that prints (JSONFlag,
//     VerboseFlag, WriteJSON, Logger).
//
// A binary is an App; each of its files adds its commands to the App in an
// init function, as constructors, so that every Execute builds a fresh
// command tree: flag values never leak from one run into the next (tests
// run many command lines through one App).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// ErrUsage is wrapped by every usage error: a command whose flags or
// arguments are wrong. Execute prints the error and a hint and exits 2.
var ErrUsage = errors.New("usage")

// Usagef returns a usage error.
func Usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// usageMessage is err's text without the "usage: " prefix Usagef adds.
func usageMessage(err error) string {
	return strings.TrimPrefix(err.Error(), ErrUsage.Error()+": ")
}

// App is one binary: its name, what it is, its command groups and
// commands.
type App struct {
	Name  string // the binary's name, e.g. "flightd"
	Short string // one line: what the binary is
	Long  string // a paragraph, shown by `NAME --help`

	groups []group
	cmds   []added
}

type group struct{ name, short, long string }

type added struct {
	parent string // a group name, "" for the root
	mk     func() *cobra.Command
}

// Group declares a command group, such as "boot", whose subcommands are
// added with Add. Declaring a group twice (from two files) keeps the first
// summary.
func (a *App) Group(name, short, long string) {
	for _, g := range a.groups {
		if g.name == name {
			return
		}
	}
	a.groups = append(a.groups, group{name, short, long})
}

// Add adds the command mk builds below the group parent ("" for the
// root). mk is called by every Root and Execute.
func (a *App) Add(parent string, mk func() *cobra.Command) {
	a.cmds = append(a.cmds, added{parent, mk})
}

// Root builds the command tree, with the help and completion commands.
func (a *App) Root() *cobra.Command { return a.build(nil, nil) }

// build builds the command tree writing to stdout and stderr (nil: the
// process's). They are set before the completion command is made, which
// takes its output writer when it is made.
func (a *App) build(stdout, stderr io.Writer) *cobra.Command {
	root := newGroup(a.Name, a.Short, a.Long)
	if stdout != nil {
		root.SetOut(stdout)
	}
	if stderr != nil {
		root.SetErr(stderr)
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	})
	root.SetHelpTemplate(helpTemplate)
	root.CompletionOptions.HiddenDefaultCmd = false
	groups := map[string]*cobra.Command{"": root}
	for _, g := range a.groups {
		c := newGroup(g.name, g.short, g.long)
		groups[g.name] = c
		root.AddCommand(c)
	}
	for _, c := range a.cmds {
		p, ok := groups[c.parent]
		if !ok {
			panic("cli: command added to undeclared group " + c.parent)
		}
		p.AddCommand(c.mk())
	}
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}

// helpTemplate puts the one-line summary first, then the description,
// then cobra's usage (synopsis, examples, subcommands, flags).
const helpTemplate = `{{.CommandPath}}: {{.Short | trimTrailingWhitespaces}}
{{with .Long}}
{{. | trimTrailingWhitespaces}}
{{end}}
{{if or .Runnable .HasSubCommands}}{{.UsageString}}{{end}}`

// newGroup is a command that only holds subcommands: run bare it prints
// its help; with an argument that names no subcommand it is a usage error
// (cobra itself would print the help and exit 0).
func newGroup(name, short, long string) *cobra.Command {
	return &cobra.Command{
		Use:           name,
		Short:         short,
		Long:          long,
		Args:          cobra.ArbitraryArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		// The synopsis of a group is "NAME COMMAND", shown by cobra's
		// "NAME [command]" line; no "[flags]" of its own.
		DisableFlagsInUseLine:      true,
		SuggestionsMinimumDistance: 2,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				hint := ""
				if s := c.SuggestionsFor(args[0]); len(s) > 0 {
					hint = fmt.Sprintf(" (did you mean %q?)", s[0])
				}
				return Usagef("unknown command %q for %q%s", args[0], c.CommandPath(), hint)
			}
			return c.Help()
		},
	}
}

// Execute runs the command line args and returns the exit status. Errors
// go to stderr: a usage error as one line and a hint, exit 2; any other as
// "COMMAND PATH: error", exit 1.
func (a *App) Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := a.build(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	path := a.Name
	if cmd != nil {
		path = cmd.CommandPath()
	}
	if IsUsage(err) {
		fmt.Fprintf(stderr, "%s: %s\nRun '%s --help' for usage.\n", path, usageMessage(err), path)
		return ExitUsage
	}
	fmt.Fprintf(stderr, "%s: %v\n", path, err)
	return ExitFailure
}

// IsUsage reports whether err is a usage error: ours (ErrUsage), or
// cobra's for an unknown command or a wrong argument count.
func IsUsage(err error) bool {
	if errors.Is(err, ErrUsage) {
		return true
	}
	msg := err.Error()
	for _, p := range []string{"unknown command ", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least ", "requires at most ", "invalid argument "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// Main runs the binary: it executes os.Args[1:] under a context cancelled
// by SIGINT or SIGTERM and exits with the command's status.
func (a *App) Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := a.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// NoArgs is a cobra.Args that refuses any positional argument, as a usage
// error.
func NoArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return Usagef("unexpected argument %q", args[0])
	}
	return nil
}

// JSONFlag adds --json to c.
func JSONFlag(c *cobra.Command, p *bool) {
	c.Flags().BoolVar(p, "json", false, "print one JSON document (for scripts) instead of text")
}

// VerboseFlag adds -v/--verbose to c.
func VerboseFlag(c *cobra.Command, p *bool) {
	c.Flags().BoolVarP(p, "verbose", "v", false, "log progress and decisions to stderr")
}

// WriteJSON writes v as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Logger is the structured log of a command, on stderr: warnings and
// errors only, and everything from info up with verbose.
func Logger(stderr io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// Given reports whether the flag name was set on c's command line (as
// opposed to left at its default).
func Given(c *cobra.Command, name string) bool {
	return c.Flags().Changed(name)
}
