package protocol

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// The CMD/TLM envelopes: what mission control's commands and the vehicle's
// telemetry ride in. The command and telemetry dictionary (opcodes, argument
// layouts, parameter ids) is defined by the daemons on top of these; this
// file fixes only the envelope, its bounds and command authentication.

// Bounds of the CMD/TLM envelopes, enforced by their Validate methods.
const (
	MaxCommandArgs = 1024 // bytes of a command's CBOR arguments
	MaxArgsNesting = 8    // nesting depth inside command arguments
	MaxParams      = 256  // parameters in one telemetry packet
	MaxValueLen    = 256  // bytes of a text or byte-string value
	MaxEventText   = 160  // bytes of an event's text
	MaxEventArgs   = 16   // values in an event
)

func init() {
	Register(TypeCommand, func() Message { return new(Command) })
	Register(TypeVerification, func() Message { return new(Verification) })
	Register(TypeTelemetry, func() Message { return new(Telemetry) })
	Register(TypeEvent, func() Message { return new(Event) })
}

// Command is a telecommand, ground to vehicle. Vehicles act only on commands
// that VerifyCommand accepts and whose Seq the vehicle's ReplayWindow has not
// seen (see ReplayWindow for the order of checks).
type Command struct {
	// Vehicle is the id of the vehicle the command is for; a vehicle drops
	// commands for another id.
	Vehicle uint32 `cbor:"1,keyasint,omitempty"`
	// Target is the subsystem or application on the vehicle (0: the updater).
	Target uint32 `cbor:"2,keyasint,omitempty"`
	// Seq is the command sequence number, > 0, increasing per (vehicle,
	// sender key); it is what the replay window tracks.
	Seq uint64 `cbor:"3,keyasint"`
	// Opcode says what to do; the dictionary defines opcodes and their args.
	Opcode uint16 `cbor:"4,keyasint,omitempty"`
	// Args is one CBOR item in deterministic encoding (absent when the
	// opcode takes none), at most MaxCommandArgs bytes.
	Args cbor.RawMessage `cbor:"5,keyasint,omitempty"`
	// Auth is the signature; absent in an unsigned command, which a vehicle
	// rejects with ErrUnauthenticated.
	Auth *Auth `cbor:"6,keyasint,omitempty"`
}

// Auth authenticates a message: the id of the signing key and an ed25519
// signature. It is encoded as a 2-element array [key, sig].
type Auth struct {
	_   struct{} `cbor:",toarray"`
	Key KeyID
	Sig []byte
}

// Type implements Message.
func (*Command) Type() MsgType { return TypeCommand }

// Validate implements Validator.
func (c *Command) Validate() error {
	if c.Seq == 0 {
		return fmt.Errorf("%w: command seq 0", ErrInvalidField)
	}
	if err := checkArgs(c.Args); err != nil {
		return err
	}
	if c.Auth != nil && len(c.Auth.Sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: command signature is %d bytes, want %d", ErrInvalidField, len(c.Auth.Sig), ed25519.SignatureSize)
	}
	return nil
}

// argsDecMode decodes command arguments, bounded like any frame body and
// more tightly in depth and count.
var argsDecMode = mustDecMode(decOptions(MaxArgsNesting, MaxCommandArgs, MaxCommandArgs))

// checkArgs bounds command arguments and checks they are one CBOR item in
// deterministic encoding, so that the signed bytes are the only encoding of
// the arguments.
func checkArgs(args cbor.RawMessage) error {
	if len(args) == 0 {
		return nil
	}
	if len(args) == 1 && args[0] == 0xf6 {
		// Absent args are signed as null: an explicit null would be a second
		// encoding of the same signed command.
		return fmt.Errorf("%w: command args are an explicit null; omit them", ErrNonCanonical)
	}
	if len(args) > MaxCommandArgs {
		return fmt.Errorf("%w: command args are %d bytes, max %d", ErrLimit, len(args), MaxCommandArgs)
	}
	var v any
	if err := argsDecMode.Unmarshal(args, &v); err != nil {
		return classifyCBOR(TypeCommand, err)
	}
	canon, err := encMode.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: command args do not re-encode: %v", ErrInvalidField, err)
	}
	if !bytes.Equal(canon, args) {
		return fmt.Errorf("%w: command args are not in deterministic encoding", ErrNonCanonical)
	}
	return nil
}

