package watchdog

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// U-Boot environment layout (U-Boot env.h, libubootenv uboot_private.h):
//
//	single:    crc32 (4 bytes LE) | data
//	redundant: crc32 (4 bytes LE) | flags (1 byte) | data
//
// The CRC is IEEE CRC-32 over the whole data area, padding included. The
// data area is "name=value\0" entries ended by an empty entry (a second
// NUL); the rest is padding (mkenvimage: 0xff or -p; U-Boot saveenv: 0x00;
// libubootenv 0.3: whatever its buffer held, which the CRC covers anyway).
const (
	// MinUBootEnvSize is the smallest environment we accept: a header and
	// an empty variable list.
	MinUBootEnvSize = 16
	// MaxUBootEnvSize bounds the environment size taken from a config or
	// flag before anything is allocated. Real environments are 8-256 KiB.
	MaxUBootEnvSize = 4 << 20

	ubootCRCLen       = 4
	ubootRedundantHdr = 5
)

// UBootLocation is one copy of a U-Boot environment: like a line of
// fw_env.config, a device or file, the byte offset of the copy in it, and
// the environment size (the same for both copies).
type UBootLocation struct {
	Path   string `json:"path"`
	Offset int64  `json:"offset"`
	Size   int    `json:"size"`
}

func (l UBootLocation) String() string { return fmt.Sprintf("%s@%#x", l.Path, l.Offset) }

// ParseFWEnvConfig parses fw_env.config text as libubootenv does:
// `device offset size [sectorsize [sectors]]` per line, '#' comments,
// offset in C notation (0x.. hex, 0.. octal, else decimal), size, sector
// size and count in hex with or without 0x. The first line is copy 1, a
// second line makes the environment redundant; further lines are ignored.
// Sector size and count only matter for raw NOR/NAND flash, which this
// package does not drive; they are parsed and dropped.
func ParseFWEnvConfig(text string) ([]UBootLocation, error) {
	var locs []UBootLocation
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	line := 0
	for sc.Scan() && len(locs) < 2 {
		line++
		s := sc.Text()
		if strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Fields(s)
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 {
			// libubootenv skips lines without at least three fields.
			continue
		}
		off, err := parseCInt(f[1])
		if err != nil || off < 0 {
			return nil, fmt.Errorf("%w: fw_env.config line %d: offset %q", ErrEnvConfig, line, f[1])
		}
		size, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(f[2], "0x"), "0X"), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: fw_env.config line %d: size %q (hex)", ErrEnvConfig, line, f[2])
		}
		if size < MinUBootEnvSize || size > MaxUBootEnvSize {
			return nil, fmt.Errorf("%w: fw_env.config line %d: size %#x out of range [%#x, %#x]", ErrEnvConfig, line, size, MinUBootEnvSize, MaxUBootEnvSize)
		}
		locs = append(locs, UBootLocation{Path: f[0], Offset: off, Size: int(size)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: fw_env.config: %v", ErrEnvConfig, err)
	}
	if len(locs) == 0 {
		return nil, fmt.Errorf("%w: fw_env.config names no device", ErrEnvConfig)
	}
	if err := checkLocations(locs); err != nil {
		return nil, err
	}
	return locs, nil
}

// parseCInt reads an integer in C notation, as libubootenv's sscanf %lli
// does: 0x or 0X hex, a leading 0 octal, else decimal. strconv's base 0
// would also take 0b, 0o and underscores, and so read an offset that
// fw_printenv reads differently (it stops at the first bad character).
func parseCInt(s string) (int64, error) {
	base, digits := 10, s
	switch {
	case len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X"):
		base, digits = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, digits = 8, s[1:]
	}
	return strconv.ParseInt(digits, base, 64)
}

// FormatFWEnvConfig renders locations as fw_env.config text that
// fw_printenv -c reads.
func FormatFWEnvConfig(locs []UBootLocation) string {
	var b strings.Builder
	for _, l := range locs {
		fmt.Fprintf(&b, "%s %#x %#x\n", l.Path, l.Offset, l.Size)
	}
	return b.String()
}

