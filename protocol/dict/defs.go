package dict

import (
	"math"

	"github.com/bootorbit/bootorbit/protocol"
)

// Enumerations.
var (
	// EnumReason is the verification reason codes (protocol.Code).
	EnumReason = &Enumeration{Name: "reason", Description: "verification and refusal reason codes: protocol's below 256, the updater's from 256", Labels: reasonLabels()}
	EnumSlot   = &Enumeration{Name: "slot", Description: "an A/B slot", Labels: []Label{
		{0, "none", "no slot (unknown, or not applicable)"},
		{1, "a", "slot A"},
		{2, "b", "slot B"},
	}}
	EnumSlotState = &Enumeration{Name: "slot_state", Description: "a slot's state (slots.State)", Labels: []Label{
		{0, "empty", "nothing installed, or contents unknown"},
		{1, "writing", "a write started and has not been verified"},
		{2, "written", "written, synced and verified; not yet armed"},
		{3, "pending", "armed for a trial boot"},
		{4, "good", "booted and passed health checks"},
		{5, "bad", "failed verification or its trial boot"},
	}}
	EnumResetCause = &Enumeration{Name: "reset_cause", Description: "why the board last came up", Labels: []Label{
		{0, "unknown", "not recorded"},
		{1, "power_on", "power on, or a reset the watchdog driver cannot tell apart"},
		{2, "watchdog", "the hardware watchdog reset the board"},
		{3, "power", "under- or over-voltage"},
		{4, "overheat", "overheat"},
		{5, "reboot", "a reboot flightd asked for (command, activation, rollback)"},
	}}
	EnumBootOutcome = &Enumeration{Name: "boot_outcome", Description: "how the last trial of a new slot ended", Labels: []Label{
		{0, "none", "no trial boot yet"},
		{1, "trial", "the booted slot is on trial (pending health checks)"},
		{2, "good", "the new slot passed its health checks and was marked good"},
		{3, "rolled_back", "the new slot failed and the previous slot booted again"},
	}}
	EnumTransferState = &Enumeration{Name: "transfer_state", Description: "where the active plan is", Labels: []Label{
		{0, "idle", "no plan in progress"},
		{1, "plan", "receiving the plan"},
		{2, "bundle", "plan accepted, receiving its bundle"},
		{3, "paused", "paused by command"},
		{4, "installing", "bundle complete and verified, installing into the inactive slot"},
		{5, "installed", "installed and read back; waiting for activation"},
		{6, "base_mismatch", "install stopped on a base mismatch; waiting for a supplement plan"},
		{7, "failed", "the plan failed (see hk.error)"},
		{8, "armed", "the new slot is armed for a trial boot"},
	}}
	EnumIDKind = &Enumeration{Name: "id_kind", Description: "what an id argument names", Labels: []Label{
		{0, "transfer", "a transfer id (protocol.Offer.ID)"},
		{1, "plan", "a plan id (update.Plan.ID): both of its transfers"},
	}}
	EnumRebootCause = &Enumeration{Name: "reboot_cause", Description: "why flightd reboots", Labels: []Label{
		{0, "command", "the reboot command"},
		{1, "activate", "activation of the new slot"},
		{2, "rollback", "the rollback command or a failed health check"},
		{3, "factory_reset", "the factory_reset command"},
	}}

	enumerations = []*Enumeration{EnumReason, EnumSlot, EnumSlotState, EnumResetCause, EnumBootOutcome, EnumTransferState, EnumIDKind, EnumRebootCause}
)

// Item constructors, to keep the tables below readable.
func u(name string, bits int, unit, desc string) Field {
	return Field{Name: name, Kind: Uint, Bits: bits, Unit: unit, Description: desc}
}
func en(name string, e *Enumeration, bits int, desc string) Field {
	return Field{Name: name, Kind: Enum, Bits: bits, Enum: e, Description: desc}
}
func b1(name, desc string) Field { return Field{Name: name, Kind: Bool, Bits: 1, Description: desc} }
func bs(name string, n int, desc string) Field {
	return Field{Name: name, Kind: Bytes, MaxLen: n, Description: desc}
}
func str(name string, n int, desc string) Field {
	return Field{Name: name, Kind: String, MaxLen: n, Description: desc}
}
func withID(id uint16, f Field) Field { f.ID = id; return f }

// ShortDigestLen is the length of the short image and layer digests in
// telemetry and events: the first bytes of the sha256.
const ShortDigestLen = 8

// MaxPartsPerEvent bounds the part indices one base_mismatch event lists
// (4 bytes each, big endian, in its parts argument); more take more events.
const MaxPartsPerEvent = 16

