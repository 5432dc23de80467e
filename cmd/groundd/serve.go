package main

import (
	"context"
	"errors"
	"strings"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/spf13/cobra"
)

// apiFlags are groundd run's flags for the operator API.
type apiFlags struct {
	addr, tokenFile string
}

func addAPIFlags(c *cobra.Command, f *apiFlags) {
	c.Flags().StringVar(&f.addr, "api", api.DefaultAddr, "serve the operator API and /metrics on `HOST:PORT` (\"off\": do not); an address that is not loopback needs --api-token-file")
	c.Flags().StringVar(&f.tokenFile, "api-token-file", "", "`FILE` holding the API's bearer token (16 to 4096 printable bytes)")
}

// runWithAPI opens the daemon, serves its API beside it and runs it until
// ctx ends; the API is checked (address, token) before anything runs.
func runWithAPI(ctx context.Context, cfg groundd.Config, o groundd.Options, f *apiFlags) error {
	var acfg *api.Config
	if f.addr != "off" {
		acfg = &api.Config{Addr: f.addr, Log: o.Log}
		if f.tokenFile != "" {
			b, err := readBounded(f.tokenFile, api.MaxToken+2)
			if err != nil {
				return err
			}
			acfg.Token = strings.TrimSpace(string(b))
		}
		if err := acfg.Check(); err != nil {
			return err
		}
	}
	d, err := groundd.Open(cfg, o)
	if err != nil {
		return err
	}
	defer d.Close()
	if acfg == nil {
		return d.Run(ctx, nil)
	}
	srv, err := api.New(d, *acfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		err := srv.ListenAndServe(ctx)
		cancel() // the API failing (its port taken) stops groundd
		served <- err
	}()
	err = d.Run(ctx, nil)
	cancel()
	return errors.Join(err, <-served)
}
