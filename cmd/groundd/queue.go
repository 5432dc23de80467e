package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Group("queue", "queue uplinks and see how far they got", `Queue manages the uplink queue of a running groundd, through its API: add an
image for a vehicle, list the queue, show one uplink with its plan and the
progress of its transfers, cancel an uplink, or move it in the queue.`)
	commands.Add("queue", newQueueAdd)
	commands.Add("queue", newQueueLs)
	commands.Add("queue", newQueueShow)
	commands.Add("queue", newQueueCancel)
	commands.Add("queue", newQueueReorder)
	commands.Add("queue", newQueueApprove)
}

func newQueueAdd() *cobra.Command {
	var f clientFlags
	var r groundd.UplinkRequest
	var vehicle uint32
	var notBefore, deadline string
	c := &cobra.Command{
		Use:   "add --vehicle ID --image REF",
		Short: "queue an uplink of an image to a vehicle",
		Long: `Add queues an uplink: groundd plans it (per layer: nothing, a delta against
what the vehicle holds, or the full layer), signs the plan and sends it
during the vehicle's passes, one uplink at a time per vehicle, higher
--priority first. --not-before and --deadline take an RFC 3339 time or a
duration from now; an uplink not done by its deadline expires.`,
		Example: `  groundd queue add --vehicle 7 --image oci:images:os-2
  groundd queue add --vehicle 7 --image oci:images@sha256:4f2c... --priority 5 --deadline 48h --json`,
		Args: cli.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !cli.Given(c, "vehicle") || r.Image == "" {
				return cli.Usagef("--vehicle and --image are required")
			}
			var err error
			if r.NotBefore, err = parseWhen("not-before", notBefore); err != nil {
				return err
			}
			if r.Deadline, err = parseWhen("deadline", deadline); err != nil {
				return err
			}
			r.Vehicle = vehicle
			cl, err := f.client(c)
			if err != nil {
				return err
			}
			u, err := cl.QueueAdd(c.Context(), r)
			if err != nil {
				return err
			}
			return f.print(c, u, "uplink %d queued: %s to vehicle %d\n", u.ID, u.Image, u.Vehicle)
		},
	}
	fs := c.Flags()
	fs.Uint32Var(&vehicle, "vehicle", 0, "the vehicle `ID`")
	fs.StringVar(&r.Image, "image", "", "the image, `oci:PATH:TAG` or oci:PATH@sha256:...")
	fs.IntVar(&r.Priority, "priority", 0, "higher goes first")
	fs.StringVar(&notBefore, "not-before", "", "do not send before `TIME` (RFC 3339 or a duration from now)")
	fs.StringVar(&deadline, "deadline", "", "expire if not done by `TIME` (RFC 3339 or a duration from now)")
	fs.BoolVar(&r.AllowDowngrade, "allow-downgrade", false, "sign the permission to install a lower version")
	addClientFlags(c, &f)
	return c
}

func newQueueLs() *cobra.Command {
	var f clientFlags
	var all bool
	c := &cobra.Command{
		Use:   "ls",
		Short: "list the uplink queue",
		Long: `Ls lists the uplinks in queue order: those being sent, then those waiting
by priority, then (with --all) those that ended.`,
		Example: `  groundd queue ls
  groundd queue ls --all --json`,
		Args: cli.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := f.client(c)
			if err != nil {
				return err
			}
			us, err := cl.QueueList(c.Context())
			if err != nil {
				return err
			}
			if !all {
				kept := us[:0]
				for _, u := range us {
					if !u.State.Final() {
						kept = append(kept, u)
					}
				}
				us = kept
			}
			if f.json {
				return cli.WriteJSON(c.OutOrStdout(), orEmpty(us))
			}
			t := newTable(c.OutOrStdout(), "ID", "VEHICLE", "IMAGE", "STATE", "PRIO", "NOT BEFORE", "DEADLINE", "UPDATED")
			for _, u := range us {
				t.row(strconv.FormatUint(u.ID, 10), strconv.FormatUint(uint64(u.Vehicle), 10), u.Image, string(u.State),
					strconv.Itoa(u.Priority), when(u.NotBefore), when(u.Deadline), when(u.Updated))
			}
			return t.flush()
		},
	}
	c.Flags().BoolVar(&all, "all", false, "list the uplinks that ended too")
	addClientFlags(c, &f)
	return c
}

// uplinkID reads an uplink id argument.
func uplinkID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, cli.Usagef("uplink id %q: want a decimal number", s)
	}
	return id, nil
}

// uplinkCall applies call to the uplink that arg names, on the API client
// of f.
func uplinkCall(c *cobra.Command, f *clientFlags, arg string, call func(*api.Client, context.Context, uint64) (groundd.Uplink, error)) (groundd.Uplink, error) {
	id, err := uplinkID(arg)
	if err != nil {
		return groundd.Uplink{}, err
	}
	cl, err := f.client(c)
	if err != nil {
		return groundd.Uplink{}, err
	}
	return call(cl, c.Context(), id)
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return cli.Usagef("want %s, got %d arguments", names, len(args))
		}
		return nil
	}
}

