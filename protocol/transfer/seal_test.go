package transfer_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/transfer/transfertest"
)

// The tests of this file run the transfer engine the way flightd and groundd
// will when the mission seals its uplink: every forward frame is sealed on
// the ground (protocol.Sealer) and opened on the vehicle (protocol.Opener)
// before the receiver sees it. They use only exported API.

const (
	sealVehicle  = 42
	sealTransfer = 3
	sealSeed     = 20301 // the payload's seed: fixed, the tests are not randomized
)

var sealEpoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func sealTestKey(id protocol.KeyID, b byte) protocol.SealKey {
	return protocol.SealKey{ID: id, Key: bytes.Repeat([]byte{b}, protocol.SealKeyLen)}
}

// groundKeys is a persisted store of seal counter marks, per key id: what
// groundd's store keeps.
type groundKeys struct {
	t     testing.TB
	marks map[protocol.KeyID]uint32
	saves int
}

// sealer returns a sealer for key, its counter resumed from the recorded
// mark (a ground restart makes a new one).
func (g *groundKeys) sealer(key protocol.SealKey, link int) *protocol.Sealer {
	g.t.Helper()
	ctr, err := protocol.NewSealCounter(g.marks[key.ID], 8, func(m uint32) error {
		g.marks[key.ID] = m
		g.saves++
		return nil
	})
	if err != nil {
		g.t.Fatal(err)
	}
	s, err := protocol.NewSealer(protocol.SealerConfig{Vehicle: sealVehicle, Key: key, MaxFrame: link, Seqs: ctr})
	if err != nil {
		g.t.Fatal(err)
	}
	return s
}

// sealedRun is a sender and a receiver over a link that seals every forward
// frame, losing some. It records every byte that went forward.
type sealedRun struct {
	t        testing.TB
	link     int
	inner    *protocol.Codec // forward frames, before sealing and after opening
	ret      *protocol.Codec // return frames (not sealed)
	data     []byte
	sender   *transfer.Sender
	recv     *transfer.Receiver
	journal  *transfertest.MemJournal
	store    *transfertest.MemStore
	ground   *groundKeys
	sealer   *protocol.Sealer
	opener   *protocol.Opener
	counters protocol.Counters // the vehicle's refusals

	sealed [][]byte // every sealed forward frame, in order
	plain  [][]byte // the same frames before sealing
	opened map[protocol.KeyID]int

	// loseEvery: every loseEvery-th forward frame is lost (0: none).
	loseEvery int
	// onFrame, if set, runs before each forward frame is sealed.
	onFrame func(n int)
	now     time.Time
}

