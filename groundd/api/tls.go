package api

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ErrTLS: the TLS files of a server or client are incomplete or unusable
// (a certificate without its key, an unreadable file, a key that is not
// the certificate's, a CA file without a certificate).
var ErrTLS = errors.New("api: TLS")

// maxPEM bounds a certificate, key or CA file: a chain of a few
// certificates is a few KiB.
const maxPEM = 1 << 20

// checkTLS checks the TLS fields of a server's configuration and loads
// its files, so that a daemon refuses to start on a file it cannot use.
func (c Config) checkTLS() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("%w: a certificate needs its key and a key its certificate", ErrTLS)
	}
	if c.ClientCAFile != "" && c.CertFile == "" {
		return fmt.Errorf("%w: a client CA needs a server certificate (client certificates are checked over TLS)", ErrTLS)
	}
	if c.CertFile == "" {
		return nil
	}
	if _, err := LoadKeyPair(c.CertFile, c.KeyFile); err != nil {
		return err
	}
	if c.ClientCAFile != "" {
		if _, err := LoadCAPool(c.ClientCAFile); err != nil {
			return err
		}
	}
	return nil
}

// LoadKeyPair reads a PEM certificate (chain) and its PEM private key.
// Its errors name the file at fault.
func LoadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := readPEM(certFile)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate %s: %w", ErrTLS, certFile, err)
	}
	keyPEM, err := readPEM(keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrTLS, keyFile, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate %s with key %s: %w", ErrTLS, certFile, keyFile, err)
	}
	return &cert, nil
}

// LoadCAPool reads the PEM certificates of file into a pool, refusing a
// file that holds none.
func LoadCAPool(file string) (*x509.CertPool, error) {
	b, err := readPEM(file)
	if err != nil {
		return nil, fmt.Errorf("%w: CA %s: %w", ErrTLS, file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%w: CA %s: no PEM certificate in it", ErrTLS, file)
	}
	return pool, nil
}

func readPEM(name string) ([]byte, error) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxPEM+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPEM {
		return nil, fmt.Errorf("longer than %d bytes", maxPEM)
	}
	return b, nil
}

// serverTLS returns the TLS configuration of a server: TLS 1.2 or later
// (Go negotiates 1.3 with any client that has it), the certificate from
// r, and with a client CA, client certificates required and verified.
func serverTLS(c Config, r *certReloader) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.getCertificate,
	}
	if c.ClientCAFile != "" {
		pool, err := LoadCAPool(c.ClientCAFile)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// certReloader serves a certificate and its key from files, reading them
// again when either file's modification time or size changes (checked at
// every handshake: a stat of two files) or when told to (SIGHUP), so that
// a rotated certificate is served without a restart.
//
// A pair that does not load (the certificate replaced before its key, a
// file half-written) leaves the previous certificate in service; it is
// tried again when a file changes again or on Reload.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu   sync.Mutex
	cert *tls.Certificate
	// stamps of the files when they were last read, loaded or not.
	certStamp, keyStamp fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(name string) fileStamp {
	fi, err := os.Stat(name)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi.ModTime(), fi.Size()}
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.loadLocked(); err != nil {
		return nil, err
	}
	return r, nil
}

// loadLocked reads both files, stamping them first: a file changed
// while it is read is read again at the next handshake.
func (r *certReloader) loadLocked() error {
	r.certStamp, r.keyStamp = stampOf(r.certFile), stampOf(r.keyFile)
	cert, err := LoadKeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cert = cert
	if cert.Leaf != nil {
		r.log.Info("api: TLS certificate loaded", "file", r.certFile, "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter.UTC())
	}
	return nil
}

// Reload reads the files again now.
func (r *certReloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.loadLocked()
	if err != nil {
		r.log.Warn("api: TLS certificate not reloaded, keeping the previous one", "err", err)
	}
	return err
}

func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if stampOf(r.certFile) != r.certStamp || stampOf(r.keyFile) != r.keyStamp {
		if err := r.loadLocked(); err != nil {
			r.log.Warn("api: TLS certificate changed but does not load, keeping the previous one", "err", err)
		}
	}
	return r.cert, nil
}

// ClientTLS returns a client's TLS configuration: it trusts the CA
// certificates in caFile (empty: the system's roots) and, with certFile
// and keyFile, presents that certificate to a server that asks for one,
// whatever CAs the server says it accepts (so that a wrong certificate is
// refused as such, in the server's log too, rather than not sent).
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%w: a client certificate needs its key and a key its certificate", ErrTLS)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := LoadCAPool(caFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if certFile != "" {
		cert, err := LoadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return tc, nil
}