// TopDrops is how many drop reasons hk.counters reports (the largest counts).
const TopDrops = 4

// MaxErrorText bounds hk.error's text.
const MaxErrorText = 48

// MaxLinkName bounds a link name in events.
const MaxLinkName = 16

var idArgs = []Field{
	u("id", 64, "", "the transfer or plan id"),
	en("kind", EnumIDKind, 8, "whether id is a transfer or a plan id"),
}

// Commands, by opcode.
var (
	CmdNoop     = &Command{Opcode: 1, Name: "noop", Description: "do nothing; verification reports prove the command path"}
	CmdStatus   = &Command{Opcode: 2, Name: "status", Description: "send every housekeeping packet now"}
	CmdAbort    = &Command{Opcode: 3, Name: "transfer_abort", Description: "abandon a transfer, or a plan and both its transfers, and free their staging", Args: idArgs}
	CmdPause    = &Command{Opcode: 4, Name: "transfer_pause", Description: "stop receiving a transfer or plan (chunks are dropped, nothing is lost that was journaled)", Args: idArgs}
	CmdResume   = &Command{Opcode: 5, Name: "transfer_resume", Description: "resume a paused transfer or plan", Args: idArgs}
	CmdActivate = &Command{Opcode: 6, Name: "activate", Description: "arm the inactive slot, which must hold a verified install, for a trial boot with a boot-attempt counter; reboot at or after not_before if given (else on the reboot command)", Args: []Field{
		{Name: "slot", Kind: Enum, Bits: 8, Enum: EnumSlot, Range: &Range{1, 2}, Description: "the slot to arm: the inactive one"},
		{Name: "attempts", Kind: Uint, Bits: 8, Range: &Range{1, 9}, Description: "boot attempts before the bootloader falls back (one digit: U-Boot writes hex)"},
		{Name: "not_before", Kind: Int, Bits: 64, Unit: "ms", Range: &Range{0, math.MaxInt64}, Optional: true, Description: "vehicle time (ms since the Unix epoch) before which not to reboot; absent: wait for the reboot command"},
	}}
	CmdReboot   = &Command{Opcode: 7, Name: "reboot", Description: "reboot now (into the armed slot, if one is armed)"}
	CmdRollback = &Command{Opcode: 8, Name: "rollback", Description: "make the other slot, which must be good, boot next, and reboot"}
	CmdMarkGood = &Command{Opcode: 9, Name: "mark_good", Description: "mark the booted slot good now, ending its trial without waiting for the health checks"}
	CmdVerify   = &Command{Opcode: 10, Name: "verify_slot", Description: "read a slot back and check it against its recorded digest; the result comes as an event", Args: []Field{
		{Name: "slot", Kind: Enum, Bits: 8, Enum: EnumSlot, Range: &Range{1, 2}, Description: "the slot to verify"},
	}}
	CmdDeleteStaged = &Command{Opcode: 11, Name: "delete_staged", Description: "delete a plan's staged data, or every plan's", Args: []Field{
		u("plan", 64, "", "the plan id; 0: every staged plan"),
	}}
	CmdFactoryReset  = &Command{Opcode: 12, Name: "factory_reset", Description: "discard local state (/etc changes, /var) at the next boot, as bootc does"}
	CmdResetCounters = &Command{Opcode: 13, Name: "reset_counters", Description: "zero the counters of hk.counters"}

	commands = []*Command{CmdNoop, CmdStatus, CmdAbort, CmdPause, CmdResume, CmdActivate, CmdReboot, CmdRollback, CmdMarkGood, CmdVerify, CmdDeleteStaged, CmdFactoryReset, CmdResetCounters}
)

func slotParams(base uint16, s string) []Field {
	return []Field{
		withID(base, en("slot_"+s+"_state", EnumSlotState, 8, "slot "+s+": state")),
		withID(base+1, u("slot_"+s+"_version", 64, "", "slot "+s+": release version of its image (0: none)")),
		withID(base+2, bs("slot_"+s+"_digest", ShortDigestLen, "slot "+s+": first bytes of its image manifest sha256")),
		withID(base+3, u("slot_"+s+"_attempts", 8, "", "slot "+s+": boot attempts left (BOOT_x_LEFT)")),
	}
}

func dropParams(base uint16) []Field {
	var fs []Field
	for i := range TopDrops {
		n := string(rune('1' + i))
		fs = append(fs,
			withID(base+uint16(2*i), en("drop"+n+"_reason", EnumReason, 16, "the reason with the "+n+". most dropped frames")),
			withID(base+uint16(2*i)+1, u("drop"+n+"_count", 32, "frames", "frames dropped for drop"+n+"_reason")))
	}
	return fs
}