func checkLocations(locs []UBootLocation) error {
	switch {
	case len(locs) == 0 || len(locs) > 2:
		return fmt.Errorf("%w: %d environment copies, want 1 or 2", ErrEnvConfig, len(locs))
	}
	for _, l := range locs {
		switch {
		case l.Path == "":
			return fmt.Errorf("%w: empty device path", ErrEnvConfig)
		case strings.HasPrefix(l.Path, "/dev/mtd") || strings.HasPrefix(l.Path, "/dev/ubi"):
			// Raw flash needs erase-before-write and the 0/1 flag scheme;
			// writing it like a block device would corrupt it.
			return fmt.Errorf("%w: %s: raw flash (MTD/UBI) environments are not supported; use a block device or file", ErrEnvConfig, l.Path)
		case l.Offset < 0:
			return fmt.Errorf("%w: %s: negative offset", ErrEnvConfig, l.Path)
		case l.Size < MinUBootEnvSize || l.Size > MaxUBootEnvSize:
			return fmt.Errorf("%w: %s: size %d out of range [%d, %d]", ErrEnvConfig, l.Path, l.Size, MinUBootEnvSize, MaxUBootEnvSize)
		}
	}
	if len(locs) == 2 {
		a, b := locs[0], locs[1]
		if a.Size != b.Size {
			return fmt.Errorf("%w: copies differ in size (%d, %d)", ErrEnvConfig, a.Size, b.Size)
		}
		if a.Path == b.Path && a.Offset < b.Offset+int64(b.Size) && b.Offset < a.Offset+int64(a.Size) {
			return fmt.Errorf("%w: copies %s and %s overlap", ErrEnvConfig, a, b)
		}
	}
	return nil
}

func ubootHeader(redundant bool) int {
	if redundant {
		return ubootRedundantHdr
	}
	return ubootCRCLen
}

// EncodeUBootEnv builds a U-Boot environment image of size bytes: entries
// in key order (as U-Boot and fw_setenv write them), the unused data area
// filled with pad, and for a redundant copy the flags byte.
func EncodeUBootEnv(v Vars, size int, redundant bool, flags, pad byte) ([]byte, error) {
	if size < MinUBootEnvSize || size > MaxUBootEnvSize {
		return nil, fmt.Errorf("%w: size %d out of range [%d, %d]", ErrEnvConfig, size, MinUBootEnvSize, MaxUBootEnvSize)
	}
	if err := checkVars(v); err != nil {
		return nil, err
	}
	hdr := ubootHeader(redundant)
	buf := make([]byte, size)
	data := buf[hdr:]
	n := 0
	for _, k := range v.Keys() {
		need := len(k) + 1 + len(v[k]) + 1
		// Keep one byte for the terminating empty entry.
		if n+need+1 > len(data) {
			return nil, fmt.Errorf("%w: %d-byte environment cannot hold %q (%d bytes used)", ErrEnvFull, size, k, n)
		}
		n += copy(data[n:], k)
		data[n] = '='
		n++
		n += copy(data[n:], v[k])
		data[n] = 0
		n++
	}
	data[n] = 0
	n++
	for i := n; i < len(data); i++ {
		data[i] = pad
	}
	if redundant {
		buf[ubootCRCLen] = flags
	}
	binary.LittleEndian.PutUint32(buf, crc32.ChecksumIEEE(data))
	return buf, nil
}

// ubootCopy is one decoded copy.
type ubootCopy struct {
	crcOK   bool
	flags   byte
	vars    Vars
	err     error // parse error of a copy whose CRC is good
	readErr error // the copy could not be opened or read
}

func decodeUBootCopy(buf []byte, redundant bool) ubootCopy {
	hdr := ubootHeader(redundant)
	if len(buf) < hdr+2 {
		return ubootCopy{}
	}
	data := buf[hdr:]
	var c ubootCopy
	c.crcOK = binary.LittleEndian.Uint32(buf) == crc32.ChecksumIEEE(data)
	if redundant {
		c.flags = buf[ubootCRCLen]
	}
	if c.crcOK {
		c.vars, c.err = parseUBootData(data)
	}
	return c
}

