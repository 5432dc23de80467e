// Package watchdog is boot control: which A/B slot the bootloader boots,
// how many tries a new slot gets, and the hardware watchdog that turns a
// hang into a retry.
//
// It reads and writes bootloader environments in their native formats:
// U-Boot's (UBootEnv: one copy, or two redundant copies where a power cut
// always leaves the old or the new environment; byte-compatible with
// libubootenv's fw_printenv/fw_setenv and with mkenvimage) and GRUB's
// environment block (GRUBEnv; byte-compatible with grub-editenv). On them
// BootControl implements RAUC's boot-counting variables (BOOT_ORDER,
// BOOT_x_LEFT) plus BOOTORBIT_TRIAL, each operation in one environment
// write. BootloaderModel is a step-for-step Go model of the shipped boot
// script (package bootscripts) for simulations. Device is the Linux
// watchdog API (OpenDevice); tests use the fake in package watchdogtest.
// Nothing here ever disarms a watchdog. See docs/boot.md.
package watchdog
