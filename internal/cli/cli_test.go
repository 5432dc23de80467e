package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestExecute(t *testing.T) {
	var got []string
	s := &Set{Name: "x", Summary: "test binary"}
	s.Add(Command{Name: "boot status", Run: func(_ context.Context, args []string, _, _ io.Writer) error {
		got = append([]string{"boot status"}, args...)
		return nil
	}})
	s.Add(Command{Name: "delta", Args: "--out FILE", Run: func(_ context.Context, args []string, _, _ io.Writer) error {
		return Usagef("missing --out")
	}})
	s.Add(Command{Name: "fail", Run: func(context.Context, []string, io.Writer, io.Writer) error {
		return errors.New("boom")
	}})
	var out, errb bytes.Buffer
	cases := []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"boot", "status", "--json"}, 0, ""},
		{[]string{"delta"}, 2, "missing --out"},
		{[]string{"fail"}, 1, "x fail: boom"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{nil, 2, "commands:"},
	}
	for _, c := range cases {
		errb.Reset()
		if code := s.Execute(context.Background(), c.args, &out, &errb); code != c.code {
			t.Errorf("%v: exit %d, want %d", c.args, code, c.code)
		}
		if !strings.Contains(errb.String(), c.err) {
			t.Errorf("%v: stderr %q lacks %q", c.args, errb.String(), c.err)
		}
	}
	if strings.Join(got, " ") != "boot status --json" {
		t.Errorf("two-word command got args %q", got)
	}
}

func TestGiven(t *testing.T) {
	fs := FlagSet("x", io.Discard)
	fs.Int("n", 4, "")
	fs.Int("m", 4, "")
	if err := Parse(fs, []string{"-n", "4"}); err != nil {
		t.Fatal(err)
	}
	if !Given(fs, "n") || Given(fs, "m") || Given(fs, "nope") {
		t.Errorf("Given: n %v, m %v, nope %v; want true, false, false", Given(fs, "n"), Given(fs, "m"), Given(fs, "nope"))
	}
}
