package groundd

import (
	"errors"
	"time"
)

// Errors of the daemon's API. Callers (the HTTP API, the CLI) map them to
// statuses: ErrNotFound to 404, ErrInvalid to 400, ErrState to 409.
var (
	ErrNotFound = errors.New("groundd: not found")
	ErrInvalid  = errors.New("groundd: invalid request")
	ErrState    = errors.New("groundd: not possible in the current state")
)

// UplinkState is where a queued uplink is.
type UplinkState string

// The states of an uplink. Waiting states come first; Done, Failed,
// Cancelled and Expired are final.
const (
	UplinkPending   UplinkState = "pending"   // queued by a followed tag, waiting for an operator's approval
	UplinkQueued    UplinkState = "queued"    // waiting for its turn, its not-before time or a pass
	UplinkActive    UplinkState = "active"    // planned; its plan and bundle are being sent
	UplinkSent      UplinkState = "sent"      // the vehicle holds plan and bundle; installing
	UplinkDone      UplinkState = "done"      // the vehicle reported the install done
	UplinkFailed    UplinkState = "failed"    // planning failed, or the vehicle refused or failed it (see Error)
	UplinkCancelled UplinkState = "cancelled" // cancelled by an operator
	UplinkExpired   UplinkState = "expired"   // its deadline passed before it was done
)

// Final says whether the state is an end.
func (s UplinkState) Final() bool {
	switch s {
	case UplinkDone, UplinkFailed, UplinkCancelled, UplinkExpired:
		return true
	}
	return false
}

// UplinkRequest asks for an image to be put on a vehicle.
type UplinkRequest struct {
	Vehicle uint32 `json:"vehicle"`
	// Image is the image reference (oci:PATH:TAG, oci:PATH@sha256:...).
	Image string `json:"image"`
	// Priority: higher goes first (default 0).
	Priority int `json:"priority,omitempty"`
	// NotBefore: not planned or sent before this time (zero: at once).
	NotBefore time.Time `json:"not_before,omitzero"`
	// Deadline: if not done by then, the uplink expires (zero: none).
	Deadline time.Time `json:"deadline,omitzero"`
	// AllowDowngrade signs the permission to install a lower version.
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
	// Source says who queued it: "" an operator, "follow" a followed tag.
	Source string `json:"source,omitempty"`
}

