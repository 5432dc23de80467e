package disk

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"
)

// BlockSize is the granularity of the emulated write cache: a block is
// durable or not as a whole, as in a disk's cache.
const BlockSize = 4096

// Errors.
var (
	// ErrPowerCut is returned for every request after Cut.
	ErrPowerCut = errors.New("disk: power cut")
	// ErrRange is an access outside the device.
	ErrRange = errors.New("disk: access out of range")
)

// Model is the device's cost model: every write request costs Latency
// plus its bytes at Rate, every flush costs Latency. Reads are free (a
// flight computer's eMMC reads several times faster than it writes, and
// the bench measures writes). The zero Model is as fast as the server.
type Model struct {
	Rate    float64       // bytes per second; 0 means unlimited
	Latency time.Duration // per write request and per flush
}

// Cost is what one request of n bytes costs the device (a flush is n=0).
func (m Model) Cost(n int64) time.Duration {
	d := m.Latency
	if m.Rate > 0 {
		d += time.Duration(float64(n) / m.Rate * float64(time.Second))
	}
	return d
}

func (m Model) String() string {
	if m.Rate == 0 && m.Latency == 0 {
		return "unlimited"
	}
	r := "unlimited rate"
	if m.Rate > 0 {
		r = fmt.Sprintf("%g MB/s", m.Rate/1e6)
	}
	return fmt.Sprintf("%s, %v per request", r, m.Latency)
}

// Clock is the device's time: Now and a Sleep that lets it pass. The real
// one sleeps; a fake one advances.
type Clock interface {
	Now() time.Time
	Sleep(time.Duration)
}

type realClock struct{}

func (realClock) Now() time.Time        { return time.Now() }
func (realClock) Sleep(d time.Duration) { time.Sleep(d) }

// RealClock is the wall clock.
var RealClock Clock = realClock{}

type block = [BlockSize]byte

// zeroBlock stands for a block of zeros (mkfs writes many), so that they
// take no memory. Blocks are never modified in place once durable: a write
// copies the block into the volatile overlay first, so that a durable
// block can be shared by an Image taken at a cut.
var zeroBlock = new(block)

// Stats counts what the device was asked to do.
type Stats struct {
	Writes, WriteBytes int64
	Reads, ReadBytes   int64
	Flushes            int64
	// Busy is the device time charged by the model.
	Busy time.Duration
}

// Device is the emulated block device: a durable layer and a volatile
// overlay of 4 KiB blocks, in memory; absent blocks read as zeros. It is
// safe for concurrent use.
type Device struct {
	mu       sync.Mutex
	size     int64
	durable  map[int64]*block
	volatile map[int64]*block
	model    Model
	clk      Clock
	busy     time.Time // the device is busy until then
	frozen   bool
	stats    Stats

	// An armed cut (CutAfter): when the WRITE count reaches cutAt.
	cutAt   int64
	cutRnd  *rand.Rand
	cutKeep float64
	cutImg  *Image
	cutDone chan struct{}
}

// NewDevice returns an empty (all zeros) device of size bytes, a multiple
// of BlockSize. A nil clock is the wall clock.
func NewDevice(size int64, m Model, clk Clock) (*Device, error) {
	if size <= 0 || size%BlockSize != 0 {
		return nil, fmt.Errorf("disk: size %d: want a positive multiple of %d", size, BlockSize)
	}
	if m.Rate < 0 || m.Latency < 0 {
		return nil, fmt.Errorf("disk: negative model %+v", m)
	}
	if clk == nil {
		clk = RealClock
	}
	return &Device{size: size, durable: map[int64]*block{}, volatile: map[int64]*block{}, model: m, clk: clk}, nil
}

// Size is the device size in bytes.
func (d *Device) Size() int64 { return d.size }

// Model is the device's cost model.
func (d *Device) Model() Model { return d.model }

// Stats returns the counters so far.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// charge makes the device busy for the cost of a request of n bytes and
// waits until it is done. Requests are served one at a time, so the
// device's busy time follows the model whatever the server's own speed:
// when the server is slower than the model, the device idles.
func (d *Device) charge(n int64) {
	c := d.model.Cost(n)
	if c == 0 {
		return
	}
	d.mu.Lock()
	now := d.clk.Now()
	if d.busy.Before(now) {
		d.busy = now
	}
	d.busy = d.busy.Add(c)
	d.stats.Busy += c
	wait := d.busy.Sub(now)
	d.mu.Unlock()
	d.clk.Sleep(wait)
}

func (d *Device) check(off, n int64) error {
	if off < 0 || n < 0 || off > d.size || n > d.size-off {
		return fmt.Errorf("%w: %d bytes at %d, device of %d", ErrRange, n, off, d.size)
	}
	return nil
}

