package images

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RegistryOptions are the settings a registry connection needs.
type RegistryOptions struct {
	// AuthFile is a docker config.json to take credentials from ("auths",
	// "credsStore", "credHelpers"). Empty: the default keychain, that is
	// $DOCKER_CONFIG/config.json or ~/.docker/config.json, as docker,
	// podman's docker compatibility and crane read it.
	AuthFile string
	// CAFile is a PEM file of CA certificates trusted in addition to the
	// system's, for a registry with a private CA.
	CAFile string
	// PlainHTTP allows plain HTTP to the registry. Without it every request
	// must be HTTPS: go-containerregistry on its own falls back to HTTP for
	// loopback and private addresses, which this refuses (ErrPlainHTTP).
	PlainHTTP bool
	// Transport, if set, replaces the HTTP transport (CAFile is then
	// ignored); the plain-HTTP check still applies.
	Transport http.RoundTripper
}

// maxAuthFile bounds a docker config.json.
const maxAuthFile = 1 << 20

// nameOptions are the options references are parsed with.
func (o RegistryOptions) nameOptions() []name.Option {
	opts := []name.Option{name.StrictValidation}
	if o.PlainHTTP {
		opts = append(opts, name.Insecure)
	}
	return opts
}

func (o RegistryOptions) reference(r Ref) (name.Reference, error) {
	if r.Transport != TransportDocker {
		return nil, fmt.Errorf("%w: %s is not a registry reference", ErrBadRef, r)
	}
	s := r.Repo + ":" + r.Tag
	if r.Digest != "" {
		s = r.Repo + "@" + string(r.Digest)
	}
	nr, err := name.ParseReference(s, o.nameOptions()...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadRef, r, err)
	}
	return nr, nil
}

func (o RegistryOptions) digestRef(r Ref, d string) (name.Digest, error) {
	nd, err := name.NewDigest(r.Repo+"@"+d, o.nameOptions()...)
	if err != nil {
		return name.Digest{}, fmt.Errorf("%w: %s@%s: %v", ErrBadRef, r.Repo, d, err)
	}
	return nd, nil
}

// remoteOptions returns go-containerregistry's options for o.
func (o RegistryOptions) remoteOptions(ctx context.Context) ([]remote.Option, error) {
	var kc authn.Keychain = authn.DefaultKeychain
	if o.AuthFile != "" {
		f, err := os.Open(o.AuthFile)
		if err != nil {
			return nil, fmt.Errorf("images: auth file: %w", err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("images: auth file: %w", err)
		}
		if fi.Size() > maxAuthFile {
			return nil, fmt.Errorf("images: auth file %s: larger than %d bytes", o.AuthFile, maxAuthFile)
		}
		cf, err := config.LoadFromReader(f)
		if err != nil {
			return nil, fmt.Errorf("images: auth file %s: %v", o.AuthFile, err)
		}
		kc = fileKeychain{cf}
	}
	tr := o.Transport
	if tr == nil {
		base := http.DefaultTransport.(*http.Transport).Clone()
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("images: CA file: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("images: CA file %s: no PEM certificate in it", o.CAFile)
			}
			base.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		tr = base
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(schemeGuard{next: tr, plain: o.PlainHTTP}),
		remote.WithUserAgent("bootorbit-groundd"),
	}, nil
}

// schemeGuard refuses plain HTTP unless it was asked for.
type schemeGuard struct {
	next  http.RoundTripper
	plain bool
}

func (g schemeGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	if !g.plain && !strings.EqualFold(r.URL.Scheme, "https") {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("%w: %s %s", ErrPlainHTTP, r.Method, r.URL.Redacted())
	}
	return g.next.RoundTrip(r)
}

// fileKeychain resolves credentials from one docker config.json.
type fileKeychain struct{ cf *configfile.ConfigFile }

func (k fileKeychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	key := res.RegistryStr()
	if key == name.DefaultRegistry {
		key = authn.DefaultAuthKey
	}
	ac, err := k.cf.GetAuthConfig(key)
	if err != nil {
		return nil, fmt.Errorf("images: credentials for %s: %v", res.RegistryStr(), err)
	}
	if ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" && ac.RegistryToken == "" && ac.Auth == "" {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{
		Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
		IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken,
	}), nil
}
