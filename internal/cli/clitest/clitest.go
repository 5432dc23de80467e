// Package clitest checks that a binary built on internal/cli keeps the
// command-line conventions: every command documented and answering
// --help, with a summary, a synopsis and its flags.
package clitest

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

// Run executes args through app and returns the exit status, stdout and
// stderr.
func Run(app *cli.App, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := app.Execute(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// CheckTree walks app's whole command tree: every command must have a
// Short and a Long or an Example, and `PATH --help` and `NAME help PATH`
// must exit 0 and print its summary, its synopsis ("Usage:") and its
// flags. It returns the command paths it checked.
func CheckTree(t *testing.T, app *cli.App) []string {
	t.Helper()
	var paths []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		path := c.CommandPath()
		paths = append(paths, path)
		if c.Short == "" || (c.Long == "" && c.Example == "") {
			t.Errorf("%s: want a Short and a Long or an Example (Short %q)", path, c.Short)
		}
		args := append(strings.Fields(path)[1:], "--help")
		for _, a := range [][]string{args, append([]string{"help"}, args[:len(args)-1]...)} {
			code, out, errOut := Run(app, a...)
			if code != 0 {
				t.Errorf("%s %v: exit %d, want 0; stderr %q", app.Name, a, code, errOut)
				continue
			}
			for _, want := range []string{strings.TrimSpace(c.Short), "Usage:", c.UseLine(), "Flags:", "-h, --help"} {
				if !strings.Contains(out, want) {
					t.Errorf("%s %v: help lacks %q:\n%s", app.Name, a, want, out)
				}
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(app.Root())
	return paths
}
