package cli

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func testApp(got *[]string) *App {
	a := &App{Name: "x", Short: "test binary", Long: "A binary for the tests."}
	a.Group("boot", "boot commands", "Boot commands.")
	a.Add("boot", func() *cobra.Command {
		var j bool
		c := &cobra.Command{Use: "status", Short: "show", Long: "Show.", Args: NoArgs,
			RunE: func(c *cobra.Command, args []string) error {
				*got = append(*got, "boot status", map[bool]string{true: "json", false: "text"}[j])
				return nil
			}}
		JSONFlag(c, &j)
		return c
	})
	a.Add("", func() *cobra.Command {
		var size int64
		var d time.Duration
		c := &cobra.Command{Use: "delta", Short: "delta", Long: "Delta.", Args: NoArgs,
			RunE: func(c *cobra.Command, args []string) error {
				*got = append(*got, "delta", FormatSize(size), d.String())
				if !Given(c, "out") {
					return Usagef("missing --out")
				}
				return nil
			}}
		c.Flags().String("out", "", "")
		SizeVar(c.Flags(), &size, "part-size", 64<<10, "")
		DurationVar(c.Flags(), &d, "timeout", time.Minute, "")
		return c
	})
	a.Add("", func() *cobra.Command {
		return &cobra.Command{Use: "fail", Short: "fail", Long: "Fail.", RunE: func(*cobra.Command, []string) error { return errors.New("boom") }}
	})
	return a
}

func TestExecute(t *testing.T) {
	var got []string
	a := testApp(&got)
	cases := []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"boot", "status", "--json"}, 0, ""},
		{[]string{"boot", "status"}, 0, ""}, // --json of the run before does not stick
		{[]string{"delta"}, 2, "x delta: missing --out\nRun 'x delta --help' for usage.\n"},
		{[]string{"delta", "--out", "f", "--part-size", "2MiB", "--timeout", "90s"}, 0, ""},
		{[]string{"delta", "--part-size", "2Mb"}, 2, `invalid argument "2Mb" for "--part-size" flag: bad size`},
		{[]string{"delta", "--timeout", "90"}, 2, `invalid argument "90" for "--timeout" flag`},
		{[]string{"delta", "--bogus"}, 2, "x delta: unknown flag: --bogus\nRun 'x delta --help' for usage.\n"},
		{[]string{"fail"}, 1, "x fail: boom\n"},
		{[]string{"nope"}, 2, `unknown command "nope" for "x"`},
		{[]string{"boot", "stat"}, 2, `unknown command "stat" for "x boot" (did you mean "status"?)`},
		{[]string{"boot", "status", "extra"}, 2, `unexpected argument "extra"`},
		{nil, 0, ""},
		{[]string{"boot"}, 0, ""},
		{[]string{"help", "boot", "status"}, 0, ""},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		if code := a.Execute(context.Background(), c.args, &out, &errb); code != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", c.args, code, c.code, errb.String())
		}
		if !strings.Contains(errb.String(), c.err) {
			t.Errorf("%v: stderr %q lacks %q", c.args, errb.String(), c.err)
		}
		// One error, one hint: the usage is never printed twice.
		if strings.Count(errb.String(), "--help' for usage") > 1 || strings.Contains(errb.String(), "Flags:") {
			t.Errorf("%v: stderr repeats the usage: %q", c.args, errb.String())
		}
	}
	if want := "boot status json boot status text delta 64KiB 1m0s delta 2MiB 1m30s"; strings.Join(got, " ") != want {
		t.Errorf("runs: %q, want %q", strings.Join(got, " "), want)
	}
}

// TestParseSize keeps the assertions of the size parser it replaces
// (cmd/hil's), plus fw_env.config's hex and the refusal of a leading 0.
func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"200MiB": 200 << 20, "1GiB": 1 << 30, "5MB": 5e6, "4096": 4096, "2M": 2 << 20,
		"0": 0, "0x2000": 0x2000, "0X10": 16, "64 KiB": 64 << 10, "12B": 12} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x", "-1MiB", "99999999GiB", "010", "8_192", "0b10", "+5", "0x", "1.5MiB", "5mb", "0x-1", "MiB"} {
		if n, err := ParseSize(bad); err == nil {
			t.Errorf("%q accepted as %d", bad, n)
		}
	}
	for n, want := range map[int64]string{0: "0", 4096: "4KiB", 200 << 20: "200MiB", 1000: "1000", 1 << 30: "1GiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
