package protocol

import "fmt"

// MsgType identifies the kind of message a frame carries. Values are part of
// the wire format: never renumber.
type MsgType uint8

// Transfer messages (protocol/transfer drives them).
const (
	// TypeOffer announces a transfer: ground to vehicle, signed.
	TypeOffer MsgType = 1
	// TypeChunk carries transfer data: ground to vehicle.
	TypeChunk MsgType = 2
	// TypeReport tells what the receiver holds: vehicle to ground.
	TypeReport MsgType = 3
	// TypeReportRequest asks the receiver for a report: ground to vehicle.
	TypeReportRequest MsgType = 4
	// TypeComplete says a transfer was fully received and verified: vehicle to ground.
	TypeComplete MsgType = 5
	// TypeCancel abandons a transfer: either way.
	TypeCancel MsgType = 6
)

// TypeSealed is the envelope of a frame encrypted for its vehicle: ground to
// vehicle, when the mission configures sealing (seal.go). It is not
// registered with Register: only an Opener reads it, so a vehicle without
// seal keys rejects it as an unknown type, and no Codec hands a sealed
// frame to code that expects a message.
const TypeSealed MsgType = 15

// Mission control envelopes (CMD up, TLM down).
const (
	// TypeCommand is a telecommand: ground to vehicle, authenticated, sequenced.
	TypeCommand MsgType = 16
	// TypeVerification is a PUS service 1 style report on a command: vehicle to ground.
	TypeVerification MsgType = 17
	// TypeTelemetry is a housekeeping telemetry packet: vehicle to ground.
	TypeTelemetry MsgType = 18
	// TypeEvent is an event report: vehicle to ground.
	TypeEvent MsgType = 19
)

// Message is implemented by every message type that can ride in a frame.
type Message interface {
	// Type is the message's wire type.
	Type() MsgType
}

// String returns the type's name, or "type(N)" for a type without one.
func (t MsgType) String() string {
	switch t {
	case TypeOffer:
		return "offer"
	case TypeChunk:
		return "chunk"
	case TypeReport:
		return "report"
	case TypeReportRequest:
		return "report-request"
	case TypeComplete:
		return "complete"
	case TypeCancel:
		return "cancel"
	case TypeSealed:
		return "sealed"
	case TypeCommand:
		return "command"
	case TypeVerification:
		return "verification"
	case TypeTelemetry:
		return "telemetry"
	case TypeEvent:
		return "event"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}
