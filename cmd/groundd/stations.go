package main

import (
	"strconv"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", newStations)
}

func newStations() *cobra.Command {
	var f clientFlags
	c := &cobra.Command{
		Use:   "stations",
		Short: "show which ground station transmits to which vehicle",
		Long: `Stations shows, for each vehicle, the ground station that holds it (the one
station that transmits to it, elected on the etcd store the stations share),
the lease it holds it on and the time left on that lease, the stations
waiting to take over, and each station's last contact with the vehicle.
A station that dies or loses etcd stops holding its vehicles within its
lease time; another takes over at its next contact.

With the embedded bbolt store there is one station, which holds every
vehicle it serves, with no lease. See docs/stations.md.`,
		Example: `  groundd stations
  groundd stations --json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client(c)
			if err != nil {
				return err
			}
			r, err := cl.Stations(c.Context())
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			if f.json {
				return cli.WriteJSON(out, r)
			}
			t := newTable(out, "VEHICLE", "HOLDER", "LEASE", "TTL", "WAITING", "LAST CONTACT")
			for _, h := range r.Vehicles {
				ttl := "-"
				if h.TTL > 0 {
					ttl = time.Duration(h.TTL).String()
				}
				var contacts []string
				for _, sc := range h.Contacts {
					contacts = append(contacts, sc.Station+" "+age(sc.LastContact))
				}
				t.row(strconv.FormatUint(uint64(h.Vehicle), 10), dash(h.Holder), dash(h.Lease), ttl,
					dash(strings.Join(h.Waiting, ",")), dash(strings.Join(contacts, ", ")))
			}
			return t.flush()
		},
	}
	addClientFlags(c, &f)
	return c
}
