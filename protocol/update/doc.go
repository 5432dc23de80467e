// Package update defines the signed documents groundd and flightd exchange to
// update a vehicle: the release authority's statement about an image
// (Release, ReleaseSignature), the ground's instruction to one vehicle
// (Plan), the offline file that carries a plan and its delta bundle (File),
// and the transfer targets that name the plan and bundle transfers.
//
// Every document is CBOR in Core Deterministic Encoding with small integer
// map keys; its decoder bounds the input before parsing, rejects tags,
// indefinite lengths, duplicate and unknown keys and any encoding but the
// deterministic one, so every document has exactly one valid encoding, which
// is the one its signature covers. Signatures are protocol.Sign (plain
// ed25519 over a domain-separated message) with protocol.Keyring key ids:
// domain "release/v1" for releases (the release authority's keys) and
// "plan/v1" for plans (the ground's keys). The two keyrings are distinct: a
// ground key never vouches for an image, a release key never for a plan.
//
// What this package checks (VerifyRelease, VerifyPlan) is what holds for
// every vehicle: signatures, the vehicle binding, the manifest and config
// digests, and the bounds. What depends on the vehicle's state (hardware id,
// installed version, quota, the booted slot's manifest, the plan replay
// floor) is the daemon's to check, with the reasons of protocol/dict.
//
// Errors start with "update: " and wrap this package's sentinels and, for
// signatures and the vehicle binding, protocol's (protocol.ErrUnknownKey,
// protocol.ErrBadSignature, protocol.ErrWrongVehicle), so callers map them
// to verification codes with errors.Is. docs/uplink.md specifies the
// encodings byte by byte.
package update
