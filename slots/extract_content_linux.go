package slots

// File contents: a regular file created with O_EXCL|O_NOFOLLOW and filled
// from the archive, hashed on the way when asked.

import (
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// writeFile creates base in pfd with the next size bytes of tr as its
// content and gives it e's metadata by descriptor. In a dry run it only
// hashes the content.
func (x *extractor) writeFile(pfd int, base string, tr io.Reader, size int64, e *Entry) error {
	e.Size = size
	if x.dry {
		x.sum.Reset()
		if err := copyContent(tr, size, x.bufs[0], func(b []byte) error { x.sum.Write(b); return nil }); err != nil {
			return err
		}
		x.sum.Sum(e.SHA256[:0])
		return nil
	}
	// Created with its final permission bits when the umask keeps them and
	// there are no setuid/setgid/sticky bits (which a chown would clear):
	// then no fchmod is needed. Until then it is 0600 and ours.
	createMode, chmod := uint32(0o600), true
	if x.umask >= 0 && e.Mode&0o7000 == 0 && e.Mode&uint32(x.umask) == 0 {
		createMode, chmod = e.Mode, false
	}
	// A new file is owned by the extracting user and group, or the
	// parent's group when the parent is setgid.
	pdir, _ := splitRel(e.Path)
	setgid := x.rootSetgid
	if pdir != "" {
		setgid = x.model[pdir] == nil || x.model[pdir].Mode&0o2000 != 0
	}
	chown := e.UID != x.uid || e.GID != x.gid || setgid
	if x.jobs != nil && size <= smallFile {
		buf := <-x.free
		if err := copyContent(tr, size, buf, func([]byte) error { return nil }); err != nil {
			x.free <- buf
			return err
		}
		x.pending[e.Path] = true
		x.busy.Add(1)
		x.jobs <- fileJob{pfd: pfd, release: x.r.retain(pfd), base: base, name: x.name, data: buf[:size],
			e: *e, createMode: createMode, chown: chown, chmod: chmod}
		return nil
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, createMode)
	if err != nil {
		return err
	}
	if x.hashIn != nil {
		err = x.writeHashed(fd, tr, size, e)
	} else {
		err = WriteContent(fd, tr, size, x.bufs[0])
	}
	if err == nil {
		err = setMetaFd(fd, e, chown, chmod)
	}
	if err == nil && x.o.Sync == SyncEach {
		err = unix.Fsync(fd)
	}
	if err != nil {
		unix.Close(fd)
		return err
	}
	x.flush.wrote(size)
	return unix.Close(fd)
}

// copyContent passes the next size bytes of tr to sink through buf.
func copyContent(tr io.Reader, size int64, buf []byte, sink func([]byte) error) error {
	var n int64
	for n < size {
		k, rerr := io.ReadFull(tr, buf[:min(int64(len(buf)), size-n)])
		if k > 0 {
			if err := sink(buf[:k]); err != nil {
				return err
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			return fmt.Errorf("%w: %d of %d bytes", ErrTruncated, n, size)
		}
		if rerr != nil {
			return tarError(rerr)
		}
	}
	return nil
}

// writeHashed writes size bytes of tr to fd while the hasher goroutine
// computes their sha256 into e.
func (x *extractor) writeHashed(fd int, tr io.Reader, size int64, e *Entry) error {
	x.sum.Reset() // no chunk is pending between files
	pending := 0
	var n int64
	var werr error
	for i := 0; n < size; i++ {
		buf := x.bufs[i%2]
		if pending == 2 { // the hasher still reads this buffer
			<-x.hashed
			pending--
		}
		k, rerr := io.ReadFull(tr, buf[:min(int64(len(buf)), size-n)])
		if k > 0 {
			x.hashIn <- buf[:k]
			pending++
			if err := writeAll(fd, buf[:k]); err != nil && werr == nil {
				werr = err
			}
			n += int64(k)
		}
		if rerr != nil || werr != nil {
			if werr == nil && rerr == io.EOF {
				werr = fmt.Errorf("%w: %d of %d bytes", ErrTruncated, n, size)
			} else if werr == nil {
				werr = tarError(rerr)
			}
			break
		}
	}
	for ; pending > 0; pending-- {
		<-x.hashed
	}
	if werr != nil {
		return werr
	}
	if n != size {
		return fmt.Errorf("%w: %d of %d bytes", ErrTruncated, n, size)
	}
	x.sum.Sum(e.SHA256[:0])
	return nil
}

// writeAll writes b to fd, resuming after short writes and EINTR.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}
