package link_test

import (
	"context"
	"fmt"
	"time"

	"github.com/bootorbit/bootorbit/hil/link"
)

// An emulator in-process, as a scenario runs it: the uhf profile with its
// passes compressed 60 times, the vehicle at a known address, the ground
// learned from its first datagram; the ground's pass handling follows
// the link state.
func ExampleNew() {
	spec, err := link.Profile("uhf")
	if err != nil {
		panic(err)
	}
	spec.TimeScale = 60
	e, err := link.New(link.Config{Spec: spec, Seed: 1, B: "127.0.0.1:7002"})
	if err != nil {
		panic(err)
	}
	fmt.Println("ground sends to", e.AddrA(), "vehicle sends to", e.AddrB())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	go e.Run(ctx)
	states, stop := e.Subscribe()
	defer stop()
	for st := range states {
		fmt.Println("forward up:", st.Forward, "return up:", st.Return)
	}
	fmt.Printf("%+v\n", e.Stats().Forward.Dropped)
}
