// Package disk is an emulated block device for the bench: a minimal FUSE
// server of our own (the kernel protocol spoken directly over /dev/fuse)
// that serves one file, disk.img, whose content lives in memory. A loop
// device over that file carries a real kernel filesystem (ext4), so that
// the slot writers' raw-syscall data path runs through the real kernel and
// ends at a device we control:
//
//   - a device model: a bandwidth and a per-request latency applied to
//     writes and cache flushes, on a clock the device owns (real time on
//     the bench, a fake clock in tests of the arithmetic);
//   - a volatile write cache: a WRITE lands in a volatile overlay, and only
//     a flush (FUSE_FSYNC, which the loop driver sends for REQ_PREFLUSH and
//     FUA) makes it durable; Cut freezes the device (every later request
//     fails with EIO) and returns the durable image, optionally with a
//     seeded random subset of the unflushed 4 KiB blocks, as a real disk
//     cache may have written some of them before the power went.
//
// Start sets the whole stack up (FUSE mount in a temporary directory,
// losetup, mkfs.ext4, mount) and Close tears it down in the right order;
// every external step runs under a timeout, and a stuck step aborts the
// FUSE connection (the server closes its /dev/fuse descriptor, the only
// one), which fails every request in flight, so that nothing waits forever
// in D state.
//
// It needs root, /dev/fuse, losetup and mkfs.ext4 (e2fsprogs).
package disk
