package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", newVehicles)
}

func newVehicles() *cobra.Command {
	var f clientFlags
	c := &cobra.Command{
		Use:   "vehicles [ID]",
		Short: "show what groundd knows of each vehicle",
		Long: `Vehicles lists the vehicles groundd serves: whether the link is up, the slot
that booted, what each slot holds (state, release version and short image
digest, from the vehicle's hk.slots telemetry), the last contact and the
uplink being sent. With an ID it shows one vehicle in full: its keys (ids
only), its transfers and its last events.`,
		Example: `  groundd vehicles
  groundd vehicles 7 --json`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return cli.Usagef("want at most one vehicle ID, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client(c)
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			if len(args) == 1 {
				id, err := vehicleID(args[0])
				if err != nil {
					return err
				}
				v, err := cl.VehicleShow(c.Context(), id)
				if err != nil {
					return err
				}
				if f.json {
					return cli.WriteJSON(out, v)
				}
				return printVehicle(c, v)
			}
			vs, err := cl.Vehicles(c.Context())
			if err != nil {
				return err
			}
			if f.json {
				return cli.WriteJSON(out, orEmpty(vs))
			}
			t := newTable(out, "ID", "NAME", "LINK", "BOOTED", "SLOT A", "SLOT B", "LAST CONTACT", "UPLINK")
			for _, v := range vs {
				t.row(strconv.FormatUint(uint64(v.ID), 10), dash(v.Name), link(v.Link), dash(v.BootedSlot),
					slotText(v, "a"), slotText(v, "b"), age(v.LastContact), active(v.Active))
			}
			return t.flush()
		},
	}
	addClientFlags(c, &f)
	return c
}

func vehicleID(s string) (uint32, error) {
	id, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, cli.Usagef("vehicle id %q: want a decimal number", s)
	}
	return uint32(id), nil
}

func link(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

func active(id uint64) string {
	if id == 0 {
		return "-"
	}
	return strconv.FormatUint(id, 10)
}

// slotText is one slot in a cell: "good v3 4f2c01aa".
func slotText(v groundd.Vehicle, name string) string {
	for _, s := range v.Slots {
		if strings.EqualFold(s.Name, name) {
			parts := []string{s.State}
			if s.Version > 0 {
				parts = append(parts, "v"+strconv.FormatUint(s.Version, 10))
			}
			if strings.Trim(s.Digest, "0") != "" { // all zeros: nothing there
				parts = append(parts, s.Digest)
			}
			return strings.Join(parts, " ")
		}
	}
	return "-"
}

func printVehicle(c *cobra.Command, v groundd.Vehicle) error {
	out := c.OutOrStdout()
	t := newTable(out, "vehicle", strconv.FormatUint(uint64(v.ID), 10))
	t.row("name", dash(v.Name))
	t.row("link", link(v.Link))
	t.row("booted slot", dash(v.BootedSlot))
	t.row("last contact", fmt.Sprintf("%s (%s)", when(v.LastContact), age(v.LastContact)))
	t.row("uplink", active(v.Active))
	keys := fmt.Sprintf("ground %d, mac %d", v.Keys.GroundKeyID, v.Keys.MACKeyID)
	if v.Keys.SealKeyID != 0 {
		keys += fmt.Sprintf(", seal %d", v.Keys.SealKeyID)
	}
	t.row("key ids", keys)
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	st := newTable(out, "SLOT", "STATE", "VERSION", "DIGEST", "ATTEMPTS LEFT", "BOOTED")
	for _, s := range v.Slots {
		booted := ""
		if s.Booted {
			booted = "yes"
		}
		st.row(s.Name, s.State, strconv.FormatUint(s.Version, 10), dash(s.Digest), strconv.FormatUint(s.Attempts, 10), dash(booted))
	}
	if err := st.flush(); err != nil {
		return err
	}
	if len(v.Transfers) > 0 {
		fmt.Fprintln(out)
		if err := transferTable(out, v.Transfers); err != nil {
			return err
		}
	}
	if len(v.Events) > 0 {
		fmt.Fprintln(out)
		return recordTable(out, v.Events)
	}
	return nil
}
