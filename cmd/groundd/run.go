package main

import (
	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", func() *cobra.Command {
		var config string
		var verbose bool
		var af apiFlags
		c := &cobra.Command{
			Use:   "run",
			Short: "run the ground daemon: the uplink queue, pass by pass, and the vehicles' telemetry",
			Long: `Run serves the vehicles of the configuration: it plans each queued uplink
(per layer: nothing, a delta against the image the vehicle's booted slot
holds, or the full layer), signs the plan with the ground key, and sends plan
and bundle over each vehicle's link while its passes are up, resuming after
any restart from the state kept in the store. It believes nothing from a
vehicle whose return-link MAC does not verify. The configuration (JSON) is
described in docs/groundd.md.

It serves the operator API and Prometheus metrics (docs/groundd-api.md) on
--api, 127.0.0.1:7468 by default; an address other than loopback needs
--api-token-file or client certificates (--api-client-ca). With
--api-tls-cert and --api-tls-key it serves HTTPS (TLS 1.2 or later) and
reads the certificate and key again when they change or on SIGHUP. It
stops on SIGINT or SIGTERM.`,
			Example: `  groundd run --config /etc/bootorbit/groundd.json
  groundd run --config groundd.json -v
  groundd run --config groundd.json --api 10.0.1.1:7468 \
    --api-tls-cert gs-north.pem --api-tls-key gs-north-key.pem --api-client-ca operators-ca.pem`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				if config == "" {
					return cli.Usagef("--config is required")
				}
				cfg, err := groundd.LoadConfig(config)
				if err != nil {
					return err
				}
				return runWithAPI(c.Context(), cfg, groundd.Options{Log: cli.Logger(c.ErrOrStderr(), verbose)}, &af)
			},
		}
		c.Flags().StringVar(&config, "config", "", "the groundd configuration `FILE` (JSON)")
		cli.VerboseFlag(c, &verbose)
		addAPIFlags(c, &af)
		return c
	})
}
