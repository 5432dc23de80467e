package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
)

// Stream framing, for links that carry bytes rather than frames (TCP,
// serial). Each frame is COBS-encoded (Consistent Overhead Byte Stuffing) so
// that it contains no zero byte, and written between two 0x00 delimiters:
//
//	0x00 COBS(frame) 0x00
//
// A receiver resynchronises at the next 0x00 whatever happened before it:
// garbage, a frame cut short, a corrupted byte. A frame costs 2 delimiter
// bytes plus one COBS code byte per started 254 bytes: 4 bytes for a 256-byte
// frame, 7 for 1024 (docs/protocol.md compares this with a length-prefixed
// design). The leading delimiter means a frame cut short costs only itself,
// not the frame after it too. Empty records (two delimiters in a row) are
// ignored.

// MaxEncodedLen returns the longest stream record, delimiters included, for
// a frame of n bytes.
func MaxEncodedLen(n int) int { return n + (n+253)/254 + 2 + 1 }

// AppendStreamFrame appends the stream record for frame to dst.
func AppendStreamFrame(dst, frame []byte) []byte {
	dst = append(dst, 0)
	codeAt := len(dst)
	dst = append(dst, 0)
	code := byte(1)
	for _, b := range frame {
		if b != 0 {
			dst = append(dst, b)
			code++
			if code != 0xff {
				continue
			}
		}
		// A zero byte (dropped: the code says where it was), or a full
		// block of 254 data bytes (code 0xff: no zero follows).
		dst[codeAt] = code
		codeAt = len(dst)
		dst = append(dst, 0)
		code = 1
	}
	dst[codeAt] = code
	return append(dst, 0)
}

// Writer writes frames to a byte stream. Not safe for concurrent use.
type Writer struct {
	w        io.Writer
	maxFrame int
	buf      []byte
	err      error
}

// NewWriter returns a Writer of frames of at most maxFrame bytes to w.
func NewWriter(w io.Writer, maxFrame int) *Writer {
	return &Writer{w: w, maxFrame: maxFrame}
}

// WriteFrame writes one frame in a single Write call to the underlying
// writer. A write error is sticky: the stream's framing state is unknown
// after it.
func (w *Writer) WriteFrame(frame []byte) error {
	if w.err != nil {
		return w.err
	}
	if len(frame) > w.maxFrame {
		return fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, len(frame), w.maxFrame)
	}
	w.buf = AppendStreamFrame(w.buf[:0], frame)
	if _, err := w.w.Write(w.buf); err != nil {
		w.err = fmt.Errorf("protocol: stream write: %w", err)
		return w.err
	}
	return nil
}

// Deframer turns a byte stream into frames, sans I/O: feed it bytes as they
// come, in pieces of any size, and it returns each frame as its record ends.
// It never buffers more than maxFrame bytes: a record that would decode to
// more is reported (ErrFrameTooLarge) as soon as it passes the limit, and
// the rest of it is skipped. A Deframer starts unsynchronised: bytes before
// the first delimiter are skipped and reported once as ErrStreamGarbage.
// Not safe for concurrent use.
type Deframer struct {
	maxFrame int
	buf      []byte
	synced   bool // seen a delimiter
	skipping bool // discarding the rest of a rejected record
	garbage  int  // bytes skipped before the first delimiter
	rem      int  // data bytes left in the current COBS block
	zeroNext bool // the current block ends in an implied zero (only once started)
	started  bool // a code byte has been read for this record (so buf may hold data)
}

// NewDeframer returns a Deframer for frames of at most maxFrame bytes.
func NewDeframer(maxFrame int) *Deframer {
	return &Deframer{maxFrame: maxFrame, buf: make([]byte, 0, maxFrame)}
}

// Feed consumes bytes of p up to and including the end of the first record
// that completes or fails in it, and returns how many it consumed. When a
// record completed, frame is its decoded bytes (valid until the next call)
// and err is nil; when one failed, err wraps ErrFrameTooLarge, ErrTruncated
// (a record ended inside a COBS block: a frame cut short) or
// ErrStreamGarbage; otherwise both are nil and Feed consumed all of p. Feed
// never panics. Call it in a loop until p is consumed:
//
//	for len(p) > 0 {
//		n, frame, err := d.Feed(p)
//		p = p[n:]
//		...
//	}
func (d *Deframer) Feed(p []byte) (n int, frame []byte, err error) {
	for i := 0; i < len(p); i++ {
		b := p[i]
		if !d.synced {
			if b != 0 {
				// Skip to the first delimiter in one step.
				z := bytes.IndexByte(p[i:], 0)
				if z < 0 {
					d.garbage += len(p) - i
					return len(p), nil, nil
				}
				d.garbage += z
				i += z
			}
			d.synced = true
			if d.garbage > 0 {
				g := d.garbage
				d.garbage = 0
				return i + 1, nil, fmt.Errorf("%w: %d bytes before the first delimiter", ErrStreamGarbage, g)
			}
			continue
		}
		if b == 0 {
			frame, err = d.end()
			if frame != nil || err != nil {
				return i + 1, frame, err
			}
			continue
		}
		if d.skipping {
			z := bytes.IndexByte(p[i:], 0)
			if z < 0 {
				return len(p), nil, nil
			}
			i += z - 1 // the delimiter is handled by the next iteration
			continue
		}
		if d.rem == 0 {
			// A code byte: the previous block's implied zero is real now
			// that another block follows.
			if d.zeroNext {
				if err := d.put(0); err != nil {
					return i + 1, nil, err
				}
			}
			d.started = true
			d.rem = int(b) - 1
			d.zeroNext = b != 0xff
			continue
		}
		// Data bytes: copy the run up to the block's end, a delimiter or the
		// end of p, whichever is first, within the frame limit.
		run := p[i:min(len(p), i+d.rem)]
		if z := bytes.IndexByte(run, 0); z >= 0 {
			run = run[:z]
		}
		if room := d.maxFrame - len(d.buf); len(run) > room {
			d.buf = append(d.buf, run[:room]...)
			d.skipping = true
			return i + room + 1, nil, fmt.Errorf("%w: stream record longer than %d bytes", ErrFrameTooLarge, d.maxFrame)
		}
		d.buf = append(d.buf, run...)
		d.rem -= len(run)
		i += len(run) - 1
	}
	return len(p), nil, nil
}