// DecodeArgs decodes a command's arguments into v with the rules of frame
// bodies (no tags, no indefinite lengths, no duplicate or unknown keys, no
// byte string for a text string or the reverse). Absent args leave v
// untouched.
func (c *Command) DecodeArgs(v any) error {
	if len(c.Args) == 0 {
		return nil
	}
	if err := argsDecMode.Unmarshal(c.Args, v); err != nil {
		return classifyCBOR(TypeCommand, err)
	}
	return nil
}

// SetArgs encodes v deterministically as the command's arguments.
func (c *Command) SetArgs(v any) error {
	b, err := encMode.Marshal(v)
	if err != nil {
		return fmt.Errorf("protocol: encode command args: %v", err)
	}
	if err := checkArgs(b); err != nil {
		return err
	}
	c.Args = b
	return nil
}

// commandSigned is what a command signature covers, as a CBOR array in
// deterministic encoding: [16, vehicle, target, seq, opcode, args, key].
// Args is embedded as its CBOR item (null when absent).
type commandSigned struct {
	_       struct{} `cbor:",toarray"`
	Type    MsgType
	Vehicle uint32
	Target  uint32
	Seq     uint64
	Opcode  uint16
	Args    cbor.RawMessage
	Key     KeyID
}

// CommandSignedBytes returns the bytes a command signature covers (before
// the domain prefix Sign adds): the deterministic CBOR array
// [16, vehicle, target, seq, opcode, args or null, key id].
func CommandSignedBytes(c *Command, key KeyID) ([]byte, error) {
	if err := checkArgs(c.Args); err != nil {
		return nil, err
	}
	return encMode.Marshal(commandSigned{
		Type: TypeCommand, Vehicle: c.Vehicle, Target: c.Target, Seq: c.Seq,
		Opcode: c.Opcode, Args: c.Args, Key: key,
	})
}

// SignCommand signs c with priv under key id key (domain DomainCommand) and
// sets c.Auth.
func SignCommand(c *Command, key KeyID, priv ed25519.PrivateKey) error {
	if len(priv) != ed25519.PrivateKeySize {
		return fmt.Errorf("protocol: SignCommand: private key is %d bytes", len(priv))
	}
	msg, err := CommandSignedBytes(c, key)
	if err != nil {
		return err
	}
	c.Auth = &Auth{Key: key, Sig: Sign(priv, DomainCommand, msg)}
	return nil
}

// VerifyCommand checks c's authentication against kr: nil, or an error
// wrapping ErrUnauthenticated (no Auth), ErrUnknownKey (key id not in kr) or
// ErrBadSignature (forged or altered). It does not check the sequence number:
// that is the ReplayWindow's job.
func VerifyCommand(kr *Keyring, c *Command) error {
	if c.Auth == nil {
		return fmt.Errorf("%w: command seq %d has no signature", ErrUnauthenticated, c.Seq)
	}
	msg, err := CommandSignedBytes(c, c.Auth.Key)
	if err != nil {
		return err
	}
	return kr.Verify(c.Auth.Key, DomainCommand, msg, c.Auth.Sig)
}

// Stage is a command verification stage, in the manner of PUS service 1.
type Stage uint8

// Verification stages. A command gets Accepted or Rejected, then (if
// accepted) Started, any number of Progress, then Completed or Failed.
const (
	StageAccepted  Stage = 1
	StageRejected  Stage = 2
	StageStarted   Stage = 3
	StageProgress  Stage = 4
	StageCompleted Stage = 5
	StageFailed    Stage = 6
)