// parseUBootData reads the entries of a data area the way libubootenv
// does: an entry without '=' or with an empty name is skipped, a later
// duplicate wins, and the list ends at an empty entry (or exactly at the
// end of the area).
func parseUBootData(data []byte) (Vars, error) {
	v := Vars{}
	for p := 0; p < len(data) && data[p] != 0; {
		end := bytes.IndexByte(data[p:], 0)
		if end < 0 {
			return nil, fmt.Errorf("%w: uboot env: entry at data offset %d is not NUL-terminated", ErrEnvFormat, p)
		}
		entry := data[p : p+end]
		p += end + 1
		eq := bytes.IndexByte(entry, '=')
		if eq <= 0 {
			continue
		}
		v[string(entry[:eq])] = string(entry[eq+1:])
	}
	return v, nil
}

// DecodeUBootEnv decodes one environment copy (its full size as in the
// config). It returns the variables and, for a redundant copy, the flags
// byte. A bad CRC is ErrBadCRC.
func DecodeUBootEnv(buf []byte, redundant bool) (Vars, byte, error) {
	if len(buf) < MinUBootEnvSize || len(buf) > MaxUBootEnvSize {
		return nil, 0, fmt.Errorf("%w: size %d out of range [%d, %d]", ErrEnvConfig, len(buf), MinUBootEnvSize, MaxUBootEnvSize)
	}
	c := decodeUBootCopy(buf, redundant)
	if !c.crcOK {
		return nil, c.flags, ErrBadCRC
	}
	return c.vars, c.flags, c.err
}

// newerFlag reports whether a redundant copy with flags a is newer than one
// with flags b, for the incremental counter libubootenv and U-Boot use on
// files and block devices: higher wins, and 0 after 255 is a wrap.
func newerFlag(a, b byte) bool {
	switch {
	case a == 0 && b == 0xff:
		return true
	case a == 0xff && b == 0:
		return false
	}
	return a > b
}

// UBootEnv is a U-Boot environment with one copy, or two redundant copies
// on files or block devices (eMMC, SD, a file on a FAT partition).
//
// Redundant copies use the incremental flags byte, as fw_setenv and U-Boot
// do on files and block devices: a write goes to the copy that is not the
// current one with flags+1, then fsync; on read the copy with a valid CRC
// and the newer flags wins, and one valid copy wins over a corrupt one. So
// a power cut at any instant leaves the old or the new environment. The
// 0/1 active/obsolete flag scheme of raw NOR/NAND flash (MTD) is not
// supported.
//
// With a single copy, a write is in place: a power cut mid-write leaves a
// copy whose CRC fails, which Load reports as ErrBadCRC and U-Boot replaces
// by its built-in default environment.
type UBootEnv struct {
	Copies []UBootLocation
	// FS opens the devices; nil means the operating system.
	FS FS
	// Pad fills the unused data area on Save. U-Boot's saveenv writes 0x00.
	Pad byte
	// LockFile, when set, is flocked exclusively around every State, Load
	// and Save. Set it to libubootenv's lock file (fw_printenv and
	// fw_setenv use /var/lock/fw_printenv.lock) so that an engineer's
	// fw_setenv and flightd never interleave their read-modify-writes.
	LockFile string
}

// NewUBootEnv checks the locations and returns the environment.
func NewUBootEnv(copies ...UBootLocation) (*UBootEnv, error) {
	if err := checkLocations(copies); err != nil {
		return nil, err
	}
	return &UBootEnv{Copies: copies}, nil
}

func (e *UBootEnv) fs() FS {
	if e.FS == nil {
		return OSFS{}
	}
	return e.FS
}

func (e *UBootEnv) redundant() bool { return len(e.Copies) == 2 }

// UBootState is what a read of all copies found.
type UBootState struct {
	Vars    Vars
	Current int     // index of the copy in use; -1 if none is valid
	Valid   []bool  // CRC good, per copy
	Flags   []byte  // flags byte per copy (redundant only)
	Copies  []int64 // offsets, for messages
	// Redundancy is which copy is in use and whether the other one is
	// still a fallback; nil for a single copy.
	Redundancy *UBootRedundancy
}

// CopyHealth is what a read found in one copy of a redundant environment.
type CopyHealth string

