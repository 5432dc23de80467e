package gatewaytest

import (
	"fmt"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// Answer is how the Vehicle answers a command it accepts, or that it
// refuses although the command is valid (Reject).
type Answer struct {
	// Silent: no report at all, as if the command never arrived.
	Silent bool
	// Reject: reject with this code instead of accepting.
	Reject protocol.Code
	// Steps: progress reports between started and the end.
	Steps int
	// Fail: fail with this code after started (and the steps).
	Fail protocol.Code
	// NoEnd: stop after started and the steps (a command that hangs).
	NoEnd bool
}

// Vehicle stands in for flightd's command path: it checks a command frame
// in flightd's order (vehicle id, replay window, signature, opcode,
// arguments) and answers with verification reports, signed by Auth when
// set. Not safe for concurrent use.
type Vehicle struct {
	ID    uint32
	Keys  *protocol.Keyring
	Codec *protocol.Codec
	// Answers are by command name; a command without one is accepted,
	// started and completed.
	Answers map[string]Answer
	// Auth, if set, signs every report (the return-link MAC).
	Auth *protocol.ReturnAuth
	// Ran lists the commands acted on (accepted), by name, and RanSeqs
	// their sequence numbers.
	Ran     []string
	RanSeqs []uint64

	window protocol.ReplayWindow
}

// Handle takes one frame from the ground and returns the reports to send
// back. A frame that is not a command for this vehicle gets none, as on
// the vehicle.
func (v *Vehicle) Handle(frame []byte) ([]*protocol.Verification, error) {
	m, err := v.Codec.Decode(frame)
	if err != nil {
		return nil, err
	}
	c, ok := m.(*protocol.Command)
	if !ok {
		return nil, fmt.Errorf("gatewaytest: a %v, not a command", m.Type())
	}
	if c.Vehicle != v.ID {
		return nil, fmt.Errorf("gatewaytest: %w: command for vehicle %d", protocol.ErrWrongVehicle, c.Vehicle)
	}
	reject := func(code protocol.Code) ([]*protocol.Verification, error) {
		return v.sign(&protocol.Verification{Vehicle: v.ID, Seq: c.Seq, Stage: protocol.StageRejected, Code: code, Opcode: c.Opcode})
	}
	if err := v.window.Check(c.Seq); err != nil {
		return reject(dict.CodeOf(err))
	}
	if err := protocol.VerifyCommand(v.Keys, c); err != nil {
		return reject(dict.CodeOf(err))
	}
	if err := v.window.Accept(c.Seq); err != nil {
		return reject(dict.CodeOf(err))
	}
	d, ok := dict.CommandByOpcode(c.Opcode)
	if !ok {
		return reject(dict.CodeUnknownCommand)
	}
	if _, err := d.DecodeArgs(c); err != nil {
		return reject(dict.CodeOf(err))
	}
	a := v.Answers[d.Name]
	if a.Silent {
		return nil, nil
	}
	if a.Reject != 0 {
		return reject(a.Reject)
	}
	v.Ran = append(v.Ran, d.Name)
	v.RanSeqs = append(v.RanSeqs, c.Seq)
	rep := func(st protocol.Stage, step uint32, code protocol.Code) *protocol.Verification {
		return &protocol.Verification{Vehicle: v.ID, Seq: c.Seq, Stage: st, Step: step, Code: code, Opcode: c.Opcode}
	}
	out := []*protocol.Verification{rep(protocol.StageAccepted, 0, 0), rep(protocol.StageStarted, 0, 0)}
	for i := 1; i <= a.Steps; i++ {
		out = append(out, rep(protocol.StageProgress, uint32(i), 0))
	}
	switch {
	case a.NoEnd:
	case a.Fail != 0:
		out = append(out, rep(protocol.StageFailed, 0, a.Fail))
	default:
		out = append(out, rep(protocol.StageCompleted, 0, 0))
	}
	return v.sign(out...)
}

func (v *Vehicle) sign(rs ...*protocol.Verification) ([]*protocol.Verification, error) {
	if v.Auth != nil {
		for _, r := range rs {
			if err := v.Auth.Sign(r); err != nil {
				return nil, err
			}
		}
	}
	return rs, nil
}