func (s Stage) String() string {
	switch s {
	case StageAccepted:
		return "accepted"
	case StageRejected:
		return "rejected"
	case StageStarted:
		return "started"
	case StageProgress:
		return "progress"
	case StageCompleted:
		return "completed"
	case StageFailed:
		return "failed"
	}
	return fmt.Sprintf("stage(%d)", uint8(s))
}

// Code is a verification reason code. Codes below 256 are the protocol
// rejection reasons (the Reason values: CodeOf(ReasonReplayed) is 14);
// codes from 256 up belong to the command dictionary.
type Code uint16

// CodeOf returns the verification code for a protocol rejection reason.
func CodeOf(r Reason) Code { return Code(r) }

// Verification reports on a command, vehicle to ground.
type Verification struct {
	// Vehicle is the reporting vehicle's id.
	Vehicle uint32 `cbor:"1,keyasint,omitempty"`
	// Seq is the sequence number of the command reported on.
	Seq uint64 `cbor:"2,keyasint"`
	// Stage is where the command is.
	Stage Stage `cbor:"3,keyasint"`
	// Step numbers Progress reports (1, 2, ...); 0 for other stages.
	Step uint32 `cbor:"4,keyasint,omitempty"`
	// Code says why a command was rejected or failed (non-zero then), or
	// carries an informative code for other stages (0: none).
	Code Code `cbor:"5,keyasint,omitempty"`
	// Opcode echoes the command's opcode, so a report is readable alone.
	Opcode uint16 `cbor:"6,keyasint,omitempty"`
	// MAC authenticates the report (ReturnAuth); absent only in tests.
	MAC *MACTag `cbor:"15,keyasint,omitempty"`
}

// Type implements Message.
func (*Verification) Type() MsgType { return TypeVerification }

// Validate implements Validator.
func (v *Verification) Validate() error {
	if v.Stage < StageAccepted || v.Stage > StageFailed {
		return fmt.Errorf("%w: verification stage %d", ErrInvalidField, v.Stage)
	}
	if v.Step != 0 && v.Stage != StageProgress {
		return fmt.Errorf("%w: step %d on a %v report", ErrInvalidField, v.Step, v.Stage)
	}
	if v.Code == 0 && (v.Stage == StageRejected || v.Stage == StageFailed) {
		return fmt.Errorf("%w: %v report without a code", ErrInvalidField, v.Stage)
	}
	return v.MAC.check()
}

// Param is one telemetry parameter: [id, value], a 2-element array. Value is
// a scalar: an integer (decoded as uint64 or int64), a float (float64), a
// bool, a text string or a byte string of at most MaxValueLen bytes.
type Param struct {
	_     struct{} `cbor:",toarray"`
	ID    uint16
	Value any
}

// paramRaw is a Param as its decoder reads it.
type paramRaw struct {
	_     struct{} `cbor:",toarray"`
	ID    uint16
	Value scalar
}

// UnmarshalCBOR implements cbor.Unmarshaler: the value is decoded as a
// scalar, so a list or map in its place costs nothing to reject.
func (p *Param) UnmarshalCBOR(data []byte) error {
	var raw paramRaw
	if err := innerDecMode.Unmarshal(data, &raw); err != nil {
		return err
	}
	p.ID, p.Value = raw.ID, raw.Value.v
	return nil
}

// Params is a list of telemetry parameters. Its decoder rejects an array
// declaring more than MaxParams elements before allocating for any: Validate
// alone would come after the decoder allocated for all of them.
type Params []Param

// UnmarshalCBOR implements cbor.Unmarshaler.
func (p *Params) UnmarshalCBOR(data []byte) error {
	var s []Param
	if err := decodeBoundedArray(data, MaxParams, "telemetry params", &s); err != nil {
		return err
	}
	*p = s
	return nil
}