// ReadAt reads len(p) bytes at off: the newest data, volatile or durable.
func (d *Device) ReadAt(p []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.frozen {
		return ErrPowerCut
	}
	if err := d.check(off, int64(len(p))); err != nil {
		return err
	}
	d.stats.Reads++
	d.stats.ReadBytes += int64(len(p))
	for len(p) > 0 {
		bi, bo := off/BlockSize, off%BlockSize
		n := min(int64(len(p)), BlockSize-bo)
		if b := d.lookup(bi); b != nil {
			copy(p[:n], b[bo:])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+n
	}
	return nil
}

func (d *Device) lookup(bi int64) *block {
	if b, ok := d.volatile[bi]; ok {
		return b
	}
	return d.durable[bi]
}

// WriteAt writes p at off into the volatile cache, after the model's cost.
func (d *Device) WriteAt(p []byte, off int64) error {
	if err := d.check(off, int64(len(p))); err != nil {
		return err
	}
	d.mu.Lock()
	frozen := d.frozen
	d.mu.Unlock()
	if frozen {
		return ErrPowerCut
	}
	d.charge(int64(len(p)))
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.frozen {
		return ErrPowerCut
	}
	d.stats.Writes++
	d.stats.WriteBytes += int64(len(p))
	for len(p) > 0 {
		bi, bo := off/BlockSize, off%BlockSize
		n := min(int64(len(p)), BlockSize-bo)
		b, ok := d.volatile[bi]
		switch {
		case n == BlockSize && allZero(p[:n]):
			d.volatile[bi] = zeroBlock
		case !ok || b == zeroBlock:
			nb := new(block)
			if old := d.lookup(bi); old != nil && n < BlockSize {
				*nb = *old
			}
			copy(nb[bo:], p[:n])
			d.volatile[bi] = nb
		default:
			copy(b[bo:], p[:n])
		}
		p, off = p[n:], off+n
	}
	if d.cutAt > 0 && d.stats.Writes >= d.cutAt {
		d.cutLocked()
	}
	return nil
}

func allZero(p []byte) bool { return bytes.Equal(p, zeroBlock[:len(p)]) }

// Flush makes everything written so far durable, after the model's cost
// of a flush.
func (d *Device) Flush() error {
	d.mu.Lock()
	frozen := d.frozen
	d.mu.Unlock()
	if frozen {
		return ErrPowerCut
	}
	d.charge(0)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.frozen {
		return ErrPowerCut
	}
	d.stats.Flushes++
	for bi, b := range d.volatile {
		if b == zeroBlock {
			delete(d.durable, bi)
		} else {
			d.durable[bi] = b
		}
	}
	clear(d.volatile)
	return nil
}

// Image is a device's content at a power cut: what survives.
type Image struct {
	size   int64
	blocks map[int64]*block
	// Unflushed is the number of volatile blocks at the cut, Kept how many
	// of them the image holds.
	Unflushed, Kept int
}

// Cut cuts the power: the device is frozen (every later request fails
// with ErrPowerCut) and the returned image holds the durable layer plus
// each unflushed block with probability keep, drawn from rnd in block
// order (keep 0 or a nil rnd: none of them).
func (d *Device) Cut(rnd *rand.Rand, keep float64) *Image {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cutRnd, d.cutKeep = rnd, keep
	return d.cutLocked()
}

// CutAfter arms a cut at the end of the WRITE request that brings
// Stats().Writes to n (counted from the device's creation); CutImage
// returns the image once it happened.
func (d *Device) CutAfter(n int64, rnd *rand.Rand, keep float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cutAt, d.cutRnd, d.cutKeep = n, rnd, keep
}

// CutImage returns the image of the cut, or nil before it.
func (d *Device) CutImage() *Image {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cutImg
}

func (d *Device) cutLocked() *Image {
	if d.frozen {
		return d.cutImg
	}
	d.frozen = true
	img := &Image{size: d.size, blocks: make(map[int64]*block, len(d.durable)), Unflushed: len(d.volatile)}
	for bi, b := range d.durable {
		img.blocks[bi] = b
	}
	if d.cutRnd != nil && d.cutKeep > 0 {
		idx := make([]int64, 0, len(d.volatile))
		for bi := range d.volatile {
			idx = append(idx, bi)
		}
		slices.Sort(idx)
		for _, bi := range idx {
			if d.cutRnd.Float64() < d.cutKeep {
				img.Kept++
				if b := d.volatile[bi]; b == zeroBlock {
					delete(img.blocks, bi)
				} else {
					img.blocks[bi] = b
				}
			}
		}
	}
	// The volatile blocks handed to the image are never written again:
	// the device is frozen.
	d.cutImg = img
	return img
}

// Frozen says whether the power was cut.
func (d *Device) Frozen() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.frozen
}

// Snapshot returns the device's current durable content as an Image
// without cutting (for a baseline to start several runs from).
func (d *Device) Snapshot() *Image {
	d.mu.Lock()
	defer d.mu.Unlock()
	img := &Image{size: d.size, blocks: make(map[int64]*block, len(d.durable))}
	for bi, b := range d.durable {
		img.blocks[bi] = b
	}
	return img
}

// Size is the image size in bytes.
func (im *Image) Size() int64 { return im.size }

// Device returns a fresh device holding the image as its durable content.
func (im *Image) Device(m Model, clk Clock) *Device {
	d, _ := NewDevice(im.size, m, clk)
	for bi, b := range im.blocks {
		d.durable[bi] = b
	}
	return d
}

// ReadAt reads from the image (absent blocks are zeros).
func (im *Image) ReadAt(p []byte, off int64) {
	for len(p) > 0 {
		bi, bo := off/BlockSize, off%BlockSize
		n := min(int64(len(p)), BlockSize-bo)
		if b := im.blocks[bi]; b != nil {
			copy(p[:n], b[bo:])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+n
	}
}

// WriteFile writes the image to a new sparse file at path.
func (im *Image) WriteFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("disk: image: %w", err)
	}
	if err := f.Truncate(im.size); err != nil {
		f.Close()
		return fmt.Errorf("disk: image: %w", err)
	}
	for bi, b := range im.blocks {
		if b == zeroBlock {
			continue
		}
		if _, err := f.WriteAt(b[:], bi*BlockSize); err != nil {
			f.Close()
			return fmt.Errorf("disk: image: %w", err)
		}
	}
	return f.Close()
}
