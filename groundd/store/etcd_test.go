package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEtcdConfig: a configuration is checked before any connection, and a
// bad TLS file is an error that names the file and never its content.
func TestEtcdConfig(t *testing.T) {
	if err := (&EtcdConfig{}).Validate(); err == nil {
		t.Error("no endpoints accepted")
	}
	if err := (&EtcdConfig{Endpoints: []string{"http://127.0.0.1:1"}, CertFile: "c.pem"}).Validate(); err == nil {
		t.Error("a certificate without its key accepted")
	}
	dir := t.TempDir()
	secret := "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n"
	bad := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(bad, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]EtcdConfig{
		"ca missing":    {Endpoints: []string{"https://127.0.0.1:1"}, CAFile: filepath.Join(dir, "absent.pem")},
		"ca not pem":    {Endpoints: []string{"https://127.0.0.1:1"}, CAFile: bad},
		"cert mismatch": {Endpoints: []string{"https://127.0.0.1:1"}, CertFile: bad, KeyFile: bad},
	} {
		_, err := OpenEtcd(c)
		if err == nil {
			t.Errorf("%s: opened", name)
			continue
		}
		if strings.Contains(err.Error(), "c2VjcmV0") {
			t.Errorf("%s: the error shows key material: %v", name, err)
		}
	}
	if _, err := OpenEtcd(EtcdConfig{}); err == nil || errors.Is(err, ErrClosed) {
		t.Errorf("empty config: %v", err)
	}
}
