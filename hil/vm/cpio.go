package vm

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrCPIO prefixes errors of the initramfs archive writer.
var ErrCPIO = errors.New("vm: cpio")

// File modes of cpio entries (the S_IF* bits of stat(2)).
const (
	ModeDir     = 0o040000
	ModeRegular = 0o100000
	ModeSymlink = 0o120000
	ModeCharDev = 0o020000
)

// maxCPIOName bounds an entry name; the kernel's initramfs unpacker
// refuses names longer than PATH_MAX.
const maxCPIOName = 4095

// CPIOWriter writes a cpio archive in the "newc" format (magic 070701), the
// one the Linux kernel unpacks as an initramfs: a 110-byte ASCII-hex header,
// the NUL-terminated name, padding to 4 bytes, the data, padding to 4
// bytes; a "TRAILER!!!" entry ends the archive. Errors are sticky.
type CPIOWriter struct {
	w     io.Writer
	ino   uint32
	err   error
	names map[string]bool
}

// NewCPIOWriter returns a writer that writes the archive to w.
func NewCPIOWriter(w io.Writer) *CPIOWriter {
	return &CPIOWriter{w: w, ino: 1, names: map[string]bool{}}
}

// Dir adds a directory.
func (c *CPIOWriter) Dir(name string, perm uint32) error {
	return c.entry(name, ModeDir|perm&0o7777, nil)
}

// File adds a regular file with the given permission bits.
func (c *CPIOWriter) File(name string, perm uint32, data []byte) error {
	return c.entry(name, ModeRegular|perm&0o7777, data)
}

// Symlink adds a symbolic link name pointing at target.
func (c *CPIOWriter) Symlink(name, target string) error {
	return c.entry(name, ModeSymlink|0o777, []byte(target))
}

// CharDev adds a character device node. An initramfs needs
// /dev/console: the kernel opens it for init's standard streams before
// anything can mount devtmpfs.
func (c *CPIOWriter) CharDev(name string, perm, major, minor uint32) error {
	return c.entryDev(name, ModeCharDev|perm&0o7777, nil, major, minor)
}

// Close writes the trailer. It does not close the underlying writer.
func (c *CPIOWriter) Close() error {
	if c.err != nil {
		return c.err
	}
	c.write("TRAILER!!!", 0, 0, nil, 0, 0)
	return c.err
}

func (c *CPIOWriter) entry(name string, mode uint32, data []byte) error {
	return c.entryDev(name, mode, data, 0, 0)
}

func (c *CPIOWriter) entryDev(name string, mode uint32, data []byte, major, minor uint32) error {
	if c.err != nil {
		return c.err
	}
	name = strings.TrimPrefix(name, "/")
	switch {
	case name == "" || name == "TRAILER!!!":
		return fmt.Errorf("%w: bad entry name %q", ErrCPIO, name)
	case len(name) > maxCPIOName:
		return fmt.Errorf("%w: entry name of %d bytes, limit %d", ErrCPIO, len(name), maxCPIOName)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("%w: entry name %q holds a NUL", ErrCPIO, name)
	case uint64(len(data)) > 0xffffffff:
		return fmt.Errorf("%w: %s: %d bytes do not fit the 32-bit size field", ErrCPIO, name, len(data))
	case c.names[name]:
		return fmt.Errorf("%w: duplicate entry %q", ErrCPIO, name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("%w: entry name %q is not a clean relative path", ErrCPIO, name)
		}
	}
	c.names[name] = true
	c.ino++
	c.write(name, c.ino, mode, data, major, minor)
	return c.err
}

var cpioPad [4]byte

func (c *CPIOWriter) write(name string, ino, mode uint32, data []byte, major, minor uint32) {
	nlink := uint32(1)
	if mode&0o170000 == ModeDir {
		nlink = 2
	}
	// Fields: magic, ino, mode, uid, gid, nlink, mtime, filesize,
	// devmajor, devminor, rdevmajor, rdevminor, namesize, check. mtime is
	// 0 so that the same inputs give the same archive.
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, major, minor, len(name)+1, 0)
	rec := make([]byte, 0, len(hdr)+len(name)+4)
	rec = append(rec, hdr...)
	rec = append(rec, name...)
	rec = append(rec, 0)
	rec = append(rec, cpioPad[:pad4(len(rec))]...)
	if _, err := c.w.Write(rec); err != nil {
		c.err = fmt.Errorf("%w: %w", ErrCPIO, err)
		return
	}
	if _, err := c.w.Write(data); err != nil {
		c.err = fmt.Errorf("%w: %w", ErrCPIO, err)
		return
	}
	if _, err := c.w.Write(cpioPad[:pad4(len(data))]); err != nil {
		c.err = fmt.Errorf("%w: %w", ErrCPIO, err)
	}
}

func pad4(n int) int { return (4 - n%4) % 4 }
