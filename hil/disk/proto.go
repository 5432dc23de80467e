package disk

import "encoding/binary"

// The kernel FUSE protocol (include/uapi/linux/fuse.h), only what one
// regular file needs. All integers are in host byte order.

const (
	fuseKernelMajor = 7
	// fuseMaxMinor is the newest minor version whose structures we know;
	// the reply to INIT takes the smaller of this and the kernel's.
	fuseMaxMinor = 38
	fuseRootID   = 1
)

// Opcodes.
const (
	opLookup      = 1
	opForget      = 2
	opGetattr     = 3
	opSetattr     = 4
	opOpen        = 14
	opRead        = 15
	opWrite       = 16
	opStatfs      = 17
	opRelease     = 18
	opFsync       = 20
	opSetxattr    = 21
	opGetxattr    = 22
	opListxattr   = 23
	opFlush       = 25
	opInit        = 26
	opInterrupt   = 36
	opDestroy     = 38
	opBatchForget = 42
	opFallocate   = 43
	opSyncfs      = 50
	opMax         = 64 // size of the per-opcode counters
)

var opNames = map[uint32]string{
	opLookup: "LOOKUP", opForget: "FORGET", opGetattr: "GETATTR", opSetattr: "SETATTR",
	opOpen: "OPEN", opRead: "READ", opWrite: "WRITE", opStatfs: "STATFS", opRelease: "RELEASE",
	opFsync: "FSYNC", opSetxattr: "SETXATTR", opGetxattr: "GETXATTR", opListxattr: "LISTXATTR",
	opFlush: "FLUSH", opInit: "INIT", opInterrupt: "INTERRUPT", opDestroy: "DESTROY",
	opBatchForget: "BATCH_FORGET", opFallocate: "FALLOCATE", opSyncfs: "SYNCFS",
	27: "OPENDIR", 28: "READDIR", 29: "RELEASEDIR", 34: "ACCESS", 35: "CREATE", 44: "READDIRPLUS", 46: "LSEEK",
}

// OpName names a FUSE opcode.
func OpName(op uint32) string {
	if n, ok := opNames[op]; ok {
		return n
	}
	return "OP" + itoa(uint64(op))
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// INIT flags we use. initExt says flags2 (the upper 32 bits) is there;
// initRequestTimeout (bit 42, since Linux 6.14) is in flags2.
const (
	initBigWrites      = 1 << 5
	initAsyncDIO       = 1 << 15
	initMaxPages       = 1 << 22
	initExt            = 1 << 30
	initRequestTimeout = 1 << (42 - 32)
)

// Flags and bits of requests and replies.
const (
	fattrSize     = 1 << 3
	fopenDirectIO = 1 << 0
	fsyncDataSync = 1 << 0
)

// Sizes of the structures (all padded to 8 bytes by the kernel).
const (
	inHeaderSize  = 40 // len, opcode, unique, nodeid, uid, gid, pid, extlen+padding
	outHeaderSize = 16 // len, error, unique
	attrSize      = 88
	entryOutSize  = 40 + attrSize
	attrOutSize   = 16 + attrSize
	openOutSize   = 16
	writeInSize   = 40
	readInSize    = 40
	writeOutSize  = 8
	statfsOutSize = 80
	initOutSize   = 64
)

var ne = binary.NativeEndian

// inHeader is struct fuse_in_header.
type inHeader struct {
	Len    uint32
	Opcode uint32
	Unique uint64
	NodeID uint64
}

func parseInHeader(b []byte) (inHeader, bool) {
	if len(b) < inHeaderSize {
		return inHeader{}, false
	}
	h := inHeader{Len: ne.Uint32(b[0:]), Opcode: ne.Uint32(b[4:]), Unique: ne.Uint64(b[8:]), NodeID: ne.Uint64(b[16:])}
	return h, int(h.Len) == len(b)
}

// attr is struct fuse_attr.
type attr struct {
	Ino, Size, Blocks    uint64
	Mode, Nlink, Blksize uint32
}

func (a attr) put(b []byte) {
	clear(b[:attrSize])
	ne.PutUint64(b[0:], a.Ino)
	ne.PutUint64(b[8:], a.Size)
	ne.PutUint64(b[16:], a.Blocks)
	// atime, mtime, ctime (24..48) and their nsec (48..60) stay zero.
	ne.PutUint32(b[60:], a.Mode)
	ne.PutUint32(b[64:], a.Nlink)
	// uid, gid, rdev (68..80) zero: root owns it.
	ne.PutUint32(b[80:], a.Blksize)
}