// Uplink is one entry of the uplink queue.
type Uplink struct {
	ID uint64 `json:"id"`
	UplinkRequest
	State UplinkState `json:"state"`
	// Error says why a failed or expired uplink ended.
	Error string `json:"error,omitempty"`
	// Order breaks ties between equal priorities (lower first); Reorder
	// changes it.
	Order   int64     `json:"order"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Plans are the ids of the signed plans sent for this uplink: the
	// first, then any supplements.
	Plans []uint64 `json:"plans,omitempty"`
	// Transfers are the ids of its transfers, in the order they are sent.
	Transfers []uint64 `json:"transfers,omitempty"`
	// Accepted are the plans the vehicle said it accepted (plan_accepted,
	// or hk.transfer): a plan's bundle is offered only then.
	Accepted []uint64 `json:"accepted,omitempty"`
	// Mismatch are the layers the vehicle reported a base mismatch in, and
	// MismatchAt the last report while a supplement is to be planned.
	Mismatch   []int     `json:"mismatch_layers,omitempty"`
	MismatchAt time.Time `json:"mismatch_at,omitzero"`
	// Abort is the transfer_abort command sent to free the vehicle's
	// staging after the uplink was cancelled or expired (0: none).
	Abort uint64 `json:"abort_command,omitempty"`
	// Manifest is the digest of the image planned.
	Manifest string `json:"manifest,omitempty"`
	// Base is the manifest the plan assumed the vehicle's booted slot holds.
	Base string `json:"base,omitempty"`
	// Layers are the planner's decisions, per layer.
	Layers []LayerDecision `json:"layers,omitempty"`
	// Waiting says why an uplink that is not failed waits: its planned
	// bundle being pushed to the bundle registry, the last failure of that
	// push or of a fetch of its artifact, both tried again, or why it was
	// planned again (empty once it goes on).
	Waiting string `json:"waiting,omitempty"`
	// Bundles are its plans' artifacts in the bundle registry
	// (docker://HOST/REPO@sha256:..., one per plan), when bundles go to a
	// registry: any station fetches them from there.
	Bundles []string `json:"bundles,omitempty"`
}

// LayerDecision is what the plan does for one layer.
type LayerDecision struct {
	DiffID   string `json:"diff_id"`
	Decision string `json:"decision"` // reuse, delta or full (delta's names)
	Size     int64  `json:"size"`     // bytes of the uncompressed layer
	Payload  int64  `json:"payload"`  // bytes of it in the bundle
}

// Slot is what groundd knows of one slot of a vehicle, from hk.slots and
// its own plans.
type Slot struct {
	Name     string `json:"name"`  // "a", "b"
	State    string `json:"state"` // dict slot_state label
	Version  uint64 `json:"version"`
	Digest   string `json:"digest"` // short manifest digest from telemetry (hex, 8 bytes)
	Manifest string `json:"manifest,omitempty"`
	Attempts uint64 `json:"attempts_left"`
	Booted   bool   `json:"booted,omitempty"`
}

// VehicleKeys names the keys a vehicle uses (ids only: keys never leave
// the daemon).
type VehicleKeys struct {
	GroundKeyID uint32 `json:"ground_key_id"`
	MACKeyID    uint32 `json:"mac_key_id"`
	SealKeyID   uint32 `json:"seal_key_id,omitempty"` // 0: uplink not sealed
}

// Vehicle is what groundd knows of one vehicle.
type Vehicle struct {
	ID          uint32      `json:"id"`
	Name        string      `json:"name,omitempty"`
	Slots       []Slot      `json:"slots"`
	BootedSlot  string      `json:"booted_slot,omitempty"`
	LastContact time.Time   `json:"last_contact,omitzero"`
	Keys        VehicleKeys `json:"keys"`
	// Link says whether the link to the vehicle is up now.
	Link bool `json:"link"`
	// Active is the uplink being sent, 0 if none.
	Active uint64 `json:"active,omitempty"`
	// Transfers are the transfers in flight with what the vehicle reported
	// holding.
	Transfers []Transfer `json:"transfers,omitempty"`
	// Following is the tag the vehicle follows and the last verdict on it.
	Following *Following `json:"following,omitempty"`
	// Events are the last events the vehicle reported (newest last).
	Events []EventRecord `json:"events,omitempty"`
}

// Transfer is the progress of one transfer of an uplink (its plan, then
// its bundle).
type Transfer struct {
	Uplink   uint64 `json:"uplink"`
	Vehicle  uint32 `json:"vehicle"`
	Plan     uint64 `json:"plan"`
	ID       uint64 `json:"id"`
	Kind     string `json:"kind"` // "plan" or "bundle"
	Size     uint64 `json:"size"`
	Done     bool   `json:"done"`
	Chunks   int    `json:"chunks_held"`
	Total    int    `json:"chunks_total"`
	Bytes    uint64 `json:"bytes_held"`
	Sent     int64  `json:"chunks_sent"`
	Resent   int64  `json:"chunks_resent"`
	Presumed int64  `json:"chunks_presumed_lost,omitempty"`
	// Remaining is the bytes the uplink still has to send (this transfer
	// and those after it).
	Remaining uint64 `json:"bytes_remaining"`
	// Passes is the estimate of passes still needed (-1: no pass scheduled
	// that could carry it).
	Passes int `json:"passes_remaining"`
}

// TelemetryRecord is one telemetry packet or event from a vehicle, decoded
// with the dictionary.
type TelemetryRecord struct {
	Vehicle uint32 `json:"vehicle"`
	// Received is the ground time of reception; Time the vehicle's.
	Received time.Time      `json:"received"`
	Time     time.Time      `json:"time,omitzero"`
	Kind     string         `json:"kind"` // "tm" or "event"
	Name     string         `json:"name"` // packet or event name
	Seq      uint32         `json:"seq"`
	Values   map[string]any `json:"values,omitempty"`
	Text     string         `json:"text,omitempty"`
	Severity string         `json:"severity,omitempty"`
}

// EventRecord is a vehicle event as kept in the vehicle's record.
type EventRecord = TelemetryRecord

// Following is the state of a vehicle's followed tag: where it points and
// whether that image was queued, or why not.
type Following struct {
	Ref      string    `json:"ref"`
	Policy   string    `json:"policy"`
	Time     time.Time `json:"time,omitzero"`
	Tag      string    `json:"tag,omitempty"`
	Manifest string    `json:"manifest,omitempty"`
	Version  uint64    `json:"version,omitempty"`
	// Uplink is the uplink queued for it; Reason and Detail say why none
	// was (unsigned, untrusted, other hardware, not newer).
	Uplink uint64 `json:"uplink,omitempty"`
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
}