func newSealedRun(t testing.TB, link, size int, groundKey protocol.SealKey, vehicleKeys ...protocol.SealKey) *sealedRun {
	t.Helper()
	r := &sealedRun{t: t, link: link, now: sealEpoch, opened: map[protocol.KeyID]int{}}
	var err error
	if r.inner, err = protocol.NewInnerCodec(link); err != nil {
		t.Fatal(err)
	}
	if r.ret, err = protocol.NewCodec(link); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(sealSeed, sealSeed))
	t.Logf("payload seed %d", uint64(sealSeed))
	r.data = make([]byte, size)
	for i := range r.data {
		r.data[i] = byte(rng.Uint32())
	}
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	plan, err := transfer.NewPlan(r.inner, sealVehicle, sealTransfer, []byte("sha256:sealed"), bytes.NewReader(r.data), uint64(size), 0, 7, priv)
	if err != nil {
		t.Fatal(err)
	}
	// The return link is authenticated as always; sealing is about the
	// forward link only.
	macKey := protocol.MACKey{ID: 1, Key: bytes.Repeat([]byte{9}, protocol.MACKeyLen)}
	verifier, err := protocol.NewReturnVerifier(sealVehicle, macKey)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := protocol.NewReturnAuth(sealVehicle, macKey, 1)
	if err != nil {
		t.Fatal(err)
	}
	r.sender, err = transfer.NewSender(transfer.SenderConfig{Codec: r.inner, ReturnCodec: r.ret, Rate: 64000, RTT: 100 * time.Millisecond, Verifier: verifier}, plan)
	if err != nil {
		t.Fatal(err)
	}
	r.journal, r.store = transfertest.NewMemJournal(), transfertest.NewMemStore()
	r.recv, err = transfer.NewReceiver(transfer.ReceiverConfig{
		Codec: r.inner, ReturnCodec: r.ret, Vehicle: sealVehicle, Auth: auth,
		Keys: map[uint32]ed25519.PublicKey{7: priv.Public().(ed25519.PublicKey)},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.ground = &groundKeys{t: t, marks: map[protocol.KeyID]uint32{}}
	r.sealer = r.ground.sealer(groundKey, link)
	r.opener = mustSealOpener(t, link, vehicleKeys...)
	return r
}

func mustSealOpener(t testing.TB, link int, keys ...protocol.SealKey) *protocol.Opener {
	t.Helper()
	o, err := protocol.NewOpener(protocol.OpenerConfig{Vehicle: sealVehicle, MaxFrame: link, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// deliver is the vehicle's receive path: open, and only then step the
// receiver; a frame that does not open is counted and dropped.
func (r *sealedRun) deliver(frame []byte) error {
	inner, err := r.opener.Open(frame)
	if err != nil {
		r.counters.Count(err)
		return err
	}
	r.opened[protocol.KeyID(sealedKeyID(r.t, frame))]++
	_ = r.recv.Step(r.now, inner) // refusals of the engine are counted by it; go on
	return nil
}

// receiverTurn carries out the receiver's Ready: store, journal, then the
// frames back to the ground.
func (r *sealedRun) receiverTurn() (down [][]byte) {
	r.recv.Tick(r.now)
	rd := r.recv.Ready()
	if err := transfer.Persist(&rd, r.store, r.journal); err != nil {
		r.t.Fatal(err)
	}
	for _, m := range rd.Messages {
		down = append(down, m.Frame)
	}
	r.recv.Advance()
	return down
}

// run drives the transfer to its end, in 10 ms steps.
func (r *sealedRun) run() {
	r.t.Helper()
	var up, down [][]byte
	for step := 0; !r.sender.Done(); step++ {
		if step > 200000 {
			done, total := r.sender.Progress()
			r.t.Fatalf("no completion after %d steps: %d/%d chunks", step, done, total)
		}
		for _, f := range up {
			if err := r.deliver(f); err != nil {
				r.t.Fatalf("a genuine sealed frame does not open: %v", err)
			}
		}
		for _, f := range down {
			_ = r.sender.Step(r.now, f)
		}
		up = nil

		r.sender.Tick(r.now)
		rd := r.sender.Ready()
		for _, m := range rd.Messages {
			n := len(r.sealed)
			if r.onFrame != nil {
				r.onFrame(n)
			}
			sealed, err := r.sealer.Seal(m.Frame)
			if err != nil {
				r.t.Fatal(err)
			}
			if len(sealed) > r.link {
				r.t.Fatalf("sealed frame of %d bytes on a %d-byte link", len(sealed), r.link)
			}
			r.sealed = append(r.sealed, sealed)
			r.plain = append(r.plain, m.Frame)
			if r.loseEvery == 0 || (n+1)%r.loseEvery != 0 {
				up = append(up, sealed)
			}
		}
		r.sender.Advance()
		down = r.receiverTurn()
		r.now = r.now.Add(10 * time.Millisecond)
	}
	if err := r.sender.Err(); err != nil {
		r.t.Fatalf("transfer failed: %v", err)
	}
	if got := r.store.Bytes(sealTransfer); !bytes.Equal(got, r.data) {
		r.t.Fatalf("the vehicle stored %d bytes, not the %d sent", len(got), len(r.data))
	}
}

// sealedKeyID and sealedSeq read a sealed frame's key id and sequence
// number (84 01 0f 83 <key> <seq> ...), as an observer of the link can.
func sealedKeyID(t testing.TB, f []byte) uint64 {
	k, _ := sealedHeader(t, f)
	return k
}

func sealedHeader(t testing.TB, f []byte) (key, seq uint64) {
	t.Helper()
	if len(f) < 6 || !bytes.Equal(f[:4], []byte{0x84, protocol.Version, byte(protocol.TypeSealed), 0x83}) {
		t.Fatalf("not a sealed frame: %x", f)
	}
	key, n := cborUint(t, f[4:])
	seq, _ = cborUint(t, f[4+n:])
	return key, seq
}

func cborUint(t testing.TB, b []byte) (uint64, int) {
	t.Helper()
	switch ai := b[0] & 0x1f; {
	case b[0]>>5 != 0:
	case ai < 24:
		return uint64(ai), 1
	case ai == 24:
		return uint64(b[1]), 2
	case ai == 25:
		return uint64(binary.BigEndian.Uint16(b[1:])), 3
	case ai == 26:
		return uint64(binary.BigEndian.Uint32(b[1:])), 5
	}
	t.Fatalf("not a 32-bit CBOR unsigned integer: %x", b)
	return 0, 0
}

// windows returns the set of every 16-byte window of the frames.
func windows(frames [][]byte) map[[16]byte]bool {
	w := map[[16]byte]bool{}
	for _, f := range frames {
		for i := 0; i+16 <= len(f); i++ {
			w[[16]byte(f[i:i+16])] = true
		}
	}
	return w
}

// leaked counts the 16-byte windows of data found in the set.
func leaked(data []byte, w map[[16]byte]bool) int {
	n := 0
	for i := 0; i+16 <= len(data); i++ {
		if w[[16]byte(data[i:i+16])] {
			n++
		}
	}
	return n
}

// TestSealedTransfer: a whole transfer over a 256-byte link with every
// forward frame sealed, one in seven lost and the ground restarted twice:
// the capture of every forward byte holds no 16-byte window of the
// payload (the unsealed frames hold nearly all of them), no sequence
// number repeats, and the vehicle stores the identical bytes.
func TestSealedTransfer(t *testing.T) {
	const link = 256
	key := sealTestKey(1, 0x5e)
	r := newSealedRun(t, link, 40000, key, key)
	r.loseEvery = 7
	r.onFrame = func(n int) {
		if n == 60 || n == 150 { // ground restarts: the counter resumes from the mark
			r.sealer = r.ground.sealer(key, link)
		}
	}
	r.run()

	if n := leaked(r.data, windows(r.sealed)); n != 0 {
		t.Errorf("%d of the payload's 16-byte windows appear in the sealed capture", n)
	}
	if n, all := leaked(r.data, windows(r.plain)), len(r.data)-15; n < all*9/10 {
		t.Errorf("the check is blind: only %d of %d payload windows appear in the unsealed frames", n, all)
	}
	seqs := map[uint64]bool{}
	var bytesUp int
	for _, f := range r.sealed {
		_, seq := sealedHeader(t, f)
		if seqs[seq] {
			t.Fatalf("sequence number %d used twice", seq)
		}
		seqs[seq] = true
		bytesUp += len(f)
	}
	if r.counters.Total() != 0 {
		t.Errorf("genuine frames refused: %v", r.counters.Snapshot())
	}
	st := r.sender.Stats
	t.Logf("%d sealed frames (%d bytes) carried %d payload bytes; %d chunks resent; %d mark saves, mark %d",
		len(r.sealed), bytesUp, len(r.data), st.ChunksResent, r.ground.saves, r.ground.marks[1])
	if st.ChunksResent == 0 {
		t.Error("no chunk was resent: the loss did not happen")
	}
	for _, n := range []int{256, 1024} {
		plainC, _ := protocol.NewCodec(n)
		innerC, _ := protocol.NewInnerCodec(n)
		cp, err1 := transfer.ChunkSizeFor(plainC, sealTransfer, 1<<30)
		cs, err2 := transfer.ChunkSizeFor(innerC, sealTransfer, 1<<30)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		t.Logf("link %d B: chunk data %d B in clear, %d B sealed (%.1f%% less data per frame)", n, cp, cs, 100*float64(cp-cs)/float64(cp))
	}
}

// TestSealedTransferRefusals: the signed offer, sealed wrongly in every way
// (wrong key, wrong vehicle, a tampered byte, truncated, an unknown key
// id) or sent in clear, is counted under its reason and never reaches the
// receiver: the journal and the store stay untouched. The genuine sealed
// offer then commits.
func TestSealedTransferRefusals(t *testing.T) {
	const link = 1024
	key := sealTestKey(1, 0x11)
	r := newSealedRun(t, link, 5000, key, key, sealTestKey(2, 0x22))
	r.sender.Tick(r.now)
	rd := r.sender.Ready()
	var offer []byte
	for _, m := range rd.Messages {
		if _, ok := m.Msg.(*protocol.Offer); ok {
			offer = m.Frame
		}
	}
	if offer == nil {
		t.Fatal("the sender's first Ready has no offer")
	}
	genuine, err := r.sealer.Seal(offer)
	if err != nil {
		t.Fatal(err)
	}
	other := func(vehicle uint32, k protocol.SealKey) []byte {
		ctr, _ := protocol.NewSealCounter(0, 1, func(uint32) error { return nil })
		s, err := protocol.NewSealer(protocol.SealerConfig{Vehicle: vehicle, Key: k, MaxFrame: link, Seqs: ctr})
		if err != nil {
			t.Fatal(err)
		}
		f, err := s.Seal(offer)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	withCRC := func(f []byte) []byte {
		f = append([]byte(nil), f...)
		binary.BigEndian.PutUint32(f[len(f)-4:], protocol.Checksum(f[:len(f)-4]))
		return f
	}
	trailer := func(f []byte) []byte { // a CRC trailer for f's bytes
		f = append(append([]byte(nil), f...), 0x44)
		return binary.BigEndian.AppendUint32(f, protocol.Checksum(f))
	}
	tampered := append([]byte(nil), genuine...)
	tampered[len(tampered)/2] ^= 0x01
	cut := genuine[:len(genuine)-30]
	for _, tc := range []struct {
		name  string
		frame []byte
		want  protocol.Reason
	}{
		{"wrong key", other(sealVehicle, sealTestKey(1, 0x99)), protocol.ReasonBadSignature},
		{"wrong vehicle", other(sealVehicle+1, key), protocol.ReasonBadSignature},
		{"tampered byte", withCRC(tampered), protocol.ReasonBadSignature},
		{"tampered byte, CRC not fixed", tampered, protocol.ReasonChecksum},
		{"truncated", cut, protocol.ReasonChecksum},
		{"truncated, CRC made good", trailer(cut), protocol.ReasonMalformed},
		{"unknown key id", other(sealVehicle, sealTestKey(9, 0x11)), protocol.ReasonUnknownKey},
		{"plaintext", offer, protocol.ReasonUnauthenticated},
	} {
		before := r.counters.Get(tc.want)
		err := r.deliver(tc.frame)
		if err == nil {
			t.Fatalf("%s: opened", tc.name)
		}
		if r.counters.Get(tc.want) != before+1 {
			t.Errorf("%s: %v not counted as %v: %v", tc.name, err, tc.want, r.counters.Snapshot())
		}
		if tc.want == protocol.ReasonBadSignature && !errors.Is(err, protocol.ErrDecrypt) {
			t.Errorf("%s: %v is not ErrDecrypt", tc.name, err)
		}
		if down := r.receiverTurn(); len(down) != 0 {
			t.Errorf("%s: the receiver answered %d frames", tc.name, len(down))
		}
		if r.journal.Len() != 0 || r.journal.Commits != 0 || r.store.Syncs != 0 {
			t.Fatalf("%s: written: journal %d keys, %d commits, %d syncs", tc.name, r.journal.Len(), r.journal.Commits, r.store.Syncs)
		}
	}
	if r.counters.Total() != 8 {
		t.Errorf("%d refusals counted, want 8: %v", r.counters.Total(), r.counters.Snapshot())
	}
	if err := r.deliver(genuine); err != nil {
		t.Fatal(err)
	}
	r.receiverTurn()
	if r.journal.Len() == 0 || r.journal.Commits == 0 {
		t.Error("the genuine sealed offer was not journaled")
	}
}

// TestSealedTransferKeyRotation: the vehicle holds seal keys 1 and 2; the
// ground switches from 1 to 2 in the middle of a transfer, which completes
// with frames of both keys opened. The vehicle, configured without key 1,
// then refuses frames under it as an unknown key, and still opens key 2's.
func TestSealedTransferKeyRotation(t *testing.T) {
	const link = 1024
	oldKey, newKey := sealTestKey(1, 0x01), sealTestKey(2, 0x02)
	r := newSealedRun(t, link, 60000, oldKey, oldKey, newKey)
	r.loseEvery = 11
	r.onFrame = func(n int) {
		if n == 30 {
			r.sealer = r.ground.sealer(newKey, link) // the ground switches
		}
	}
	r.run()
	if r.opened[1] == 0 || r.opened[2] == 0 {
		t.Fatalf("frames opened per key id: %v, want both", r.opened)
	}
	t.Logf("frames opened per key id: %v", r.opened)

	r.opener = mustSealOpener(t, link, newKey) // key 1 retired on the vehicle
	var onOld, onNew []byte
	for _, f := range r.sealed {
		switch sealedKeyID(t, f) {
		case 1:
			onOld = f
		case 2:
			onNew = f
		}
	}
	if err := r.deliver(onOld); !errors.Is(err, protocol.ErrUnknownKey) || r.counters.Get(protocol.ReasonUnknownKey) != 1 {
		t.Errorf("a key-1 frame after retiring key 1: %v, counters %v", err, r.counters.Snapshot())
	}
	if err := r.deliver(onNew); err != nil {
		t.Errorf("a key-2 frame after retiring key 1: %v", err)
	}
}
