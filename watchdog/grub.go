package watchdog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// GRUB environment block (grub-core/lib/envblk.c, util/grub-editenv.c):
// a file of GRUBEnvSize bytes that starts with the header line, holds
// "name=value\n" lines and is padded with '#' to its full size. Lines that
// start with '#' are comments (Debian's grub-editenv adds a warning line).
// In a value a backslash and a newline are escaped with a backslash; a
// backslash escapes whatever byte follows it. There is no checksum.
const (
	// GRUBEnvSize is the size grub-editenv creates and GRUB expects.
	GRUBEnvSize = 1024
	// MaxGRUBEnvSize bounds the block we read.
	MaxGRUBEnvSize = 64 << 10

	grubHeader = "# GRUB Environment Block\n"
)

type grubLine struct {
	raw   string // a comment line, verbatim without its '\n'; empty for a variable
	name  string
	value string
}

// GRUBBlock is a parsed GRUB environment block that keeps comment lines and
// the order of variables, so that rewriting it changes only what changed,
// exactly as grub-editenv would: a changed value stays in its line, an
// unset variable's line goes, a new variable is appended.
type GRUBBlock struct {
	size  int
	lines []grubLine
}

// NewGRUBBlock returns an empty block of size bytes, like
// `grub-editenv FILE create`.
func NewGRUBBlock(size int) (*GRUBBlock, error) {
	if size < len(grubHeader) || size > MaxGRUBEnvSize {
		return nil, fmt.Errorf("%w: grub env size %d out of range [%d, %d]", ErrEnvConfig, size, len(grubHeader), MaxGRUBEnvSize)
	}
	return &GRUBBlock{size: size}, nil
}

// ParseGRUBEnv parses a whole block.
func ParseGRUBEnv(buf []byte) (*GRUBBlock, error) {
	if len(buf) > MaxGRUBEnvSize {
		return nil, fmt.Errorf("%w: grub env: %d bytes is larger than %d", ErrEnvFormat, len(buf), MaxGRUBEnvSize)
	}
	if !bytes.HasPrefix(buf, []byte(grubHeader)) {
		return nil, fmt.Errorf("%w: grub env: missing %q header", ErrEnvFormat, strings.TrimSpace(grubHeader))
	}
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		return nil, fmt.Errorf("%w: grub env: NUL byte at offset %d", ErrEnvFormat, i)
	}
	b := &GRUBBlock{size: len(buf)}
	// The padding is the run of '#' after the last newline.
	last := bytes.LastIndexByte(buf, '\n')
	for i := last + 1; i < len(buf); i++ {
		if buf[i] != '#' {
			return nil, fmt.Errorf("%w: grub env: byte %q at offset %d after the last line, want '#' padding", ErrEnvFormat, buf[i], i)
		}
	}
	body := buf[len(grubHeader) : last+1]
	off := len(grubHeader)
	for len(body) > 0 {
		// Find the end of the line, honouring backslash escapes as GRUB does.
		end := -1
		for i := 0; i < len(body); i++ {
			if body[i] == '\\' {
				i++
				continue
			}
			if body[i] == '\n' {
				end = i
				break
			}
		}
		if end < 0 {
			return nil, fmt.Errorf("%w: grub env: unterminated line at offset %d", ErrEnvFormat, off)
		}
		line := body[:end]
		if len(line) > 0 && line[0] == '#' {
			b.lines = append(b.lines, grubLine{raw: string(line)})
		} else {
			eq := bytes.IndexByte(line, '=')
			if eq <= 0 {
				return nil, fmt.Errorf("%w: grub env: line at offset %d is not name=value", ErrEnvFormat, off)
			}
			name := string(line[:eq])
			if strings.IndexByte(name, '\\') >= 0 {
				return nil, fmt.Errorf("%w: grub env: name %q at offset %d contains a backslash", ErrEnvFormat, name, off)
			}
			var val strings.Builder
			raw := line[eq+1:]
			for i := 0; i < len(raw); i++ {
				if raw[i] == '\\' {
					i++
					if i == len(raw) {
						return nil, fmt.Errorf("%w: grub env: dangling backslash at offset %d", ErrEnvFormat, off+eq+1+i)
					}
				}
				val.WriteByte(raw[i])
			}
			b.setOne(name, val.String())
		}
		off += end + 1
		body = body[end+1:]
	}
	return b, nil
}

// setOne sets a variable in place or appends it.
func (b *GRUBBlock) setOne(name, value string) {
	for i := range b.lines {
		if b.lines[i].raw == "" && b.lines[i].name == name {
			b.lines[i].value = value
			return
		}
	}
	b.lines = append(b.lines, grubLine{name: name, value: value})
}

// Size is the block size in bytes.
func (b *GRUBBlock) Size() int { return b.size }

