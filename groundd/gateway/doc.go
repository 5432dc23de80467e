// Package gateway is groundd's CMD/TLM gateway: it sends mission control's
// commands to vehicles and follows each through its verification stages,
// and it archives the vehicles' telemetry and events and serves them back
// decoded, by vehicle, packet or event and time range.
//
// It is a library without I/O of its own, in the manner of the transfer
// engine: time is an argument of every method, command frames come out of
// Next and the vehicle's messages go in through Receive, and what must
// survive a restart goes through two small interfaces the daemon provides:
// an Archive (commands, telemetry and event records) and a Sequencer
// (command sequence numbers).
//
// What it promises:
//
//   - Every command is checked against the dictionary (protocol/dict),
//     numbered by the Sequencer, signed with the ground command key
//     (protocol.SignCommand) and archived as queued before it can be sent.
//     Next records it as sent before it hands the frame out (persist before
//     send), so a crash can lose a command but never number it twice. A
//     command the vehicle does not acknowledge is sent again (Resend: the
//     same frame and sequence number, a bounded number of times with
//     backoff, never after its ack timeout): the vehicle's replay window
//     runs it at most once and answers a copy. A new attempt after a
//     timeout is an operator's decision (a new command, a new sequence
//     number).
//   - A command moves through queued, sent, accepted (or rejected), started,
//     progress, completed (or failed) on the vehicle's reports, which must
//     come from the vehicle the command was for and name a command sent to
//     it (sequence number and opcode). Reports that arrive out of order move
//     it only forward; a rejection or failure keeps the vehicle's reason
//     code, named through dict.EnumReason. A "replayed" rejection (the link
//     duplicated the frame, and the vehicle answers the copy) gives way to
//     the reports of the copy that ran.
//   - A command that is not sent before its deadline, not accepted within
//     Config.AckTimeout of being sent, or not completed within
//     Config.CompleteTimeout of its last report, times out: a "timeout"
//     stage with the time and the stage it was waiting in. A report that
//     arrives later still counts (marked late): the vehicle may well have
//     run the command, and the operator must see it.
//   - Several gateways (ground stations) may share one archive, a
//     SharedArchive: each command change is then a compare-and-swap on the
//     command's Version, and a gateway reads the open commands from the
//     archive before it sends (Sync) and at each Tick, and a command
//     before a report moves it. A command queued at any station is handed
//     out once, by the station that sends to the vehicle, and its stages
//     are the same at every station.
//   - Telemetry and events are archived as received (the frame, MAC
//     included) with the vehicle's time and the ground's reception time,
//     and decoded through the dictionary when read, into named values with
//     units and enumeration labels.
//
// The caller authenticates what it passes to Receive (protocol.
// ReturnVerifier, one per vehicle) and names the vehicle it authenticated;
// the gateway still checks that the message says the same vehicle.
package gateway
