package disk

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// FileName is the one file the server serves.
const FileName = "disk.img"

const (
	fileNode   = 2
	maxWrite   = 1 << 20 // bytes per WRITE request (FUSE_MAX_PAGES: 256 pages)
	maxPages   = maxWrite / 4096
	readBufLen = maxWrite + 64<<10
	attrTTL    = 3600 // seconds: the file's attributes never change
)

// ServerOptions tunes the FUSE server.
type ServerOptions struct {
	// DirectIO answers OPEN with FOPEN_DIRECT_IO: the kernel keeps no page
	// cache of disk.img and every read and write reaches the server as is.
	DirectIO bool
	// Trace, if set, receives one line per request (opcode, offset, size).
	Trace io.Writer
	// Log receives the end-of-session summary; nil discards.
	Log *slog.Logger
	// RequestTimeout is asked of the kernel at INIT (FUSE_REQUEST_TIMEOUT,
	// Linux 6.14 and later): a request unanswered that long aborts the
	// connection in the kernel itself. It is the guard that works when
	// this process cannot: a server that is stuck, or a process that
	// panicked with a thread blocked on the mount (such a process never
	// finishes exiting, so its /dev/fuse descriptor is never closed).
	// The kernel checks every few seconds, so the abort comes up to ~15 s
	// late. 0 is DefaultRequestTimeout; negative asks for none. Every
	// request must be answerable within it: the device's model must not
	// queue that much work.
	RequestTimeout time.Duration
	// Workers is how many requests are served at once (0 or 1: one at a
	// time). With more, the server offers asynchronous direct I/O at INIT
	// (FUSE_ASYNC_DIO), so that the kernel passes the loop device's
	// requests on without waiting for each answer, and that many workers
	// read and answer them. The device still does one request at a time,
	// in its model's time (Device.charge queues them): more workers only
	// overlap the server's own work (the round trip through /dev/fuse,
	// copying the request), about 1-2 ms a request here, with the
	// device's, as a real device's queue overlaps the host's work with its
	// own. With one, that work is added to every request.
	Workers int
}

// DefaultRequestTimeout is ServerOptions.RequestTimeout's default.
const DefaultRequestTimeout = 60 * time.Second

// Server serves a Device as the file disk.img of a FUSE mount.
type Server struct {
	dev   *Device
	dir   string
	f     *os.File
	o     ServerOptions
	ops   [opMax + 1]atomic.Int64
	minor uint32
	// timeout is the request timeout asked of the kernel at INIT (0:
	// none, the kernel does not offer it).
	timeout atomic.Int64
	done    chan struct{} // closed when every worker has ended
	errMu   sync.Mutex
	err     error // the first worker error
	traceMu sync.Mutex

	closeOnce sync.Once
	closeErr  error
}

// Serve mounts a FUSE filesystem on the empty directory dir that holds one
// file, disk.img, backed by dev, and serves it on a goroutine until Close.
func Serve(dir string, dev *Device, o ServerOptions) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("disk: open /dev/fuse: %w", err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd)
	if err := unix.Mount("bootorbit", dir, "fuse.bootorbit", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("disk: mount fuse on %s: %w", dir, err)
	}
	s := &Server{dev: dev, dir: dir, o: o, done: make(chan struct{})}
	// A non-blocking descriptor goes through the runtime's poller, so that
	// a read waiting for a request does not pin a thread and Close wakes it.
	s.f = os.NewFile(uintptr(fd), "/dev/fuse")
	go s.serve()
	return s, nil
}

// Path is the path of disk.img.
func (s *Server) Path() string { return s.dir + "/" + FileName }

// Device is the served device.
func (s *Server) Device() *Device { return s.dev }

// Ops returns how many requests of each opcode the server received.
func (s *Server) Ops() map[string]int64 {
	m := map[string]int64{}
	for op := range s.ops {
		if n := s.ops[op].Load(); n > 0 {
			name := OpName(uint32(op))
			if op == opMax {
				name = "other"
			}
			m[name] = n
		}
	}
	return m
}

