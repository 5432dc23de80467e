package flightd

// BootConfig is the boot section of the configuration. Placeholder owned by
// the boot engineer, who replaces this file.
type BootConfig struct{}

// Validate checks the boot section.
func (BootConfig) Validate() error { return nil }
