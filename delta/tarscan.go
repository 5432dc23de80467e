package delta

import (
	"bytes"
	"io"
	"path"
	"strconv"
	"strings"
)

// entry is one member of a tar stream as laid out in bytes: the header
// region (the member's header block, preceded by any PAX or GNU long-name
// members that describe it), its content, and the padding to the next block.
// The delta treats the tar as these byte regions so that the output is the
// input byte for byte, whatever the writer's quirks.
type entry struct {
	Path    string // the slot path (cleanPath): no empty or "." component
	Type    byte
	HdrOff  int64
	DataOff int64 // == end of header region
	DataLen int64
	PadLen  int64
	Sum     [32]byte // sha256 of the content, filled by the indexer
	PadZero bool     // the padding is all zeros
}

func (e *entry) end() int64 { return e.DataOff + e.DataLen + e.PadLen }

// scanTar lists the entries of the tar held by r (size bytes). Scanning
// stops at the first zero block or at anything that is not a valid header;
// everything from there to the end is the trailer, which the delta carries
// as opaque bytes. So scanTar never fails on odd input, it only finds less
// structure in it; it fails only when reading fails.
func scanTar(r io.ReaderAt, size int64) (entries []entry, trailer int64, err error) {
	var blk [512]byte
	off := int64(0)
	for {
		start := off
		var longName, paxPath string
		var paxSize int64 = -1
		for {
			if off+512 > size {
				return entries, start, nil
			}
			if _, err := r.ReadAt(blk[:], off); err != nil {
				return nil, 0, err
			}
			h, ok := parseHeader(&blk)
			if !ok {
				return entries, start, nil
			}
			off += 512
			switch h.typ {
			case 'x', 'g', 'L', 'K':
				if h.size < 0 || h.size > 1<<20 || off+h.size > size {
					return entries, start, nil
				}
				data := make([]byte, h.size)
				if _, err := r.ReadAt(data, off); err != nil {
					return nil, 0, err
				}
				off += roundBlock(h.size)
				switch h.typ {
				case 'x':
					if p, s, ok := parsePAX(data); ok {
						if p != "" {
							paxPath = p
						}
						if s >= 0 {
							paxSize = s
						}
					} else {
						return entries, start, nil
					}
				case 'L':
					longName = string(bytes.TrimRight(data, "\x00"))
				}
				continue
			case 'S':
				// GNU sparse members may carry extension blocks; rather
				// than model them, treat the rest as opaque.
				return entries, start, nil
			}
			name := h.name
			if longName != "" {
				name = longName
			}
			if paxPath != "" {
				name = paxPath
			}
			n := h.size
			if paxSize >= 0 {
				n = paxSize
			}
			switch h.typ {
			case '1', '2', '3', '4', '5', '6':
				n = 0 // header-only types, as archive/tar reads them
			}
			if n < 0 || off+n > size {
				return entries, start, nil
			}
			pad := roundBlock(n) - n
			if off+n+pad > size {
				pad = size - off - n
			}
			entries = append(entries, entry{
				Path: cleanPath(name), Type: h.typ,
				HdrOff: start, DataOff: off, DataLen: n, PadLen: pad,
			})
			off += n + pad
			break
		}
	}
}

func roundBlock(n int64) int64 { return (n + 511) &^ 511 }

// cleanPath turns an archive name into the slot path it lands on, as the
// slot's extractor does (slots cleanName): a leading "/" and every empty
// and "." component dropped, so "etc//passwd", "./etc/./passwd" and
// "etc/passwd/" are all etc/passwd, and "" is the root. Two spellings of
// one path are one path to the shadow walk and the index, as they are one
// file on the slot. A ".." component is kept (escapes says so): the slot
// refuses such a layer.
func cleanPath(p string) string {
	var b strings.Builder
	for c := range strings.SplitSeq(p, "/") {
		if c == "" || c == "." {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('/')
		}
		b.WriteString(c)
	}
	return b.String()
}

type hdr struct {
	name string
	typ  byte
	size int64
}

// parseHeader reads the fields the delta needs from a header block and
// checks its checksum. A zero block or a bad checksum is not a header.
func parseHeader(b *[512]byte) (hdr, bool) {
	var sum int64
	zero := true
	for i, c := range b {
		if c != 0 {
			zero = false
		}
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	if zero {
		return hdr{}, false
	}
	want, ok := parseOctal(b[148:156])
	if !ok || want != sum {
		return hdr{}, false
	}
	size, ok := parseNumeric(b[124:136])
	if !ok {
		return hdr{}, false
	}
	name := cstring(b[0:100])
	if string(b[257:263]) == "ustar\x00" { // POSIX ustar: name prefix field
		if prefix := cstring(b[345:500]); prefix != "" {
			name = prefix + "/" + name
		}
	}
	return hdr{name: name, typ: b[156], size: size}, true
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func parseOctal(b []byte) (int64, bool) {
	s := strings.Trim(string(b), " \x00")
	if s == "" {
		return 0, true
	}
	v, err := strconv.ParseInt(s, 8, 64)
	return v, err == nil && v >= 0
}

// parseNumeric reads an octal or base-256 (GNU) number field.
func parseNumeric(b []byte) (int64, bool) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		if b[0] != 0x80 {
			return 0, false // negative or oversized
		}
		var v int64
		for _, c := range b[1:] {
			if v > (1<<55)-1 {
				return 0, false
			}
			v = v<<8 | int64(c)
		}
		return v, true
	}
	return parseOctal(b)
}

// parsePAX extracts path and size from PAX records ("%d %s=%s\n").
func parsePAX(data []byte) (p string, size int64, ok bool) {
	size = -1
	for len(data) > 0 {
		if data[0] == 0 { // some writers pad with NULs
			break
		}
		sp := bytes.IndexByte(data, ' ')
		if sp <= 0 {
			return "", -1, false
		}
		n, err := strconv.Atoi(string(data[:sp]))
		if err != nil || n <= sp+1 || n > len(data) {
			return "", -1, false
		}
		rec := data[sp+1 : n]
		data = data[n:]
		if len(rec) == 0 || rec[len(rec)-1] != '\n' {
			return "", -1, false
		}
		k, v, found := strings.Cut(string(rec[:len(rec)-1]), "=")
		if !found {
			return "", -1, false
		}
		switch k {
		case "path":
			p = v
		case "size":
			s, err := strconv.ParseInt(v, 10, 64)
			if err != nil || s < 0 {
				return "", -1, false
			}
			size = s
		}
	}
	return p, size, true
}

// fuzzyKey is a path with its digit runs blanked, so that versioned names
// (lib/modules/6.1.0-18-amd64/..., libfoo.so.3.0.2) find their predecessor.
func fuzzyKey(p string) string {
	var b strings.Builder
	digit := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c >= '0' && c <= '9' {
			if !digit {
				b.WriteByte('#')
			}
			digit = true
			continue
		}
		digit = false
		b.WriteByte(c)
	}
	return b.String()
}

func baseName(p string) string { return path.Base(p) }

// escapes says whether slot path p (cleanPath's) has a ".." component: no
// slot holds it (the extractor refuses the layer), so it names nothing of
// the base's tree.
func escapes(p string) bool {
	for c := range strings.SplitSeq(p, "/") {
		if c == ".." {
			return true
		}
	}
	return false
}
