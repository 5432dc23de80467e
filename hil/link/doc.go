// Package link is the bench's link emulator: it relays real datagrams
// between the ground side (A) and the vehicle side (B) through a model of
// a space link, so that the daemons, and TCP-based baselines, meet the
// radio's rate, delay, loss, corruption, duplication, reordering, passes
// and outages without a radio.
//
// The channel model (Model) is sans-IO, like protocol/linksim which it
// builds on (its Profile, Channel and Schedule types and its named
// profiles): frames go in with the time they were offered, deliveries come
// out with the time they are due, every random decision from one seeded
// generator, so it is tested deterministically with a fake clock. The
// Emulator is the real-time relay around it: two UDP sockets (New), or two
// TUN devices in two network namespaces (NewIP, Linux, root) so that TCP
// crosses the same link. It counts what it does per direction (Stats) and
// tells the ground when the link comes up or goes down (Up, Subscribe), so
// that groundd's pass handling can follow it in-process.
package link
