// Package flightd is bootorbit's onboard daemon as a library: it verifies and
// journals uplinked transfers, reconstructs image layers, writes the inactive
// A/B slot, arms it for a counted trial boot, pets the hardware watchdog and
// marks the slot good after health checks. cmd/flightd is a thin main around it.
package flightd
