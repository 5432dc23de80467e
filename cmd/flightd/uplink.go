//go:build linux

package main

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bootorbit/bootorbit/flightd"
	"github.com/bootorbit/bootorbit/flightd/uplink"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/slots"
	"github.com/spf13/cobra"
)

func init() {
	commands.Add("", func() *cobra.Command {
		f := &uplinkFlags{updateFlags: updateFlags{boot: &bootFlags{}}}
		c := &cobra.Command{
			Use:   "install FILE",
			Short: "install an update file (a signed plan and its bundle) into the inactive slot, offline",
			Long: `Install takes an update file (groundd bundle --out: a plan signed by a ground
key and the delta bundle it describes) from a disk, for sneakernet and the
bench, and installs it through the checks a plan received over the link
passes: the ground signature and the vehicle, the release signature by a
trusted release key, the hardware id, the version above the installed one
(unless the plan allows a downgrade). Each layer is rebuilt and checked
against the signed config's diff_ids before the inactive slot is touched,
then written, read back and recorded with its release. The slot is not
armed: arm it with 'flightd update arm'.

It runs the install flightd run runs: the vehicle id, hardware id, trusted
ground and release keys, the uplink directory and its quota come from the
configuration (--config, the file flightd run reads); the bundle's delta
parts read the booted slot itself through the layer index kept when it was
installed; the inactive slot is written through the same Updater (taken out
of the boot environment first). --vehicle, --hardware-id, --ground-key,
--release-key, --quota and --uplink-dir override the configuration's (a
--ground-key or --release-key replaces the configuration's list), for a
bench whose configuration has only slots and boot sections.

` + slotFlagsHelp + "\n" + bootEnvHelp,
			Example: `  flightd install update.bou --config /etc/flightd.json
  flightd install update.bou --config bench.json --vehicle 42 --hardware-id obc-rev-c \
    --ground-key 1:3b6a27bc... --release-key 5:8a88e3dd...`,
			Args: func(_ *cobra.Command, args []string) error {
				if len(args) != 1 {
					return cli.Usagef("want exactly one FILE, got %d arguments", len(args))
				}
				return nil
			},
			RunE: func(c *cobra.Command, args []string) error { return runInstall(c, f, args[0]) },
		}
		f.register(c, true)
		return c
	})
}

// uplinkFlags are the update commands' slot and boot flags, plus where the
// uplink journal lives and, for install, the keys and the vehicle.
type uplinkFlags struct {
	updateFlags
	dir         string
	vehicle     uint32
	hardware    string
	groundKeys  []string
	releaseKeys []string
	quota       int64
	minVersion  uint64
}

func (f *uplinkFlags) register(c *cobra.Command, install bool) {
	f.updateFlags.register(c, false)
	fs := c.Flags()
	fs.StringVar(&f.dir, "uplink-dir", "", "uplink journal and staging `DIR` (default: the slot state directory's uplink/)")
	if install {
		fs.Uint32Var(&f.vehicle, "vehicle", 0, "this vehicle's `ID` (the plan must be for it)")
		fs.StringVar(&f.hardware, "hardware-id", "", "this vehicle's hardware `ID` (the release must be for it)")
		fs.StringArrayVar(&f.groundKeys, "ground-key", nil, "a trusted ground key as `ID:HEX` (ed25519 public key, 64 hex digits); repeat for several")
		fs.StringArrayVar(&f.releaseKeys, "release-key", nil, "a trusted release key as `ID:HEX`; repeat for several")
		cli.SizeVar(fs, &f.quota, "quota", 256<<20, "staging quota (the journal's reservations must fit)")
		fs.Uint64Var(&f.minVersion, "min-version", 0, "release `VERSION` the booted image has when none is recorded (anti-downgrade floor)")
	}
}

func parseKeys(name string, vals []string) (map[uint32]ed25519.PublicKey, error) {
	m := map[uint32]ed25519.PublicKey{}
	for _, v := range vals {
		id, h, ok := strings.Cut(v, ":")
		n, err := strconv.ParseUint(id, 10, 32)
		b, herr := hex.DecodeString(h)
		if !ok || err != nil || herr != nil || len(b) != ed25519.PublicKeySize {
			return nil, cli.Usagef("--%s %q: want ID:HEX, a decimal key id and 64 hex digits", name, v)
		}
		if _, dup := m[uint32(n)]; dup {
			return nil, cli.Usagef("--%s: key id %d given twice", name, n)
		}
		m[uint32(n)] = ed25519.PublicKey(b)
	}
	return m, nil
}