// Vars returns the variables. A later duplicate line wins, as in GRUB's
// load_env.
func (b *GRUBBlock) Vars() Vars {
	v := Vars{}
	for _, l := range b.lines {
		if l.raw == "" {
			v[l.name] = l.value
		}
	}
	return v
}

// Replace makes the block hold exactly v: changed values in place, removed
// variables dropped, new ones appended in name order.
func (b *GRUBBlock) Replace(v Vars) error {
	if err := checkVars(v); err != nil {
		return err
	}
	for k := range v {
		if strings.HasPrefix(k, "#") || strings.IndexByte(k, '\\') >= 0 {
			return fmt.Errorf("%w: grub env name %q starts with '#' or contains a backslash", ErrBadVar, k)
		}
	}
	kept := b.lines[:0:0]
	seen := map[string]bool{}
	for _, l := range b.lines {
		if l.raw != "" {
			kept = append(kept, l)
			continue
		}
		if x, ok := v[l.name]; ok && !seen[l.name] {
			seen[l.name] = true
			kept = append(kept, grubLine{name: l.name, value: x})
		}
	}
	for _, k := range v.Keys() {
		if !seen[k] {
			kept = append(kept, grubLine{name: k, value: v[k]})
		}
	}
	b.lines = kept
	return nil
}

// Bytes renders the block at its full size, or ErrEnvFull.
func (b *GRUBBlock) Bytes() ([]byte, error) {
	out := make([]byte, 0, b.size)
	out = append(out, grubHeader...)
	for _, l := range b.lines {
		if l.raw != "" {
			out = append(out, l.raw...)
		} else {
			out = append(out, l.name...)
			out = append(out, '=')
			for i := 0; i < len(l.value); i++ {
				if c := l.value[i]; c == '\\' || c == '\n' {
					out = append(out, '\\')
				}
				out = append(out, l.value[i])
			}
		}
		out = append(out, '\n')
		if len(out) > b.size {
			return nil, fmt.Errorf("%w: grub env: variables need more than %d bytes", ErrEnvFull, b.size)
		}
	}
	for len(out) < b.size {
		out = append(out, '#')
	}
	return out, nil
}

// GRUBEnv is a GRUB environment block file (grubenv).
//
// GRUB's save_env rewrites the block in place through the file's block
// list and cannot create or move it, so Save never truncates, renames or
// reallocates: it writes the whole block at offset 0 of the existing file
// in one write, fsyncs, and reads it back. The block has no checksum, so
// Save is power-safe only if the storage writes the 1 KiB block atomically:
// it lies within one filesystem block (the file starts block-aligned), and
// on flash with 4 KiB pages the page is programmed as a unit; on a device
// with 512-byte atomic sectors a cut can leave the first half new and the
// second half old. See docs/boot.md.
type GRUBEnv struct {
	Path string
	// Size is the block size; 0 means GRUBEnvSize. A file of another size
	// is refused rather than half-read.
	Size int
	// FS opens the file; nil means the operating system.
	FS FS
}

func (g *GRUBEnv) fs() FS {
	if g.FS == nil {
		return OSFS{}
	}
	return g.FS
}

func (g *GRUBEnv) size() int {
	if g.Size == 0 {
		return GRUBEnvSize
	}
	return g.Size
}

// Block reads and parses the block.
func (g *GRUBEnv) Block() (*GRUBBlock, error) {
	n := g.size()
	if n < len(grubHeader) || n > MaxGRUBEnvSize {
		return nil, fmt.Errorf("%w: grub env size %d out of range", ErrEnvConfig, n)
	}
	f, err := g.fs().Open(g.Path, false)
	if err != nil {
		return nil, fmt.Errorf("watchdog: grub env: %w", err)
	}
	defer f.Close()
	buf := make([]byte, n+1)
	got, err := f.ReadAt(buf, 0)
	switch {
	case got <= n && err != nil && !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("watchdog: grub env: read %s: %w", g.Path, err)
	case got > n:
		return nil, fmt.Errorf("%w: grub env %s is larger than %d bytes", ErrEnvFormat, g.Path, n)
	case got < n:
		return nil, fmt.Errorf("%w: grub env %s has %d bytes, want %d (create it with grub-editenv FILE create)", ErrEnvFormat, g.Path, got, n)
	}
	b, err := ParseGRUBEnv(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", g.Path, err)
	}
	return b, nil
}

// Load returns the variables.
func (g *GRUBEnv) Load() (Vars, error) {
	b, err := g.Block()
	if err != nil {
		return nil, err
	}
	return b.Vars(), nil
}

// Save rewrites the block in place to hold exactly v. The file must exist
// and hold a valid block (grub-editenv FILE create makes one).
func (g *GRUBEnv) Save(v Vars) error {
	b, err := g.Block()
	if err != nil {
		return err
	}
	if err := b.Replace(v); err != nil {
		return err
	}
	buf, err := b.Bytes()
	if err != nil {
		return err
	}
	return writeVerified(g.fs(), g.Path, 0, buf, "grub env")
}