// OpsString formats Ops sorted by name.
func (s *Server) OpsString() string {
	m := s.Ops()
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// Abort aborts the FUSE connection: every request in flight and every
// later one fails (ENOTCONN), which releases anything blocked on the
// mount, in D state included. The last resort of a stuck teardown, or of
// a test that runs out of time. It closes the server's /dev/fuse
// descriptor, the only one (close-on-exec): the kernel aborts a
// connection when its last device descriptor is closed, which needs no
// fusectl mount.
func (s *Server) Abort() {
	s.f.Close()
}

// Close unmounts the FUSE filesystem (nothing may still use disk.img: the
// loop device detached) and stops the server. A busy mount is retried for
// a few seconds, then aborted and detached.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var err error
		for i := 0; i < 50; i++ {
			if err = unix.Unmount(s.dir, 0); err == nil || !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(100 * time.Millisecond) // loop's release of the file is asynchronous
		}
		if err != nil && !errors.Is(err, unix.EINVAL) {
			s.closeErr = fmt.Errorf("disk: unmount %s: %w (aborted and detached)", s.dir, err)
			s.Abort()
			unix.Unmount(s.dir, unix.MNT_DETACH)
		}
		select {
		case <-s.done:
		case <-time.After(2 * time.Second):
		}
		s.Abort()
		select {
		case <-s.done:
			if err := s.firstErr(); err != nil {
				s.closeErr = errors.Join(s.closeErr, err)
			}
		case <-time.After(2 * time.Second):
			// The loop is stuck inside the device (its clock); the
			// connection is aborted, so nothing waits on it any more.
			s.closeErr = errors.Join(s.closeErr, errors.New("disk: server stuck in the device; connection aborted"))
		}
		s.o.Log.Info("fuse disk closed", "dir", s.dir, "ops", s.OpsString(), "err", s.firstErr())
	})
	return s.closeErr
}

// serve runs the workers and closes done when all have ended.
func (s *Server) serve() {
	var wg sync.WaitGroup
	for range max(s.o.Workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.loop()
		}()
	}
	wg.Wait()
	close(s.done)
}

