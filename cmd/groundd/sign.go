package main

import (
	"fmt"

	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", func() *cobra.Command {
		var f signFlags
		c := &cobra.Command{
			Use:   "sign --key FILE --version N --hardware ID REF",
			Short: "sign an image as a release for a hardware id, beside the image",
			Long: `Sign signs the image manifest REF names (for --platform, when REF is a
multi-arch index) as release --version for hardware --hardware, with the
release key --key (from groundd keygen). Vehicles accept a release only with
a version above the one they run, unless a plan allows a downgrade.

The signature travels with the image: an OCI artifact whose subject is the
image manifest, tagged sha256-HEX.sig. In a layout it is listed in
index.json; copy it along with the image (skopeo copy oci:DIR:sha256-HEX.sig
docker://HOST/REPO:sha256-HEX.sig; skopeo sync copies every tag). In a
registry it is pushed under that tag and also listed through the referrers
API (or its sha256-HEX tag fallback). Signatures already there are kept.`,
			Example: `  groundd sign --key keys/release-1.key --version 42 --hardware obc-rev-c oci:images:os-42
  groundd sign --key keys/release-1.key --version 42 --hardware obc-rev-c --platform linux/arm64 docker://registry.example:5000/flight/os:42`,
			Args: exactlyOneArg,
			RunE: func(c *cobra.Command, args []string) error { return runSign(c, &f, args) },
		}
		fs := c.Flags()
		fs.StringVar(&f.key, "key", "", "the release private key `FILE` (required)")
		fs.Uint64Var(&f.version, "version", 0, "the release `N`, above every earlier release (required)")
		fs.StringVar(&f.hardware, "hardware", "", "the target hardware `ID` (1 to 64 of A-Z a-z 0-9 . _ -; required)")
		f.img.add(fs)
		cli.VerboseFlag(c, &f.verbose)
		cli.JSONFlag(c, &f.json)
		return c
	})
}

type signFlags struct {
	key, hardware string
	version       uint64
	img           imageFlags
	verbose, json bool
}

func runSign(c *cobra.Command, f *signFlags, args []string) error {
	if f.key == "" || f.version == 0 || f.hardware == "" {
		return cli.Usagef("--key, --version (above 0) and --hardware are required")
	}
	ref, o, err := f.img.target(args)
	if err != nil {
		return err
	}
	id, priv, err := images.ReadPrivateKey(f.key)
	if err != nil {
		return err
	}
	log := cli.Logger(c.ErrOrStderr(), f.verbose)
	log.Info("signing", "ref", ref.String(), "key_id", id, "version", f.version, "hardware", f.hardware)
	rs, desc, err := images.Sign(c.Context(), ref, o, id, priv, f.version, f.hardware)
	if err != nil {
		return err
	}
	tag := images.SignatureTag(desc.Digest)
	if f.json {
		return cli.WriteJSON(c.OutOrStdout(), releaseDoc{Manifest: string(desc.Digest), Version: rs.Release.Version, Hardware: rs.Release.HardwareID, KeyID: rs.KeyID, SignatureTag: tag})
	}
	fmt.Fprintf(c.OutOrStdout(), "signed %s as release %d for %s with key %d\nsignature tag %s\n", desc.Digest, rs.Release.Version, rs.Release.HardwareID, rs.KeyID, tag)
	return nil
}

// releaseDoc is one release signature in --json documents.
type releaseDoc struct {
	Manifest     string `json:"manifest"`
	Version      uint64 `json:"version"`
	Hardware     string `json:"hardware"`
	KeyID        uint32 `json:"key_id"`
	SignatureTag string `json:"signature_tag,omitempty"`
}
