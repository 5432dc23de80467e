package watchdog

import (
	"fmt"
	"strconv"
	"strings"
)

// BootloaderModel is a Go model of the shipped boot script
// (bootscripts/boot.cmd), step for step, operating on the same
// environment. Tests and the HIL bench use it as the virtual board's
// bootloader. For counters 0-9, the only values flightd writes, the GRUB
// snippet (bootscripts/grub.cfg) behaves identically; outside that range
// the model follows U-Boot's quirks (test reads decimal, setexpr hex).
type BootloaderModel struct {
	// Attempts is bootorbit_attempts in the script: the default for unset
	// counters and the value they are reset to when all are exhausted.
	Attempts int
}

// BootDecision is the outcome of one run of the boot script.
type BootDecision struct {
	// Slot is the slot booted with rauc.slot=Slot; "" when Reset.
	Slot string
	// Reset is true when no slot had attempts left: the script reset the
	// counters, saved, and reset the board without booting.
	Reset bool
	// SaveFailed is true when saveenv failed, so nothing was counted. The
	// script then boots the other slot instead of a slot on trial
	// (BOOTORBIT_TRIAL), which could otherwise hang uncounted forever.
	SaveFailed bool
}

// Cmdline returns the rauc.slot part of the kernel command line the script
// passes.
func (d BootDecision) Cmdline() string {
	if d.Reset {
		return ""
	}
	return "rauc.slot=" + d.Slot
}

// Boot runs the script once against env. A Load failure is returned as an
// error: U-Boot would fall back to its default environment, which has no
// protocol variables. A Save failure is not an error but part of the
// decision (SaveFailed), as it is for the script.
func (m BootloaderModel) Boot(env Env) (BootDecision, error) {
	v, err := env.Load()
	if err != nil {
		return BootDecision{}, fmt.Errorf("bootloader model: %w", err)
	}
	n := strconv.Itoa(m.Attempts)

	// test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"  (and the counters)
	if v[VarBootOrder] == "" {
		v[VarBootOrder] = DefaultBootOrder
	}
	for _, s := range SlotNames {
		if v[LeftVar(s)] == "" {
			v[LeftVar(s)] = n
		}
	}

	// for s in ${BOOT_ORDER}; do ... done
	slot := ""
	for _, s := range hushFields(v[VarBootOrder]) {
		if slot != "" || (s != "A" && s != "B") {
			continue
		}
		// test ${BOOT_X_LEFT} -gt 0
		if ubootTestInt(v[LeftVar(s)]) > 0 {
			// setexpr BOOT_X_LEFT ${BOOT_X_LEFT} - 1
			v[LeftVar(s)] = strconv.FormatUint(ubootHex(v[LeftVar(s)])-1, 16)
			slot = s
		}
	}

	if slot == "" {
		for _, s := range SlotNames {
			v[LeftVar(s)] = n
		}
		// saveenv; reset (whether or not the save worked)
		return BootDecision{Reset: true, SaveFailed: env.Save(v) != nil}, nil
	}
	// if saveenv; then ... else: a trial slot is not booted uncounted
	if err := env.Save(v); err != nil {
		if slot == v[VarTrial] {
			slot = otherSlot(slot)
		}
		return BootDecision{Slot: slot, SaveFailed: true}, nil
	}
	return BootDecision{Slot: slot}, nil
}

// hushFields splits a variable into words as U-Boot's hush does in the
// script's for loop: on spaces and newlines, not on tabs or carriage
// returns (measured with the QEMU test in uboot_qemu_test.go).
func hushFields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\n' })
}

// ubootTestInt reads a number as U-Boot's test -gt does
// (simple_strtol base 10: leading digits, anything else stops, none is 0).
func ubootTestInt(s string) int64 {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var n int64
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9' && n < 1<<40; i++ {
		n = n*10 + int64(s[i]-'0')
	}
	if neg {
		return -n
	}
	return n
}

// ubootHex reads a number as setexpr does (simple_strtoul base 16, an
// optional 0x prefix).
func ubootHex(s string) uint64 {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	var n uint64
	for i := 0; i < len(s) && n < 1<<56; i++ {
		c := s[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return n
		}
		n = n*16 + uint64(d)
	}
	return n
}