// Telemetry packets, by id. Parameter ids are packet id × 100 + index.
var (
	HKSlots = &Packet{ID: 1, Name: "hk.slots", Description: "per-slot state, version, image digest and attempts left", Params: append(slotParams(100, "a"), slotParams(104, "b")...)}
	HKBoot  = &Packet{ID: 2, Name: "hk.boot", Description: "the boot: booted and next slot, trial, reset cause, boot count, outcome of the last trial", Params: []Field{
		withID(200, en("booted_slot", EnumSlot, 8, "the slot running now")),
		withID(201, en("next_slot", EnumSlot, 8, "the slot the bootloader boots next (first of BOOT_ORDER)")),
		withID(202, b1("trial", "the booted slot is on trial, not yet marked good")),
		withID(203, en("reset_cause", EnumResetCause, 8, "why the board last came up")),
		withID(204, u("boot_count", 32, "boots", "boots recorded since the journal was created")),
		withID(205, en("last_outcome", EnumBootOutcome, 8, "how the last trial boot ended")),
	}}
	HKTransfer = &Packet{ID: 3, Name: "hk.transfer", Description: "the active plan and its transfer", Params: []Field{
		withID(300, u("plan_id", 64, "", "the active plan (0: none)")),
		withID(301, u("transfer_id", 64, "", "the transfer in progress (0: none)")),
		withID(302, u("chunks_held", 32, "chunks", "chunks of that transfer held durably")),
		withID(303, u("chunks_total", 32, "chunks", "chunks of that transfer, hash blocks included")),
		withID(304, u("bytes_staged", 64, "bytes", "bytes staged for the active plan")),
		withID(305, en("state", EnumTransferState, 8, "where the active plan is")),
	}}
	HKStorage = &Packet{ID: 4, Name: "hk.storage", Description: "staging storage", Params: []Field{
		withID(400, u("staging_used", 64, "bytes", "staging bytes in use")),
		withID(401, u("staging_quota", 64, "bytes", "staging bytes allowed (a plan's Staging must fit)")),
		withID(402, u("free", 64, "bytes", "free bytes of the staging filesystem")),
	}}
	HKCounters = &Packet{ID: 5, Name: "hk.counters", Description: "link and command counters since the last reset_counters", Params: append([]Field{
		withID(500, u("frames_in", 32, "frames", "frames received")),
		withID(501, u("frames_out", 32, "frames", "frames sent")),
		withID(502, u("frames_dropped", 32, "frames", "frames dropped, all reasons")),
		withID(503, u("cmds_accepted", 32, "commands", "commands accepted")),
		withID(504, u("cmds_rejected", 32, "commands", "commands rejected")),
	}, dropParams(505)...)}
	HKError = &Packet{ID: 6, Name: "hk.error", Description: "the last error", Params: []Field{
		withID(600, en("code", EnumReason, 16, "its reason code (0: none since start)")),
		{ID: 601, Name: "at", Kind: Int, Bits: 64, Unit: "ms", Description: "when, vehicle time in ms since the Unix epoch"},
		withID(602, str("text", MaxErrorText, "a short description")),
	}}

	packets = []*Packet{HKSlots, HKBoot, HKTransfer, HKStorage, HKCounters, HKError}
)

func plan() Field { return u("plan", 64, "", "the plan id") }
func slot(desc string) Field {
	return en("slot", EnumSlot, 8, desc)
}
func code(desc string) Field { return en("code", EnumReason, 16, desc) }

