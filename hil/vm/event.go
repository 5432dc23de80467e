package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrEvent prefixes errors about a guest event line that does not parse.
var ErrEvent = errors.New("vm: event")

// EventPrefix starts every structured line the guest init prints on the
// serial console; everything else on the console is the kernel's.
const EventPrefix = "@bootorbit "

// maxEventLine bounds a console line parsed as an event.
const maxEventLine = 4096

// Event is one structured result line from the guest. Up is the guest's
// CLOCK_BOOTTIME in seconds when it was printed, so that durations in the
// guest are measured on the guest's clock, not on the host's.
type Event struct {
	Ev   string  `json:"ev"`
	Boot int     `json:"boot,omitempty"` // boot number kept on the persistent disk, 1 = first
	Up   float64 `json:"up"`

	Msg    string `json:"msg,omitempty"`
	BootID string `json:"boot_id,omitempty"` // the kernel's, fresh at every boot
	Err    string `json:"err,omitempty"`

	// WDIOC_GETSUPPORT
	Identity string `json:"identity,omitempty"`
	Options  uint32 `json:"options,omitempty"`
	Firmware uint32 `json:"firmware,omitempty"`

	// WDIOC_SETTIMEOUT asked and read back, seconds
	Asked   float64 `json:"asked,omitempty"`
	Applied float64 `json:"applied,omitempty"`

	// WDIOC_GETBOOTSTATUS
	BootStatus *uint32 `json:"bootstatus,omitempty"`

	// the reset record written by watchdog.RecordBootReset
	Cause          string `json:"cause,omitempty"`
	Count          uint64 `json:"count,omitempty"`
	WatchdogResets uint64 `json:"watchdog_resets,omitempty"`

	N int `json:"n,omitempty"` // keepalives so far

	// the A/B board (scenario abboard): the slot booted (rauc.slot=), the
	// version of the image in it, and the boot variables of the U-Boot
	// environment as the guest read them
	Slot    string            `json:"slot,omitempty"`
	Version string            `json:"version,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
}

// Format renders e as a console line (without the newline).
func (e Event) Format() string {
	b, err := json.Marshal(e)
	if err != nil {
		// Event has only plain fields; Marshal cannot fail on it.
		panic(err)
	}
	return EventPrefix + string(b)
}

// ParseEvent reads a console line. ok is false for a line that is not an
// event; err is set for one that starts like an event but does not parse.
func ParseEvent(line string) (e Event, ok bool, err error) {
	i := strings.Index(line, EventPrefix)
	if i < 0 {
		return e, false, nil
	}
	body := strings.TrimRight(line[i+len(EventPrefix):], "\r\n ")
	if len(body) > maxEventLine {
		return e, true, fmt.Errorf("%w: line of %d bytes, limit %d", ErrEvent, len(body), maxEventLine)
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		return e, true, fmt.Errorf("%w: %q: %w", ErrEvent, body, err)
	}
	if e.Ev == "" {
		return e, true, fmt.Errorf("%w: %q has no ev", ErrEvent, body)
	}
	return e, true, nil
}
