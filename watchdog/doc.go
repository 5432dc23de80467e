// Package watchdog is boot control: bootloader environments (U-Boot, GRUB),
// RAUC-style boot counting and the hardware watchdog.
package watchdog
