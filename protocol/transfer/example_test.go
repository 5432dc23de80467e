package transfer_test

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/transfer"
	"github.com/bootorbit/bootorbit/protocol/transfer/transfertest"
)

// Example drives a sender and a receiver over a perfect in-memory link: the
// shape of groundd's and flightd's loops. Each side's Ready is carried out
// in order - store, journal, send - then Advance.
func Example() {
	codec, _ := protocol.NewCodec(1024)
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	data := bytes.Repeat([]byte("bootorbit "), 10000)

	// Ground: plan (hash tree + signed offer) and sender.
	plan, err := transfer.NewPlan(codec, 42, 1, []byte("example"), bytes.NewReader(data), uint64(len(data)), 0, 7, priv)
	if err != nil {
		panic(err)
	}
	// Both sides hold the vehicle's return-link MAC key (id 1): the ground
	// believes nothing from the vehicle that it does not authenticate.
	macKey := protocol.MACKey{ID: 1, Key: bytes.Repeat([]byte{9}, protocol.MACKeyLen)}
	verifier, _ := protocol.NewReturnVerifier(42, macKey)
	sender, _ := transfer.NewSender(transfer.SenderConfig{Codec: codec, Rate: 64000, RTT: 100 * time.Millisecond, Verifier: verifier}, plan)

	// Vehicle: receiver with its journal and data store. The epoch is the
	// vehicle's durable boot counter, incremented at every start.
	journal, store := transfertest.NewMemJournal(), transfertest.NewMemStore()
	auth, _ := protocol.NewReturnAuth(42, macKey, 1)
	receiver, _ := transfer.NewReceiver(transfer.ReceiverConfig{
		Codec:   codec,
		Vehicle: 42,
		Keys:    map[uint32]ed25519.PublicKey{7: priv.Public().(ed25519.PublicKey)},
		Auth:    auth,
	}, nil)

	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var up, down [][]byte // frames in flight
	for !sender.Done() {
		for _, f := range up {
			_ = receiver.Step(now, f) // errors are counted; go on
		}
		for _, f := range down {
			_ = sender.Step(now, f)
		}
		up, down = nil, nil

		sender.Tick(now)
		rd := sender.Ready()
		for _, m := range rd.Messages {
			up = append(up, m.Frame)
		}
		sender.Advance()

		receiver.Tick(now)
		rrd := receiver.Ready()
		if err := transfer.Persist(&rrd, store, journal); err != nil { // data, sync, journal
			panic(err)
		}
		for _, m := range rrd.Messages { // only after the journal commit
			down = append(down, m.Frame)
		}
		for _, c := range rrd.Completed {
			fmt.Printf("transfer %d complete: %d bytes of %q\n", c.ID, c.Size, c.Target)
		}
		receiver.Advance()

		now = now.Add(10 * time.Millisecond)
	}
	fmt.Println("identical:", bytes.Equal(store.Bytes(1), data), "error:", sender.Err())
	// Output:
	// transfer 1 complete: 100000 bytes of "example"
	// identical: true error: <nil>
}