// uplinkDir is --uplink-dir, or the slot state directory's uplink/.
func (f *uplinkFlags) uplinkDir() (string, error) {
	if f.dir != "" {
		return f.dir, nil
	}
	f.slot.config, f.slot.cmdline = f.boot.config, f.boot.cmdline
	sc, err := f.slot.slotsConfig()
	if err != nil {
		return "", err
	}
	return filepath.Join(sc.StateDir, "uplink"), nil
}

// installOut is the --json document of flightd install.
type installOut struct {
	Plan    uint64        `json:"plan"`
	Slot    slots.SlotID  `json:"slot"`
	Version uint64        `json:"version"`
	Image   string        `json:"image"`
	Status  uplink.Status `json:"uplink"`
	Events  []string      `json:"events"`
	Slots   slots.Status  `json:"slots"`
}

// installConfig is the uplink engine's configuration for install: the
// configuration file's (Config.UplinkConfig, as flightd run), each flag
// given overriding its part.
func (f *uplinkFlags) installConfig(c *cobra.Command, u *flightd.Updater) (uplink.Config, error) {
	var uc uplink.Config
	if f.boot.config != "" {
		cfg, err := flightd.LoadConfig(f.boot.config)
		if err != nil {
			return uc, err
		}
		keys, err := cfg.LoadKeys()
		if err != nil {
			return uc, err
		}
		uc = cfg.UplinkConfig(keys)
	}
	given := func(name string) bool { return cli.Given(c, name) }
	if given("ground-key") {
		gk, err := parseKeys("ground-key", f.groundKeys)
		if err != nil {
			return uc, err
		}
		uc.GroundKeys = gk
	}
	if given("release-key") {
		rk, err := parseKeys("release-key", f.releaseKeys)
		if err != nil {
			return uc, err
		}
		uc.ReleaseKeys = rk
	}
	if given("vehicle") {
		uc.Vehicle = f.vehicle
	}
	if given("hardware-id") {
		uc.HardwareID = f.hardware
	}
	if given("quota") || uc.StagingQuota == 0 {
		uc.StagingQuota = f.quota
	}
	if given("min-version") {
		uc.MinVersion = f.minVersion
	}
	if given("uplink-dir") || uc.Dir == "" {
		dir, err := f.uplinkDir()
		if err != nil {
			return uc, err
		}
		uc.Dir = dir
	}
	st := u.Slots.Status()
	uc.RawImage = st.Slots[0].Backend == slots.BackendRaw && st.Slots[1].Backend == slots.BackendRaw
	if uc.Vehicle == 0 || uc.HardwareID == "" || len(uc.GroundKeys) == 0 || len(uc.ReleaseKeys) == 0 {
		return uc, cli.Usagef("the vehicle id, hardware id, ground keys and release keys are required: from --config (vehicle, keys) or --vehicle, --hardware-id, --ground-key and --release-key")
	}
	return uc, nil
}

func runInstall(c *cobra.Command, f *uplinkFlags, file string) error {
	u, _, err := f.open()
	if err != nil {
		return err
	}
	log := f.boot.log()
	cfg, err := f.installConfig(c, u)
	if err != nil {
		return err
	}
	e, err := uplink.Open(cfg, flightd.NewInstaller(u, log), log)
	if err != nil {
		return err
	}
	defer e.Close()
	plan, ierr := e.InstallFile(c.Context(), file)
	out := installOut{Plan: plan, Status: e.Status(), Slots: u.Slots.Status()}
	for _, ev := range e.Events() {
		out.Events = append(out.Events, ev.Def.Name+": "+ev.Text)
	}
	if p, slot := e.Installed(); p == plan && ierr == nil {
		out.Slot = slot
		v, m, _ := e.Release(slot)
		out.Version, out.Image = v, string(m)
	}
	if f.boot.json {
		if err := cli.WriteJSON(c.OutOrStdout(), out); err != nil {
			return err
		}
		return ierr
	}
	w := c.OutOrStdout()
	for _, ev := range out.Events {
		fmt.Fprintln(w, ev)
	}
	if ierr != nil {
		return ierr
	}
	fmt.Fprintf(w, "installed plan %d: release %d (%s) in slot %s, not armed: run 'flightd update arm %s' to boot it\n", plan, out.Version, out.Image, out.Slot, out.Slot)
	return nil
}
