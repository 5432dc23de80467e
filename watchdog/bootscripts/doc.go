// Package bootscripts ships the bootloader side of bootorbit's boot
// counting: the U-Boot script source boot.cmd (build it with
// `mkimage -A arm64 -T script -C none -d boot.cmd boot.scr`) and the GRUB
// configuration snippet grub.cfg. Both implement the RAUC variable protocol
// that package watchdog writes, and watchdog.BootloaderModel models them.
package bootscripts

import _ "embed"

// UBootScript is the source of the U-Boot boot script.
//
//go:embed boot.cmd
var UBootScript string

// GRUBSnippet is the grub.cfg fragment.
//
//go:embed grub.cfg
var GRUBSnippet string
