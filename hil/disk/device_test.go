package disk

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time        { return c.t }
func (c *fakeClock) Sleep(d time.Duration) { c.t = c.t.Add(d) }

func TestModelArithmetic(t *testing.T) {
	m := Model{Rate: 100e6, Latency: 200 * time.Microsecond}
	if got, want := m.Cost(1<<20), 200*time.Microsecond+10485760*time.Nanosecond; got != want {
		t.Errorf("cost of 1 MiB: %v, want %v", got, want)
	}
	if got := m.Cost(0); got != 200*time.Microsecond {
		t.Errorf("cost of a flush: %v", got)
	}
	clk := &fakeClock{t: time.Unix(1000, 0)}
	start := clk.t
	d, err := NewDevice(16<<20, m, clk)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := range 4 {
		if err := d.WriteAt(buf, int64(i)<<20); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	want := 4*m.Cost(1<<20) + m.Cost(0)
	if got := clk.t.Sub(start); got != want {
		t.Errorf("4 MiB + flush took %v on the device clock, want %v", got, want)
	}
	if got := d.Stats().Busy; got != want {
		t.Errorf("busy %v, want %v", got, want)
	}
	// An idle device starts the next request when it arrives.
	clk.t = clk.t.Add(time.Second)
	t1 := clk.t
	if err := d.WriteAt(buf[:4096], 0); err != nil {
		t.Fatal(err)
	}
	if got, want := clk.t.Sub(t1), m.Cost(4096); got != want {
		t.Errorf("after idle: %v, want %v", got, want)
	}
}

func TestVolatileCache(t *testing.T) {
	d, err := NewDevice(1<<20, Model{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := bytes.Repeat([]byte{0xaa}, 3*BlockSize)
	if err := d.WriteAt(a, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	// A partial-block write keeps the rest of the block; a zero block
	// replaces one.
	if err := d.WriteAt([]byte{1, 2, 3}, BlockSize+10); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteAt(make([]byte, BlockSize), 2*BlockSize); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3*BlockSize)
	if err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), a...)
	copy(want[BlockSize+10:], []byte{1, 2, 3})
	clear(want[2*BlockSize:])
	if !bytes.Equal(got, want) {
		t.Fatal("read after write differs")
	}
	img := d.Cut(nil, 0)
	if img.Unflushed != 2 || img.Kept != 0 {
		t.Errorf("unflushed %d kept %d, want 2 0", img.Unflushed, img.Kept)
	}
	img.ReadAt(got, 0)
	if !bytes.Equal(got, a) {
		t.Error("the image holds unflushed data")
	}
	if err := d.WriteAt([]byte{1}, 0); !errors.Is(err, ErrPowerCut) {
		t.Errorf("write after cut: %v", err)
	}
	if err := d.ReadAt(got[:1], 0); !errors.Is(err, ErrPowerCut) {
		t.Errorf("read after cut: %v", err)
	}
	if err := d.Flush(); !errors.Is(err, ErrPowerCut) {
		t.Errorf("flush after cut: %v", err)
	}
	// The image restarts as a device of its own.
	d2 := img.Device(Model{}, nil)
	if err := d2.ReadAt(got, 0); err != nil || !bytes.Equal(got, a) {
		t.Errorf("device from image: %v", err)
	}
	if err := d.WriteAt(make([]byte, 2), 1<<20-1); !errors.Is(err, ErrRange) {
		t.Errorf("write past the end: %v", err)
	}
}

// A cut keeps a seeded random subset of the unflushed blocks: the same
// seed, the same subset; keep=1 all of them.
func TestCutKeepsRandomSubset(t *testing.T) {
	run := func(seed uint64, keep float64) (*Image, []byte) {
		d, _ := NewDevice(1<<20, Model{}, nil)
		for i := range 64 {
			d.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, BlockSize), int64(i)*BlockSize)
		}
		img := d.Cut(rand.New(rand.NewPCG(seed, 0)), keep)
		b := make([]byte, 64*BlockSize)
		img.ReadAt(b, 0)
		return img, b
	}
	i1, b1 := run(7, 0.5)
	_, b2 := run(7, 0.5)
	if !bytes.Equal(b1, b2) {
		t.Error("same seed, different images")
	}
	if i1.Kept == 0 || i1.Kept == 64 {
		t.Errorf("kept %d of 64 at 0.5", i1.Kept)
	}
	for i := range 64 {
		blk := b1[i*BlockSize : (i+1)*BlockSize]
		if blk[0] != 0 && !bytes.Equal(blk, bytes.Repeat([]byte{byte(i + 1)}, BlockSize)) {
			t.Fatalf("block %d torn", i)
		}
	}
	if all, _ := run(7, 1); all.Kept != 64 {
		t.Errorf("keep=1 kept %d", all.Kept)
	}
}

func TestCutAfter(t *testing.T) {
	d, _ := NewDevice(1<<20, Model{}, nil)
	d.CutAfter(3, nil, 0)
	for i := range 3 {
		if err := d.WriteAt([]byte{1}, int64(i)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if i == 0 {
			d.Flush()
		}
	}
	if d.CutImage() == nil || !d.Frozen() {
		t.Fatal("no cut after the 3rd write")
	}
	if err := d.WriteAt([]byte{1}, 5); !errors.Is(err, ErrPowerCut) {
		t.Errorf("4th write: %v", err)
	}
	b := make([]byte, 3)
	d.CutImage().ReadAt(b, 0)
	if !bytes.Equal(b, []byte{1, 0, 0}) {
		t.Errorf("image %v, want only the flushed write", b)
	}
}

func TestParseModel(t *testing.T) {
	for in, want := range map[string]Model{
		"100MB/s,0.2ms": {Rate: 100e6, Latency: 200 * time.Microsecond},
		"50MiB/s":       {Rate: 50 << 20},
		"1.5GB,1ms":     {Rate: 1.5e9, Latency: time.Millisecond},
		"0":             {},
		"unlimited,5us": {Latency: 5 * time.Microsecond},
	} {
		if got, err := ParseModel(in); err != nil || got != want {
			t.Errorf("%q: %+v %v, want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "fast", "-1MB/s", "100MB/s,soon", "100MB/s,-1ms", "100MB/s,2s"} {
		if _, err := ParseModel(bad); !errors.Is(err, ErrModel) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
