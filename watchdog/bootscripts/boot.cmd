# bootorbit A/B boot script for U-Boot (RAUC variable protocol).
# Build: mkimage -A arm64 -T script -C none -d boot.cmd boot.scr
#
# Environment it reads and writes (persisted with saveenv):
#   BOOT_ORDER    slots to try, primary first ("A B")
#   BOOT_A_LEFT   attempts left for slot A, one digit (setexpr writes hex)
#   BOOT_B_LEFT   attempts left for slot B
# and reads BOOTORBIT_TRIAL (the slot flightd armed and has not marked good).
# Board-specific settings it reads (set them in the default environment):
#   bootorbit_load_A, bootorbit_load_B  commands that load kernel, initrd
#                                       and fdt of a slot and boot it
#                                       (e.g. "load mmc 0:2 ... ; booti ...")
#   bootorbit_root_A, bootorbit_root_B  root= of each slot
#   bootorbit_args                      the rest of the kernel command line,
#                                       including watchdog.open_timeout and panic=
# Everything else lives in hush local variables (name=value), which saveenv
# does not store. watchdog/model.go (BootloaderModel) is a Go model of this
# exact logic; keep the two in step.

bootorbit_attempts=3

# Unset protocol variables get their defaults (these are saved below).
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT ${bootorbit_attempts}
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT ${bootorbit_attempts}

# Take the first slot in BOOT_ORDER with attempts left and count this try.
bootorbit_slot=
for s in ${BOOT_ORDER}; do
	if test -z "${bootorbit_slot}"; then
		if test "${s}" = "A"; then
			if test ${BOOT_A_LEFT} -gt 0; then
				setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
				bootorbit_slot=A
			fi
		elif test "${s}" = "B"; then
			if test ${BOOT_B_LEFT} -gt 0; then
				setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
				bootorbit_slot=B
			fi
		fi
	fi
done

if test -z "${bootorbit_slot}"; then
	echo "bootorbit: no slot has attempts left; resetting counters to ${bootorbit_attempts}"
	setenv BOOT_A_LEFT ${bootorbit_attempts}
	setenv BOOT_B_LEFT ${bootorbit_attempts}
	saveenv
	echo "bootorbit: reset (order ${BOOT_ORDER}; A left ${BOOT_A_LEFT}, B left ${BOOT_B_LEFT})"
	reset
fi

# Persist the decremented counter before booting: a hang from here on
# (kernel, init, flightd) costs this slot one attempt.
if saveenv; then
	bootorbit_saved=yes
else
	bootorbit_saved=no
fi
# If the environment cannot be written the attempt is not counted. A slot
# on trial (BOOTORBIT_TRIAL, set by flightd's arm, cleared by mark-good)
# booted uncounted could hang and be retried forever, so boot the other
# slot instead; a slot marked good boots as usual.
if test "${bootorbit_saved}" = "no"; then
	if test "${bootorbit_slot}" = "${BOOTORBIT_TRIAL}"; then
		echo "bootorbit: saveenv failed; not booting trial slot ${bootorbit_slot} uncounted"
		if test "${bootorbit_slot}" = "A"; then
			bootorbit_slot=B
		else
			bootorbit_slot=A
		fi
	fi
fi

echo "bootorbit: booting slot ${bootorbit_slot} (order ${BOOT_ORDER}; A left ${BOOT_A_LEFT}, B left ${BOOT_B_LEFT})"
if test "${bootorbit_slot}" = "A"; then
	setenv bootargs "root=${bootorbit_root_A} ${bootorbit_args} rauc.slot=A"
	run bootorbit_load_A
else
	setenv bootargs "root=${bootorbit_root_B} ${bootorbit_args} rauc.slot=B"
	run bootorbit_load_B
fi

# The load command returned: the slot could not be booted. Reset; the
# attempt is already counted, so the next try moves on.
echo "bootorbit: slot ${bootorbit_slot} failed to load; resetting"
reset