func (d *Deframer) put(b byte) error {
	if len(d.buf) >= d.maxFrame {
		d.skipping = true
		return fmt.Errorf("%w: stream record longer than %d bytes", ErrFrameTooLarge, d.maxFrame)
	}
	d.buf = append(d.buf, b)
	return nil
}

// end finishes a record at a delimiter.
func (d *Deframer) end() ([]byte, error) {
	skipping, started, rem := d.skipping, d.started, d.rem
	n := len(d.buf)
	d.buf = d.buf[:0]
	d.skipping, d.started, d.rem, d.zeroNext = false, false, 0, false
	switch {
	case skipping, !started:
		return nil, nil // already reported, or an empty record
	case rem > 0:
		return nil, fmt.Errorf("%w: stream record ends %d bytes short", ErrTruncated, rem)
	}
	return d.buf[:n], nil
}

// End tells the Deframer the stream ended. It returns an error wrapping
// ErrTruncated if a record was unfinished, or ErrStreamGarbage if only
// unsynchronised bytes were seen, and resets the Deframer to its initial
// state either way.
func (d *Deframer) End() error {
	var err error
	switch {
	case d.skipping:
	case d.started:
		err = fmt.Errorf("%w: stream ended inside a record", ErrTruncated)
	case d.garbage > 0:
		err = fmt.Errorf("%w: %d bytes and no delimiter", ErrStreamGarbage, d.garbage)
	}
	*d = Deframer{maxFrame: d.maxFrame, buf: d.buf[:0]}
	return err
}

// Pending returns how many decoded bytes of an unfinished record are held.
func (d *Deframer) Pending() int { return len(d.buf) }

// Reader reads frames from a byte stream (TCP, serial), resynchronising
// after anything that is not a well-delimited record. Not safe for
// concurrent use.
type Reader struct {
	r   io.Reader
	d   *Deframer
	in  []byte
	p   []byte // unconsumed part of in
	err error  // sticky error of r
}

// NewReader returns a Reader of frames of at most maxFrame bytes from r.
func NewReader(r io.Reader, maxFrame int) *Reader {
	return &Reader{r: r, d: NewDeframer(maxFrame), in: make([]byte, 4096)}
}

// ReadFrame returns the next frame (valid until the next call) or an error.
// Errors wrapping ErrFrameTooLarge, ErrTruncated or ErrStreamGarbage report a
// record that was skipped: count it and call again. At the end of the
// stream it returns io.EOF, or, if the stream ended inside a record, an
// error wrapping ErrTruncated first. Any other error is the underlying
// reader's, and is returned again on every later call.
func (r *Reader) ReadFrame() ([]byte, error) {
	for {
		if len(r.p) > 0 {
			n, frame, err := r.d.Feed(r.p)
			r.p = r.p[n:]
			if frame != nil || err != nil {
				return frame, err
			}
			continue
		}
		if r.err != nil {
			if errors.Is(r.err, io.EOF) {
				if err := r.d.End(); err != nil {
					return nil, fmt.Errorf("%w (%w)", err, io.ErrUnexpectedEOF)
				}
			}
			return nil, r.err
		}
		n, err := r.r.Read(r.in)
		r.p = r.in[:n]
		if err != nil {
			r.err = err
		}
	}
}

// PacketLink carries one frame per datagram over a net.PacketConn (UDP, a
// radio modem's datagram interface). Not safe for concurrent reads.
type PacketLink struct {
	conn     net.PacketConn
	maxFrame int
	buf      []byte
}

// NewPacketLink returns a PacketLink for frames of at most maxFrame bytes.
func NewPacketLink(conn net.PacketConn, maxFrame int) *PacketLink {
	// One spare byte: a datagram that fills it was longer than maxFrame
	// (the OS truncates silently), so it is rejected, not decoded.
	return &PacketLink{conn: conn, maxFrame: maxFrame, buf: make([]byte, maxFrame+1)}
}

// ReadFrame reads one datagram. The frame is valid until the next call. A
// datagram longer than maxFrame yields an error wrapping ErrFrameTooLarge;
// errors of the connection are returned as they are.
func (l *PacketLink) ReadFrame() ([]byte, net.Addr, error) {
	n, addr, err := l.conn.ReadFrom(l.buf)
	if err != nil {
		return nil, addr, err
	}
	if n > l.maxFrame {
		return nil, addr, fmt.Errorf("%w: datagram of more than %d bytes", ErrFrameTooLarge, l.maxFrame)
	}
	return l.buf[:n], addr, nil
}

// WriteFrame sends frame as one datagram to addr.
func (l *PacketLink) WriteFrame(frame []byte, addr net.Addr) error {
	if len(frame) > l.maxFrame {
		return fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, len(frame), l.maxFrame)
	}
	_, err := l.conn.WriteTo(frame, addr)
	return err
}
