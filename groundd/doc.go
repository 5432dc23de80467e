// Package groundd is bootorbit's ground daemon as a library: the uplink
// queue, what groundd knows of each vehicle (its slots, transfers, keys, last
// contact), the planner that turns a queued image into a signed plan and a
// delta bundle against what the vehicle's booted slot holds, the pass
// schedule, and the per-vehicle sessions that send plan and bundle over the
// vehicle's link while it is up and resume after any interruption from where
// the vehicle is. Commands and telemetry go through groundd/gateway, images
// through groundd/images, state through groundd/store.
//
// Daemon.Poll is one step of a vehicle's session with the time as an
// argument; Daemon.Run drives it on the wall clock and the links; Run(ctx,
// cfg) is what `groundd run` calls. Nothing from a vehicle is believed
// before its return-link MAC verifies. docs/groundd.md is the specification.
package groundd
