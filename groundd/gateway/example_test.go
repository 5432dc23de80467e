package gateway_test

import (
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/bootorbit/bootorbit/groundd/gateway"
	"github.com/bootorbit/bootorbit/groundd/gateway/gatewaytest"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// The daemon's loop around the gateway, with a vehicle stand-in for the
// link: submit, send while the link is up, feed the reports back, and let
// Tick time out what gets no answer.
func Example() {
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	kr, _ := protocol.NewKeyring(protocol.Key{ID: 1, Pub: priv.Public().(ed25519.PublicKey)})
	codec, _ := protocol.NewCodec(protocol.MinMaxFrame)
	vehicle := &gatewaytest.Vehicle{ID: 7, Keys: kr, Codec: codec,
		Answers: map[string]gatewaytest.Answer{"activate": {Reject: dict.CodeBadState}, "reboot": {Silent: true}}}
	g, _ := gateway.New(gateway.Config{Key: 1, Priv: priv, Seq: new(gatewaytest.Sequencer), Archive: new(gatewaytest.Archive),
		OnChange: func(c *gateway.Command) {
			e := c.Last()
			line := fmt.Sprintf("%d %s %v", c.Seq, c.Name, e.Stage)
			if e.Reason != "" {
				line += " " + e.Reason
			}
			if e.Waited != 0 {
				line += " (waited in " + e.Waited.String() + ")"
			}
			fmt.Println(line)
		}})
	now := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)

	g.Submit(now, gateway.Request{Vehicle: 7, Name: "verify_slot", Args: dict.Values{"slot": "b"}})
	g.Submit(now, gateway.Request{Vehicle: 7, Name: "activate", Args: dict.Values{"slot": "b", "attempts": 3}})
	g.Submit(now, gateway.Request{Vehicle: 7, Name: "reboot"})
	for {
		out, ok, _ := g.Next(now, 7)
		if !ok {
			break
		}
		reports, _ := vehicle.Handle(out.Frame) // the link, both ways
		for _, r := range reports {
			g.Receive(now, 7, r)
		}
	}
	g.Tick(now.Add(gateway.DefaultAckTimeout))
	// Output:
	// 1 verify_slot queued
	// 2 activate queued
	// 3 reboot queued
	// 1 verify_slot sent
	// 1 verify_slot accepted
	// 1 verify_slot started
	// 1 verify_slot completed
	// 2 activate sent
	// 2 activate rejected bad_state
	// 3 reboot sent
	// 3 reboot timeout (waited in sent)
}
