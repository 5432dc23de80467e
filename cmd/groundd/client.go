package main

import (
	"cmp"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// The operator commands (queue, vehicles, transfers, cmd, tlm) are clients
// of a running groundd's HTTP API (groundd/api, docs/groundd-api.md).

// Environment variables that set the defaults of the client flags.
const (
	serverEnv  = "GROUNDD_SERVER"
	apiCAEnv   = "GROUNDD_API_CA"
	apiCertEnv = "GROUNDD_API_CERT"
	apiKeyEnv  = "GROUNDD_API_KEY"
)

// clientFlags are the flags of every API client command.
type clientFlags struct {
	server, tokenFile string
	ca, cert, key     string
	json, verbose     bool
}

func addClientFlags(c *cobra.Command, f *clientFlags) {
	fs := c.Flags()
	fs.StringVar(&f.server, "server", cmp.Or(os.Getenv(serverEnv), "http://"+api.DefaultAddr), "the groundd API `URL`, http:// or https:// ($"+serverEnv+" sets the default)")
	fs.StringVar(&f.tokenFile, "token-file", "", "`FILE` holding the API's bearer token (needed when the server has one)")
	fs.StringVar(&f.ca, "api-ca", os.Getenv(apiCAEnv), "trust the PEM CA certificates in `FILE` for an https:// server (default: the system's; $"+apiCAEnv+")")
	fs.StringVar(&f.cert, "api-cert", os.Getenv(apiCertEnv), "present the PEM client certificate in `FILE` to an https:// server that asks for one ($"+apiCertEnv+")")
	fs.StringVar(&f.key, "api-key", os.Getenv(apiKeyEnv), "the PEM private key of --api-cert, in `FILE` ($"+apiKeyEnv+")")
	cli.JSONFlag(c, &f.json)
	cli.VerboseFlag(c, &f.verbose)
}

// client returns the API client the flags name for command c; with -v it
// logs every request to c's standard error.
func (f *clientFlags) client(c *cobra.Command) (*api.Client, error) {
	tok := ""
	if f.tokenFile != "" {
		b, err := readBounded(f.tokenFile, api.MaxToken+2)
		if err != nil {
			return nil, err
		}
		tok = strings.TrimSpace(string(b))
	}
	cl, err := api.NewClient(f.server, tok)
	if err != nil {
		return nil, cli.Usagef("%v", err)
	}
	if (f.cert == "") != (f.key == "") {
		return nil, cli.Usagef("--api-cert and --api-key go together")
	}
	if f.ca != "" || f.cert != "" {
		if !strings.HasPrefix(f.server, "https://") {
			return nil, cli.Usagef("--api-ca, --api-cert and --api-key need an https:// --server, not %q", f.server)
		}
		tc, err := api.ClientTLS(f.ca, f.cert, f.key)
		if err != nil {
			return nil, err
		}
		if err := cl.UseTLS(tc); err != nil {
			return nil, err
		}
	}
	if f.verbose {
		next := cl.HTTP.Transport
		if next == nil {
			next = http.DefaultTransport
		}
		cl.HTTP.Transport = loggingTransport{next, cli.Logger(c.ErrOrStderr(), f.verbose)}
	}
	return cl, nil
}

// print writes v as JSON with --json, else the line format makes of a.
func (f *clientFlags) print(c *cobra.Command, v any, format string, a ...any) error {
	if f.json {
		return cli.WriteJSON(c.OutOrStdout(), v)
	}
	fmt.Fprintf(c.OutOrStdout(), format, a...)
	return nil
}

// orEmpty returns s, or an empty list for nil: JSON documents show no
// list as [], never null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// loggingTransport logs each request's method, path, status and time.
type loggingTransport struct {
	next http.RoundTripper
	log  *slog.Logger
}

func (t loggingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		t.log.Info("api request failed", "method", r.Method, "url", r.URL.String(), "err", err)
		return nil, err
	}
	t.log.Info("api request", "method", r.Method, "url", r.URL.String(), "status", resp.StatusCode, "took", time.Since(start).Round(time.Millisecond))
	return resp, nil
}

// readBounded reads a small file, refusing one larger than max.
func readBounded(name string, max int64) ([]byte, error) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: longer than %d bytes", name, max)
	}
	return b, nil
}

// now is the clock of relative times (tests replace it).
var now = time.Now

// parseWhen reads a time flag: RFC 3339 (2026-12-07T08:00:00Z) or a Go
// duration from now (6h, 90m).
func parseWhen(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now().Add(d).UTC().Truncate(time.Second), nil
	}
	return time.Time{}, cli.Usagef("--%s %q: want an RFC 3339 time (2026-12-07T08:00:00Z) or a duration from now (6h)", flag, s)
}

// isTerminal reports whether w is a terminal, where progress bars go.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) { fmt.Fprintln(t.tw, strings.Join(cols, "\t")) }
func (t *table) flush() error       { return t.tw.Flush() }

// when formats a time for a table: UTC to the second, "-" for none.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// age says how long ago t was, "never" for none.
func age(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now().Sub(t)
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second).String() + " ago"
}

// bytesText writes a byte count with a binary unit, one decimal.
func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// values writes a record's values as NAME=VALUE, sorted by name.
func values(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%v", k, m[k])
	}
	return b.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
