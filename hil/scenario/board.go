package scenario

import (
	"context"
	"fmt"

	"github.com/bootorbit/bootorbit/hil/board"
)

// Board is what a scenario needs of a board, derived from what the runner
// does with one: switch its power, see it boot (and why it rebooted),
// read its slots and booted slot, know when flightd runs, how much of a
// bundle it staged, and where its flightd listens on the link.
// hil/board.Board (the virtual board) implements it; so does the real
// bench board of hil/realboard (over SSH, a power command and the
// console).
type Board interface {
	// Addr is flightd's UDP address as this host reaches it: the link
	// emulator's vehicle endpoint.
	Addr() string
	// SetPeer names the address flightd sends to (the link emulator's
	// vehicle side) from the next boot.
	SetPeer(addr string)
	// Run watches the board until ctx ends, then powers it off.
	Run(ctx context.Context) error
	// PowerOn switches the power on and returns once the board booted
	// (a no-op when it is on); PowerCut switches it off at once.
	PowerOn() error
	PowerCut()
	// Close releases the board (Run must have ended).
	Close() error
	// State is the board's booted slot and slot states (the environment
	// as far as the board can read it).
	State() (board.State, error)
	// Events is what happened so far: power_on, boot, reboot,
	// watchdog_reset, power_cut, hang, no_bootable_slot, exit. Count
	// counts the events of one kind.
	Events() []board.Event
	Count(kind string) int
	// Petted reports whether the board is on and its flightd runs (and
	// pets the watchdog) in this boot.
	Petted() bool
	// StagedBytes is what flightd staged of the uplink so far.
	StagedBytes() int64
}

var _ Board = (*board.Board)(nil)

// NewBoardFunc makes the board of one scenario run from the virtual
// board's configuration (the scenario's keys, vehicle, frame size,
// factory image, attempts, a directory of the run's own).
type NewBoardFunc func(ctx context.Context, cfg board.Config) (Board, error)

// Limits says what a board cannot do, each with the reason the report
// gives; the zero value (the virtual board) can do everything.
type Limits struct {
	// SlotWrite: the board's state is read too slowly to catch a slot
	// being written (a write of a few MB lasts tens of milliseconds).
	SlotWrite string
	// ImageBehaviour: the synthetic images' behaviour file (an image that
	// hangs at boot, an unhealthy image) does not act on this board.
	ImageBehaviour string
	// LinkListen is the address the link emulator's vehicle side listens
	// on so that the board reaches it ("" : loopback).
	LinkListen string
}

// SkipReason returns why sc cannot run on a board with limits l ("" : it
// can), for the report's "skipped on a real board: why".
func (s *Scenario) SkipReason(l Limits) string {
	for _, f := range s.Faults {
		if f.Kind == FaultPowerCut && f.During == PhaseInstall && l.SlotWrite != "" {
			return fmt.Sprintf("a power cut while the slot is being written: %s", l.SlotWrite)
		}
	}
	for _, u := range s.Updates {
		if u.Image != "update" && l.ImageBehaviour != "" {
			return fmt.Sprintf("the %s image: %s", u.Image, l.ImageBehaviour)
		}
	}
	return ""
}
