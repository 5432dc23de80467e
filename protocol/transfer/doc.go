// Package transfer is bootorbit's uplink engine: a Sender (ground) and a
// Receiver (vehicle) as sans-IO state machines in the style of etcd-io/raft's
// RawNode. They do no I/O, start no goroutines, read no clock and draw no
// random numbers: the caller feeds them received frames (Step), the time
// (Tick) and link notifications (SetLink), then takes a Ready - data to
// store, journal records to commit, frames to send, the next timer deadline
// - carries it out in that order, and calls Advance.
//
// The promises: the Receiver verifies the ground's ed25519 signature on the
// Offer, which names the vehicle, before it accepts a byte, and every chunk
// against the signed hash tree before it asks for it to be stored; it
// answers what anyone can send or replay (report requests, replayed offers
// and cancels) only from a token bucket; the Sender believes only frames
// whose return-link MAC verifies and that do not contradict what it knows,
// raises an Event when they do, and never loops whatever they claim; a report never claims a chunk
// that is not durable (records are committed before messages are sent);
// the Sender never sends a chunk a report said was journaled; either side
// may restart at any moment (the Receiver from its journal records, the
// Sender from the plan and fresh reports) and the transfer goes on. The
// Sender paces at the link's rate, or at about what the receiver takes when
// its reports show it takes less (flow control), never above. See
// docs/transfer.md for the wire messages, the hash tree, the timers and
// the metrics.
package transfer