// Values is a list of scalar values (event arguments). Like Params, its
// decoder bounds the count (MaxEventArgs) before allocating.
type Values []any

// UnmarshalCBOR implements cbor.Unmarshaler.
func (v *Values) UnmarshalCBOR(data []byte) error {
	var raw []scalar
	if err := decodeBoundedArray(data, MaxEventArgs, "event args", &raw); err != nil {
		return err
	}
	if raw == nil {
		*v = nil
		return nil
	}
	s := make([]any, len(raw))
	for i := range raw {
		s[i] = raw[i].v
	}
	*v = s
	return nil
}

// scalar is a telemetry or event value while it is decoded. Values are
// scalars (checkValue), so its decoder rejects an array or a map by its
// head, before the CBOR decoder allocates for the elements: a well-formed
// list of one-byte elements would cost 16 bytes of []any per frame byte.
type scalar struct{ v any }

// UnmarshalCBOR implements cbor.Unmarshaler.
func (s *scalar) UnmarshalCBOR(data []byte) error {
	if len(data) > 0 && (data[0]>>5 == 4 || data[0]>>5 == 5) {
		return fmt.Errorf("%w: value is an array or a map, not a scalar", ErrInvalidField)
	}
	return innerDecMode.Unmarshal(data, &s.v)
}

// innerDecMode decodes the items that custom unmarshalers receive: already
// checked well formed and bounded by the frame, decoded with the same rules.
var innerDecMode = mustDecMode(bodyDecOptions(MaxMaxFrame))

// decodeBoundedArray decodes the CBOR array data into v after checking its
// declared element count is at most max (ErrLimit otherwise).
func decodeBoundedArray(data []byte, max int, what string, v any) error {
	if n, ok := arrayCount(data); ok && n > uint64(max) {
		return fmt.Errorf("%w: %d %s, max %d", ErrLimit, n, what, max)
	}
	return innerDecMode.Unmarshal(data, v)
}

// arrayCount returns the element count an array head at the start of data
// declares; ok is false if data does not start with a definite array head.
func arrayCount(data []byte) (n uint64, ok bool) {
	if len(data) == 0 || data[0]>>5 != 4 {
		return 0, false
	}
	ai := data[0] & 0x1f
	if ai < 24 {
		return uint64(ai), true
	}
	var size int
	switch ai {
	case 24:
		size = 1
	case 25:
		size = 2
	case 26:
		size = 4
	case 27:
		size = 8
	default:
		return 0, false // indefinite length (rejected by the decoder) or reserved
	}
	if len(data) < 1+size {
		return 0, false
	}
	for _, b := range data[1 : 1+size] {
		n = n<<8 | uint64(b)
	}
	return n, true
}

// Telemetry is a housekeeping telemetry packet, vehicle to ground.
type Telemetry struct {
	// Vehicle is the reporting vehicle's id.
	Vehicle uint32 `cbor:"1,keyasint,omitempty"`
	// Packet identifies the packet layout in the dictionary.
	Packet uint16 `cbor:"2,keyasint,omitempty"`
	// Time is the vehicle time of the sample, milliseconds since the Unix
	// epoch (0: unknown).
	Time int64 `cbor:"3,keyasint,omitempty"`
	// Seq counts packets of this Packet id, to spot losses (wraps).
	Seq uint32 `cbor:"4,keyasint,omitempty"`
	// Params are the values, at most MaxParams.
	Params Params `cbor:"5,keyasint,omitempty"`
	// MAC authenticates the packet (ReturnAuth).
	MAC *MACTag `cbor:"15,keyasint,omitempty"`
}

// Type implements Message.
func (*Telemetry) Type() MsgType { return TypeTelemetry }

