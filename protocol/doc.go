// Package protocol is bootorbit's wire: the frame codec, the message set that
// rides between groundd and flightd, and the framing for stream and datagram
// links.
//
// Every frame is one CBOR data item in Core Deterministic Encoding carrying a
// protocol version, a message type, the message body and a CRC-32C integrity
// check, which is verified before any parsing (Codec). Each message type is a
// Go struct registered with Register; its optional Validate method bounds its
// fields. Decoders never trust a length from the wire: the frame size is
// bounded first, every count and length inside it by the frame size and by
// Validate, and nothing is allocated in proportion to a number read from the
// wire. Every malformed frame yields an error that wraps one of this
// package's sentinel errors; ReasonOf maps it to a Reason and Counters counts
// them in fixed memory, so callers can count rejections by reason and go on.
//
// Stream links (TCP, serial) carry COBS-encoded frames between zero bytes
// (Writer, Reader, and the sans-IO Deframer), so receivers resynchronise at
// the next delimiter; datagram links carry one frame per datagram
// (PacketLink).
//
// The CMD/TLM envelopes (Command, Verification, Telemetry, Event) carry
// mission control's commands and the vehicle's telemetry; commands are signed
// with ed25519 (SignCommand, VerifyCommand, Keyring) and checked against an
// anti-replay window (ReplayWindow).
//
// Everything the vehicle sends to the ground (transfer reports, completions
// and refusals, verification reports, telemetry, events) carries a MACTag:
// HMAC-SHA256 truncated to 16 bytes under a per-vehicle key, with a key id
// for rotation and an epoch+counter sequence number that the ground checks
// with one ReplayWindow per vehicle (ReturnAuth on the vehicle,
// ReturnVerifier on the ground). It costs 22 to 30 bytes a frame, where an
// ed25519 signature would take a quarter of a 256-byte frame.
//
// Missions that need confidentiality seal every ground-to-vehicle frame with
// AES-256-GCM under a per-vehicle key: Sealer on the ground, with a
// SealCounter so that no nonce repeats, and Opener on the vehicle, which
// then refuses every frame that is not sealed. Frames travel sealed
// between the link and the codec (NewInnerCodec).
//
// docs/protocol.md specifies the wire format for second implementations.
// The transfer engine that uses the transfer messages lives in
// protocol/transfer; the deterministic link simulator used by tests and
// benchmarks lives in protocol/linksim.
package protocol
