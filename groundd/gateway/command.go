package gateway

import (
	"fmt"
	"slices"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// Stage is where a command is, as the ground sees it: the vehicle's
// verification stages (protocol.Stage) and the ground's own (queued, sent,
// timeout, cancelled).
type Stage uint8

// Stages, in the order a command goes through them.
const (
	Queued    Stage = 1  // signed and archived, waiting for the link
	Sent      Stage = 2  // handed to the link
	Accepted  Stage = 3  // the vehicle accepted it (authentic, fresh, valid)
	Rejected  Stage = 4  // the vehicle refused it; final, with a reason code
	Started   Stage = 5  // the vehicle started it
	Progress  Stage = 6  // a progress report (numbered steps)
	Completed Stage = 7  // done; final
	Failed    Stage = 8  // started but failed; final, with a reason code
	Timeout   Stage = 9  // no report in time (see Entry.Waited); a late report may follow
	Cancelled Stage = 10 // cancelled by an operator before it was sent; final
)

var stageNames = [...]string{Queued: "queued", Sent: "sent", Accepted: "accepted", Rejected: "rejected", Started: "started",
	Progress: "progress", Completed: "completed", Failed: "failed", Timeout: "timeout", Cancelled: "cancelled"}

func (s Stage) String() string {
	if int(s) < len(stageNames) && stageNames[s] != "" {
		return stageNames[s]
	}
	return fmt.Sprintf("stage(%d)", uint8(s))
}

// MarshalText implements encoding.TextMarshaler: stages are names in JSON.
func (s Stage) MarshalText() ([]byte, error) {
	if int(s) >= len(stageNames) || stageNames[s] == "" {
		return nil, fmt.Errorf("gateway: stage %d has no name", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Stage) UnmarshalText(b []byte) error {
	for i, n := range stageNames {
		if n != "" && n == string(b) {
			*s = Stage(i)
			return nil
		}
	}
	return fmt.Errorf("gateway: unknown stage %q", b)
}

// Final reports whether no report can change a command in stage s.
func (s Stage) Final() bool {
	return s == Rejected || s == Completed || s == Failed || s == Cancelled
}

// rank orders the stages a command moves through: a report moves a command
// only to a higher rank (or to the next Progress step).
func (s Stage) rank() int {
	switch s {
	case Queued:
		return 0
	case Sent:
		return 1
	case Accepted, Rejected:
		return 2
	case Started:
		return 3
	case Progress:
		return 4
	case Completed, Failed:
		return 5
	}
	return -1
}

func stageOf(s protocol.Stage) (Stage, bool) {
	switch s {
	case protocol.StageAccepted:
		return Accepted, true
	case protocol.StageRejected:
		return Rejected, true
	case protocol.StageStarted:
		return Started, true
	case protocol.StageProgress:
		return Progress, true
	case protocol.StageCompleted:
		return Completed, true
	case protocol.StageFailed:
		return Failed, true
	}
	return 0, false
}

// Entry is one step of a command's history.
type Entry struct {
	Stage Stage `json:"stage"`
	// Time is the ground's time of the step (reception, for reports).
	Time time.Time `json:"time"`
	// Step numbers Progress reports.
	Step uint32 `json:"step,omitempty"`
	// Code is the vehicle's reason code (rejected, failed, or informative)
	// and Reason its name in the dictionary.
	Code   protocol.Code `json:"code,omitempty"`
	Reason string        `json:"reason,omitempty"`
	// Waited is, for a Timeout, the stage the command was in.
	Waited Stage `json:"waited,omitempty"`
	// Late marks a report that came after the command timed out or was
	// rejected as replayed.
	Late bool `json:"late,omitempty"`
	// Station is, for Sent, the ground station that sent the frame
	// (Config.Station; empty with one station).
	Station string `json:"station,omitempty"`
}

// MaxHistory bounds a command's history: past it, a new Progress report
// replaces the last Progress entry instead of adding one.
const MaxHistory = 32

// Command is a command the gateway sent or will send, with its history.
// Commands are identified by (Key, Seq).
type Command struct {
	Vehicle uint32         `json:"vehicle"`
	Key     protocol.KeyID `json:"key"`
	Seq     uint64         `json:"seq"`
	Opcode  uint16         `json:"opcode"`
	// Name is the command's dictionary name.
	Name string `json:"name"`
	// Args are the arguments as signed: one CBOR array (nil: none).
	Args []byte `json:"args,omitempty"`
	// Frame is the signed command frame.
	Frame []byte `json:"frame"`
	// Submitted is when the command was queued; NotAfter the latest time
	// it may be sent.
	Submitted time.Time `json:"submitted"`
	NotAfter  time.Time `json:"not_after"`
	// Stage is where the command is now, and Code and Reason the vehicle's
	// reason code of a rejection or failure.
	Stage  Stage         `json:"stage"`
	Code   protocol.Code `json:"code,omitempty"`
	Reason string        `json:"reason,omitempty"`
	// History lists every stage the command went through, oldest first.
	History []Entry `json:"history"`
	// Resends counts the copies of the frame sent again while the vehicle
	// had not acknowledged it (Gateway.Resend), the last at ResentAt.
	Resends  int       `json:"resends,omitempty"`
	ResentAt time.Time `json:"resent_at,omitempty"`
	// Version counts the command's changes: 1 when queued, one more at
	// each change. With a SharedArchive it is the compare-and-swap guard
	// of every change (see SharedArchive); 0 in commands archived before
	// it existed.
	Version uint64 `json:"version,omitempty"`
	// Closed marks a timed-out (or replay-rejected) command that the
	// gateways sharing a SharedArchive stopped waiting on (LateWindow
	// after its last entry): it is no longer open.
	Closed bool `json:"closed,omitempty"`
}

// SentBy is the station that sent the command ("" when not sent, or sent
// by a gateway with no Config.Station).
func (c *Command) SentBy() string {
	for i := len(c.History) - 1; i >= 0; i-- {
		if c.History[i].Stage == Sent {
			return c.History[i].Station
		}
	}
	return ""
}

// Open reports whether a report may still change the command: it is not
// final, or it timed out, or the vehicle rejected it as replayed (see
// settling).
func (c *Command) Open() bool { return !c.Closed && (!c.Stage.Final() || c.replayRejected()) }

// codeReplayed is the vehicle's code for a sequence number it already
// accepted or that is older than its replay window.
var codeReplayed = protocol.CodeOf(protocol.ReasonReplayed)

// replayRejected reports whether the command's last word is the vehicle's
// "replayed" rejection. The vehicle says "replayed" when it got the frame
// twice (the link duplicated it, or the gateway resent it while the first
// copy's reports were lost: then the first copy ran, and its reports may
// come after this one, reordered, late or repeated) or when the number is
// older than its window (then nothing ran). The rejection
// stands unless a report of the first copy arrives and supersedes it.
func (c *Command) replayRejected() bool { return c.Stage == Rejected && c.Code == codeReplayed }

// settling reports whether the command waits for nothing but late reports:
// timed out, or rejected as replayed. The gateway forgets it LateWindow
// after its last entry.
func (c *Command) settling() bool { return c.Stage == Timeout || c.replayRejected() }

// Values decodes the command's arguments through the dictionary.
func (c *Command) Values() (dict.Values, error) {
	d, ok := dict.CommandByOpcode(c.Opcode)
	if !ok {
		return nil, fmt.Errorf("gateway: no command with opcode %d", c.Opcode)
	}
	return d.DecodeArgs(&protocol.Command{Vehicle: c.Vehicle, Seq: c.Seq, Opcode: c.Opcode, Args: c.Args})
}

// Last returns the last entry of the history.
func (c *Command) Last() Entry {
	if len(c.History) == 0 {
		return Entry{}
	}
	return c.History[len(c.History)-1]
}

// clone returns a deep copy, so that callers and the archive never share
// the gateway's state.
func (c *Command) clone() *Command {
	d := *c
	d.Args = slices.Clone(c.Args)
	d.Frame = slices.Clone(c.Frame)
	d.History = slices.Clone(c.History)
	return &d
}

// prevRank is the rank of the stage the command was in before it timed
// out, or of its stage.
func (c *Command) prevRank() int {
	switch {
	case c.Stage == Timeout:
		return c.Last().Waited.rank()
	case c.replayRejected():
		return Sent.rank()
	}
	return c.Stage.rank()
}

// lastStep is the step of the last Progress entry (0: none).
func (c *Command) lastStep() uint32 {
	for i := len(c.History) - 1; i >= 0; i-- {
		if c.History[i].Stage == Progress {
			return c.History[i].Step
		}
	}
	return 0
}

// addEntry appends e, within MaxHistory.
func (c *Command) addEntry(e Entry) {
	if len(c.History) >= MaxHistory && e.Stage == Progress {
		for i := len(c.History) - 1; i >= 0; i-- {
			if c.History[i].Stage == Progress {
				c.History = append(slices.Delete(c.History, i, i+1), e)
				return
			}
		}
	}
	c.History = append(c.History, e)
}

// ReasonName is the dictionary's name of a verification reason code.
func ReasonName(code protocol.Code) string {
	if code == 0 {
		return ""
	}
	return dict.EnumReason.NameOf(uint64(code))
}