// Validate implements Validator.
func (t *Telemetry) Validate() error {
	if len(t.Params) > MaxParams {
		return fmt.Errorf("%w: %d telemetry params, max %d", ErrLimit, len(t.Params), MaxParams)
	}
	for i, p := range t.Params {
		if err := checkValue(p.Value); err != nil {
			return fmt.Errorf("%w: param %d (id %d): %v", ErrInvalidField, i, p.ID, err)
		}
	}
	return t.MAC.check()
}

// Severity grades an event.
type Severity uint8

// Event severities.
const (
	SeverityInfo     Severity = 0
	SeverityWarning  Severity = 1
	SeverityError    Severity = 2
	SeverityCritical Severity = 3
)

func (s Severity) String() string {
	switch s {
	case SeverityInfo:
		return "info"
	case SeverityWarning:
		return "warning"
	case SeverityError:
		return "error"
	case SeverityCritical:
		return "critical"
	}
	return fmt.Sprintf("severity(%d)", uint8(s))
}

// Event reports something that happened on the vehicle (a state change, a
// fault), vehicle to ground.
type Event struct {
	// Vehicle is the reporting vehicle's id.
	Vehicle uint32 `cbor:"1,keyasint,omitempty"`
	// ID identifies the event in the dictionary.
	ID uint16 `cbor:"2,keyasint,omitempty"`
	// Severity grades it (absent: info).
	Severity Severity `cbor:"3,keyasint,omitempty"`
	// Time is the vehicle time, milliseconds since the Unix epoch (0: unknown).
	Time int64 `cbor:"4,keyasint,omitempty"`
	// Seq counts events, to spot losses (wraps).
	Seq uint32 `cbor:"5,keyasint,omitempty"`
	// Text is a short human-readable message, at most MaxEventText bytes of UTF-8.
	Text string `cbor:"6,keyasint,omitempty"`
	// Args are scalar values (as Param.Value), at most MaxEventArgs.
	Args Values `cbor:"7,keyasint,omitempty"`
	// MAC authenticates the event (ReturnAuth).
	MAC *MACTag `cbor:"15,keyasint,omitempty"`
}

// Type implements Message.
func (*Event) Type() MsgType { return TypeEvent }

// Validate implements Validator.
func (e *Event) Validate() error {
	if e.Severity > SeverityCritical {
		return fmt.Errorf("%w: event severity %d", ErrInvalidField, e.Severity)
	}
	if len(e.Text) > MaxEventText {
		return fmt.Errorf("%w: event text is %d bytes, max %d", ErrLimit, len(e.Text), MaxEventText)
	}
	if !utf8.ValidString(e.Text) {
		return fmt.Errorf("%w: event text is not UTF-8", ErrInvalidField)
	}
	if len(e.Args) > MaxEventArgs {
		return fmt.Errorf("%w: %d event args, max %d", ErrLimit, len(e.Args), MaxEventArgs)
	}
	for i, a := range e.Args {
		if err := checkValue(a); err != nil {
			return fmt.Errorf("%w: event arg %d: %v", ErrInvalidField, i, err)
		}
	}
	return e.MAC.check()
}

// checkValue accepts the scalar kinds telemetry values may have.
func checkValue(v any) error {
	switch x := v.(type) {
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return nil
	case float32:
		if math.IsNaN(float64(x)) {
			return fmt.Errorf("NaN value")
		}
		return nil
	case float64:
		// NaN has many encodings; one canonical form is simpler than rules.
		if math.IsNaN(x) {
			return fmt.Errorf("NaN value")
		}
		return nil
	case string:
		if len(x) > MaxValueLen {
			return fmt.Errorf("text value of %d bytes, max %d", len(x), MaxValueLen)
		}
		if !utf8.ValidString(x) {
			return fmt.Errorf("text value is not UTF-8")
		}
		return nil
	case []byte:
		if len(x) > MaxValueLen {
			return fmt.Errorf("byte value of %d bytes, max %d", len(x), MaxValueLen)
		}
		return nil
	case nil:
		return fmt.Errorf("null value")
	}
	return fmt.Errorf("value of type %T is not a scalar", v)
}
