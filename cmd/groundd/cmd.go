package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", newCmd)
}

func newCmd() *cobra.Command {
	var f clientFlags
	var wait time.Duration
	var interval time.Duration
	c := &cobra.Command{
		Use:   "cmd VEHICLE OPCODE [NAME=VALUE...]",
		Short: "send a command to a vehicle and track its stages",
		Long: `Cmd sends a command of the dictionary (` + opcodes() + `)
to a vehicle: groundd signs and sequences it and sends it at the vehicle's
next contact. Arguments are NAME=VALUE: numbers in decimal or 0x hex,
true/false, an enumeration by label (slot=b) or number, bytes in hex.
The command then goes through its stages (queued, sent, accepted or
rejected, started, progress, completed or failed, timeout, or
cancelled); with
--wait, cmd follows them until the last and exits 1 unless it completed,
printing the vehicle's reason code.`,
		Example: `  groundd cmd 7 noop
  groundd cmd 7 activate slot=b attempts=3 --wait 5m
  groundd cmd 7 delete_staged plan=0 --json`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) < 2 {
				return cli.Usagef("want a VEHICLE and an OPCODE, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			vid, err := vehicleID(args[0])
			if err != nil {
				return err
			}
			def, ok := dict.CommandByName(args[1])
			if !ok {
				return cli.Usagef("no command %q (commands: %s)", args[1], opcodes())
			}
			vals, err := api.ArgsFromStrings(def, args[2:])
			if err != nil {
				return cli.Usagef("%v", strings.TrimPrefix(err.Error(), "api: "))
			}
			if interval <= 0 {
				return cli.Usagef("--interval must be more than 0")
			}
			cl, err := f.client(c)
			if err != nil {
				return err
			}
			ctx, out := c.Context(), c.OutOrStdout()
			cmd, err := cl.SendCommand(ctx, vid, def.Name, vals)
			if err != nil {
				return err
			}
			if wait <= 0 {
				if f.json {
					return cli.WriteJSON(out, cmd)
				}
				fmt.Fprintf(out, "command %d (%s, seq %d) to vehicle %d: %s\n", cmd.ID, cmd.Opcode, cmd.Seq, cmd.Vehicle, stageText(cmd))
				return nil
			}
			if !f.json {
				fmt.Fprintf(out, "command %d (%s, seq %d) to vehicle %d: %s\n", cmd.ID, cmd.Opcode, cmd.Seq, cmd.Vehicle, stageText(cmd))
			}
			deadline := time.NewTimer(wait)
			defer deadline.Stop()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			last := cmd.Stage
			for !stageFinal(cmd.Stage) {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-deadline.C:
					if f.json {
						cli.WriteJSON(out, cmd)
					}
					return fmt.Errorf("command %d still %s after %v", cmd.ID, cmd.Stage, wait)
				case <-tick.C:
				}
				if cmd, err = cl.CommandShow(ctx, cmd.ID); err != nil {
					return err
				}
				if cmd.Stage != last && !f.json {
					fmt.Fprintf(out, "command %d: %s\n", cmd.ID, stageText(cmd))
				}
				last = cmd.Stage
			}
			if f.json {
				if err := cli.WriteJSON(out, cmd); err != nil {
					return err
				}
			}
			if cmd.Stage != groundd.CmdCompleted {
				return fmt.Errorf("command %d %s", cmd.ID, stageText(cmd))
			}
			return nil
		},
	}
	cli.DurationVar(c.Flags(), &wait, "wait", 0, "follow the command's stages until the last, for at most this long (0: do not wait)")
	cli.DurationVar(c.Flags(), &interval, "interval", 2*time.Second, "how often --wait asks the server")
	addClientFlags(c, &f)
	return c
}

func stageFinal(s groundd.CommandStage) bool {
	switch s {
	case groundd.CmdCompleted, groundd.CmdFailed, groundd.CmdRejected, groundd.CmdTimedOut, groundd.CmdCancelled:
		return true
	}
	return false
}

// stageText is a stage with the vehicle's reason, if any.
func stageText(c groundd.Command) string {
	s := string(c.Stage)
	if c.Code != 0 || c.Reason != "" {
		s += fmt.Sprintf(" (%s, code %d)", dash(c.Reason), c.Code)
	}
	return s
}

// opcodes lists the dictionary's commands.
func opcodes() string {
	var names []string
	for _, c := range dict.Commands() {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}
