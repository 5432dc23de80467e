// Package protocol is bootorbit's wire: the frame codec, the message set that
// rides between groundd and flightd, and the framing for stream and datagram
// links.
//
// Every frame is one CBOR data item in Core Deterministic Encoding carrying a
// protocol version, a message type, the message body and a CRC-32C integrity
// check. Decoders never trust a length from the wire: every field and count is
// bounded by Limits before anything is allocated, and every malformed frame
// yields an error that wraps one of this package's sentinel errors, so callers
// can count rejections by reason and go on.
//
// The transfer engine that uses these messages lives in protocol/transfer; the
// deterministic link simulator used by tests and benchmarks lives in
// protocol/linksim.
package protocol
