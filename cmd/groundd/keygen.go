package main

import (
	"fmt"
	"math"

	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", func() *cobra.Command {
		var f keygenFlags
		c := &cobra.Command{
			Use:   "keygen",
			Short: "create an ed25519 release signing key with a key id",
			Long: `Keygen creates a release signing key: an ed25519 key pair named by a key id
(the id signatures carry, so that keys can be rotated). It writes the private
key to PREFIX.key (PKCS#8 PEM, mode 0600, never overwritten) and the public
key to PREFIX.pub (PKIX PEM), both with a Key-Id header. Give the public key
to whoever verifies releases (groundd verify --keys DIR, the vehicles); keep
the private key offline. The private key is never printed or logged: the
command prints the files and the public key's fingerprint.`,
			Example: `  groundd keygen --id 1 --out keys/release-1
  groundd keygen --id 2 --out keys/release-2 --json`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return runKeygen(c, &f) },
		}
		fs := c.Flags()
		fs.Int64Var(&f.id, "id", -1, "the key `ID` signatures will name (0 to 4294967295; required)")
		fs.StringVar(&f.out, "out", "", "`PREFIX` of the files to write: PREFIX.key and PREFIX.pub (default release-ID)")
		cli.JSONFlag(c, &f.json)
		return c
	})
}

type keygenFlags struct {
	id   int64
	out  string
	json bool
}

func runKeygen(c *cobra.Command, f *keygenFlags) error {
	if !cli.Given(c, "id") {
		return cli.Usagef("--id is required")
	}
	if f.id < 0 || f.id > math.MaxUint32 {
		return cli.Usagef("--id %d: want 0 to %d", f.id, uint32(math.MaxUint32))
	}
	out := f.out
	if out == "" {
		out = fmt.Sprintf("release-%d", f.id)
	}
	kf, err := images.GenerateKey(out, uint32(f.id), nil)
	if err != nil {
		return err
	}
	if f.json {
		return cli.WriteJSON(c.OutOrStdout(), keygenDoc{ID: kf.ID, Private: kf.Private, Public: kf.Public, Fingerprint: "sha256:" + kf.Fingerprint})
	}
	fmt.Fprintf(c.OutOrStdout(), "key id %d\nprivate key %s (mode 0600: keep it offline)\npublic key  %s\nfingerprint sha256:%s\n", kf.ID, kf.Private, kf.Public, kf.Fingerprint)
	return nil
}

// keygenDoc is the --json document of groundd keygen.
type keygenDoc struct {
	ID          uint32 `json:"key_id"`
	Private     string `json:"private_key_file"`
	Public      string `json:"public_key_file"`
	Fingerprint string `json:"fingerprint"`
}