// The health of a copy.
const (
	CopyOK         CopyHealth = "ok"         // CRC good
	CopyBadCRC     CopyHealth = "bad-crc"    // read, but its CRC fails (torn write, bit rot, never written)
	CopyUnreadable CopyHealth = "unreadable" // could not be opened or read
)

// UBootRedundancy says which copy of a redundant environment is in use
// and what became of the other. A board engineer needs it because a lost
// copy changes nothing the bootloader does until the active copy is
// damaged too: then, instead of falling back to the previous environment,
// U-Boot boots with its built-in default and the boot counters are lost.
// The next Save rewrites the other copy and so restores the redundancy.
type UBootRedundancy struct {
	// Active is the copy in use, numbered 1 and 2 as the lines of
	// fw_env.config; 0 when neither is valid.
	Active     int    `json:"active"`
	ActiveCopy string `json:"active_copy,omitempty"` // path@offset
	ActiveFlag byte   `json:"active_flags"`
	// Other is the health of the copy not in use. Anything but "ok" means
	// the environment has lost its redundancy.
	Other      CopyHealth `json:"other"`
	OtherCopy  string     `json:"other_copy"`
	OtherError string     `json:"other_error,omitempty"`
}

// Lost reports whether the environment has lost its redundancy.
func (r *UBootRedundancy) Lost() bool { return r != nil && r.Other != CopyOK }

// Warning is the sentence to show when the redundancy is lost, "" otherwise.
func (r *UBootRedundancy) Warning() string {
	if !r.Lost() {
		return ""
	}
	what := "fails its CRC"
	if r.Other == CopyUnreadable {
		what = "is unreadable"
		if r.OtherError != "" {
			what += " (" + r.OtherError + ")"
		}
	}
	return fmt.Sprintf("U-Boot environment copy %s %s: the environment has lost its redundancy, and damage to the active copy would boot U-Boot's default environment; the next environment write restores it", r.OtherCopy, what)
}

func (c ubootCopy) health() CopyHealth {
	switch {
	case c.readErr != nil:
		return CopyUnreadable
	case !c.crcOK:
		return CopyBadCRC
	}
	return CopyOK
}

// readCopies reads and decodes every copy. A copy that cannot be opened
// or read is an error for a single copy; of two redundant copies it is
// recorded in readErr and the other is used, as U-Boot does (its
// env_import_redundant falls back to the copy it could read). Both
// unreadable is an error.
func (e *UBootEnv) readCopies() ([]ubootCopy, error) {
	if err := checkLocations(e.Copies); err != nil {
		return nil, err
	}
	out := make([]ubootCopy, len(e.Copies))
	unreadable := 0
	for i, l := range e.Copies {
		out[i] = e.readCopy(i, l)
		if out[i].readErr != nil {
			unreadable++
		}
	}
	switch {
	case unreadable == 0:
		return out, nil
	case unreadable == len(out):
		return nil, out[0].readErr
	}
	// One of two is unreadable: the other must be valid to be used.
	bad, good := out[0], out[1]
	if bad.readErr == nil {
		bad, good = good, bad
	}
	if !good.crcOK {
		return nil, fmt.Errorf("%w in the readable copy, and %w", ErrBadCRC, bad.readErr)
	}
	return out, nil
}

func (e *UBootEnv) readCopy(i int, l UBootLocation) ubootCopy {
	f, err := e.fs().Open(l.Path, false)
	if err != nil {
		return ubootCopy{readErr: fmt.Errorf("watchdog: uboot env copy %d: %w", i+1, err)}
	}
	buf := make([]byte, l.Size)
	err = readFull(f, buf, l.Offset)
	f.Close()
	if err != nil {
		return ubootCopy{readErr: fmt.Errorf("watchdog: uboot env: read %s (%d bytes): %w", l, l.Size, err)}
	}
	return decodeUBootCopy(buf, e.redundant())
}

// pick returns the index of the copy that fw_printenv and U-Boot would use,
// or -1.
func pick(cs []ubootCopy) int {
	switch {
	case len(cs) == 1:
		if cs[0].crcOK {
			return 0
		}
		return -1
	case cs[0].crcOK && !cs[1].crcOK:
		return 0
	case !cs[0].crcOK && cs[1].crcOK:
		return 1
	case !cs[0].crcOK && !cs[1].crcOK:
		return -1
	case newerFlag(cs[1].flags, cs[0].flags):
		return 1
	}
	return 0
}

