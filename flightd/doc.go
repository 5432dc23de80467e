// Package flightd is bootorbit's onboard daemon as a library: it verifies and
// journals uplinked transfers, reconstructs image layers, writes the inactive
// A/B slot, arms it for a counted trial boot, pets the hardware watchdog and
// marks the slot good after health checks. cmd/flightd is a thin main around it.
//
// Updater is the only code that writes both the slot states (package slots)
// and the bootloader environment (package watchdog). It orders every pair of
// writes so that the environment can boot only a slot whose state is pending
// or good, and Reconcile, run at every start, resolves whatever a power cut
// between two writes left (docs/boot.md, "Updates: install, trial boot,
// commit").
//
// flightd is Linux only: it drives the Linux watchdog API, writes slots with
// O_DIRECT, syncfs and mount, and reads the kernel command line and boot id.
// cmd/flightd is constrained to linux so that a build for another system
// says so; groundd, by contrast, builds on Linux, macOS and Windows.
package flightd
