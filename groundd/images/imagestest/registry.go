// Package imagestest holds test helpers for the images package and its
// users: a real registry (Debian's docker-registry, the CNCF distribution
// registry) started on a free loopback port with a temporary configuration
// and storage, optionally with htpasswd authentication and TLS from a
// throwaway CA, and small image layouts (multi-arch indexes, Docker media
// types).
package imagestest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testtool"
	"golang.org/x/crypto/bcrypt"
)

// RegistryConfig asks for authentication and TLS.
type RegistryConfig struct {
	// User and Password, when set, protect the registry with htpasswd
	// (basic) authentication.
	User, Password string
	// TLS serves HTTPS with a certificate for 127.0.0.1 signed by a new
	// CA, whose PEM file is Registry.CAFile.
	TLS bool
}

// Registry is a running docker-registry.
type Registry struct {
	Host     string // 127.0.0.1:PORT
	Dir      string // its storage
	CAFile   string // the CA's certificate (TLS only)
	AuthFile string // a docker config.json with the credentials (User only)
}

// StartRegistry starts /usr/bin/docker-registry (or the one on PATH) on a
// free loopback port and stops it when the test ends. Without the tool the
// test is skipped, or fails when BOOTORBIT_REQUIRE_TOOLS=1.
func StartRegistry(t testing.TB, c RegistryConfig) *Registry {
	t.Helper()
	bin := "/usr/bin/docker-registry"
	if _, err := os.Stat(bin); err != nil {
		bin = testtool.Need(t, "docker-registry")
	}
	dir := t.TempDir()
	r := &Registry{Dir: filepath.Join(dir, "storage")}
	port := freePort(t)
	r.Host = fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog: {disabled: true}
storage:
  filesystem: {rootdirectory: %q}
  delete: {enabled: true}
  maintenance:
    uploadpurging: {enabled: false}
http:
  addr: %s
`, r.Dir, r.Host)
	if c.TLS {
		r.CAFile, cfg = writeTLS(t, dir, cfg)
	}
	if c.User != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(c.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		hp := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(hp, []byte(c.User+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd: {realm: test, path: %q}\n", hp)
		auth := base64.StdEncoding.EncodeToString([]byte(c.User + ":" + c.Password))
		b, _ := json.Marshal(map[string]any{"auths": map[string]any{r.Host: map[string]string{"auth": auth}}})
		r.AuthFile = filepath.Join(dir, "config.json")
		if err := os.WriteFile(r.AuthFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Ready when it says it listens: no polling, no sleeping.
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var log []string
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "listening on") {
				ready <- nil
				io.Copy(io.Discard, out)
				return
			}
			log = append(log, line)
		}
		ready <- fmt.Errorf("docker-registry exited before listening:\n%s", strings.Join(log, "\n"))
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("docker-registry did not start listening within 30s")
	}
	return r
}

// freePort returns a loopback port nobody listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writeTLS makes a CA and a server certificate for 127.0.0.1 and adds
// them to the registry config.
func writeTLS(t testing.TB, dir, cfg string) (string, string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bootorbit test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	certFile := filepath.Join(dir, "server.pem")
	keyFile := filepath.Join(dir, "server.key")
	for _, f := range []struct {
		path string
		typ  string
		der  []byte
	}{{caFile, "CERTIFICATE", caDER}, {certFile, "CERTIFICATE", der}, {keyFile, "EC PRIVATE KEY", kder}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, cfg + fmt.Sprintf("  tls: {certificate: %q, key: %q}\n", certFile, keyFile)
}

// SkopeoCopy copies src to dst with skopeo (digests kept, TLS not checked
// at the destination: the plain-HTTP registry on loopback), as a release
// pipeline pushes an image and its signature tag. Without skopeo the test
// is skipped, or fails when BOOTORBIT_REQUIRE_TOOLS=1.
func SkopeoCopy(t testing.TB, src, dst string) {
	t.Helper()
	bin := testtool.Need(t, "skopeo")
	pol := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(pol, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--policy", pol, "copy", "--preserve-digests", "--dest-tls-verify=false", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo copy %s %s: %v\n%s", src, dst, err, out)
	}
}
