package main

import (
	"bytes"
	"os"

	"github.com/bootorbit/bootorbit/groundd/xtce"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", func() *cobra.Command {
		var out string
		c := &cobra.Command{
			Use:   "xtce",
			Short: "print the command and telemetry dictionary as an XTCE 1.2 mission database",
			Long: `Xtce writes bootorbit's command and telemetry dictionary (protocol/dict) as
an XTCE 1.2 document, the mission database format Yamcs and OpenC3 COSMOS
load: every command with its opcode and typed arguments (units, valid
ranges, enumerations), every housekeeping packet and every event as a
container of typed parameters. It is generated from the Go definitions the
daemons use, so it always matches the build that prints it. The wire is
CBOR; docs/cmdtlm.md says how the containers map onto it.`,
			Example: `  groundd xtce > bootorbit.xml
  groundd xtce --out mdb/bootorbit.xml
  xmllint --noout --schema SpaceSystemV1.2.xsd bootorbit.xml`,
			Args: cli.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				if out == "" {
					return xtce.Write(c.OutOrStdout())
				}
				var b bytes.Buffer
				if err := xtce.Write(&b); err != nil {
					return err
				}
				return os.WriteFile(out, b.Bytes(), 0o644)
			},
		}
		c.Flags().StringVar(&out, "out", "", "write the document to `FILE` instead of standard output")
		return c
	})
}