// State reads all copies and reports which one is in use.
func (e *UBootEnv) State() (UBootState, error) {
	unlock, err := lockFile(e.LockFile)
	if err != nil {
		return UBootState{}, err
	}
	defer unlock()
	cs, err := e.readCopies()
	if err != nil {
		return UBootState{}, err
	}
	st := UBootState{Current: pick(cs)}
	for i, c := range cs {
		st.Valid = append(st.Valid, c.crcOK)
		st.Flags = append(st.Flags, c.flags)
		st.Copies = append(st.Copies, e.Copies[i].Offset)
	}
	if e.redundant() {
		r := &UBootRedundancy{Active: st.Current + 1}
		other := 1
		if st.Current >= 0 {
			other = 1 - st.Current
			r.ActiveCopy, r.ActiveFlag = e.Copies[st.Current].String(), cs[st.Current].flags
		}
		r.Other, r.OtherCopy = cs[other].health(), e.Copies[other].String()
		if cs[other].readErr != nil {
			r.OtherError = cs[other].readErr.Error()
		}
		st.Redundancy = r
	}
	if st.Current < 0 {
		if e.redundant() {
			return st, fmt.Errorf("%w in both copies (%s, %s)", ErrBadCRC, e.Copies[0], e.Copies[1])
		}
		return st, fmt.Errorf("%w (%s)", ErrBadCRC, e.Copies[0])
	}
	c := cs[st.Current]
	if c.err != nil {
		return st, fmt.Errorf("copy %s: %w", e.Copies[st.Current], c.err)
	}
	st.Vars = c.vars
	return st, nil
}

// Load returns the variables of the copy in use.
func (e *UBootEnv) Load() (Vars, error) {
	st, err := e.State()
	if err != nil {
		return nil, err
	}
	return st.Vars, nil
}

// Save writes v as the new environment: into the older (or corrupt) copy
// with the next flags value when redundant, in place otherwise; then it
// syncs and reads the copy back to verify it. A Save over copies that are
// all corrupt (or never written) initialises the environment.
func (e *UBootEnv) Save(v Vars) error {
	unlock, err := lockFile(e.LockFile)
	if err != nil {
		return err
	}
	defer unlock()
	cs, err := e.readCopies()
	if err != nil {
		return err
	}
	target, flags := 0, byte(0)
	if e.redundant() {
		cur := pick(cs)
		switch cur {
		case -1:
			flags = 1
		default:
			target = 1 - cur
			flags = cs[cur].flags + 1
		}
	}
	l := e.Copies[target]
	buf, err := EncodeUBootEnv(v, l.Size, e.redundant(), flags, e.Pad)
	if err != nil {
		return err
	}
	return writeVerified(e.fs(), l.Path, l.Offset, buf, "uboot env")
}

// writeVerified writes buf at off in path, syncs, and reads it back from
// the storage (past the page cache where the OS allows, see dropCache).
func writeVerified(fsys FS, path string, off int64, buf []byte, what string) error {
	f, err := fsys.Open(path, true)
	if err != nil {
		return fmt.Errorf("watchdog: %s: %w", what, err)
	}
	if err := writeFull(f, buf, off); err != nil {
		f.Close()
		return fmt.Errorf("watchdog: %s: write %s@%#x: %w", what, path, off, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("watchdog: %s: sync %s: %w", what, path, err)
	}
	dropCache(f, off, int64(len(buf)))
	back := make([]byte, len(buf))
	err = readFull(f, back, off)
	if cerr := f.Close(); err == nil && cerr != nil {
		return fmt.Errorf("watchdog: %s: close %s: %w", what, path, cerr)
	}
	if err != nil {
		return fmt.Errorf("watchdog: %s: read back %s@%#x: %w", what, path, off, err)
	}
	if !bytes.Equal(back, buf) {
		return fmt.Errorf("%w: %s %s@%#x", ErrVerify, what, path, off)
	}
	return nil
}
