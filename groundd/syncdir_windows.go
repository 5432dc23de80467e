package groundd

// syncDir is a no-op on Windows, where a directory cannot be opened for
// syncing; NTFS journals the rename itself.
func syncDir(dir string) error { return nil }
