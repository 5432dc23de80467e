package main

import (
	"fmt"

	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", func() *cobra.Command {
		var f verifyFlags
		c := &cobra.Command{
			Use:   "verify --keys DIR REF",
			Short: "find and verify the release signatures of an image",
			Long: `Verify finds the release signatures beside the image REF names (for
--platform, when REF is a multi-arch index), verifies them with the public
keys (*.pub) of --keys, and prints each valid one: version, hardware, key id.
It fails (exit 1) when the image is unsigned or no signature verifies, or,
with --hardware, when none is for that hardware.`,
			Example: `  groundd verify --keys keys/ oci:images:os-42
  groundd verify --keys keys/ --hardware obc-rev-c docker://registry.example:5000/flight/os:stable --json`,
			Args: exactlyOneArg,
			RunE: func(c *cobra.Command, args []string) error { return runVerify(c, &f, args) },
		}
		fs := c.Flags()
		fs.StringVar(&f.keys, "keys", "", "`DIR` of trusted release public keys (*.pub), or one key file (required)")
		fs.StringVar(&f.hardware, "hardware", "", "require a signature for this hardware `ID`")
		f.img.add(fs)
		cli.JSONFlag(c, &f.json)
		return c
	})
}

type verifyFlags struct {
	keys, hardware string
	img            imageFlags
	json           bool
}

func runVerify(c *cobra.Command, f *verifyFlags, args []string) error {
	if f.keys == "" {
		return cli.Usagef("--keys is required")
	}
	ref, o, err := f.img.target(args)
	if err != nil {
		return err
	}
	kr, err := images.LoadKeyring(f.keys)
	if err != nil {
		return err
	}
	desc, sigs, err := images.Signatures(c.Context(), ref, o)
	if err != nil {
		return err
	}
	ok, err := images.VerifyReleases(kr, desc.Digest, sigs)
	if err != nil {
		return err
	}
	if f.hardware != "" {
		var for_ []update.ReleaseSignature
		for _, rs := range ok {
			if rs.Release.HardwareID == f.hardware {
				for_ = append(for_, rs)
			}
		}
		if len(for_) == 0 {
			return fmt.Errorf("%s: %d valid signature(s), none for hardware %s", desc.Digest, len(ok), f.hardware)
		}
		ok = for_
	}
	docs := make([]releaseDoc, 0, len(ok))
	for _, rs := range ok {
		docs = append(docs, releaseDoc{Manifest: string(desc.Digest), Version: rs.Release.Version, Hardware: rs.Release.HardwareID, KeyID: rs.KeyID})
	}
	if f.json {
		return cli.WriteJSON(c.OutOrStdout(), verifyDoc{Manifest: string(desc.Digest), Signatures: len(sigs), Valid: docs})
	}
	fmt.Fprintf(c.OutOrStdout(), "%s: %d of %d signature(s) valid\n", desc.Digest, len(ok), len(sigs))
	for _, d := range docs {
		fmt.Fprintf(c.OutOrStdout(), "release %d for %s, key %d\n", d.Version, d.Hardware, d.KeyID)
	}
	return nil
}

// verifyDoc is the --json document of groundd verify.
type verifyDoc struct {
	Manifest   string       `json:"manifest"`
	Signatures int          `json:"signatures"`
	Valid      []releaseDoc `json:"valid"`
}
