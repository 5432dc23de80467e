// Package vm is the bench's virtual board: an arm64 Linux kernel (Debian's
// linux-image-*-arm64, fetched by fetch-kernel.sh) booted by
// qemu-system-aarch64 on the virt machine under TCG, with QEMU's i6300esb
// watchdog on its PCI bus, a persistent raw disk that keeps state across
// resets, and an initramfs this package builds itself (a newc cpio
// writer, the kernel modules the guest needs with their dependencies, and
// /init: the guestinit command, a static linux/arm64 Go binary).
//
// It exists to run watchdog.LinuxDevice against a real kernel driver
// rather than a fake: the guest opens /dev/watchdog0, sets and reads back
// the timeout, pets it on the guest's clock, stops petting, and after the
// reset reads GETBOOTSTATUS and the reset record it wrote on the disk.
// Results come back as structured lines on the serial console (Event),
// which the host timestamps and parses; durations are measured on the
// guest's clock.
//
// ABBoard is the full board: Debian's U-Boot (u-boot-qemu) as the
// firmware, a disk with a boot partition (the board's variant of the
// shipped boot script, BoardScript, and the kernel), rootfs A and B and a
// raw U-Boot environment partition in the format flightd writes. The
// real U-Boot counts boot attempts there, the i6300esb resets the board,
// and the harness switches power (starts and kills QEMU) and reads the
// environment offline with fw_printenv.
//
// FlightdBoard runs flightd (linux/arm64) as the system of each slot,
// reached from a ground on the host across hil/link's emulator: the
// factory boot, the nominal update (RunFlightdUpdate) and the watchdog
// rollback with flightd owning the watchdog (RunFlightdRollback: the new
// image freezes flightd at boot and the real U-Boot gives up on it).
package vm
