package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", newTlm)
}

func newTlm() *cobra.Command {
	var f clientFlags
	var q api.TelemetryQuery
	var from, to string
	var follow bool
	c := &cobra.Command{
		Use:   "tlm VEHICLE",
		Short: "show a vehicle's archived telemetry and events, or follow them live",
		Long: `Tlm prints the telemetry packets (hk.slots, hk.boot, ...) and events
(install_done, rolled_back, ...) groundd archived for a vehicle, decoded
with the dictionary, oldest first, received in [--from, --to). --from and
--to take an RFC 3339 time or a duration from now (-1h: an hour ago).
With --follow it goes on printing records as they arrive until
interrupted (with --json: one JSON document per line).`,
		Example: `  groundd tlm 7 --from -2h
  groundd tlm 7 --name hk.slots --limit 1 --json
  groundd tlm 7 --follow --kind event`,
		Args: exactArgs(1, "a VEHICLE"),
		RunE: func(c *cobra.Command, args []string) error {
			vid, err := vehicleID(args[0])
			if err != nil {
				return err
			}
			if q.From, err = parseWhen("from", from); err != nil {
				return err
			}
			if q.To, err = parseWhen("to", to); err != nil {
				return err
			}
			if q.Limit < 0 || q.Limit > api.MaxTelemetryLimit {
				return cli.Usagef("--limit %d: want 0 (the server's default) to %d", q.Limit, api.MaxTelemetryLimit)
			}
			switch q.Kind {
			case "", "tm", "event":
			default:
				return cli.Usagef("--kind %q: want tm or event", q.Kind)
			}
			cl, err := f.client(c)
			if err != nil {
				return err
			}
			ctx, out := c.Context(), c.OutOrStdout()
			if follow {
				enc := json.NewEncoder(out)
				err := cl.FollowTelemetry(ctx, vid, q, func(r groundd.TelemetryRecord) error {
					if f.json {
						return enc.Encode(r)
					}
					_, err := fmt.Fprintln(out, recordLine(r))
					return err
				})
				if errors.Is(err, io.EOF) {
					return errors.New("the server ended the stream")
				}
				return err
			}
			recs, err := cl.Telemetry(ctx, vid, q)
			if err != nil {
				return err
			}
			if f.json {
				return cli.WriteJSON(out, orEmpty(recs))
			}
			if len(recs) == 0 {
				fmt.Fprintln(out, "no telemetry in that range")
				return nil
			}
			return recordTable(out, recs)
		},
	}
	fs := c.Flags()
	fs.StringVar(&from, "from", "", "records received from `TIME` on (RFC 3339 or a duration from now: -1h)")
	fs.StringVar(&to, "to", "", "records received before `TIME`")
	fs.StringVar(&q.Name, "name", "", "only this packet or event (`NAME`: hk.slots, install_done)")
	fs.StringVar(&q.Kind, "kind", "", "only telemetry packets (tm) or events (event)")
	fs.IntVar(&q.Limit, "limit", 0, "at most `N` records (0: the server's default, 1000)")
	fs.BoolVar(&follow, "follow", false, "go on printing records as they arrive")
	addClientFlags(c, &f)
	return c
}

func recordTable(w io.Writer, recs []groundd.TelemetryRecord) error {
	t := newTable(w, "RECEIVED", "KIND", "NAME", "SEQ", "VALUES")
	for _, r := range recs {
		t.row(when(r.Received), r.Kind, r.Name, strconv.FormatUint(uint64(r.Seq), 10), recordValues(r))
	}
	return t.flush()
}

func recordLine(r groundd.TelemetryRecord) string {
	return fmt.Sprintf("%s %s %s #%d %s", when(r.Received), r.Kind, r.Name, r.Seq, recordValues(r))
}

func recordValues(r groundd.TelemetryRecord) string {
	s := values(r.Values)
	if r.Severity != "" {
		s = "[" + r.Severity + "] " + s
	}
	if r.Text != "" {
		s += " " + strconv.Quote(r.Text)
	}
	return s
}
