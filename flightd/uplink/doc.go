// Package uplink is flightd's receiving and installing engine: from the
// first transfer frame of a plan to an image written, read back and recorded
// in the inactive slot. It drives protocol/transfer's Receiver with a bbolt
// journal (package journal) and a staging directory with a quota (package
// staging), checks every plan (protocol/update) before a byte of its bundle
// is accepted, and installs a complete bundle with the delta engine into
// the inactive slot through a small Installer interface.
//
// What it promises:
//
//   - Durability: staged data is synced before the journal record that
//     points at it, and every frame sent back (reports, completions,
//     refusals) is released by Outbox only after the records it depends on
//     are committed. A power cut at any instant loses nothing journaled:
//     after a restart the transfer resumes and no journaled chunk is asked
//     for again.
//   - Acceptance before data: a bundle transfer ("B" target) is accepted
//     only for a plan that verified (ground signature, vehicle, release
//     signature by a trusted release key, hardware id, version above the
//     installed one unless the signed plan allows a downgrade, staging within
//     the quota, not a replay). Every refusal has a reason code
//     (protocol/dict), a counter and an event, and writes nothing.
//   - Install: the bundle's sha256 is the plan's; the bundle's layers are
//     the signed config's diff_ids; every base range the delta reads is
//     checked against the booted slot before the slot is touched (a
//     mismatch is reported, and a supplement plan resends those parts as
//     full data); every layer is rebuilt and checked once without writing,
//     then streamed into the slot, which the Installer reads back and
//     records. Nothing of a bad reconstruction is written to the slot.
//   - Bounded: no allocation sized by a number from the wire beyond what a
//     quota or a protocol bound allows; memory while installing is the delta
//     engine's bound (delta.ApplyMemoryBound) plus fixed buffers.
//
// The Engine is driven like the transfer engine it wraps: Step for each
// frame received, Tick for timers, then Outbox (frames to send) and Events
// (state changes for telemetry); RunInstall does the long work of an
// install and may run in its own goroutine while frames keep arriving.
// See docs/flightd-uplink.md.
package uplink
