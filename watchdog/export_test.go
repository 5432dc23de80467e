package watchdog

// NewMemDisk gives the external tests (package watchdog_test, which may
// import watchdogtest) the crashable memory disk of the power-cut tests.
func NewMemDisk(files map[string][]byte) FS { return newMemDisk(files) }
