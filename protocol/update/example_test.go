package update_test

import (
	"bytes"
	"crypto/ed25519"
	"fmt"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/opencontainers/go-digest"
)

// The release authority signs a release, the ground signs a plan for one
// vehicle, and the vehicle checks both before it takes any bundle byte.
func Example() {
	releaseKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	groundKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))

	config := []byte(`{"rootfs":{"type":"layers","diff_ids":[]}}`)
	manifest := []byte(fmt.Sprintf(`{"schemaVersion":2,"config":{"digest":%q,"size":%d},"layers":[]}`,
		digest.FromBytes(config), len(config)))
	bundle := []byte("the delta bundle")

	// groundd sign
	rs, err := update.SignRelease(releaseKey, 1, update.Release{
		Manifest: digest.FromBytes(manifest), Version: 12, HardwareID: "obc-rev-c"})
	if err != nil {
		panic(err)
	}
	// groundd, planning an uplink to vehicle 42
	plan := &update.Plan{ID: 7, Vehicle: 42, Release: rs, Manifest: manifest, Config: config,
		BundleSize: uint64(len(bundle)), BundleDigest: digest.FromBytes(bundle), Staging: 1 << 20}
	if err := update.SignPlan(groundKey, 3, plan); err != nil {
		panic(err)
	}
	payload, _ := update.EncodePlan(plan) // the "P" transfer
	fmt.Printf("offer target %q\n", update.TargetPlan(plan.ID))

	// flightd on vehicle 42, when the P transfer completes
	groundKeys, _ := protocol.NewKeyring(protocol.Key{ID: 3, Pub: groundKey.Public().(ed25519.PublicKey)})
	releaseKeys, _ := protocol.NewKeyring(protocol.Key{ID: 1, Pub: releaseKey.Public().(ed25519.PublicKey)})
	p, err := update.DecodePlan(payload)
	if err == nil {
		err = update.VerifyPlan(groundKeys, 42, p)
	}
	if err == nil {
		err = update.VerifyRelease(releaseKeys, &p.Release)
	}
	fmt.Println("plan", p.ID, "release", p.Release.Release.Version, "for", p.Release.Release.HardwareID, "verified:", err == nil)

	// The same plan is refused by vehicle 43.
	fmt.Println(update.VerifyPlan(groundKeys, 43, p) != nil)
	// Output:
	// offer target "P\x00\x00\x00\x00\x00\x00\x00\a"
	// plan 7 release 12 for obc-rev-c verified: true
	// true
}
