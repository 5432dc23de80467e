package main

import (
	"fmt"
	"strings"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// imageFlags are the flags of every command that reads an image: the
// vehicle's platform and the registry settings.
type imageFlags struct {
	platform  string
	authFile  string
	caFile    string
	plainHTTP bool
}

func (f *imageFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.platform, "platform", "", "the vehicle's `OS/ARCH[/VARIANT]`, which picks the image of a multi-arch index (default linux/ARCH of this machine)")
	fs.StringVar(&f.authFile, "auth-file", "", "docker config.json `FILE` with registry credentials (default: $DOCKER_CONFIG/config.json or ~/.docker/config.json)")
	fs.StringVar(&f.caFile, "ca-file", "", "PEM `FILE` of CA certificates to trust for the registry, besides the system's")
	fs.BoolVar(&f.plainHTTP, "plain-http", false, "allow plain HTTP to the registry (never the default, not even on loopback)")
}

func (f *imageFlags) options() (images.Options, error) {
	o := images.Options{Registry: images.RegistryOptions{AuthFile: f.authFile, CAFile: f.caFile, PlainHTTP: f.plainHTTP}}
	if f.platform != "" {
		p, err := parsePlatform(f.platform)
		if err != nil {
			return o, cli.Usagef("--platform: %v", err)
		}
		o.Platform = p
	}
	return o, nil
}

// target reads the image the one positional argument names and the
// options to read it with.
func (f *imageFlags) target(args []string) (images.Ref, images.Options, error) {
	ref, err := imageRef(args)
	if err != nil {
		return images.Ref{}, images.Options{}, err
	}
	o, err := f.options()
	if err != nil {
		return images.Ref{}, images.Options{}, err
	}
	return ref, o, nil
}

func parsePlatform(s string) (oci.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return oci.Platform{}, fmt.Errorf("%q: want OS/ARCH or OS/ARCH/VARIANT (linux/arm64)", s)
	}
	p := oci.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// imageRef parses the one positional argument as an image reference.
func imageRef(args []string) (images.Ref, error) {
	if len(args) != 1 {
		return images.Ref{}, cli.Usagef("want one image reference (oci:PATH:TAG, oci:PATH@sha256:..., docker://HOST/REPO:TAG or docker://HOST/REPO@sha256:...), got %d arguments", len(args))
	}
	r, err := images.ParseRef(args[0])
	if err != nil {
		return images.Ref{}, cli.Usagef("%v", err)
	}
	return r, nil
}

// exactlyOneArg is a cobra.Args for commands taking one image reference.
func exactlyOneArg(_ *cobra.Command, args []string) error {
	if len(args) != 1 {
		return cli.Usagef("want one image reference, got %d arguments", len(args))
	}
	return nil
}