// Events, by id.
var (
	EvPlanAccepted = &Event{ID: 1, Name: "plan_accepted", Severity: protocol.SeverityInfo, Description: "a plan verified; its bundle may come", Args: []Field{
		plan(), u("version", 64, "", "the release version"), u("bundle_size", 64, "bytes", "the bundle's size")}}
	EvPlanRefused = &Event{ID: 2, Name: "plan_refused", Severity: protocol.SeverityWarning, Description: "a plan was refused before any bundle byte", Args: []Field{
		plan(), code("why")}}
	EvTransferComplete = &Event{ID: 3, Name: "transfer_complete", Severity: protocol.SeverityInfo, Description: "a transfer is complete and verified", Args: []Field{
		plan(), u("transfer", 64, "", "the transfer id"), u("bytes", 64, "bytes", "its size")}}
	EvTransferAborted = &Event{ID: 4, Name: "transfer_aborted", Severity: protocol.SeverityWarning, Description: "a transfer or plan was abandoned", Args: []Field{
		plan(), u("transfer", 64, "", "the transfer id (0: the whole plan)"), code("why")}}
	EvInstallStarted = &Event{ID: 5, Name: "install_started", Severity: protocol.SeverityInfo, Description: "installing a plan into the inactive slot", Args: []Field{
		plan(), slot("the slot written")}}
	EvInstallDone = &Event{ID: 6, Name: "install_done", Severity: protocol.SeverityInfo, Description: "the slot is written and read back", Args: []Field{
		plan(), slot("the slot written"), u("version", 64, "", "the release version installed")}}
	EvInstallFailed = &Event{ID: 7, Name: "install_failed", Severity: protocol.SeverityError, Description: "installing failed; the slot is bad", Args: []Field{
		plan(), slot("the slot written"), code("why")}}
	EvBaseMismatch = &Event{ID: 8, Name: "base_mismatch", Severity: protocol.SeverityWarning, Description: "delta parts reference data the vehicle does not hold as planned; the ground resends them as full data in a supplement plan", Args: []Field{
		plan(),
		u("layer", 16, "", "index of the layer in the config's diff_ids"),
		bs("diff_id", ShortDigestLen, "first bytes of the layer's diff_id"),
		bs("parts", 4*MaxPartsPerEvent, "the part indices, 4 bytes each, big endian"),
		b1("more", "more parts of this layer follow in another event")}}
	EvArmed = &Event{ID: 9, Name: "armed", Severity: protocol.SeverityInfo, Description: "a slot is armed for a trial boot", Args: []Field{
		slot("the armed slot"), u("attempts", 8, "", "boot attempts it has")}}
	EvRebooting = &Event{ID: 10, Name: "rebooting", Severity: protocol.SeverityInfo, Description: "flightd is about to reboot", Args: []Field{
		en("cause", EnumRebootCause, 8, "why"), slot("the slot that boots next")}}
	EvTrialBoot = &Event{ID: 11, Name: "trial_boot", Severity: protocol.SeverityInfo, Description: "a slot on trial booted; health checks run", Args: []Field{
		slot("the booted slot"), u("attempts_left", 8, "", "boot attempts left")}}
	EvMarkedGood = &Event{ID: 12, Name: "marked_good", Severity: protocol.SeverityInfo, Description: "the booted slot passed its health checks and is good", Args: []Field{
		slot("the booted slot"), u("version", 64, "", "its release version")}}
	EvRolledBack = &Event{ID: 13, Name: "rolled_back", Severity: protocol.SeverityError, Description: "a slot failed and the other slot boots", Args: []Field{
		en("from", EnumSlot, 8, "the failed slot"), en("to", EnumSlot, 8, "the slot booted instead"), code("why")}}
	EvWatchdogReset = &Event{ID: 14, Name: "watchdog_reset", Severity: protocol.SeverityWarning, Description: "this boot followed a hardware watchdog reset", Args: []Field{
		slot("the slot the reset happened in, the slot that hung (none: not known)"), u("boot_count", 32, "boots", "the boot count")}}
	EvLinkUp       = &Event{ID: 15, Name: "link_up", Severity: protocol.SeverityInfo, Description: "a link came up", Args: []Field{str("link", MaxLinkName, "the link's name")}}
	EvLinkDown     = &Event{ID: 16, Name: "link_down", Severity: protocol.SeverityWarning, Description: "a link went down", Args: []Field{str("link", MaxLinkName, "the link's name")}}
	EvSlotVerified = &Event{ID: 17, Name: "slot_verified", Severity: protocol.SeverityInfo, Description: "result of verify_slot", Args: []Field{
		slot("the slot read back"), code("0: it matches its digest")}}
	EvStagedDeleted = &Event{ID: 18, Name: "staged_deleted", Severity: protocol.SeverityInfo, Description: "staged data was deleted", Args: []Field{
		u("plan", 64, "", "the plan (0: all)"), u("bytes", 64, "bytes", "bytes freed")}}
	EvCountersReset = &Event{ID: 19, Name: "counters_reset", Severity: protocol.SeverityInfo, Description: "the counters were zeroed"}
	EvFactoryReset  = &Event{ID: 20, Name: "factory_reset", Severity: protocol.SeverityWarning, Description: "local state will be discarded at the next boot"}

	events = []*Event{EvPlanAccepted, EvPlanRefused, EvTransferComplete, EvTransferAborted, EvInstallStarted, EvInstallDone, EvInstallFailed,
		EvBaseMismatch, EvArmed, EvRebooting, EvTrialBoot, EvMarkedGood, EvRolledBack, EvWatchdogReset, EvLinkUp, EvLinkDown,
		EvSlotVerified, EvStagedDeleted, EvCountersReset, EvFactoryReset}
)
