package dict

import (
	"errors"
	"strings"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/update"
)

// Verification reason codes of the updater (protocol.Code, in
// protocol.Verification.Code, events and hk.error). Codes below 256 are
// protocol's rejection reasons (protocol.CodeOf) and are reused where they
// fit: a plan for another vehicle is CodeOf(ReasonWrongVehicle), a replayed
// plan or command CodeOf(ReasonReplayed), a plan signed by an unknown ground
// key CodeOf(ReasonUnknownKey). The values are stable.
const (
	CodeBadPlanSignature    protocol.Code = 256 + iota // the ground's plan signature does not verify
	CodeUntrustedReleaseKey                            // the release is signed by a key the vehicle does not trust
	CodeBadReleaseSignature                            // the release signature does not verify
	CodeWrongHardware                                  // the release is for other hardware
	CodeDowngrade                                      // release version not above the installed one, without AllowDowngrade
	CodeOverQuota                                      // the plan needs more staging than the vehicle allows
	CodeBusy                                           // another plan or install is in progress
	CodeBadState                                       // the command or plan does not apply in the current state
	CodeBaseMismatch                                   // the booted slot does not hold what the plan or a delta assumes
	CodeInstallFailed                                  // writing or verifying the inactive slot failed
	CodeHealthCheckFailed                              // the new slot failed its health checks
	CodeBadPlan                                        // the plan is malformed or over a bound
	CodeManifestMismatch                               // the manifest does not hash to the signed digest
	CodeConfigMismatch                                 // the config is not the one the manifest names
	CodeBundleMismatch                                 // the bundle's size or sha256 is not the plan's
	CodeUnknownPlan                                    // a bundle, abort or delete names a plan not accepted
	CodeUnknownCommand                                 // no command has this opcode
	CodeBadArgument                                    // an argument is missing, of the wrong type or out of range
	CodeStorage                                        // a storage error on the vehicle
)

// CodeOf returns the verification code for an error from protocol or
// protocol/update: the update-specific code where there is one, else
// protocol.CodeOf(protocol.ReasonOf(err)). Checks the daemon makes itself
// (hardware, version, quota, state) have no error here: it uses their codes
// directly.
func CodeOf(err error) protocol.Code {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, update.ErrReleaseSignature) && errors.Is(err, protocol.ErrUnknownKey):
		return CodeUntrustedReleaseKey
	case errors.Is(err, update.ErrReleaseSignature):
		return CodeBadReleaseSignature
	case errors.Is(err, update.ErrPlanSignature) && errors.Is(err, protocol.ErrUnknownKey):
		return protocol.CodeOf(protocol.ReasonUnknownKey)
	case errors.Is(err, update.ErrPlanSignature):
		return CodeBadPlanSignature
	case errors.Is(err, update.ErrWrongVehicle):
		return protocol.CodeOf(protocol.ReasonWrongVehicle)
	case errors.Is(err, update.ErrManifestDigest):
		return CodeManifestMismatch
	case errors.Is(err, update.ErrConfigDigest):
		return CodeConfigMismatch
	case errors.Is(err, update.ErrBundleDigest), errors.Is(err, update.ErrTruncated):
		return CodeBundleMismatch
	case errors.Is(err, update.ErrMalformed), errors.Is(err, update.ErrTooLarge), errors.Is(err, update.ErrBadTarget):
		return CodeBadPlan
	case errors.Is(err, ErrValue):
		return CodeBadArgument
	}
	return protocol.CodeOf(protocol.ReasonOf(err))
}

var updateCodes = []Label{
	{uint64(CodeBadPlanSignature), "bad_plan_signature", "the ground's plan signature does not verify"},
	{uint64(CodeUntrustedReleaseKey), "untrusted_release_key", "the release is signed by a key the vehicle does not trust"},
	{uint64(CodeBadReleaseSignature), "bad_release_signature", "the release signature does not verify"},
	{uint64(CodeWrongHardware), "wrong_hardware", "the release is for other hardware"},
	{uint64(CodeDowngrade), "downgrade", "release version not above the installed one and no signed permission to downgrade"},
	{uint64(CodeOverQuota), "over_quota", "the plan needs more staging storage than the vehicle allows"},
	{uint64(CodeBusy), "busy", "another plan or install is in progress"},
	{uint64(CodeBadState), "bad_state", "the command or plan does not apply in the current state"},
	{uint64(CodeBaseMismatch), "base_mismatch", "the booted slot does not hold what the plan or a delta assumes"},
	{uint64(CodeInstallFailed), "install_failed", "writing or verifying the inactive slot failed"},
	{uint64(CodeHealthCheckFailed), "health_check_failed", "the new slot failed its health checks"},
	{uint64(CodeBadPlan), "bad_plan", "the plan is malformed or over a bound"},
	{uint64(CodeManifestMismatch), "manifest_mismatch", "the manifest does not hash to the digest the release signs"},
	{uint64(CodeConfigMismatch), "config_mismatch", "the config is not the one the manifest names"},
	{uint64(CodeBundleMismatch), "bundle_mismatch", "the bundle's size or sha256 is not the plan's"},
	{uint64(CodeUnknownPlan), "unknown_plan", "a bundle, abort or delete names a plan the vehicle did not accept"},
	{uint64(CodeUnknownCommand), "unknown_command", "no command has this opcode"},
	{uint64(CodeBadArgument), "bad_argument", "an argument is missing, of the wrong type or out of range"},
	{uint64(CodeStorage), "storage", "a storage error on the vehicle"},
}

// reasonLabels lists protocol's reasons (codes 0..NumReasons-1), then the
// updater's.
func reasonLabels() []Label {
	var ls []Label
	for r := protocol.ReasonNone; r < protocol.NumReasons; r++ {
		ls = append(ls, Label{uint64(protocol.CodeOf(r)), strings.ReplaceAll(r.String(), "-", "_"), "protocol rejection reason " + r.String()})
	}
	return append(ls, updateCodes...)
}
