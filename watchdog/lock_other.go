//go:build !unix

package watchdog

// lockFile is a no-op where flock does not exist.
func lockFile(string) (func(), error) { return func() {}, nil }