// fail records a worker's error; the first one is kept.
func (s *Server) fail(err error) {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// firstErr is the first worker error, if any.
func (s *Server) firstErr() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// notPollable reports the runtime poller's "not pollable" error
// (internal/poll.ErrNotPollable, which is not exported): what a read gets
// when epoll reports EPOLLERR for the descriptor, as /dev/fuse does once
// its connection is gone.
func notPollable(err error) bool {
	var pe *os.PathError
	return errors.As(err, &pe) && pe.Err != nil && pe.Err.Error() == "not pollable"
}

// loop is one worker: it reads requests and answers them until the
// session ends. Workers share the descriptor: each read takes one whole
// request, and each answer names its request.
func (s *Server) loop() {
	// However the loop ends but by DESTROY or an unmount, nothing answers
	// the kernel any more: abort the connection so that whatever waits on
	// the device fails now. A panic (a bug here or in the device) must not
	// take the process down either: a thread of this process blocked on the
	// mount (in D state, waiting for the loop device) keeps the dying
	// process, and so its /dev/fuse descriptor, alive, the kernel waits on
	// a server that no longer runs, and no cleanup ever unmounts or detaches
	// anything. Recovered, the error is reported by Close.
	failed := false
	defer func() {
		if r := recover(); r != nil {
			s.fail(fmt.Errorf("disk: server panic: %v", r))
			s.o.Log.Error("fuse server panicked: connection aborted", "panic", r)
			failed = true
		}
		if failed {
			s.Abort()
		}
	}()
	buf := make([]byte, readBufLen)
	out := make([]byte, outHeaderSize+maxWrite)
	for {
		n, err := s.f.Read(buf)
		if err != nil {
			switch {
			case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
				continue // an interrupted request vanished; read on
			case errors.Is(err, unix.ENODEV), errors.Is(err, os.ErrClosed), errors.Is(err, io.EOF):
				return // unmounted or aborted
			case notPollable(err):
				// /dev/fuse polls EPOLLERR once the connection is gone; a
				// worker that was not blocked in the read when it went
				// gets this from the runtime's poller instead of ENODEV.
				return
			}
			s.fail(fmt.Errorf("disk: read /dev/fuse: %w", err))
			failed = true
			return
		}
		h, ok := parseInHeader(buf[:n])
		if !ok {
			s.fail(fmt.Errorf("disk: malformed request (%d bytes)", n))
			failed = true
			return
		}
		if s.handle(h, buf[inHeaderSize:n], out) {
			return
		}
	}
}

// handle serves one request; it reports whether the session is over.
func (s *Server) handle(h inHeader, in, out []byte) bool {
	op := h.Opcode
	s.ops[min(op, opMax)].Add(1)
	if s.o.Trace != nil {
		s.trace(h, in)
	}
	body := out[outHeaderSize:]
	var n int
	var errno unix.Errno
	switch op {
	case opInit:
		n, errno = s.init(in, body)
	case opLookup:
		name := strings.TrimRight(string(in), "\x00")
		if h.NodeID != fuseRootID || name != FileName {
			errno = unix.ENOENT
			break
		}
		clear(body[:entryOutSize])
		ne.PutUint64(body[0:], fileNode)
		ne.PutUint64(body[8:], 1)        // generation
		ne.PutUint64(body[16:], attrTTL) // entry_valid
		ne.PutUint64(body[24:], attrTTL) // attr_valid
		s.attr(fileNode).put(body[40:])
		n = entryOutSize
	case opGetattr:
		n, errno = s.attrOut(h.NodeID, body)
	case opSetattr:
		// The disk has a fixed size: a truncate to anything else fails.
		if len(in) < 24 {
			errno = unix.EINVAL
			break
		}
		if ne.Uint32(in[0:])&fattrSize != 0 && (h.NodeID != fileNode || int64(ne.Uint64(in[16:])) != s.dev.Size()) {
			errno = unix.EPERM
			break
		}
		n, errno = s.attrOut(h.NodeID, body)
	case opOpen:
		if h.NodeID != fileNode {
			errno = unix.EISDIR
			break
		}
		clear(body[:openOutSize])
		ne.PutUint64(body[0:], 1)
		if s.o.DirectIO {
			ne.PutUint32(body[8:], fopenDirectIO)
		}
		n = openOutSize
	case opRead:
		if len(in) < readInSize {
			errno = unix.EINVAL
			break
		}
		off, size := int64(ne.Uint64(in[8:])), int64(ne.Uint32(in[16:]))
		size = min(size, s.dev.Size()-off, int64(len(body)))
		if off >= s.dev.Size() || size <= 0 {
			break
		}
		if err := s.dev.ReadAt(body[:size], off); err != nil {
			errno = unix.EIO
			break
		}
		n = int(size)
	case opWrite:
		if len(in) < writeInSize {
			errno = unix.EINVAL
			break
		}
		off, size := int64(ne.Uint64(in[8:])), int(ne.Uint32(in[16:]))
		data := in[writeInSize:]
		if size != len(data) {
			errno = unix.EINVAL
			break
		}
		if err := s.dev.WriteAt(data, off); err != nil {
			errno = unix.EIO
			if errors.Is(err, ErrRange) {
				errno = unix.ENOSPC
			}
			break
		}
		clear(body[:writeOutSize])
		ne.PutUint32(body[0:], uint32(size))
		n = writeOutSize
	case opFsync:
		if s.dev.Flush() != nil {
			errno = unix.EIO
		}
	case opFlush, opRelease:
		// FLUSH is close(2) of a descriptor, RELEASE the last close of the
		// file: neither is a cache flush (a disk keeps its cache on close).
	case opStatfs:
		clear(body[:statfsOutSize])
		ne.PutUint64(body[0:], uint64(s.dev.Size()/BlockSize)) // blocks
		ne.PutUint64(body[24:], 2)                             // files
		ne.PutUint32(body[40:], BlockSize)                     // bsize
		ne.PutUint32(body[44:], 255)                           // namelen
		ne.PutUint32(body[48:], BlockSize)                     // frsize
		n = statfsOutSize
	case opForget, opBatchForget, opInterrupt:
		// No reply. Requests are served one at a time and quickly, so an
		// interrupt is ignored, as the protocol allows.
		return false
	case opGetxattr, opListxattr, opSetxattr:
		// ENOSYS: the kernel stops asking (it would otherwise look up
		// security.capability before writes).
		errno = unix.ENOSYS
	case opDestroy:
		s.reply(h.Unique, out, 0, 0)
		return true
	default:
		errno = unix.ENOSYS
	}
	s.reply(h.Unique, out, n, errno)
	return false
}

func (s *Server) reply(unique uint64, out []byte, n int, errno unix.Errno) {
	if errno != 0 {
		n = 0
	}
	ne.PutUint32(out[0:], uint32(outHeaderSize+n))
	ne.PutUint32(out[4:], uint32(-int32(errno)))
	ne.PutUint64(out[8:], unique)
	// ENOENT: the request was interrupted and is gone; nothing to do.
	s.f.Write(out[:outHeaderSize+n])
}

func (s *Server) init(in, body []byte) (int, unix.Errno) {
	if len(in) < 16 {
		return 0, unix.EINVAL
	}
	major, minor, readahead := ne.Uint32(in[0:]), ne.Uint32(in[4:]), ne.Uint32(in[8:])
	clear(body[:initOutSize])
	ne.PutUint32(body[0:], fuseKernelMajor)
	if major != fuseKernelMajor {
		// A newer major: answer ours, the kernel retries or gives up.
		return 8, 0
	}
	s.minor = min(minor, fuseMaxMinor)
	ne.PutUint32(body[4:], s.minor)
	ne.PutUint32(body[8:], readahead)
	flags := uint32(initBigWrites | initMaxPages)
	kflags := ne.Uint32(in[12:])
	if s.o.Workers > 1 && kflags&initAsyncDIO != 0 {
		flags |= initAsyncDIO
	}
	ne.PutUint16(body[16:], 16) // max_background
	ne.PutUint16(body[18:], 12) // congestion_threshold
	ne.PutUint32(body[20:], maxWrite)
	ne.PutUint32(body[24:], 1) // time_gran
	ne.PutUint16(body[28:], maxPages)
	if to := s.requestTimeout(); to > 0 && kflags&initExt != 0 && len(in) >= 20 && ne.Uint32(in[16:])&initRequestTimeout != 0 {
		secs := min((to+time.Second-1)/time.Second, 0xffff)
		flags |= initExt
		ne.PutUint32(body[32:], initRequestTimeout) // flags2
		ne.PutUint16(body[40:], uint16(secs))       // request_timeout
		s.timeout.Store(int64(secs * time.Second))
	}
	ne.PutUint32(body[12:], flags)
	return initOutSize, 0
}

func (s *Server) requestTimeout() time.Duration {
	switch to := s.o.RequestTimeout; {
	case to == 0:
		return DefaultRequestTimeout
	case to < 0:
		return 0
	default:
		return to
	}
}

// RequestTimeout is the request timeout asked of the kernel at INIT
// (ServerOptions.RequestTimeout rounded up to seconds), 0 if the kernel
// does not offer one (then only Abort and Disk deadlines guard).
func (s *Server) RequestTimeout() time.Duration { return time.Duration(s.timeout.Load()) }

func (s *Server) attr(node uint64) attr {
	if node == fuseRootID {
		return attr{Ino: 1, Mode: unix.S_IFDIR | 0o755, Nlink: 2, Blksize: BlockSize}
	}
	sz := uint64(s.dev.Size())
	return attr{Ino: fileNode, Size: sz, Blocks: sz / 512, Mode: unix.S_IFREG | 0o600, Nlink: 1, Blksize: BlockSize}
}

func (s *Server) attrOut(node uint64, body []byte) (int, unix.Errno) {
	if node != fuseRootID && node != fileNode {
		return 0, unix.ENOENT
	}
	clear(body[:attrOutSize])
	ne.PutUint64(body[0:], attrTTL)
	s.attr(node).put(body[16:])
	return attrOutSize, 0
}

func (s *Server) trace(h inHeader, in []byte) {
	s.traceMu.Lock()
	defer s.traceMu.Unlock()
	switch h.Opcode {
	case opRead, opWrite:
		if len(in) >= 24 {
			fmt.Fprintf(s.o.Trace, "%s off=%d size=%d flags=%#x\n", OpName(h.Opcode), ne.Uint64(in[8:]), ne.Uint32(in[16:]), ne.Uint32(in[20:]))
			return
		}
	case opFsync:
		if len(in) >= 12 {
			fmt.Fprintf(s.o.Trace, "FSYNC datasync=%v\n", ne.Uint32(in[8:])&fsyncDataSync != 0)
			return
		}
	}
	fmt.Fprintf(s.o.Trace, "%s node=%d\n", OpName(h.Opcode), h.NodeID)
}
