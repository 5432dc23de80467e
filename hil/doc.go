// Package hil is bootorbit's hardware-in-the-loop bench: link emulation,
// a virtual board, fault injection and scenarios that run groundd and flightd
// together, in-process or as processes, on amd64, under ARM64 emulation, or
// against a real ARM64 board.
package hil