func newQueueShow() *cobra.Command {
	var f clientFlags
	var w watchFlags
	c := &cobra.Command{
		Use:   "show ID",
		Short: "show one uplink: its plan, its transfers and their progress",
		Long: `Show prints an uplink: its state, the planner's decision per layer and the
progress of its transfers (chunks and bytes the vehicle reported holding,
and the estimate of passes remaining). With --watch it follows the
transfers with a progress bar until the uplink ends (plain lines when
standard output is not a terminal; with --json one document per change).`,
		Example: `  groundd queue show 12
  groundd queue show 12 --watch`,
		Args: exactArgs(1, "an uplink ID"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := uplinkID(args[0])
			if err != nil {
				return err
			}
			cl, err := f.client(c)
			if err != nil {
				return err
			}
			if w.watch {
				return watchUplink(c, &f, &w, cl, id)
			}
			u, err := cl.QueueShow(c.Context(), id)
			if err != nil {
				return err
			}
			ts, err := cl.Transfers(c.Context(), id, 0)
			if err != nil {
				return err
			}
			if f.json {
				return cli.WriteJSON(c.OutOrStdout(), uplinkView{u, orEmpty(ts)})
			}
			return printUplink(c, u, ts)
		},
	}
	addWatchFlags(c, &w)
	addClientFlags(c, &f)
	return c
}

// uplinkView is queue show's JSON document.
type uplinkView struct {
	Uplink    groundd.Uplink     `json:"uplink"`
	Transfers []groundd.Transfer `json:"transfers"`
}

func printUplink(c *cobra.Command, u groundd.Uplink, ts []groundd.Transfer) error {
	out := c.OutOrStdout()
	t := newTable(out, "uplink", strconv.FormatUint(u.ID, 10))
	t.row("vehicle", strconv.FormatUint(uint64(u.Vehicle), 10))
	t.row("image", u.Image)
	t.row("state", string(u.State))
	if u.Error != "" {
		t.row("error", u.Error)
	}
	if u.Waiting != "" {
		t.row("waiting", u.Waiting)
	}
	t.row("priority", strconv.Itoa(u.Priority))
	t.row("not before", when(u.NotBefore))
	t.row("deadline", when(u.Deadline))
	t.row("created", when(u.Created))
	t.row("updated", when(u.Updated))
	t.row("manifest", dash(u.Manifest))
	t.row("base", dash(u.Base))
	if len(u.Plans) > 0 {
		var ps []string
		for _, p := range u.Plans {
			ps = append(ps, strconv.FormatUint(p, 10))
		}
		t.row("plans", strings.Join(ps, ", "))
	}
	if len(u.Bundles) > 0 {
		// The plans' artifacts in the bundle registry.
		t.row("bundles", strings.Join(u.Bundles, ", "))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(u.Layers) > 0 {
		fmt.Fprintln(out)
		lt := newTable(out, "LAYER", "DECISION", "SIZE", "PAYLOAD")
		for _, l := range u.Layers {
			lt.row(shortDigest(l.DiffID), l.Decision, bytesText(uint64(l.Size)), bytesText(uint64(l.Payload)))
		}
		if err := lt.flush(); err != nil {
			return err
		}
	}
	if len(ts) > 0 {
		fmt.Fprintln(out)
		return transferTable(out, ts)
	}
	return nil
}

// shortDigest keeps the algorithm and 12 hex digits, as docker does.
func shortDigest(d string) string {
	if alg, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return alg + ":" + hex[:12]
	}
	return d
}

func newQueueCancel() *cobra.Command {
	var f clientFlags
	c := &cobra.Command{
		Use:   "cancel ID",
		Short: "cancel an uplink",
		Long: `Cancel ends an uplink that has not ended: a waiting one leaves the queue,
one being sent stops at once (the vehicle discards what it staged when
told). An uplink that ended cannot be cancelled (exit 1).`,
		Example: `  groundd queue cancel 12`,
		Args:    exactArgs(1, "an uplink ID"),
		RunE: func(c *cobra.Command, args []string) error {
			u, err := uplinkCall(c, &f, args[0], (*api.Client).QueueCancel)
			if err != nil {
				return err
			}
			return f.print(c, u, "uplink %d %s\n", u.ID, u.State)
		},
	}
	addClientFlags(c, &f)
	return c
}

func newQueueReorder() *cobra.Command {
	var f clientFlags
	c := &cobra.Command{
		Use:   "reorder ID POSITION",
		Short: "move a waiting uplink to a position in the queue",
		Long: `Reorder moves a waiting uplink to POSITION among the waiting uplinks (0: the
next to go), taking the priority of the uplinks it lands among.`,
		Example: `  groundd queue reorder 12 0`,
		Args:    exactArgs(2, "an uplink ID and a POSITION"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := uplinkID(args[0])
			if err != nil {
				return err
			}
			pos, err := strconv.Atoi(args[1])
			if err != nil || pos < 0 {
				return cli.Usagef("position %q: want 0 or more", args[1])
			}
			cl, err := f.client(c)
			if err != nil {
				return err
			}
			u, err := cl.QueueReorder(c.Context(), id, pos)
			if err != nil {
				return err
			}
			return f.print(c, u, "uplink %d moved to position %d (priority %d)\n", u.ID, pos, u.Priority)
		},
	}
	addClientFlags(c, &f)
	return c
}

func newQueueApprove() *cobra.Command {
	var f clientFlags
	c := &cobra.Command{
		Use:   "approve ID",
		Short: "approve an uplink pending an operator's approval",
		Long: `Approve queues an uplink that waits for an operator: one queued because a
tag a vehicle follows moved to a newer signed image, under the "approve"
policy. It then goes like any other uplink.`,
		Example: `  groundd queue ls --all
  groundd queue approve 12`,
		Args: exactArgs(1, "an uplink ID"),
		RunE: func(c *cobra.Command, args []string) error {
			u, err := uplinkCall(c, &f, args[0], (*api.Client).QueueApprove)
			if err != nil {
				return err
			}
			return f.print(c, u, "uplink %d %s: %s to vehicle %d\n", u.ID, u.State, u.Image, u.Vehicle)
		},
	}
	addClientFlags(c, &f)
	return c
}
