package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/spf13/cobra"
)

// apiFlags are groundd run's flags for the operator API.
type apiFlags struct {
	addr, tokenFile           string
	tlsCert, tlsKey, clientCA string
}

func addAPIFlags(c *cobra.Command, f *apiFlags) {
	c.Flags().StringVar(&f.addr, "api", api.DefaultAddr, "serve the operator API and /metrics on `HOST:PORT` (\"off\": do not); an address that is not loopback needs --api-token-file or --api-client-ca")
	c.Flags().StringVar(&f.tokenFile, "api-token-file", "", "`FILE` holding the API's bearer token (16 to 4096 printable bytes)")
	c.Flags().StringVar(&f.tlsCert, "api-tls-cert", "", "serve the API over TLS with the PEM certificate (chain) in `FILE` (read again when it changes, or on SIGHUP)")
	c.Flags().StringVar(&f.tlsKey, "api-tls-key", "", "the PEM private key of --api-tls-cert, in `FILE`")
	c.Flags().StringVar(&f.clientCA, "api-client-ca", "", "require API clients to present a certificate the PEM CA certificates in `FILE` sign (mutual TLS; needs --api-tls-cert)")
}

// config returns the API's configuration the flags make, checked
// (address, token, TLS files), or nil for --api off.
func (f *apiFlags) config(o groundd.Options) (*api.Config, error) {
	if f.addr == "off" {
		return nil, nil
	}
	acfg := &api.Config{Addr: f.addr, Log: o.Log, CertFile: f.tlsCert, KeyFile: f.tlsKey, ClientCAFile: f.clientCA}
	if f.tokenFile != "" {
		b, err := readBounded(f.tokenFile, api.MaxToken+2)
		if err != nil {
			return nil, err
		}
		acfg.Token = strings.TrimSpace(string(b))
	}
	if err := acfg.Check(); err != nil {
		return nil, err
	}
	return acfg, nil
}

// runWithAPI opens the daemon, serves its API beside it and runs it until
// ctx ends; the API is checked (address, token, TLS files) before anything
// runs.
func runWithAPI(ctx context.Context, cfg groundd.Config, o groundd.Options, f *apiFlags) error {
	acfg, err := f.config(o)
	if err != nil {
		return err
	}
	var hup chan os.Signal
	if acfg != nil && acfg.CertFile != "" {
		// From now on: a SIGHUP while the daemon opens (an etcd store
		// may take a while) must not kill it.
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
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
	if hup != nil {
		go reloadOnHangup(ctx, srv, hup, nil)
	}
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

// reloadOnHangup reads the API's certificate and key again on each
// signal from hup (SIGHUP) until ctx ends (a failed reload keeps the
// previous pair and is logged by the server). Each reload's result goes
// to done, if not nil (tests).
func reloadOnHangup(ctx context.Context, srv *api.Server, hup <-chan os.Signal, done chan<- error) {
	for {
		select {
		case <-hup:
			err := srv.ReloadCertificate()
			if done != nil {
				select {
				case done <- err:
				case <-ctx.Done():
					return
				}
			}
		case <-ctx.Done():
			return
		}
	}
}
