package disk

import (
	"bytes"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// request encodes a FUSE request as the kernel sends it.
func request(op uint32, unique, node uint64, body []byte) []byte {
	b := make([]byte, inHeaderSize+len(body))
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint32(b[4:], op)
	ne.PutUint64(b[8:], unique)
	ne.PutUint64(b[16:], node)
	copy(b[inHeaderSize:], body)
	return b
}

// exchange serves the requests one by one, without a kernel, and returns
// the replies written.
func exchange(t *testing.T, dev *Device, reqs ...[]byte) [][]byte {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := &Server{dev: dev, f: w}
	out := make([]byte, outHeaderSize+maxWrite)
	for _, q := range reqs {
		h, ok := parseInHeader(q)
		if !ok {
			t.Fatalf("bad test request")
		}
		s.handle(h, q[inHeaderSize:], out)
	}
	w.Close()
	all, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	var replies [][]byte
	for len(all) >= outHeaderSize {
		n := ne.Uint32(all)
		replies = append(replies, all[:n])
		all = all[n:]
	}
	return replies
}

func errnoOf(rep []byte) unix.Errno { return unix.Errno(-int32(ne.Uint32(rep[4:]))) }

func TestProtocol(t *testing.T) {
	dev, _ := NewDevice(1<<20, Model{}, nil)
	initIn := make([]byte, 64)
	ne.PutUint32(initIn[0:], 7)
	ne.PutUint32(initIn[4:], 41)
	ne.PutUint32(initIn[8:], 128<<10)
	write := func(unique uint64, off int64, data []byte, size uint32) []byte {
		b := make([]byte, writeInSize+len(data))
		ne.PutUint64(b[8:], uint64(off))
		ne.PutUint32(b[16:], size)
		copy(b[writeInSize:], data)
		return request(opWrite, unique, fileNode, b)
	}
	read := func(unique uint64, off int64, size uint32) []byte {
		b := make([]byte, readInSize)
		ne.PutUint64(b[8:], uint64(off))
		ne.PutUint32(b[16:], size)
		return request(opRead, unique, fileNode, b)
	}
	payload := bytes.Repeat([]byte("bootorbit"), 1000)
	reps := exchange(t, dev,
		request(opInit, 1, 0, initIn),
		request(opLookup, 2, fuseRootID, []byte("disk.img\x00")),
		request(opLookup, 3, fuseRootID, []byte("other\x00")),
		write(4, 4096, payload, uint32(len(payload))),
		write(5, 0, payload, 3), // size disagrees with the data
		read(6, 4096, uint32(len(payload))),
		read(7, 1<<20-10, 100), // short at the end
		request(opFsync, 8, fileNode, make([]byte, 16)),
		request(opForget, 9, fileNode, make([]byte, 8)), // no reply
		request(opGetxattr, 10, fileNode, make([]byte, 8)),
		request(99, 11, fileNode, nil),
		write(12, 1<<20-2, []byte("abc"), 3), // past the end
	)
	if len(reps) != 11 {
		t.Fatalf("%d replies, want 11 (none to FORGET)", len(reps))
	}
	init := reps[0][outHeaderSize:]
	if len(init) != initOutSize || ne.Uint32(init[0:]) != 7 || ne.Uint32(init[4:]) != fuseMaxMinor || ne.Uint32(init[20:]) != maxWrite || ne.Uint32(init[12:])&initMaxPages == 0 {
		t.Errorf("INIT reply %x", init)
	}
	if e := reps[1][outHeaderSize:]; errnoOf(reps[1]) != 0 || ne.Uint64(e[0:]) != fileNode || ne.Uint64(e[40+8:]) != 1<<20 {
		t.Errorf("LOOKUP disk.img: errno %v, %x", errnoOf(reps[1]), e)
	}
	for i, want := range map[int]unix.Errno{2: unix.ENOENT, 3: 0, 4: unix.EINVAL, 7: 0, 8: unix.ENOSYS, 9: unix.ENOSYS, 10: unix.ENOSPC} {
		if got := errnoOf(reps[i]); got != want {
			t.Errorf("reply %d: %v, want %v", i, got, want)
		}
	}
	if got := ne.Uint32(reps[3][outHeaderSize:]); got != uint32(len(payload)) {
		t.Errorf("WRITE wrote %d", got)
	}
	if got := reps[5][outHeaderSize:]; !bytes.Equal(got, payload) {
		t.Errorf("READ back %d bytes, differ", len(got))
	}
	if got := len(reps[6]) - outHeaderSize; got != 10 {
		t.Errorf("READ at the end: %d bytes, want 10", got)
	}
	// The FSYNC made the WRITE durable.
	if img := dev.Cut(nil, 0); img.Unflushed != 0 {
		t.Errorf("%d blocks unflushed after FSYNC", img.Unflushed)
	}
	for i, rep := range reps {
		if ne.Uint64(rep[8:]) == 9 {
			t.Errorf("reply %d answers FORGET", i)
		}
	}
}

// INIT asks for the request timeout only when the kernel offers it
// (FUSE_INIT_EXT and FUSE_REQUEST_TIMEOUT in flags2), in whole seconds.
func TestInitRequestTimeout(t *testing.T) {
	dev, _ := NewDevice(1<<20, Model{}, nil)
	for _, tc := range []struct {
		name     string
		kflags   uint32
		kflags2  uint32
		opt      time.Duration
		wantSecs uint16
	}{
		{"offered, default", initExt, initRequestTimeout, 0, 60},
		{"offered, rounded up", initExt, initRequestTimeout, 1500 * time.Millisecond, 2},
		{"offered, refused by option", initExt, initRequestTimeout, -1, 0},
		{"no flags2", 0, initRequestTimeout, 0, 0},
		{"not offered", initExt, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := make([]byte, 64)
			ne.PutUint32(in[0:], 7)
			ne.PutUint32(in[4:], 45)
			ne.PutUint32(in[12:], tc.kflags)
			ne.PutUint32(in[16:], tc.kflags2)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			s := &Server{dev: dev, f: w, o: ServerOptions{RequestTimeout: tc.opt}}
			out := make([]byte, outHeaderSize+maxWrite)
			s.handle(inHeader{Len: uint32(inHeaderSize + len(in)), Opcode: opInit, Unique: 1}, in, out)
			w.Close()
			rep, _ := io.ReadAll(r)
			if len(rep) != outHeaderSize+initOutSize {
				t.Fatalf("reply of %d bytes", len(rep))
			}
			body := rep[outHeaderSize:]
			flags, flags2, secs := ne.Uint32(body[12:]), ne.Uint32(body[32:]), ne.Uint16(body[40:])
			if secs != tc.wantSecs || (secs > 0) != (flags&initExt != 0 && flags2&initRequestTimeout != 0) {
				t.Errorf("flags %#x flags2 %#x request_timeout %d, want %d s", flags, flags2, secs, tc.wantSecs)
			}
			if got := s.RequestTimeout(); got != time.Duration(tc.wantSecs)*time.Second {
				t.Errorf("RequestTimeout() = %v", got)
			}
		})
	}
}
